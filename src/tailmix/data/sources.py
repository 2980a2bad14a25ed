"""Where raw datasets come from: a name and options in, a :class:`RawDataset` out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tailmix._validation import ParameterError, check_choice
from tailmix.data.base import RawDataset

SOURCES = ("digits", "cifar10", "cifar100", "imagefolder", "svhn", "cinic10", "tiny_imagenet",
           "arrays")
# Sources that read from a root folder or file the user gives.
NEEDS_ROOT = ("cifar10", "cifar100", "imagefolder", "svhn", "cinic10", "tiny_imagenet")


def load_digits_dataset(*, test_per_class: int = 50, seed: int = 0) -> RawDataset:
    """scikit-learn's 8x8 digits (1,797 images) as uint8 (N, 1, 8, 8), split per class.

    ``test_per_class`` images of each class (a seeded choice) form a balanced test set; the
    rest is the training pool (124 to 133 images a class), to be made long-tailed by a profile.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_mask[rng.choice(idx, size=test_per_class, replace=False)] = True
    return RawDataset(
        train_x=x[~test_mask], train_y=y[~test_mask], test_x=x[test_mask], test_y=y[test_mask],
        classes=[str(c) for c in range(10)], name="digits", hflip=False,
    )


def from_arrays(
    train_x: Any, train_y: Any, test_x: Any, test_y: Any, *,
    classes: list[str] | None = None, name: str = "arrays", hflip: bool = True,
) -> RawDataset:
    """Wrap in-memory numpy arrays or torch tensors as a :class:`RawDataset`.

    Images are uint8 (N, C, H, W) (or (N, H, W) for one channel); feature vectors are
    (N, D) and stored as float32. Labels must be integers in ``0..C-1``.
    """
    arrays = {}
    for key, value in (("train_x", train_x), ("test_x", test_x), ("train_y", train_y),
                       ("test_y", test_y)):
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arrays[key] = np.asarray(value)
    for key in ("train_x", "test_x"):
        a = arrays[key]
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim == 4:
            if a.dtype != np.uint8:
                raise ParameterError(key, "uint8 images (N, C, H, W)", f"dtype {a.dtype}")
        elif a.ndim == 2:
            a = a.astype(np.float32)
        else:
            raise ParameterError(key, "an array of shape (N, C, H, W) or (N, D)", a.shape)
        arrays[key] = a
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise ParameterError("test_x", f"inputs of shape {arrays['train_x'].shape[1:]}",
                             arrays["test_x"].shape[1:])
    for key in ("train_y", "test_y"):
        y = arrays[key]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ParameterError(key, "a 1-D array of integer labels", f"{y.dtype} {y.shape}")
        if len(y) != len(arrays[key.replace("_y", "_x")]):
            raise ParameterError(key, f"{len(arrays[key.replace('_y', '_x')])} labels", len(y))
        arrays[key] = y.astype(np.int64)
    num_classes = len(classes) if classes else int(arrays["train_y"].max()) + 1
    for key in ("train_y", "test_y"):
        y = arrays[key]
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ParameterError(key, f"labels in 0..{num_classes - 1}",
                                 f"labels in {y.min()}..{y.max()}")
    return RawDataset(**arrays, classes=classes or [str(c) for c in range(num_classes)],
                      name=name, hflip=hflip)


def load_source(name: str, *, root: str | Path | None = None, download: bool = False,
                **options: Any) -> RawDataset:
    """Read the dataset ``name`` (one of :data:`SOURCES`) from ``root``."""
    check_choice("dataset", name, SOURCES)
    if name == "digits":
        return load_digits_dataset()
    if name == "arrays":
        raise ParameterError("dataset", "data passed in from Python for the 'arrays' source "
                             "(train(config, out, data=from_arrays(...)))", "no data")
    if root is None:
        raise ParameterError("data_root", f"a folder or file holding {name!r}", None)
    root = Path(root).expanduser()
    if not root.exists() and not download:
        raise ParameterError("data_root", "an existing folder or file", str(root))
    if name in ("cifar10", "cifar100"):
        from tailmix.data.cifar import read_cifar

        folder_copy = root.is_dir() and (root / "train").is_dir() and (root / "test").is_dir()
        if folder_copy or (root.is_file() and root.suffix == ".zip"):  # image-folder copy
            from tailmix.data.imagefolder import read_imagefolder

            raw = read_imagefolder(root, **options)
            raw.name = name
            return raw
        return read_cifar(root, num_classes=10 if name == "cifar10" else 100,
                          download=download)
    if name == "imagefolder":
        from tailmix.data.imagefolder import read_imagefolder

        return read_imagefolder(root, **options)
    if name == "cinic10":
        from tailmix.data.imagefolder import read_cinic10

        return read_cinic10(root, **options)
    if name == "svhn":
        from tailmix.data.svhn import read_svhn

        return read_svhn(root, download=download)
    from tailmix.data.tinyimagenet import read_tiny_imagenet

    return read_tiny_imagenet(root, **options)
