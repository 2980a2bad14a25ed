"""Tiny ImageNet (200 classes, 64x64) from its released layout.

The release holds ``wnids.txt`` (one WordNet id per class), ``words.txt`` (id, tab,
human-readable names), ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` with the
labels in ``val/val_annotations.txt`` (file name, tab, wnid, tab, bounding box). The
validation split serves as the test set; the unlabelled ``test`` folder is not read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tailmix._validation import ParameterError
from tailmix.data.base import RawDataset
from tailmix.data.download import DatasetError
from tailmix.data.files import MAX_PIXELS, check_decoding
from tailmix.data.imagefolder import ImagePlan, ImageSource, build_dataset, is_image_name

__all__ = ["read_tiny_imagenet"]

_RELEASE_FOLDER = "tiny-imagenet-200"


def _text(src: ImageSource, name: str) -> list[str]:
    return src.read(name).decode("utf-8", errors="replace").splitlines()


def _class_ids(src: ImageSource) -> list[str]:
    """The wnids in ``wnids.txt`` order, or the sorted training folders when it is absent."""
    if "wnids.txt" in src.files:
        wnids = [line.strip() for line in _text(src, "wnids.txt") if line.strip()]
        repeated = sorted({w for w in wnids if wnids.count(w) > 1})
        if repeated:
            raise DatasetError(f"{src.where('wnids.txt')} lists {repeated[0]!r} more than once.")
        if not wnids:
            raise DatasetError(f"{src.where('wnids.txt')} lists no classes.")
        return wnids
    wnids = sorted(d.split("/")[1] for d in src.dirs if d.count("/") == 1 and d[:6] == "train/")
    if not wnids:
        raise DatasetError(f"{src.where('train')} holds no class folders.")
    return wnids


def _class_names(src: ImageSource, wnids: list[str]) -> list[str]:
    """First human-readable name of each wnid from ``words.txt`` (the wnid when absent)."""
    if "words.txt" not in src.files:
        return list(wnids)
    words = {}
    for line in _text(src, "words.txt"):
        wnid, _, text = line.partition("\t")
        words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    repeated = {n for n in names if names.count(n) > 1}
    return [f"{n} ({w})" if n in repeated else n for n, w in zip(names, wnids, strict=True)]


def _train_members(src: ImageSource, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    by_class: dict[str, list[str]] = {w: [] for w in wnids}
    strays = set()
    for name in src.files:
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
            if is_image_name(name):
                if parts[1] in by_class:
                    by_class[parts[1]].append(name)
                else:
                    strays.add(parts[1])
    if strays:
        raise DatasetError(
            f"{src.where('train')} has class folder(s) not listed in wnids.txt: {sorted(strays)}."
        )
    empty = [w for w in wnids if not by_class[w]]
    if empty:
        raise DatasetError(
            f"No training images for class {empty[0]!r}: expected "
            f"{src.where(f'train/{empty[0]}/images')}/*.JPEG."
        )
    names = [m for w in wnids for m in sorted(by_class[w])]
    labels = np.repeat(np.arange(len(wnids), dtype=np.int64), [len(by_class[w]) for w in wnids])
    return names, labels


def _val_members(src: ImageSource, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    annotations = "val/val_annotations.txt"
    if annotations not in src.files:
        raise DatasetError(f"Tiny ImageNet file {src.where(annotations)} is missing.")
    index = {w: i for i, w in enumerate(wnids)}
    entries = []
    for lineno, line in enumerate(_text(src, annotations), start=1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise DatasetError(
                f"{src.where(annotations)}, line {lineno}: expected 'file<TAB>wnid...', "
                f"found {line!r}."
            )
        filename, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DatasetError(
                f"{src.where(annotations)}, line {lineno}: unknown class {wnid!r} (not among "
                "the classes of wnids.txt or train/)."
            )
        member = f"val/images/{filename}"
        if member not in src.files:
            raise DatasetError(
                f"{src.where(annotations)}, line {lineno}: image {src.where(member)} is missing."
            )
        entries.append((index[wnid], filename, member))
    if not entries:
        raise DatasetError(f"{src.where(annotations)} lists no images.")
    entries.sort()
    return [m for _, _, m in entries], np.array([i for i, _, _ in entries], dtype=np.int64)


def read_tiny_imagenet(
    root: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
    bad_images: str = "refuse", max_pixels: int | None = MAX_PIXELS,
) -> RawDataset:
    """Read Tiny ImageNet: 100,000 training and 10,000 validation images of 64x64, 200 classes.

    Parameters
    ----------
    root:
        The release folder ``tiny-imagenet-200``, the folder containing it, or the release's
        ``.zip``.
    cache_dir:
        Where to keep the decoded arrays; default ``$TAILMIX_CACHE`` or ``~/.cache/tailmix``.
    bad_images, max_pixels:
        As in :func:`~tailmix.data.imagefolder.read_imagefolder`.

    Returns
    -------
    RawDataset
        The validation split as the test set. Class order is that of ``wnids.txt`` (sorted
        training folders when absent); class names are the first name in ``words.txt``
        when present, else the wnids.

    Raises
    ------
    DatasetError
        If ``root`` does not exist (a ``FileNotFoundError`` too), a split or file is missing,
        an annotation names an unknown class, an image cannot be decoded (unless skipped) or
        images differ in size.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise ParameterError("root", "a str or os.PathLike path", root)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise ParameterError("cache_dir", "a str or os.PathLike path or None", cache_dir)
    check_decoding(bad_images, max_pixels)
    root = Path(root).expanduser()
    if root.is_dir() and (root / _RELEASE_FOLDER).is_dir():
        root = root / _RELEASE_FOLDER
    with ImageSource(root, expect=("train", "val", "wnids.txt")) as src:
        missing = [s + "/" for s in ("train", "val") if s not in src.dirs]
        if missing:
            raise DatasetError(
                f"{src.path} is not a Tiny ImageNet release: missing {', '.join(missing)}. "
                f"Found: {src.top_level()[:20]}."
            )
        wnids = _class_ids(src)
        train, train_y = _train_members(src, wnids)
        test, test_y = _val_members(src, wnids)
        plan = ImagePlan(
            kind="tinyimagenet",
            classes=_class_names(src, wnids),
            train=train,
            train_y=train_y,
            test=test,
            test_y=test_y,
            splits=("train", "val"),
        )
        return build_dataset(src, plan, cache_dir=cache_dir, name="tinyimagenet",
                             bad_images=bad_images, max_pixels=max_pixels)
