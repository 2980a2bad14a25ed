"""A dataset wrapper for a user's ``DataLoader``: each item also carries its dataset index
and whether an oversampling sampler marked its slot synthetic."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

__all__ = ["IndexedDataset"]


class IndexedDataset(Dataset):
    """Wrap a dataset of ``(x, y)`` items so that item ``i`` is ``(x, y, i, False)``.

    With :class:`tailmix.samplers.Resampled` as the ``DataLoader``'s sampler, the loader asks
    for ``(i, synthetic)`` pairs and gets ``(x, y, i, synthetic)``: the batch then carries the
    dataset indices a neighbour table looks partners up by, and the mask of the slots to mix.

    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> ds = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1])))
    >>> ds[(2, True)][1:]
    (tensor(1), 2, True)
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> tuple[Any, Any, int, bool]:
        index, synthetic = key if isinstance(key, tuple) else (key, False)
        x, y = self.dataset[index][:2]
        return x, y, int(index), bool(synthetic)
