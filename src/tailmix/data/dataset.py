"""A long-tailed dataset ready for training: tensors, class counts, and its augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.data.augment import BatchAugment
from tailmix.data.base import RawDataset
from tailmix.data.profiles import NAMED_PROFILES, subsample_indices
from tailmix.data.profiles import class_counts as profile_counts

PREPARE_PROFILES = ("exp", "step", "counts", "original", *NAMED_PROFILES)


@dataclass
class LongTailData:
    """Training and test tensors with the class counts that losses, samplers and mixers read.

    Images are one ``uint8`` tensor (N, C, H, W); feature vectors one ``float32`` tensor
    (N, D). ``augment`` turns a raw batch into normalised network inputs.
    """

    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor
    class_counts: list[int]
    classes: list[str]
    augment: BatchAugment
    name: str = "dataset"
    source_indices: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_inputs.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train_inputs.dim() == 4

    def to(self, device: torch.device | str, *, pin_fallback: bool = True) -> LongTailData:
        """Move every tensor to ``device``.

        When the device runs out of memory for the dataset, the inputs stay in pinned host
        memory (if ``pin_fallback``) and batches are copied asynchronously as they are used.
        """
        device = torch.device(device)
        out = LongTailData(**{**self.__dict__})
        out.augment = self.augment.to(device)
        out.train_labels = self.train_labels.to(device)
        out.test_labels = self.test_labels.to(device)
        for key in ("train_inputs", "test_inputs"):
            t = getattr(self, key)
            try:
                setattr(out, key, t.to(device))
            except torch.OutOfMemoryError:
                if not pin_fallback or device.type != "cuda":
                    raise
                setattr(out, key, t.pin_memory())
        return out


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim == 4:
        axes = (0, 2, 3)
        scale = 255.0
    else:
        axes = (0,)
        scale = 1.0
    xf = x.astype(np.float64) / scale
    mean = xf.mean(axis=axes)
    std = xf.std(axis=axes)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def prepare_dataset(
    raw: RawDataset,
    *,
    profile: str = "exp",
    ratio: float = 100.0,
    n_max: int | None = None,
    counts: Sequence[int] | None = None,
    data_seed: int = 0,
    class_order: Sequence[int] | None = None,
    crop_padding: int | None = None,
    hflip: bool | None = None,
) -> LongTailData:
    """Cut a raw dataset to a long-tailed profile (DESIGN section 1) and wrap it as tensors.

    Parameters
    ----------
    profile:
        ``exp``, ``step``, ``counts`` (explicit ``counts``), ``original`` (keep the
        source's training set as it is), or a named profile from
        :data:`~tailmix.data.profiles.NAMED_PROFILES`, which fixes ``n_max`` and
        ``class_order``.
    ratio:
        Imbalance ratio n_max / n_min for ``exp`` and ``step``.
    n_max:
        Images of the largest class; default the largest class in the source.
    class_order:
        A permutation of the classes: class ``class_order[c]`` of the source becomes class c
        (so profiles can put any class at the head or tail).
    crop_padding, hflip:
        Augmentation; defaults: padding H / 8 for images (4 for 32x32), flip where the
        source allows it.
    """
    check_choice("profile", profile, PREPARE_PROFILES)
    if profile in NAMED_PROFILES:
        named = NAMED_PROFILES[profile]
        profile, n_max, class_order = named["profile"], named["n_max"], named["class_order"]
    data_seed = check_number("data_seed", data_seed, low=0, integer=True)
    c = raw.num_classes
    train_x, train_y, test_x, test_y = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    classes = list(raw.classes)
    for key, y in (("train labels", train_y), ("test labels", test_y)):
        if len(y) and (y.min() < 0 or y.max() >= c):
            raise ParameterError(key, f"labels in 0..{c - 1}", f"labels in {y.min()}..{y.max()}")
    if class_order is not None:
        order = [int(k) for k in class_order]
        if sorted(order) != list(range(c)):
            raise ParameterError("class_order", f"a permutation of 0..{c - 1}", class_order)
        inverse = np.empty(c, dtype=np.int64)
        inverse[order] = np.arange(c)
        train_y, test_y = inverse[train_y], inverse[test_y]
        classes = [classes[k] for k in order]
    available = np.bincount(train_y, minlength=c)
    empty = np.flatnonzero(available == 0)
    if len(empty):
        raise ParameterError("dataset", "at least one training image in every class",
                             f"no images for class {classes[empty[0]]!r}")
    if profile == "original":
        keep = np.arange(len(train_y))
        counts_out = available.tolist()
    else:
        if n_max is None:
            n_max = int(available.max())
        counts_out = profile_counts(profile, num_classes=c, n_max=n_max, ratio=ratio,
                                    counts=counts)
        short = [k for k in range(c) if counts_out[k] > available[k]]
        if short:
            k = short[0]
            raise ParameterError(
                "dataset.profile",
                f"at most {available[k]} images for class {classes[k]!r} (what the source has)",
                f"{counts_out[k]} from profile {profile!r}",
            )
        keep = subsample_indices(train_y, counts_out, seed=data_seed)
    train_x, train_y = train_x[keep], train_y[keep]
    mean, std = _channel_stats(train_x)
    is_image = train_x.ndim == 4
    if crop_padding is None:
        crop_padding = max(1, train_x.shape[2] // 8) if is_image else 0
    augment = BatchAugment(
        mean=torch.from_numpy(mean), std=torch.from_numpy(std),
        crop_padding=crop_padding if is_image else 0,
        hflip=(raw.hflip if hflip is None else hflip) and is_image,
    )
    return LongTailData(
        train_inputs=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_labels=torch.from_numpy(train_y.astype(np.int64)),
        test_inputs=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(test_y.astype(np.int64)),
        class_counts=[int(n) for n in counts_out],
        classes=classes,
        augment=augment,
        name=raw.name,
        source_indices=keep,
    )
