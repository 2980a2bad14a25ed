"""Datasets: sources, long-tailed profiles, device-resident tensors and augmentation."""

from tailmix.data.augment import BatchAugment
from tailmix.data.base import RawDataset
from tailmix.data.dataset import LongTailData, prepare_dataset
from tailmix.data.indexed import IndexedDataset
from tailmix.data.profiles import class_counts, subsample_indices
from tailmix.data.sources import SOURCES, from_arrays, load_digits_dataset, load_source

__all__ = [
    "SOURCES", "BatchAugment", "IndexedDataset", "LongTailData", "RawDataset", "class_counts",
    "from_arrays",
    "load_digits_dataset", "load_source", "prepare_dataset", "subsample_indices",
]
from tailmix.data import lists  # noqa: E402,F401  (registers the list-file sources)
