"""SVHN (Street View House Numbers), cropped-digits format ``train_32x32.mat``/``test_32x32.mat``.

Each file holds ``X`` of shape (32, 32, 3, N) and ``y`` of shape (N, 1), where the digit 0 is
stored as label 10; the reader maps it back to 0 so that labels are the digits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from tailmix._validation import ParameterError
from tailmix.data.base import RawDataset
from tailmix.data.download import DatasetError, DatasetNotFoundError, download_file

__all__ = ["SVHN_FILES", "read_svhn"]

SVHN_FILES = {
    "train": (
        "train_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
    ),
    "test": (
        "test_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
    ),
}
"""Split -> (file name, official URL, md5)."""


def _read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except Exception as error:
        raise DatasetError(f"{path} is not a readable MATLAB file: {error}") from error
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path} lacks the variable 'X' or 'y'; found {found}.")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetError(
            f"{path}: 'X' should be uint8 of shape (32, 32, 3, N), found {x.dtype} {x.shape}."
        )
    if y.shape != (x.shape[3],):
        raise DatasetError(f"{path}: {x.shape[3]} images but {y.size} labels in 'y'.")
    if y.size and (y.min() < 0 or y.max() > 10 or not np.all(y == np.round(y))):
        raise DatasetError(
            f"{path}: labels in 'y' must be integers in 0..10 (10 stands for the digit 0)."
        )
    labels = y.astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def read_svhn(root: str | os.PathLike, *, download: bool = False) -> RawDataset:
    """Read SVHN's cropped digits (73,257 train, 26,032 test images of 32x32).

    Parameters
    ----------
    root:
        The folder holding ``train_32x32.mat`` and ``test_32x32.mat``.
    download:
        Fetch missing files from the official site (md5-verified) into ``root``.

    Returns
    -------
    RawDataset
        Classes ``"0"`` .. ``"9"`` (label = digit); ``hflip`` is False since flipped digits
        are other symbols.

    Raises
    ------
    DatasetError
        Naming the file and how to fix it: a file is missing (a
        :class:`~tailmix.data.download.DatasetNotFoundError`, also a ``FileNotFoundError``),
        ``root`` is a file, a download fails or a file is malformed.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise ParameterError("root", "a str or os.PathLike path", root)
    if not isinstance(download, bool):
        raise ParameterError("download", "a bool", download)
    root = Path(root).expanduser()
    if root.is_file():
        names = " and ".join(name for name, _, _ in SVHN_FILES.values())
        raise DatasetError(f"The SVHN root {str(root)!r} is a file, not a folder: expected the "
                           f"folder holding {names}.")
    arrays = {}
    for split, (filename, url, md5) in SVHN_FILES.items():
        path = root / filename
        if not path.is_file():
            if not download:
                raise DatasetNotFoundError(
                    f"SVHN file {str(path)!r} not found. Set dataset.download: true "
                    f"(download=True in Python) to fetch it, or download {url} by hand into "
                    f"{str(root)!r}."
                )
            download_file(url, path, md5=md5)
        arrays[split] = _read_split(path)
    return RawDataset(
        train_x=arrays["train"][0],
        train_y=arrays["train"][1],
        test_x=arrays["test"][0],
        test_y=arrays["test"][1],
        classes=[str(d) for d in range(10)],
        name="svhn",
        hflip=False,
    )
