"""Finding a dataset's files without reading them.

:func:`locate_source` takes what :func:`~tailmix.data.sources.load_source` takes and checks,
in a moment, that the files the source will read are where it looks for them: a release's
batch files or its archive, a ``SPLIT/CLASS/IMAGE`` layout (folder or zip), the list files of
a list source. It decodes no image and unpickles no batch: a folder is listed, a zip's
central directory is read. ``tailmix check`` and ``tailmix bench`` run it for every run of
a suite before the first one trains, so that a missing folder is not found hours in.

A source that can fetch its files (``cifar10``, ``cifar100``, ``svhn``) is found with
``download: true`` whether its files are there yet or not (the network is not tried); a
source that cannot refuses ``download: true``, as its reader does. Data built into tailmix
(``digits``) is always found.

A registered source may bring its own check as ``locate`` metadata, called as
``locate(root=..., download=..., **options)`` and raising a
:class:`~tailmix.data.download.DatasetError` that says what is missing::

    @DATASETS.register("my_data", needs_root=True, locate=find_my_data)
    def my_data(*, root=None, download=False, **options): ...

A source without one is found when its root exists (or when it reads none).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tailmix._validation import ParameterError
from tailmix.data.download import DatasetError
from tailmix.registry import DATASETS

__all__ = ["locate_source"]


def locate_source(name: str, *, root: str | os.PathLike | None = None, download: bool = False,
                  **options: Any) -> None:
    """Check that the files ``load_source(name, root=root, download=download, **options)``
    reads are there, without reading them.

    Parameters
    ----------
    name : str
        The source (registered in :data:`tailmix.registry.DATASETS`).
    root : str or PathLike, optional
        The folder or file the source reads.
    download : bool, default False
        Whether the source may fetch missing files.
    **options
        The source's options (``dataset.options``); ``in_memory`` is ignored.

    Raises
    ------
    DatasetError
        Saying what is missing or what layout was found instead.
    ParameterError
        For an unknown source or a missing root (naming ``dataset.name`` or
        ``dataset.root``), and for an option or ``dataset.download`` the source's reader
        would refuse (naming it).
    """
    loader = DATASETS.get(name, "dataset.name")
    meta = DATASETS.meta(name)
    options.pop("in_memory", None)
    if meta.get("needs_root"):
        if root is None:
            raise ParameterError("dataset.root", f"a folder or file holding {name!r} (give "
                                 "--data-root)", None)
        if not isinstance(root, (str, os.PathLike)):
            raise ParameterError("dataset.root", "a path (a string)", root)
        root = Path(root).expanduser()
        if not root.exists() and not download:
            raise ParameterError("dataset.root", "an existing folder or file", str(root))
    if callable(meta.get("locate")):
        meta["locate"](root=root, download=download, **options)
        return
    if getattr(loader, "__module__", None) in _BUILTIN_MODULES and name in _BUILTIN:
        _BUILTIN[name](name, root, download, options)


# --------------------------------------------------------------------------- layouts


def _image_source(root: Path, expect: Sequence[str]) -> Any:
    """The folder or zip ``root`` listed (names and folders, nothing decoded)."""
    from tailmix.data.imagefolder import ImageSource

    if not root.exists():
        raise DatasetError(f"{root} does not exist.")
    return ImageSource(root, expect=expect)


def _check_splits(src: Any, splits: Sequence[str]) -> None:
    """Each split a folder of class folders, every class folder holding an image one level
    down, the same classes in every split: what the ``SPLIT/CLASS/IMAGE`` reader needs."""
    from tailmix.data.imagefolder import IMAGE_EXTENSIONS, is_image_name

    classes: dict[str, set[str]] = {}
    for split in splits:
        if split not in src.dirs:
            raise DatasetError(f"{src.path} does not have the SPLIT/CLASS/IMAGE layout: no "
                               f"{split!r} folder at its top level. Found: "
                               f"{src.top_level()[:20]}.")
        head = split + "/"
        found = {d[len(head):] for d in src.dirs
                 if d.startswith(head) and "/" not in d[len(head):]}
        if not found:
            raise DatasetError(f"{src.path} does not have the SPLIT/CLASS/IMAGE layout: the "
                               f"{split!r} folder holds no class folders.")
        with_images = {n[len(head):].split("/")[0] for n in src.files
                       if n.startswith(head) and n.count("/") == 2 and is_image_name(n)}
        empty = sorted(found - with_images)
        if empty:
            raise DatasetError(f"Class folder {src.where(head + empty[0])} holds no images "
                               f"(extensions read: {', '.join(sorted(IMAGE_EXTENSIONS))}).")
        classes[split] = found
    first, *rest = splits
    for split in rest:
        if classes[split] != classes[first]:
            missing = sorted(classes[first] - classes[split])
            extra = sorted(classes[split] - classes[first])
            raise DatasetError(f"The {split!r} split of {src.path} has other classes than the "
                               f"{first!r} split: missing from {split!r}: {missing[:5]}; only "
                               f"in {split!r}: {extra[:5]}.")


def _imagefolder(name: str, root: Path, download: bool, options: dict[str, Any]) -> None:
    """``SPLIT/CLASS/IMAGE`` with both splits, or ``CLASS/IMAGE`` (its test set held out)."""
    from tailmix.data.imagefolder import find_layout, test_folder

    splits = (options.get("train_split", "train"), options.get("test_split", "test"))
    with _image_source(root, splits) as src:
        if find_layout(src, splits[0], test_share=options.get("test_share"),
                       split_seed=options.get("split_seed"), prefix="dataset.options.") is None:
            _check_splits(src, (splits[0], test_folder(src, splits[1])))


def _cifar(name: str, root: Path, download: bool, options: dict[str, Any]) -> None:
    """The image-folder copy (``train/`` and ``test/`` folders, or a zip), else the official
    release: its extracted folder, the folder itself, or its archive."""
    from tailmix.data.cifar import CIFAR_RELEASES

    if (root.is_dir() and (root / "train").is_dir() and (root / "test").is_dir()) or (
            root.is_file() and root.suffix == ".zip"):
        _imagefolder(name, root, download, options)
        return
    release = CIFAR_RELEASES[10 if name == "cifar10" else 100]
    if root.name.endswith((".tar.gz", ".tgz", ".tar")):
        if root.is_file() or download:
            return
        raise DatasetError(f"The {release.title} archive {root} does not exist; set "
                           f"dataset.download: true to fetch it (or download {release.url} "
                           "there).")
    if root.is_file():
        raise DatasetError(f"The {release.title} root {root} is a file, not a folder: expected "
                           f"a folder holding {release.folder}/ (the extracted official "
                           f"release) or {release.archive}, that archive itself (a name ending "
                           ".tar.gz), or a .zip of train/ and test/ class folders.")
    if download:  # there, or fetched when the run reads it
        return
    needed = (*release.train, release.test, release.meta)
    if any(all((folder / n).is_file() for n in needed) for folder in (root / release.folder,
                                                                      root)):
        return
    if (root / release.archive).is_file():
        return
    missing = next(n for n in needed if not (root / release.folder / n).is_file())
    raise DatasetError(
        f"{release.title} not found under {root}: expected {root / release.folder / missing} "
        f"(the extracted official release), the archive {root / release.archive}, or an "
        "image-folder copy (train/ and test/ class folders, or a .zip of them); set "
        f"dataset.download: true to fetch the release (or download {release.url} there).")


def _svhn(name: str, root: Path, download: bool, options: dict[str, Any]) -> None:
    from tailmix.data.svhn import SVHN_FILES

    _folder(name, root)
    if download:
        return
    for filename, _, _ in SVHN_FILES.values():
        if not (root / filename).is_file():
            raise DatasetError(f"SVHN file {root / filename} does not exist; expected "
                               f"{' and '.join(f for f, _, _ in SVHN_FILES.values())} in "
                               "the dataset root, or set dataset.download: true to fetch "
                               "them.")


def _cinic10(name: str, root: Path, download: bool, options: dict[str, Any]) -> None:
    with _image_source(root, ("train", "valid", "test")) as src:
        missing = [s + "/" for s in ("train", "valid", "test") if s not in src.dirs]
        if missing:
            raise DatasetError(f"{src.path} is not a CINIC-10 release: missing the split "
                               f"folder(s) {', '.join(missing)}. Found: "
                               f"{src.top_level()[:20]}.")
        _check_splits(src, ("train", options.get("eval_split", "test")))


def _tiny_imagenet(name: str, root: Path, download: bool, options: dict[str, Any]) -> None:
    from tailmix.data.imagefolder import is_image_name

    if root.is_dir() and (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    with _image_source(root, ("train", "val", "wnids.txt")) as src:
        missing = [s + "/" for s in ("train", "val") if s not in src.dirs]
        if missing:
            raise DatasetError(f"{src.path} is not a Tiny ImageNet release: missing "
                               f"{', '.join(missing)}. Found: {src.top_level()[:20]}.")
        if "val/val_annotations.txt" not in src.files:
            raise DatasetError(f"Tiny ImageNet file {src.where('val/val_annotations.txt')} "
                               "is missing.")
        if not any(n.startswith("train/") and n.count("/") == 3 and is_image_name(n)
                   for n in src.files):
            raise DatasetError(f"{src.where('train')} holds no training images: expected "
                               "train/<wnid>/images/*.JPEG.")


def _folder(name: str, root: Path) -> None:
    """A source that reads a folder refuses a file (a missing root is looked at before)."""
    if root.exists() and not root.is_dir():
        raise ParameterError("dataset.root", f"a folder holding {name!r}",
                             f"{root}: a file")


def _no_download(name: str, download: bool) -> None:
    if download:
        raise ParameterError("dataset.download", f"false: {name!r} cannot be downloaded "
                             "(its images come from the original dataset)", download)


def _option_file(root: Path, options: dict[str, Any], key: str, what: str, *,
                 required: bool = True, folder: bool = False) -> Path | None:
    """The file (or folder) an option names, relative to ``root`` unless absolute."""
    value = options.get(key)
    if value is None and not required:
        return None
    expected = f"the path of {what} (relative to the dataset root or absolute)"
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ParameterError(f"dataset.options.{key}", expected, value)
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not (path.is_dir() if folder else path.is_file()):
        raise DatasetError(f"{path} (dataset.options.{key}) does not exist; expected {what} "
                           "there.")
    return path


def _list_files(name: str, root: Path, download: bool, options: dict[str, Any]) -> None:
    """``filelist`` and ``csv``: the train and test lists (and the class names) exist; the
    images they name are checked when they are read."""
    _folder(name, root)
    _no_download(name, download)
    what = "a 'relative/path label' list file" if name == "filelist" else "a 'path,label' CSV"
    for key in ("train", "test"):
        _option_file(root, options, key, what)
    _option_file(root, options, "classes", "a text file of class names, one a line",
                 required=False)


# The split a released list source evaluates on by default comes first.
_EVAL_SPLITS = {"imagenet_lt": ("test", "val"), "places_lt": ("test", "val"),
                "inat2018": ("val",)}


def _release_lists(name: str, root: Path, download: bool, options: dict[str, Any]) -> None:
    from tailmix.data.lists import RELEASES

    _folder(name, root)
    _no_download(name, download)
    release = RELEASES[name]
    lists = _option_file(root, options, "lists", "the folder holding the list files",
                         required=False, folder=True) or root
    split = options.get("eval_split", _EVAL_SPLITS[name][0])
    for part in ("train", split):
        file = release["files"].get(part)
        if file is None:  # an eval_split the source does not take: its reader says so
            continue
        if not (lists / file).is_file():
            raise DatasetError(
                f"{release['title']} list file {lists / file} does not exist; expected the "
                f"released {file} in the dataset root (or in dataset.options.lists), beside "
                f"the images its lines name, e.g. {release['example']!r}.")


def _arrays(name: str, root: Any, download: bool, options: dict[str, Any]) -> None:
    raise ParameterError("dataset", "data passed in from Python for the 'arrays' source "
                         "(train(config, out, data=from_arrays(...)))", "no data")


def _builtin_data(name: str, root: Any, download: bool, options: dict[str, Any]) -> None:
    """Data shipped with tailmix's dependencies: always there."""


_BUILTIN_MODULES = ("tailmix.data.sources", "tailmix.data.lists")
_BUILTIN: dict[str, Callable[[str, Any, bool, dict[str, Any]], None]] = {
    "digits": _builtin_data,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "imagefolder": _imagefolder,
    "svhn": _svhn,
    "cinic10": _cinic10,
    "tiny_imagenet": _tiny_imagenet,
    "arrays": _arrays,
    "filelist": _list_files,
    "csv": _list_files,
    "imagenet_lt": _release_lists,
    "places_lt": _release_lists,
    "inat2018": _release_lists,
}
