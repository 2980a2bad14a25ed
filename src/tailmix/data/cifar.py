"""CIFAR-10 and CIFAR-100 from the official python release.

The release holds Python-2 pickles of dicts with byte-string keys. They are read with an
unpickler that admits only what these files contain (numpy array reconstruction), so a
tampered file cannot run code when it is loaded.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailmix._validation import ParameterError
from tailmix.data.base import RawDataset
from tailmix.data.download import (
    DatasetError,
    DatasetNotFoundError,
    download_file,
    extract_archive,
    is_damaged_archive,
)

__all__ = ["CIFAR_RELEASES", "UnsafePickleError", "read_cifar"]


@dataclass(frozen=True)
class _Release:
    title: str
    folder: str
    archive: str
    url: str
    md5: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes


CIFAR_RELEASES = {
    10: _Release(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
    ),
    100: _Release(
        title="CIFAR-100",
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=("train",),
        test="test",
        meta="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
    ),
}
"""The official releases: folder and archive names, URL, md5 of the archive, file names."""

# The globals a CIFAR pickle may name: numpy array and dtype reconstruction, and the codec
# helper that protocol-2 pickles written by Python 3 use for byte strings.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class UnsafePickleError(DatasetError, pickle.UnpicklingError):
    """A pickle names a global that a dataset file has no reason to contain."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a CIFAR file holds only numpy "
                "arrays, lists, numbers and strings"
            )
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    """Load one release file with the restricted unpickler; keys come back as ``str``."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafePickleError as error:
        raise UnsafePickleError(
            f"{where}: {error}. The file may have been tampered with: delete it and fetch the "
            "official release again."
        ) from None
    except Exception as error:
        raise DatasetError(f"{where} is not a readable CIFAR pickle: {error}") from error
    if not isinstance(obj, dict):
        raise DatasetError(f"{where} should hold a dict, found {type(obj).__name__}.")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


class _Files:
    """The release's files, from an extracted folder or straight from the tarball."""

    def __init__(self, folder: Path | None = None, tarball: Path | None = None):
        self.folder, self.tarball = folder, tarball
        self._tar: tarfile.TarFile | None = None

    def where(self, name: str) -> str:
        if self.folder is not None:
            return str(self.folder / name)
        return f"{self.tarball}:{name}"

    def read(self, name: str) -> bytes:
        try:
            return self._read(name)
        except DatasetError:
            raise
        except Exception as error:
            if self.folder is not None and isinstance(error, OSError):
                raise DatasetError(f"Cannot read {self.where(name)}: {error}") from error
            if not is_damaged_archive(error):
                raise
            raise DatasetError(
                f"{self.tarball} is damaged or cut short ({error.__class__.__name__}: "
                f"{error}); expected the official release's .tar.gz. Delete it and download "
                "it again."
            ) from error

    def _read(self, name: str) -> bytes:
        if self.folder is not None:
            return (self.folder / name).read_bytes()
        if self._tar is None:
            self._tar = tarfile.open(self.tarball, "r:*")
            self._members = {m.name.split("/")[-1]: m for m in self._tar.getmembers() if m.isfile()}
        member = self._members.get(name)
        if member is None:
            raise DatasetError(f"{self.tarball} does not contain the file {name!r}.")
        return self._tar.extractfile(member).read()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _is_tarball(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def _how_to_get(release: _Release, root: Path) -> str:
    return (f"Set dataset.download: true (download=True in Python) to fetch it, or download "
            f"{release.url} by hand into {str(root)!r}.")


def _locate(root: Path, release: _Release, download: bool) -> _Files:
    """Find the release under ``root``, downloading and extracting it if asked to."""
    needed = (*release.train, release.test, release.meta)
    if _is_tarball(root):
        if not root.is_file():
            if not download:
                raise DatasetNotFoundError(
                    f"{release.title} archive {str(root)!r} not found. "
                    + _how_to_get(release, root.parent))
            download_file(release.url, root, md5=release.md5)
        return _Files(tarball=root)
    if root.is_file():
        raise DatasetError(
            f"The {release.title} root {str(root)!r} is a file, not a folder: expected a folder "
            f"holding {release.folder}/ (the extracted official release) or "
            f"{release.archive}, or that archive itself (a name ending .tar.gz).")
    for folder in (root / release.folder, root):
        if all((folder / name).is_file() for name in needed):
            return _Files(folder=folder)
    archive = root / release.archive
    if archive.is_file() and not download:
        return _Files(tarball=archive)
    if not download:
        missing = next(n for n in needed if not (root / release.folder / n).is_file())
        raise DatasetNotFoundError(
            f"{release.title} not found under {str(root)!r}: looked for "
            f"{str(root / release.folder / missing)!r} (the extracted official release: "
            f"{', '.join(needed)} in {release.folder}/) and for the archive {str(archive)!r}. "
            + _how_to_get(release, root))
    download_file(release.url, archive, md5=release.md5)
    extract_archive(archive, root)
    return _Files(folder=root / release.folder)


def _read_batch(files: _Files, name: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    where = files.where(name)
    batch = _unpickle(files.read(name), where)
    key = label_key.decode()
    if "data" not in batch or key not in batch:
        raise DatasetError(f"{where} lacks the 'data' or {key!r} entry; found {sorted(batch)}.")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{where}: 'data' should be uint8 of shape (N, 3072), found {data.dtype} {data.shape}."
        )
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{where}: {data.shape[0]} images but {labels.size} labels in {key!r}.")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(
    root: str | os.PathLike, *, num_classes: int = 10, download: bool = False
) -> RawDataset:
    """Read CIFAR-10 or CIFAR-100 (fine labels) from the official python release.

    Parameters
    ----------
    root:
        The folder that contains the extracted release folder (``cifar-10-batches-py`` or
        ``cifar-100-python``), that folder itself, or the release's ``.tar.gz``.
    num_classes:
        10 or 100.
    download:
        Fetch the official archive (md5-verified) into ``root`` and extract it when the
        files are missing.

    Returns
    -------
    RawDataset
        50,000 training and 10,000 test images, uint8 of shape (N, 3, 32, 32).

    Raises
    ------
    DatasetError
        With a message naming the file and how to fix it: the release is not under
        ``root`` (a :class:`~tailmix.data.download.DatasetNotFoundError`, which is also a
        ``FileNotFoundError``), ``root`` is a file but no tarball, the tarball is damaged,
        a download fails (:class:`~tailmix.data.download.DownloadError`), a file is
        malformed, or a pickle names a global it has no reason to
        (:class:`UnsafePickleError`).
    """
    if not isinstance(root, (str, os.PathLike)):
        raise ParameterError("root", "a str or os.PathLike path", root)
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes
        not in (
            10,
            100,
        )
    ):
        raise ParameterError("num_classes", "10 or 100", num_classes)
    if not isinstance(download, bool):
        raise ParameterError("download", "a bool", download)
    release = CIFAR_RELEASES[num_classes]
    files = _locate(Path(root).expanduser(), release, download)
    try:
        parts = [_read_batch(files, name, release.label_key) for name in release.train]
        test_x, test_y = _read_batch(files, release.test, release.label_key)
        meta = _unpickle(files.read(release.meta), files.where(release.meta))
    finally:
        files.close()
    names_key = release.names_key.decode()
    if names_key not in meta:
        raise DatasetError(
            f"{files.where(release.meta)} lacks {names_key!r}; found {sorted(meta)}."
        )
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    for split, labels in (("train", train_y), ("test", test_y)):
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DatasetError(
                f"CIFAR-{num_classes} {split} labels must lie in 0..{len(classes) - 1}, found "
                f"{labels.min()}..{labels.max()}."
            )
    return RawDataset(
        train_x=np.ascontiguousarray(train_x),
        train_y=train_y,
        test_x=np.ascontiguousarray(test_x),
        test_y=test_y,
        classes=classes,
        name=f"cifar{num_classes}",
        hflip=True,
    )
