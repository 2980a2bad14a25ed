"""Where raw datasets come from: a name and options in, a :class:`RawDataset` out.

A source is a loader registered in :data:`tailmix.registry.DATASETS`, called as
``loader(root=..., download=..., **options)``. Its metadata: ``needs_root`` (whether it reads
a folder or file the user gives; :func:`load_source` then checks ``root`` and passes it as an
expanded :class:`~pathlib.Path`), ``reads_root`` (False for a source that reads no files:
``--data-root`` given for it is refused rather than ignored), ``config`` (the packaged
config a bare ``--dataset NAME`` starts from, or None), ``inputs`` (``"image"`` when the
source holds images) and ``sizes`` (``(classes, images in the largest training class)``
of the released data, or None when unknown), ``streams`` (True when the source can list
files to be decoded while training: it is then called with ``in_memory`` - True, False or
``"auto"`` - and ``max_side`` where the network takes smaller images, and may return a
:class:`~tailmix.data.files.FileDataset`), ``decodes`` (True when the source decodes
image files itself: it is then called with ``bad_images`` and ``max_pixels``, see
:func:`~tailmix.data.imagefolder.read_imagefolder`) and ``profile`` (the ``dataset.profile``
a config that names none gets: ``"original"`` for a user's own data and for releases that
are long-tailed already, whose training images are used as they are; ``"exp"`` when
absent). Beyond those, a source may say ``image_size`` (the side of its images, known
without reading them), ``options`` (the ``dataset.options`` keys it takes, where its
signature takes ``**options``), ``readers`` (the ``(module, function)`` of the readers it
calls: their keyword-only parameters, less those it passes itself, are its options) and
``eval_splits`` (the splits its ``eval_split`` option may name)::

    @DATASETS.register("my_data", needs_root=True, config=None, sizes=(5, 800))
    def my_data(*, root=None, download=False, **options):
        return from_arrays(...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tailmix._validation import ParameterError
from tailmix.data.base import RawDataset
from tailmix.data.files import MAX_PIXELS
from tailmix.registry import DATASETS


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
    train_x: Any, train_y: Any, test_x: Any = None, test_y: Any = None, *,
    classes: list[str] | None = None, name: str = "arrays", hflip: bool = True,
) -> RawDataset:
    """Wrap in-memory numpy arrays or torch tensors as a :class:`RawDataset`.

    Images are uint8 (N, C, H, W) (or (N, H, W) for one channel); feature vectors are
    (N, D) and stored as float32. Labels must be integers in ``0..C-1``. Without
    ``test_x`` and ``test_y`` the data has no test set (``test_split`` False): a run on it
    evaluates nothing but its validation split, if it has one.

    Raises
    ------
    ParameterError
        Naming the array, for a wrong shape or type, labels out of range (without
        ``classes``: a training label not below the number of training examples), or feature
        vectors that are not all finite after the conversion to float32 (NaN, inf, or beyond
        float32's +-3.4e38): the message counts them and gives the first row.
    """
    if (test_x is None) != (test_y is None):
        given, missing = ("test_x", "test_y") if test_y is None else ("test_y", "test_x")
        raise ParameterError(missing, f"an array beside {given} (or neither, for data "
                             "without a test set)", None)
    test_split = test_x is not None
    if not test_split:  # no test set: empty arrays of the training inputs' kind
        first = train_x.detach().cpu().numpy() if hasattr(train_x, "detach") else train_x
        first = np.asarray(first)
        test_x, test_y = first[:0], np.zeros(0, dtype=np.int64)
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
            a = _finite_features(key, a)
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
    num_classes = len(classes) if classes else int(arrays["train_y"].max(initial=-1)) + 1
    if not classes and num_classes > len(arrays["train_y"]):  # before sizing anything by it
        raise ParameterError(
            "train_y", f"labels below {len(arrays['train_y'])}, the number of training "
            "examples, when no classes are given (labels 0..L make L + 1 classes, each of "
            "which needs a training example)", f"the label {num_classes - 1}")
    for key in ("train_y", "test_y"):
        y = arrays[key]
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ParameterError(key, f"labels in 0..{num_classes - 1}",
                                 f"labels in {y.min()}..{y.max()}")
    return RawDataset(**arrays, classes=classes or [str(c) for c in range(num_classes)],
                      name=name, hflip=hflip, test_split=test_split)


def _finite_features(key: str, a: np.ndarray) -> np.ndarray:
    """``a`` as float32 feature vectors, all finite; else a ParameterError naming ``key``."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            out = a.astype(np.float32)
    except (TypeError, ValueError):
        raise ParameterError(key, "numeric feature vectors (N, D)", f"dtype {a.dtype}") from None
    finite = np.isfinite(out)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise ParameterError(
            key, "finite feature vectors (no NaN or inf, and within float32's +-3.4e38)",
            f"{bad} non-finite value{'s' if bad > 1 else ''}, the first in row {row} "
            f"(column {col}: {a[row, col].item()!r})")
    return out


def load_source(name: str, *, root: str | Path | None = None, download: bool = False,
                bad_images: str = "refuse", max_pixels: int | None = MAX_PIXELS,
                max_side: int | None = None, **options: Any) -> RawDataset:
    """Read the dataset ``name`` (registered in :data:`tailmix.registry.DATASETS`).

    Parameters
    ----------
    name : str
        The source; built in: ``"digits"``, ``"cifar10"``, ``"cifar100"``,
        ``"imagefolder"``, ``"svhn"``, ``"cinic10"``, ``"tiny_imagenet"``, ``"arrays"``.
    root : str or Path, optional
        The folder or file to read, required by a source whose ``needs_root`` metadata is
        true; it must exist unless ``download``.
    download : bool, default False
        Let a source that can (CIFAR, SVHN) fetch missing files into ``root``.
    bad_images : {"refuse", "skip"}, default "refuse"
        For a source that decodes image files itself (``decodes`` metadata): refuse an image
        that cannot be read, or leave it out (listed in the result's ``skipped``).
    max_pixels : int or None, default :data:`~tailmix.data.files.MAX_PIXELS`
        For such a source: the most pixels an image may have, checked before decoding
        (0 or None: no limit).
    max_side : int, optional
        For a source that can list its files (``streams`` metadata): images larger than
        this on the first one's shorter side come as files, to be decoded smaller.
    **options
        The source's own options (e.g. ``train_split`` for ``"imagefolder"``).

    Returns
    -------
    RawDataset

    Raises
    ------
    ParameterError
        For an unknown source (naming ``dataset``) or a missing ``root`` (naming
        ``data_root``), and whatever the source's reader raises.
    """
    loader = DATASETS.get(name, "dataset")
    if not DATASETS.meta(name).get("streams"):
        options.pop("in_memory", None)
    elif max_side is not None:
        options["max_side"] = max_side
    if DATASETS.meta(name).get("decodes"):
        options.update(bad_images=bad_images, max_pixels=max_pixels)
    if DATASETS.meta(name).get("needs_root"):
        if root is None:
            raise ParameterError("data_root", f"a folder or file holding {name!r}", None)
        root = Path(root).expanduser()
        if not root.exists() and not download:
            raise ParameterError("data_root", "an existing folder or file", str(root))
    return loader(root=root, download=download, **options)


# --- the built-in sources, in the order they are listed ------------------------------------
# Each reads what load_source always passed it (the digits ignore root and options, SVHN and
# the CIFAR release reader ignore options).

# An image-folder copy of CIFAR has its own train/ and test/ folders: the image-folder
# reader's options for a held-out split (test_share, split_seed) do not apply.
_CIFAR_OPTIONS = ("train_split", "test_split", "cache_dir")
_CIFAR_READERS = (("tailmix.data.cifar", "read_cifar"),
                  ("tailmix.data.imagefolder", "read_imagefolder"))


@DATASETS.register("digits", inputs="image", needs_root=False, reads_root=False,
                   config="digits", sizes=(10, 133), image_size=8, readers=())
def _digits(*, root: Any = None, download: bool = False, **options: Any) -> RawDataset:
    return load_digits_dataset()


def _cifar(
    name: str, root: str | Path | None, download: bool, options: dict[str, Any]
) -> RawDataset:
    from tailmix.data.cifar import read_cifar

    if root is None:
        raise ParameterError("data_root", f"a folder or file holding {name!r}", None)
    root = Path(root)
    folder_copy = root.is_dir() and (root / "train").is_dir() and (root / "test").is_dir()
    if folder_copy or (root.is_file() and root.suffix == ".zip"):  # image-folder copy
        from tailmix.data.imagefolder import read_imagefolder

        raw = read_imagefolder(root, **options)
        raw.name = name
        return raw
    return read_cifar(root, num_classes=10 if name == "cifar10" else 100, download=download)


@DATASETS.register("cifar10", inputs="image", needs_root=True, config="cifar10_lt",
                   sizes=(10, 5000), streams=True, decodes=True, image_size=32,
                   readers=_CIFAR_READERS, options=_CIFAR_OPTIONS)
def _cifar10(
    *, root: str | Path | None = None, download: bool = False, **options: Any
) -> RawDataset:
    return _cifar("cifar10", root, download, options)


@DATASETS.register("cifar100", inputs="image", needs_root=True, config="cifar100_lt",
                   sizes=(100, 500), streams=True, decodes=True, image_size=32,
                   readers=_CIFAR_READERS, options=_CIFAR_OPTIONS)
def _cifar100(
    *, root: str | Path | None = None, download: bool = False, **options: Any
) -> RawDataset:
    return _cifar("cifar100", root, download, options)


@DATASETS.register("imagefolder", inputs="image", needs_root=True, config=None, sizes=None,
                   streams=True, decodes=True, profile="original",
                   readers=(("tailmix.data.imagefolder", "read_imagefolder"),))
def _imagefolder(
    *, root: str | Path | None = None, download: bool = False, **options: Any
) -> RawDataset:
    from tailmix.data.imagefolder import read_imagefolder

    return read_imagefolder(root, **options)


# SVHN's official training split: digit 1 is the largest class (13,861 of 73,257 images).
@DATASETS.register("svhn", inputs="image", needs_root=True, config="svhn_lt", sizes=(10, 13861),
                   image_size=32, readers=(("tailmix.data.svhn", "read_svhn"),))
def _svhn(
    *, root: str | Path | None = None, download: bool = False, **options: Any
) -> RawDataset:
    from tailmix.data.svhn import read_svhn

    return read_svhn(root, download=download)


@DATASETS.register("cinic10", inputs="image", needs_root=True, config="cinic10_lt",
                   sizes=(10, 9000), decodes=True, image_size=32,
                   readers=(("tailmix.data.imagefolder", "read_cinic10"),),
                   eval_splits=("test", "valid"))
def _cinic10(
    *, root: str | Path | None = None, download: bool = False, **options: Any
) -> RawDataset:
    from tailmix.data.imagefolder import read_cinic10

    return read_cinic10(root, **options)


@DATASETS.register("tiny_imagenet", inputs="image", needs_root=True, config="tiny_imagenet_lt",
                   sizes=(200, 500), decodes=True, image_size=64,
                   readers=(("tailmix.data.tinyimagenet", "read_tiny_imagenet"),))
def _tiny_imagenet(
    *, root: str | Path | None = None, download: bool = False, **options: Any
) -> RawDataset:
    from tailmix.data.tinyimagenet import read_tiny_imagenet

    return read_tiny_imagenet(root, **options)


@DATASETS.register("arrays", needs_root=False, reads_root=False, config=None, sizes=None,
                   profile="original", readers=())
def _arrays(*, root: Any = None, download: bool = False, **options: Any) -> RawDataset:
    raise ParameterError("dataset", "data passed in from Python for the 'arrays' source "
                         "(train(config, out, data=from_arrays(...)))", "no data")


#: Deprecated aliases, to be removed: the registry, and the built-in sources that read a root
#: (a snapshot taken at import; read ``DATASETS.meta(name)["needs_root"]`` instead).
SOURCES = DATASETS
