"""A long-tailed dataset ready for training: tensors, class counts, and its augmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tailmix._validation import ParameterError, check_choice, check_number, check_permutation
from tailmix.data.augment import BatchAugment
from tailmix.data.base import RawDataset
from tailmix.data.download import DatasetError
from tailmix.data.files import MAX_PIXELS, FileDataset, ImageFiles, default_workers
from tailmix.data.profiles import (
    NAMED_PROFILES,
    numpy_shuffle_indices,
    subsample_indices,
    subset_digest,
)
from tailmix.data.profiles import class_counts as profile_counts

PREPARE_PROFILES = ("exp", "step", "counts", "original", *NAMED_PROFILES)


@dataclass
class LongTailData:
    """Training and test tensors with the class counts that losses, samplers and mixers read.

    Images are one ``uint8`` tensor (N, C, H, W), or an :class:`~tailmix.data.files.ImageFiles`
    that decodes them from disk when used (``streaming``); feature vectors one ``float32``
    tensor (N, D). ``augment`` turns a raw batch into normalised network inputs.
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
    val_inputs: Any = field(default=None, repr=False)
    val_labels: torch.Tensor | None = field(default=None, repr=False)
    #: How images read from files were decoded: ``{"image_size", "resize"}`` (the
    #: evaluation transform) when they were decoded into memory, else None.
    decoded: dict[str, int] | None = field(default=None, repr=False)
    #: Image files left out as unusable before training (``dataset.bad_images: skip``),
    #: each as its path and why.
    skipped_files: list[str] = field(default_factory=list, repr=False)

    @property
    def skipped_images(self) -> int:
        """Image files left out as unusable: before training, and those a streamed split
        has met so far (in this process)."""
        met: set[str] = set()
        for t in (self.train_inputs, self.test_inputs, self.val_inputs):
            if isinstance(t, ImageFiles):
                met.update(t.skipped)
        return len(self.skipped_files) + len(met)

    def usable_training_set(self) -> tuple[Any, torch.Tensor]:
        """The training inputs and labels, less the files a streamed training split has met
        unusable so far (``bad_images: skip``): what a pass over every training image
        reads."""
        x = self.train_inputs
        if not isinstance(x, ImageFiles) or not x.skipped:
            return x, self.train_labels
        keep = [i for i, n in enumerate(x.names) if x.reader.where(n) not in x.skipped]
        index = torch.as_tensor(keep, dtype=torch.long, device=self.train_labels.device)
        return x.subset(keep), self.train_labels[index]

    @property
    def subset_sha256(self) -> str | None:
        """SHA-256 of the source indices of the training images kept (see
        :func:`~tailmix.data.profiles.subset_digest`)."""
        return None if self.source_indices is None else subset_digest(self.source_indices)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def imbalance_ratio(self) -> float:
        """Training images of the largest class over those of the smallest."""
        return max(self.class_counts) / min(self.class_counts)

    @property
    def has_test(self) -> bool:
        """Whether there is a test set to evaluate (data from
        :func:`~tailmix.data.from_arrays` may come without one)."""
        return len(self.test_labels) > 0

    def describe(self) -> str:
        """One line on what trains: the classes, their counts (largest and smallest where
        there are many) and the imbalance ratio."""
        counts = self.class_counts
        shown = (" ".join(str(n) for n in counts) if len(counts) <= 20
                 else f"{max(counts)} down to {min(counts)}")
        return (f"data: {self.name}, {len(counts)} classes, {sum(counts)} training images "
                f"({shown} a class), imbalance ratio {self.imbalance_ratio:.4g}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_inputs.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train_inputs.dim() == 4

    @property
    def streaming(self) -> bool:
        """Whether images are decoded from files while training (not held in memory)."""
        return isinstance(self.train_inputs, ImageFiles)

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
        if self.val_labels is not None:
            out.val_labels = self.val_labels.to(device)
        for key in ("train_inputs", "test_inputs", "val_inputs"):
            t = getattr(self, key)
            if t is None:
                continue
            if isinstance(t, ImageFiles):
                setattr(out, key, t.to(device))
                continue
            try:
                setattr(out, key, t.to(device))
            except torch.OutOfMemoryError:
                if not pin_fallback or device.type != "cuda":
                    raise
                setattr(out, key, t.pin_memory())
        return out


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (images in [0, 1], vectors as they are).

    ``uint8`` images are summed exactly in integers a chunk at a time, so memory stays at
    one chunk whatever the dataset's size (a float64 copy of 20,000 images of 96x96 is
    4.4 GB).
    """
    if x.ndim == 4 and x.dtype == np.uint8:
        n = x.shape[0] * x.shape[2] * x.shape[3]
        sums = np.zeros(x.shape[1], np.int64)
        squares = np.zeros(x.shape[1], np.int64)
        for s in range(0, len(x), 1024):
            chunk = x[s:s + 1024].astype(np.int64)
            sums += chunk.sum(axis=(0, 2, 3))
            squares += (chunk * chunk).sum(axis=(0, 2, 3))
        # Exact integers until the last division: n * sum(x^2) - sum(x)^2 = n^2 var.
        mean = np.array([int(a) / (n * 255) for a in sums])
        std = np.array([math.sqrt(n * int(b) - int(a) * int(a)) / (n * 255)
                        for a, b in zip(sums, squares, strict=True)])
    else:
        axes = (0, 2, 3) if x.ndim == 4 else (0,)
        scale = 255.0 if x.ndim == 4 else 1.0
        xf = x.astype(np.float64) / scale
        mean, std = xf.mean(axis=axes), xf.std(axis=axes)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def prepare_dataset(
    raw: RawDataset | FileDataset,
    *,
    profile: str = "exp",
    ratio: float = 100.0,
    n_max: int | None = None,
    counts: Sequence[int] | None = None,
    data_seed: int = 0,
    class_order: Sequence[int] | None = None,
    crop_padding: int | None = None,
    hflip: bool | None = None,
    image_size: int | None = None,
    resize: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    workers: int | None = None,
    bad_images: str = "refuse",
    max_pixels: int | None = MAX_PIXELS,
    validation: dict[str, Any] | None = None,
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
        Images of the largest class; default the most the source can give it: its largest
        class, lowered until every class holds what the profile asks of it.
    class_order:
        A permutation of the classes: class ``class_order[c]`` of the source becomes class c
        (so profiles can put any class at the head or tail).
    crop_padding, hflip:
        Augmentation; defaults: padding H / 8 for images (4 for 32x32; 0 for images streamed
        from files, which get a random-resized crop instead), flip where the source allows it.
    mean, std:
        Per-channel normalisation (a pretrained backbone's); default the training set's own
        statistics (for streamed images, estimated from up to 512 of them).
    image_size, resize, workers, bad_images, max_pixels:
        For a :class:`~tailmix.data.files.FileDataset` (streamed): the side of the decoded
        square (default the first training image's shorter side), the evaluation resize
        before the centre crop, the decoding worker processes, what to do with a file
        that cannot be decoded (``refuse`` or ``skip``: left out of its training batch, and
        of the channel statistics) and the most pixels an image may have (0 or None: no
        limit).
    validation:
        A held-out validation set carved out of the training pool *before* the long-tailed
        cut (seeded by ``data_seed``): ``{"per_class": n}`` takes n images of every class
        (balanced), ``{"share": s}`` takes round(s * n_c) (at least one) of each class c,
        following the profile. The profile then cuts what is left.

    Raises
    ------
    ParameterError
        Before any training: naming ``dataset`` for a source of fewer than two classes or
        with an empty test set; ``dataset.crop_padding`` for padding of at least the
        images' side (a crop could hold no image); and the profile's own errors.
    """
    check_choice("profile", profile, PREPARE_PROFILES)
    selection = "torch"
    if profile in NAMED_PROFILES:
        named = NAMED_PROFILES[profile]
        profile, n_max, class_order = named["profile"], named["n_max"], named["class_order"]
        selection = named.get("selection", "torch")
    data_seed = check_number("data_seed", data_seed, low=0, integer=True)
    c = raw.num_classes
    files = isinstance(raw, FileDataset)
    if files:
        train_x, test_x = None, None
        train_y, test_y = np.asarray(raw.train_y), np.asarray(raw.test_y)
    else:
        train_x, train_y, test_x, test_y = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    classes = list(raw.classes)
    if c < 2:
        raise ParameterError("dataset", "at least two classes (a classifier cannot learn "
                             "from one)", f"{raw.name!r} with {c} class: {classes}")
    if len(test_y) == 0 and getattr(raw, "test_split", True):
        raise ParameterError("dataset", "a test set of at least one image",
                             f"{raw.name!r} with an empty test set")
    for key, y in (("train labels", train_y), ("test labels", test_y)):
        if len(y) and (y.min() < 0 or y.max() >= c):
            raise ParameterError(key, f"labels in 0..{c - 1}", f"labels in {y.min()}..{y.max()}")
    if class_order is not None:
        order = check_permutation("class_order", np.asarray(class_order).tolist(), c)
        inverse = np.empty(c, dtype=np.int64)
        inverse[order] = np.arange(c)
        train_y, test_y = inverse[train_y], inverse[test_y]
        classes = [classes[k] for k in order]
    available = np.bincount(train_y, minlength=c)
    empty = np.flatnonzero(available == 0)
    if len(empty):
        raise ParameterError("dataset", "at least one training image in every class",
                             f"no images for class {classes[empty[0]]!r}")
    val_idx = None
    pool = np.arange(len(train_y))
    if validation is not None:
        if "share" in validation and profile == "original":  # a share of every class
            want = [max(1, round(validation["share"] * n)) for n in available]
            short = [k for k in range(c) if want[k] >= available[k]]
            if short:
                k = short[0]
                raise ParameterError(
                    "dataset.validation.share", f"a share that leaves class "
                    f"{classes[k]!r} a training image (it has {available[k]})",
                    validation["share"])
        elif "share" in validation:  # following the profile: counts of the whole pool first
            counts_all = _profile(profile, available, n_max, ratio, counts, classes)
            want = [max(1, round(validation["share"] * n)) for n in counts_all]
            over = [k for k in range(c) if counts_all[k] + want[k] > available[k]]
            if over:
                k = over[0]
                raise ParameterError(
                    "dataset.validation", f"a share that leaves class {classes[k]!r} its "
                    f"{counts_all[k]} training images (it has {available[k]}; lower "
                    "dataset.n_max or the share)", validation)
        else:
            want = [int(validation["per_class"])] * c
            short = [k for k in range(c) if want[k] >= available[k]]
            if short:
                k = short[0]
                raise ParameterError(
                    "dataset.validation.per_class", f"fewer than the {available[k]} images "
                    f"of class {classes[k]!r}", want[k])
        val_idx = _carve(train_y, want, seed=data_seed)
        pool = np.setdiff1d(pool, val_idx, assume_unique=True)
        available = np.bincount(train_y[pool], minlength=c)
    if profile == "original":
        keep = pool
        counts_out = available.tolist()
    else:
        counts_out = _profile(profile, available, n_max, ratio, counts, classes,
                              held_out=val_idx is not None)
        choose = numpy_shuffle_indices if selection == "numpy_shuffle" else subsample_indices
        keep = pool[choose(train_y[pool], counts_out, seed=data_seed)]
    if files:
        data = _file_data(raw, keep, train_y[keep], test_y, counts_out, classes,
                          crop_padding=crop_padding, hflip=hflip, image_size=image_size,
                          resize=resize, mean=mean, std=std, workers=workers,
                          bad_images=bad_images, max_pixels=max_pixels)
        if val_idx is not None:
            data.val_inputs = data.train_inputs.subset_names(
                [raw.train_files[int(i)] for i in val_idx])
            data.val_labels = torch.from_numpy(train_y[val_idx].astype(np.int64))
        return data
    if val_idx is not None:
        val_x, val_y = train_x[val_idx], train_y[val_idx]
    train_x, train_y = train_x[keep], train_y[keep]
    if mean is None or std is None:
        mean, std = _channel_stats(train_x)
    is_image = train_x.ndim == 4
    if crop_padding is None:
        crop_padding = max(1, train_x.shape[2] // 8) if is_image else 0
    elif is_image:
        _check_crop_padding(crop_padding, min(train_x.shape[2:]), raw.name)
    augment = BatchAugment(
        mean=torch.as_tensor(mean, dtype=torch.float32),
        std=torch.as_tensor(std, dtype=torch.float32),
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
        val_inputs=None if val_idx is None else torch.from_numpy(np.ascontiguousarray(val_x)),
        val_labels=None if val_idx is None else torch.from_numpy(val_y.astype(np.int64)),
        skipped_files=list(getattr(raw, "skipped", ())),
    )


def _check_crop_padding(padding: int, side: int, name: str) -> None:
    """Padding of at least the image's side lets a random crop hold no image at all."""
    padding = check_number("dataset.crop_padding", padding, low=0, integer=True)
    if padding >= side:
        raise ParameterError("dataset.crop_padding", f"smaller than the {side}-pixel side of "
                             f"the {name!r} images", padding)


def _profile(profile: str, available: np.ndarray, n_max: int | None, ratio: float,
             counts: Sequence[int] | None, classes: list[str], *,
             held_out: bool = False) -> list[int]:
    """A profile's counts over a pool with ``available`` images per class."""
    c = len(available)

    def cut(head: int) -> list[int]:
        return profile_counts(profile, num_classes=c, n_max=head, ratio=ratio, counts=counts)

    if n_max is None:  # the largest head count the pool can honour in this class order
        n_max = int(available.max())
        while n_max > 1 and _first_short(cut(n_max), available) is not None:
            n_max -= 1
    out = cut(n_max)
    k = _first_short(out, available)
    if k is not None:
        where = " after the validation images" if held_out else ""
        raise ParameterError(
            "dataset.profile",
            f"at most {available[k]} images for class {classes[k]!r} (what the source "
            f"has{where})", f"{out[k]} from profile {profile!r}",
        )
    return out


def _first_short(counts: Sequence[int], available: np.ndarray) -> int | None:
    """The first class the pool holds fewer images of than ``counts`` asks (None: none)."""
    return next((k for k, (n, a) in enumerate(zip(counts, available, strict=True)) if n > a),
                None)


def _carve(labels: np.ndarray, want: Sequence[int], *, seed: int) -> np.ndarray:
    """``want[c]`` seeded indices of each class c (its own stream of the data seed),
    sorted."""
    from tailmix.seeding import numpy_generator

    rng = numpy_generator(seed, "validation")
    picks = [rng.choice(np.flatnonzero(labels == k), size=n, replace=False)
             for k, n in enumerate(want)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def _file_data(raw: FileDataset, keep: np.ndarray, train_y: np.ndarray, test_y: np.ndarray,
               counts: Sequence[int], classes: list[str], *, crop_padding: int | None,
               hflip: bool | None, image_size: int | None, resize: int | None,
               mean: Sequence[float] | None, std: Sequence[float] | None,
               workers: int | None, bad_images: str, max_pixels: int | None
               ) -> LongTailData:
    """Long-tailed data whose images stream from ``raw``'s files."""
    from tailmix.data.files import first_size

    if image_size is None:
        image_size = min(first_size(raw, bad_images=bad_images, max_pixels=max_pixels))
    if crop_padding:
        _check_crop_padding(crop_padding, int(image_size), raw.name)
    kw = dict(size=int(image_size), resize=resize, bad_images=bad_images,
              max_pixels=max_pixels,
              workers=default_workers() if workers is None else int(workers))
    reader = raw.reader
    train = ImageFiles(reader, [raw.train_files[int(i)] for i in keep], **kw)
    test = ImageFiles(reader, list(raw.test_files), **kw)
    if mean is None or std is None:
        # Channel statistics of a seeded sample of the training images (evaluation crop);
        # a file that does not decode is left out of them as it is of its batches.
        from tailmix.seeding import numpy_generator

        pick = numpy_generator(0, "statistics").permutation(len(train))[:512]
        parts = []
        for x, _, failed in train.subset(np.sort(pick)).decoded(128):
            train.note_failed(failed)
            if len(x):
                parts.append(x.numpy())
        if not parts:
            raise DatasetError(f"None of the {len(pick)} training images sampled for the "
                               "channel statistics decodes; see the messages above.")
        est_mean, est_std = _channel_stats(np.concatenate(parts))
        mean = est_mean if mean is None else mean
        std = est_std if std is None else std
    augment = BatchAugment(
        mean=torch.as_tensor(mean, dtype=torch.float32),
        std=torch.as_tensor(std, dtype=torch.float32),
        crop_padding=crop_padding or 0, hflip=raw.hflip if hflip is None else hflip)
    return LongTailData(
        train_inputs=train, train_labels=torch.from_numpy(train_y.astype(np.int64)),
        test_inputs=test, test_labels=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        class_counts=[int(n) for n in counts], classes=classes, augment=augment,
        name=raw.name, source_indices=keep, skipped_files=list(raw.skipped))
