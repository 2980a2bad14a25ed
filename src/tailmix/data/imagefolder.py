"""Image datasets stored as files: ``SPLIT/CLASS/IMAGE`` or ``CLASS/IMAGE`` folders or zips,
and CINIC-10.

A ``CLASS/IMAGE`` folder (no split folders, the commonest layout of a user's own images)
has its test set held out: a seeded share of each class (:func:`held_out_split`), the same
on every machine and in every run with the same ``split_seed``.

Images are decoded once with Pillow to RGB ``uint8`` and the result is cached as a
compressed ``.npz`` keyed by a fingerprint of the source, so later reads take a fraction of a
second. The cache folder is the ``cache_dir`` argument, else the ``TAILMIX_CACHE`` environment
variable, else ``~/.cache/tailmix``.

A zip is fingerprinted from its central directory (every member's name, size and CRC-32),
which changes whenever a member's content does and costs no decompression; a folder from the
relative paths, sizes and modification times of the images read.

Nearly 700 lines on purpose: the layouts (folders, zips, CINIC-10), their one-line errors
and the cache are one reader's parts, kept together so that a layout and its errors change
in one place.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.data.base import RawDataset
from tailmix.data.download import DatasetError, DatasetNotFoundError
from tailmix.data.files import (
    MAX_PIXELS,
    FileDataset,
    check_decoding,
    first_size,
    open_image,
    pixels_problem,
    stream_or_memory,
)

__all__ = [
    "DEFAULT_TEST_SHARE",
    "IMAGE_EXTENSIONS",
    "TEST_FOLDER_NAMES",
    "ImagePlan",
    "ImageSource",
    "build_dataset",
    "check_reader_options",
    "class_folder_members",
    "decode_images",
    "default_cache_dir",
    "find_layout",
    "no_layout_message",
    "held_out_split",
    "is_image_name",
    "read_cinic10",
    "read_imagefolder",
    "test_folder",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
"""File name endings (compared case-insensitively) that are read as images."""

DEFAULT_TEST_SHARE = 0.2
"""The share of each class held out as the test set of a ``CLASS/IMAGE`` folder."""

_CACHE_VERSION = 1
_CHUNK = 256


def default_cache_dir() -> Path:
    """The folder for decoded-image caches: ``$TAILMIX_CACHE`` or ``~/.cache/tailmix``."""
    return Path(os.environ.get("TAILMIX_CACHE") or "~/.cache/tailmix").expanduser()


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _ignored(parts: Sequence[str]) -> bool:
    """Hidden files and folders, and the resource forks macOS adds to zips."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


class ImageSource:
    """A folder or a zip file seen as a set of relative POSIX paths.

    Parameters
    ----------
    source:
        A folder or a ``.zip`` file.
    expect:
        Top-level names the dataset should have. When none of them is at the top level but
        everything sits in a single folder, that folder is treated as the top level.
    """

    def __init__(self, source: str | os.PathLike, *, expect: Iterable[str] = ()):
        if not isinstance(source, (str, os.PathLike)):
            raise ParameterError("source", "a str or os.PathLike path to a folder or .zip", source)
        self.path = Path(source).expanduser()
        if not self.path.exists():
            raise DatasetNotFoundError(f"Dataset source {str(self.path)!r} does not exist; "
                                       "expected a folder or a .zip.")
        self.is_zip = self.path.is_file()
        self._local = threading.local()
        self._handles: list[zipfile.ZipFile] = []
        self._lock = threading.Lock()
        if self.is_zip:
            if not zipfile.is_zipfile(self.path):
                raise DatasetError(f"{str(self.path)!r} is a file but not a zip archive.")
            try:
                entries = self._list_zip()
            except (zipfile.BadZipFile, EOFError, OSError) as error:
                raise DatasetError(f"{str(self.path)!r} is a damaged zip archive ({error}); "
                                   "expected a folder or a readable .zip.") from error
        else:
            entries = self._list_folder()
        files = {name: info for name, info in entries.items() if not name.endswith("/")}
        dirs = {name.rstrip("/") for name in entries if name.endswith("/")}
        for name in files:
            parts = name.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        self.prefix = ""
        top = {name.split("/")[0] for name in (*files, *dirs)}
        expect = set(expect)
        if expect and not expect & top and len(top) == 1 and next(iter(top)) in dirs:
            self.prefix = next(iter(top)) + "/"
            n = len(self.prefix)
            files = {k[n:]: v for k, v in files.items() if k.startswith(self.prefix)}
            dirs = {d[n:] for d in dirs if d.startswith(self.prefix)}
        self.files: dict[str, tuple] = files
        self.dirs: set[str] = dirs

    def _list_zip(self) -> dict[str, tuple]:
        with zipfile.ZipFile(self.path) as zf:
            infos = zf.infolist()
        entries = {}
        for info in infos:
            name = info.filename.replace("\\", "/").lstrip("/")
            if name and not _ignored(name.rstrip("/").split("/")):
                entries[name] = (info.filename, info.file_size, info.CRC)
        return entries

    def _list_folder(self) -> dict[str, tuple]:
        entries = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not _ignored([d])]
            rel = Path(dirpath).relative_to(self.path).as_posix()
            rel = "" if rel == "." else rel + "/"
            for d in dirnames:
                entries[f"{rel}{d}/"] = ()
            for f in filenames:
                if not _ignored([f]):
                    entries[rel + f] = ()
        return entries

    def where(self, name: str) -> str:
        """A readable location for a member: the file path, or ``archive.zip:member``."""
        if self.is_zip:
            return f"{self.path}:{self.prefix}{name}"
        return str(self.path / (self.prefix + name))

    def top_level(self) -> list[str]:
        """Sorted top-level names, folders with a trailing slash."""
        names = {n for n in self.dirs if "/" not in n}
        names = {n + "/" for n in names} | {n for n in self.files if "/" not in n}
        return sorted(names)

    def read(self, name: str) -> bytes:
        """The bytes of a member; safe to call from several threads."""
        if not self.is_zip:
            return (self.path / (self.prefix + name)).read_bytes()
        handle = getattr(self._local, "zip", None)
        if handle is None:
            handle = zipfile.ZipFile(self.path)
            self._local.zip = handle
            with self._lock:
                self._handles.append(handle)
        return handle.read(self.files[name][0])

    def fingerprint(self, names: Iterable[str]) -> str:
        """A hex digest that changes when any of the named members changes."""
        digest = hashlib.sha256()
        if self.is_zip:
            digest.update(f"zip {self.path.stat().st_size}\n".encode())
            for name in names:
                _, size, crc = self.files[name]
                digest.update(f"{name}\0{size}\0{crc}\n".encode())
        else:
            digest.update(b"folder\n")
            for name in names:
                st = (self.path / (self.prefix + name)).stat()
                digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def close(self) -> None:
        with self._lock:
            for handle in self._handles:
                handle.close()
            self._handles.clear()
        self._local = threading.local()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MixedSizesError(DatasetError):
    """Images of one dataset that differ in size, met while decoding them into one array;
    ``example`` names two of them with their sizes."""

    def __init__(self, message: str, example: str):
        super().__init__(message)
        self.example = example


def _decode_one(source: ImageSource, name: str, max_pixels: int | None = MAX_PIXELS
                ) -> np.ndarray:
    """An image as RGB ``(H, W, 3)``; its size is checked from the header before decoding."""
    try:
        with open_image(source.read(name)) as image:
            problem = pixels_problem(*image.size, max_pixels)
            if problem is None:
                return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        problem = "is not an image Pillow reads"
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError, KeyError,
            zipfile.BadZipFile, zlib.error) as error:
        problem = f"cannot be decoded ({error.__class__.__name__}: {error})"
    raise DatasetError(f"Cannot read image {source.where(name)}: it {problem}.")


def _refusal(error: DatasetError) -> DatasetError:
    return DatasetError(f"{error} Fix or remove it, or set dataset.bad_images: skip to train "
                        "without such files.")


def decode_images(source: ImageSource, names: Sequence[str], *,
                  max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode images to one RGB ``uint8`` array of shape (N, 3, H, W).

    All images must have the size of the first one. Decoding runs on a small thread pool.

    Raises
    ------
    DatasetError
        Naming the first (in ``names`` order) image that cannot be read, has more than
        ``max_pixels`` (0 or None: no limit; checked before decoding) or differs in size.
    """
    return _decode(source, names, max_pixels=max_pixels, skip=False)[0]


def _decode(source: ImageSource, names: Sequence[str], *, max_pixels: int | None, skip: bool
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`decode_images`, and with ``skip`` the files that cannot be read left out:
    ``(images of the rest, mask of the names kept, what was wrong with each left out)``."""
    if not names:
        raise DatasetError(f"No images to read in {source.path}.")
    failures: dict[int, str] = {}
    first = None
    for k, name in enumerate(names):
        try:
            first = _decode_one(source, name, max_pixels)
            break
        except DatasetError as error:
            if not skip:
                raise _refusal(error) from None
            failures[k] = str(error)
    if first is None:
        raise DatasetError(f"None of the {len(names)} images in {source.path} can be read: "
                           f"{failures[0]}")
    height, width = first.shape[:2]
    out = np.empty((len(names), 3, height, width), dtype=np.uint8)
    out[k] = first.transpose(2, 0, 1)
    start = k + 1

    def work(begin: int) -> DatasetError | None:
        for i in range(begin, min(begin + _CHUNK, len(names))):
            try:
                pixels = _decode_one(source, names[i], max_pixels)
            except DatasetError as error:
                if not skip:
                    return _refusal(error)
                failures[i] = str(error)
                continue
            if pixels.shape[:2] != (height, width):
                return MixedSizesError(
                    f"Image {source.where(names[i])} is {pixels.shape[1]}x{pixels.shape[0]} "
                    f"(width x height) but {source.where(names[k])} is {width}x{height}; all "
                    "images of one array must share one size.",
                    f"{source.where(names[k])} is {width}x{height}, "
                    f"{source.where(names[i])} {pixels.shape[1]}x{pixels.shape[0]}")
            out[i] = pixels.transpose(2, 0, 1)
        return None

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = list(pool.map(work, range(start, len(names), _CHUNK)))
    for error in errors:
        if error is not None:
            raise error
    kept = np.ones(len(names), dtype=bool)
    kept[list(failures)] = False
    if failures:
        out = out[kept]
    return out, kept, [failures[i] for i in sorted(failures)]


@dataclass(kw_only=True)
class ImagePlan:
    """Which members make up each split, with their labels.

    Attributes
    ----------
    kind:
        The reader's name; part of the cache file name and key.
    classes:
        Class names, index = label.
    train, test:
        Member names of each split, in output order.
    train_y, test_y:
        ``int64`` labels, one per member.
    splits:
        The names of the training and evaluation splits.
    """

    kind: str
    classes: list[str]
    train: list[str]
    train_y: np.ndarray
    test: list[str]
    test_y: np.ndarray
    splits: tuple[str, str]


def _cache_key(source: ImageSource, plan: ImagePlan) -> str:
    digest = hashlib.sha256()
    digest.update(f"{_CACHE_VERSION}\0{plan.kind}\0{plan.splits}\0{plan.classes}\n".encode())
    digest.update(source.fingerprint([*plan.train, *plan.test]).encode())
    digest.update(plan.train_y.tobytes() + b"\0" + plan.test_y.tobytes())
    return digest.hexdigest()


def _load_cache(path: Path, plan: ImagePlan) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("train_x", "test_x")}
    except Exception as error:  # a damaged cache is rebuilt, never trusted
        warnings.warn(f"Ignoring unreadable cache {path}: {error}", stacklevel=3)
        return None
    train_x, test_x = arrays["train_x"], arrays["test_x"]
    if (
        train_x.dtype != np.uint8
        or train_x.ndim != 4
        or train_x.shape[1:] != test_x.shape[1:]
        or test_x.dtype != np.uint8
        or (len(train_x), len(test_x)) != (len(plan.train), len(plan.test))
    ):
        warnings.warn(f"Ignoring cache {path}: its arrays do not match the source.", stacklevel=3)
        return None
    return arrays


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        warnings.warn(f"Cannot write the image cache {path}: {error}", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as error:
        warnings.warn(f"Cannot write the image cache {path}: {error}", stacklevel=3)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _safe_stem(path: Path) -> str:
    stem = path.resolve().name.removesuffix(".zip") or "dataset"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def build_dataset(
    source: ImageSource,
    plan: ImagePlan,
    *,
    cache_dir: str | os.PathLike | None,
    name: str,
    hflip: bool = True,
    bad_images: str = "refuse",
    max_pixels: int | None = MAX_PIXELS,
) -> RawDataset:
    """Decode the planned images (or load them from the cache) into a :class:`RawDataset`.

    An image that cannot be read or has more than ``max_pixels`` is an error naming it, or
    with ``bad_images: skip`` left out (with its label) and listed in the result's
    ``skipped``; a decode that left files out is not cached.
    """
    folder = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    cache = folder / f"{plan.kind}-{_safe_stem(source.path)}-{_cache_key(source, plan)[:24]}.npz"
    arrays = _load_cache(cache, plan) if cache.is_file() else None
    if arrays is not None:
        height, width = arrays["train_x"].shape[2:]
        if pixels_problem(width, height, max_pixels):  # cached under a larger max_pixels
            arrays = None  # decode again, to refuse or skip them
    train_y, test_y, skipped = plan.train_y, plan.test_y, []
    if arrays is None:
        names, n = [*plan.train, *plan.test], len(plan.train)
        if bad_images == "skip":
            images, kept, skipped = _decode(source, names, max_pixels=max_pixels, skip=True)
            train_y, test_y = train_y[kept[:n]], test_y[kept[n:]]
            n = len(train_y)
        else:
            images = decode_images(source, names, max_pixels=max_pixels)
        arrays = {"train_x": images[:n], "test_x": images[n:]}
        if not skipped:
            _save_cache(cache, arrays)
    return RawDataset(
        train_x=arrays["train_x"],
        train_y=train_y,
        test_x=arrays["test_x"],
        test_y=test_y,
        classes=list(plan.classes),
        name=name,
        hflip=hflip,
        skipped=skipped,
    )


def _split_members(source: ImageSource, split: str) -> dict[str, list[str]]:
    """``{class: sorted image members}`` of one ``SPLIT/CLASS/IMAGE`` split."""
    if split not in source.dirs:
        raise DatasetError(
            f"{source.path} does not have the SPLIT/CLASS/IMAGE layout: no {split!r} folder at "
            f"its top level. Found: {source.top_level()[:20]}."
        )
    head = split + "/"
    classes: dict[str, list[str]] = {
        d[len(head) :]: [] for d in source.dirs if d.startswith(head) and "/" not in d[len(head) :]
    }
    misplaced = []
    for name in source.files:
        if not name.startswith(head) or not is_image_name(name):
            continue
        parts = name[len(head) :].split("/")
        if len(parts) == 2:
            classes[parts[0]].append(name)
        else:
            misplaced.append(name)
    if misplaced:
        raise DatasetError(
            f"{source.path} does not have the SPLIT/CLASS/IMAGE layout: {len(misplaced)} "
            f"image(s) in {split!r} are not exactly one class folder deep, e.g. "
            f"{sorted(misplaced)[0]!r}."
        )
    if not classes:
        raise DatasetError(
            f"{source.path} does not have the SPLIT/CLASS/IMAGE layout: the {split!r} folder "
            "holds no class folders."
        )
    return _sorted_classes(source, classes, head)


def class_folder_members(source: ImageSource) -> dict[str, list[str]] | None:
    """``{class: sorted image members}`` when ``source`` has the ``CLASS/IMAGE`` layout (two
    or more class folders at its top level, every image exactly one folder deep); None when
    it does not.

    Raises
    ------
    DatasetError
        If a top-level folder holds no image (a class with nothing to learn from).
    """
    images = [n for n in source.files if is_image_name(n)]
    if not images or any(n.count("/") != 1 for n in images):
        return None
    classes: dict[str, list[str]] = {d: [] for d in source.dirs if "/" not in d}
    for name in images:
        classes[name.split("/")[0]].append(name)
    if len(classes) < 2:
        return None
    return _sorted_classes(source, classes)


def _sorted_classes(source: ImageSource, classes: dict[str, list[str]], head: str = ""
                    ) -> dict[str, list[str]]:
    """``classes`` sorted by name, each class's members sorted; a class folder (under
    ``head``) without images is an error naming it."""
    empty = sorted(c for c, members in classes.items() if not members)
    if empty:
        raise DatasetError(
            f"Class folder {source.where(head + empty[0])} holds no images (extensions read: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    return {c: sorted(members) for c, members in sorted(classes.items())}


def no_layout_message(source: ImageSource, train_split: str) -> str:
    """Why ``source`` is read by neither image-folder layout: what was found instead."""
    images = sorted(n for n in source.files if is_image_name(n))
    deep = [n for n in images if n.count("/") != 1]
    if not images:
        found = "no images"
    elif _single_class(source, deep):
        found = f"one class folder, {source.prefix}"
    elif deep:
        found = (f"image {deep[0]!r} is not in a class folder" if "/" not in deep[0]
                 else f"image {deep[0]!r} is more than one folder deep")
    else:
        found = "images in one class folder only"
    return (f"{source.path} has neither image-folder layout: SPLIT/CLASS/IMAGE needs a "
            f"{train_split!r} folder at its top level, CLASS/IMAGE two or more class folders "
            f"of images ({found}). Found: {source.top_level()[:20]}.")


def _single_class(source: ImageSource, deep: Sequence[str]) -> bool:
    """Whether ``source`` is one folder of images seen through its wrapper (``prefix``): a
    single class folder, not a dataset's top level."""
    return bool(source.prefix) and bool(deep) and all("/" not in n for n in deep)


def held_out_split(
    members: Mapping[str, Sequence[str]], share: float = DEFAULT_TEST_SHARE, seed: int = 0
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split each class's members into training and test members, stratified and seeded.

    A class of ``n`` members gives ``share * n`` of them, rounded half up, to the test set, at
    least one and at most ``n - 1`` where ``n >= 2``; a class of one member keeps it for
    training (its test accuracy is then undefined and left out of the averages). Which
    members go is drawn by a generator seeded from ``seed`` and the class's name, so a
    class's split does not change when other classes are added or removed. Both sides keep
    the members' order.

    >>> train, test = held_out_split({"a": ["a/1", "a/2", "a/3", "a/4", "a/5"], "b": ["b/1"]})
    >>> [len(v) for v in train.values()], [len(v) for v in test.values()]
    ([4, 1], [1, 0])
    """
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for cls, names in members.items():
        n = len(names)
        k = min(max(math.floor(share * n + 0.5), 1), n - 1) if n >= 2 else 0
        rng = np.random.default_rng([seed, zlib.crc32(cls.encode("utf-8"))])
        held = set(rng.permutation(n)[:k].tolist())
        train[cls] = [m for i, m in enumerate(names) if i not in held]
        test[cls] = [m for i, m in enumerate(names) if i in held]
    return train, test


def _labelled(members: dict[str, list[str]], classes: list[str]) -> tuple[list[str], np.ndarray]:
    names = [m for c in classes for m in members[c]]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(members[c]) for c in classes])
    return names, labels


def _check_split_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value:
        raise ParameterError(name, "a non-empty folder name without slashes", value)
    return value


def _check_cache_dir(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value)):
        raise ParameterError(name, "a str or os.PathLike path or None", value)


def _refuse_unknown(reader: str, unknown: Mapping[str, Any], known: Sequence[str]) -> None:
    """A keyword ``reader`` does not take is a :class:`ParameterError` naming it."""
    for key, value in unknown.items():
        listed = ", ".join(repr(k) for k in known)
        raise ParameterError(key, f"a keyword {reader} takes ({listed})", value)


def check_reader_options(
    options: Mapping[str, Any],
    *,
    prefix: str = "",
    eval_splits: Sequence[str] | None = None,
) -> None:
    """Check the values of the image-folder readers' options found in ``options``.

    Parameters
    ----------
    options:
        Any of ``train_split``, ``test_split`` (folder names, different from each other, the
        defaults ``"train"`` and ``"test"`` included), ``eval_split`` (one of
        ``eval_splits``) and ``cache_dir`` (a path); other keys are not looked at.
    prefix:
        Put before a key in error messages (``"dataset.options."``).
    eval_splits:
        The accepted ``eval_split`` values (CINIC-10's ``("test", "valid")``).

    Raises
    ------
    ParameterError
        Naming ``prefix + key`` for the first bad value.

    Examples
    --------
    >>> check_reader_options({"train_split": "train", "test_split": "val"})
    >>> check_reader_options({"test_split": "train"}, prefix="dataset.options.")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tailmix._validation.ParameterError: The 'dataset.options.test_split' parameter must be ...
    """
    for key in ("train_split", "test_split"):
        if key in options:
            _check_split_name(prefix + key, options[key])
    if "train_split" in options or "test_split" in options:
        train = options.get("train_split", "train")
        test = options.get("test_split", "test")
        if train == test:
            key = "test_split" if "test_split" in options else "train_split"
            raise ParameterError(prefix + key, "a folder other than the "
                                 f"{'train' if key == 'test_split' else 'test'} split's "
                                 f"{train!r}", options[key])
    if "eval_split" in options and eval_splits is not None:
        check_choice(prefix + "eval_split", options["eval_split"], eval_splits)
    if "cache_dir" in options:
        _check_cache_dir(prefix + "cache_dir", options["cache_dir"])
    _check_held_out(prefix, options.get("test_share"), options.get("split_seed"))


def read_imagefolder(
    source: str | os.PathLike,
    *,
    train_split: str = "train",
    test_split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    name: str | None = None,
    in_memory: bool | str = True,
    bad_images: str = "refuse",
    max_pixels: int | None = MAX_PIXELS,
    test_share: float | None = None,
    split_seed: int | None = None,
    max_side: int | None = None,
    **unknown: Any,
) -> RawDataset | FileDataset:
    """Read an image dataset laid out as ``SPLIT/CLASS/IMAGE`` or ``CLASS/IMAGE`` in a
    folder or a zip.

    Parameters
    ----------
    source:
        A folder, or a ``.zip`` (its members possibly all inside one top-level folder),
        holding either layout: ``SPLIT/CLASS/IMAGE``, whose split folders are the training
        and test sets, or ``CLASS/IMAGE`` (no split folders), whose test set is held out.
    train_split, test_split:
        The split folder names. Without a ``test`` folder, the default ``test_split`` finds
        a ``val``, ``valid`` or ``validation`` folder (:func:`test_folder`; a note says so).
    test_share:
        For a ``CLASS/IMAGE`` folder: the share of each class held out as the test set
        (default :data:`DEFAULT_TEST_SHARE`; see :func:`held_out_split`). Refused for a
        ``SPLIT/CLASS/IMAGE`` folder, whose test set is its own.
    split_seed:
        For a ``CLASS/IMAGE`` folder: the seed of which images are held out (default 0).
    cache_dir:
        Where to keep the decoded arrays; default ``$TAILMIX_CACHE`` or ``~/.cache/tailmix``.
    name:
        The dataset's name in reports; default the source's file or folder name.
    in_memory:
        True: decode every image now into arrays; False: list the files, to be decoded
        while training (a :class:`~tailmix.data.files.FileDataset`); ``"auto"``: in memory
        when the decoded images, at the first image's size, fit in
        :data:`~tailmix.data.files.IN_MEMORY_LIMIT`. Images of differing sizes, which make
        no one array, are listed as files whatever the setting (a note says so), for the
        caller to bring to one size (:func:`~tailmix.data.files.materialise`).
    max_side:
        Images whose first one is larger than this on its shorter side are listed as files
        whatever ``in_memory`` says, for the caller to decode at a smaller size rather
        than whole (None: no limit).
    bad_images:
        ``"refuse"``: an image that cannot be read is an error naming it; ``"skip"``: it is
        left out (listed in the result's ``skipped``).
    max_pixels:
        The most pixels an image may have, checked from its header before decoding (0 or
        None: no limit); a larger one is refused or skipped like an unreadable one.
    **unknown:
        Refused: any other keyword (a misspelt option) is a :class:`ParameterError`
        naming it.

    Returns
    -------
    RawDataset or FileDataset
        Classes are the sorted class-folder names of the training split; images within a
        class are in file-name order.

    Raises
    ------
    DatasetError
        If ``source`` does not exist (a :class:`~tailmix.data.download.DatasetNotFoundError`,
        also a ``FileNotFoundError``), the layout differs (the message says what was found),
        a class folder is empty, the splits' classes differ, or an image cannot be decoded
        (unless skipped).
    ParameterError
        For a bad or unknown keyword, naming it.
    """
    _refuse_unknown("read_imagefolder", unknown,
                    ("train_split", "test_split", "cache_dir", "name", "in_memory",
                     "bad_images", "max_pixels", "test_share", "split_seed", "max_side"))
    check_decoding(bad_images, max_pixels)
    if max_side is not None:
        check_number("max_side", max_side, low=1, integer=True)
    train_split = _check_split_name("train_split", train_split)
    test_split = _check_split_name("test_split", test_split)
    if train_split == test_split:
        raise ParameterError(
            "test_split", f"a folder other than train_split={train_split!r}", test_split
        )
    _check_cache_dir("cache_dir", cache_dir)
    _check_held_out("", test_share, split_seed)
    if name is not None and not isinstance(name, str):
        raise ParameterError("name", "a str or None", name)
    with ImageSource(source, expect=(train_split, test_split)) as src:
        members = find_layout(src, train_split, test_share=test_share, split_seed=split_seed)
        if members is None:
            found = test_folder(src, test_split)
            raw = _read_splits(src, train_split, found, cache_dir, name, kind="imagefolder",
                               in_memory=in_memory, bad_images=bad_images,
                               max_pixels=max_pixels, max_side=max_side)
            if found != test_split:
                raw.notes.append(f"dataset: {src.path.name} has no {test_split}/ folder; its "
                                 f"{found}/ folder is the test set (dataset.options.test_split "
                                 "names another)")
            return raw
        share = DEFAULT_TEST_SHARE if test_share is None else test_share
        seed = 0 if split_seed is None else split_seed
        train, test = held_out_split(members, share, seed)
        n_test = sum(map(len, test.values()))
        note = (f"dataset: {src.path.name} has no {train_split}/ and {test_split}/ folders; "
                f"{n_test} of its {n_test + sum(map(len, train.values()))} images, "
                f"{share:g} of each class (seeded by dataset.options.split_seed {seed}), are "
                "held out as the test set (dataset.options.test_share sets the share)")
        return _read_members(src, train, test, (f"{share:g}", f"seed {seed}"), cache_dir,
                             name, kind="imagefolder-held-out", in_memory=in_memory,
                             bad_images=bad_images, max_pixels=max_pixels, max_side=max_side,
                             notes=[note])


def find_layout(src: ImageSource, train_split: str, *, test_share: float | None = None,
                split_seed: int | None = None, prefix: str = "") -> dict[str, list[str]] | None:
    """Which layout ``src`` has: None for ``SPLIT/CLASS/IMAGE`` (a ``train_split`` folder of
    folders at its top level), else the members of its ``CLASS/IMAGE`` classes (a class
    may be named like a split folder).

    Raises
    ------
    DatasetError
        If it has neither layout, saying what was found.
    ParameterError
        If ``test_share`` or ``split_seed`` (named with ``prefix``) is given for a folder
        with split folders, which has a test set of its own.
    """
    head = train_split + "/"
    if any(d.startswith(head) for d in src.dirs):  # a split folder of class folders
        for key, value in (("test_share", test_share), ("split_seed", split_seed)):
            if value is not None:
                raise ParameterError(prefix + key, f"absent: {src.path} has a {train_split!r} "
                                     "folder, and its test set is its own split folder",
                                     value)
        return None
    members = class_folder_members(src)
    if members is None:
        raise DatasetError(no_layout_message(src, train_split))
    if all(len(names) < 2 for names in members.values()):
        raise DatasetError(f"Every class folder of {src.path} holds one image: holding out a "
                           "test set needs a class of two or more (or give train/ and test/ "
                           "folders).")
    return members


#: The folders a ``SPLIT/CLASS/IMAGE`` dataset without a ``test`` folder is tested on, the
#: first found: the names torchvision's tutorials and Keras use for a held-out split.
TEST_FOLDER_NAMES = ("val", "valid", "validation")


def test_folder(src: ImageSource, test_split: str) -> str:
    """The test split folder of ``src``: ``test_split``, or where it is the default
    ``"test"`` and absent, the first of :data:`TEST_FOLDER_NAMES` that is there."""
    if test_split != "test" or test_split in src.dirs:
        return test_split
    return next((n for n in TEST_FOLDER_NAMES if n in src.dirs), test_split)


def _check_held_out(prefix: str, test_share: object, split_seed: object) -> None:
    if test_share is not None:
        check_number(prefix + "test_share", test_share, low=0, high=1, low_open=True,
                     high_open=True)
    if split_seed is not None:
        check_number(prefix + "split_seed", split_seed, low=0, integer=True)


def _read_splits(
    src: ImageSource,
    train_split: str,
    test_split: str,
    cache_dir: str | os.PathLike | None,
    name: str | None,
    *,
    kind: str,
    in_memory: bool | str = True,
    bad_images: str = "refuse",
    max_pixels: int | None = MAX_PIXELS,
    max_side: int | None = None,
) -> RawDataset | FileDataset:
    train = _split_members(src, train_split)
    test = _split_members(src, test_split)
    classes = list(train)
    if set(test) != set(classes):
        missing, extra = sorted(set(classes) - set(test)), sorted(set(test) - set(classes))
        raise DatasetError(
            f"The {test_split!r} split of {src.path} has other classes than the "
            f"{train_split!r} split: missing from {test_split!r}: {missing}; only in "
            f"{test_split!r}: {extra}."
        )
    return _read_members(src, train, test, (train_split, test_split), cache_dir, name,
                         kind=kind, in_memory=in_memory, bad_images=bad_images,
                         max_pixels=max_pixels, max_side=max_side)


def _read_members(
    src: ImageSource,
    train: dict[str, list[str]],
    test: dict[str, list[str]],
    splits: tuple[str, str],
    cache_dir: str | os.PathLike | None,
    name: str | None,
    *,
    kind: str,
    in_memory: bool | str,
    bad_images: str,
    max_pixels: int | None,
    max_side: int | None = None,
    notes: Sequence[str] = (),
) -> RawDataset | FileDataset:
    """Each split's ``{class: members}`` read, decoded or listed (``in_memory``,
    ``max_side``, images of differing sizes); the classes are the training split's, in its
    order."""
    classes = list(train)
    train_names, train_y = _labelled(train, classes)
    test_names, test_y = _labelled(test, classes)
    plan = ImagePlan(
        kind=kind,
        classes=classes,
        train=train_names,
        train_y=train_y,
        test=test_names,
        test_y=test_y,
        splits=splits,
    )
    name = name or _safe_stem(src.path)
    files = FileDataset(root=src.path, prefix=src.prefix, train_files=train_names,
                        train_y=train_y, test_files=test_names, test_y=test_y,
                        classes=list(classes), name=name, notes=list(notes))
    if in_memory is not True or max_side is not None:
        w, h = first_size(files, bad_images=bad_images, max_pixels=max_pixels)
        if max_side is not None and min(w, h) > max_side:
            return files
        if stream_or_memory(in_memory, len(train_names) + len(test_names), 3 * w * h):
            return files
    try:
        raw = build_dataset(src, plan, cache_dir=cache_dir, name=name, bad_images=bad_images,
                            max_pixels=max_pixels)
    except MixedSizesError as error:  # no one array: listed, for the caller to resize
        files.notes.append(f"dataset: the images of {src.path.name} differ in size "
                           f"({error.example}); each is resized and centre-cropped to one "
                           "square size: dataset.image_size, else the first image's shorter "
                           "side")
        return files
    raw.notes = list(notes)
    return raw


def read_cinic10(
    root: str | os.PathLike,
    *,
    eval_split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    bad_images: str = "refuse",
    max_pixels: int | None = MAX_PIXELS,
    **unknown: Any,
) -> RawDataset:
    """Read CINIC-10 from its released layout ``{train,valid,test}/CLASS/IMAGE``.

    Parameters
    ----------
    root:
        The extracted release folder (or a zip of it).
    eval_split:
        ``"test"`` or ``"valid"``: which split serves as the test set.
    cache_dir, bad_images, max_pixels:
        As in :func:`read_imagefolder`.
    **unknown:
        Refused: any other keyword is a :class:`ParameterError` naming it.

    Returns
    -------
    RawDataset
        90,000 training images of 32x32 in 10 classes, and 90,000 evaluation images.
    """
    _refuse_unknown("read_cinic10", unknown,
                    ("eval_split", "cache_dir", "bad_images", "max_pixels"))
    check_decoding(bad_images, max_pixels)
    eval_split = check_choice("eval_split", eval_split, ("test", "valid"))
    _check_cache_dir("cache_dir", cache_dir)
    with ImageSource(root, expect=("train", "valid", "test")) as src:
        missing = [s for s in ("train", "valid", "test") if s not in src.dirs]
        if missing:
            raise DatasetError(
                f"{src.path} is not a CINIC-10 release: missing the split folder(s) "
                f"{', '.join(s + '/' for s in missing)}. Found: {src.top_level()[:20]}."
            )
        return _read_splits(src, "train", eval_split, cache_dir, "cinic10", kind="cinic10",
                            bad_images=bad_images, max_pixels=max_pixels)
