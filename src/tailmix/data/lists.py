"""Datasets given as list files: image paths relative to a root folder, each with a label.

The large long-tailed benchmarks are released as lists over images the user already holds:
ImageNet-LT, Places-LT and iNaturalist 2018 each come as text files of ``relative/path label``
lines (``train/n01440764/n01440764_10026.JPEG 0``) naming images of the original datasets.
:func:`read_list_file` reads that format and :func:`read_csv_file` a ``path,label`` CSV (labels
as class indices or class names). Both check every line and, by default, that every named
file exists, and report a bad line by file and 1-based line number, quoting it.

The sources registered here return a :class:`~tailmix.data.files.FileDataset` whose root is
the dataset folder and whose names are the paths the lists give:

``filelist``
    Any ``relative/path label`` lists: options ``train`` and ``test`` (list files, relative to
    the root unless absolute) and optionally ``classes`` (a text file, one class name a line).
    Without ``classes`` the training list's labels number the classes from 0: the highest
    must be below the number of training images (each class needs one), and the test
    list's labels below the number of classes.
``csv``
    The same options, with ``path,label`` CSV files (an optional ``path,label`` header).
``imagenet_lt``
    ``ImageNet_LT_train.txt`` and ``ImageNet_LT_test.txt`` (or ``_val.txt`` with
    ``eval_split: val``) beside ImageNet's ``train/`` and class-sorted ``val/`` folders.
``places_lt``
    ``Places_LT_train.txt`` and ``Places_LT_test.txt`` (or ``_val.txt``) beside the
    ``train/`` and ``val/`` class folders of Places365-Standard.
``inat2018``
    ``iNaturalist18_train.txt`` and ``iNaturalist18_val.txt`` (the validation split serves as
    the test set) beside the released ``train_val2018/`` folder.

The three releases also take ``lists``: the folder holding their list files when it is not
the root (relative to the root unless absolute). The number of classes is the highest label
in the lists plus one, at most the release's (a subset of a release reads as it is), and every
class must have training images. Every source takes and ignores ``in_memory`` (the caller
decides whether to stream), refuses ``download`` (the images come from the original datasets)
and rejects an unknown option with a :class:`~tailmix._validation.ParameterError` naming
``dataset.options.<key>``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tailmix._validation import ParameterError, check_choice
from tailmix.data.download import DatasetError
from tailmix.data.files import FileDataset
from tailmix.registry import DATASETS

__all__ = ["RELEASES", "read_class_names", "read_csv_file", "read_list_file"]

#: The released long-tailed lists: list-file names per split, class count, training size and
#: the largest and smallest training class.
RELEASES: dict[str, dict[str, Any]] = {
    "imagenet_lt": {
        "title": "ImageNet-LT",
        "files": {"train": "ImageNet_LT_train.txt", "test": "ImageNet_LT_test.txt",
                  "val": "ImageNet_LT_val.txt"},
        "classes": 1000, "train_images": 115846, "largest": 1280, "smallest": 5,
        "example": "train/n01440764/n01440764_10026.JPEG 0",
    },
    "places_lt": {
        "title": "Places-LT",
        "files": {"train": "Places_LT_train.txt", "test": "Places_LT_test.txt",
                  "val": "Places_LT_val.txt"},
        "classes": 365, "train_images": 62500, "largest": 4980, "smallest": 5,
        "example": "train/airfield/00004851.jpg 0",
    },
    "inat2018": {
        "title": "iNaturalist 2018",
        "files": {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt"},
        "classes": 8142, "train_images": 437513, "largest": 1000, "smallest": 2,
        "example": "train_val2018/Plantae/7477/3b60c9486db1d2ee875f11a669fbde4a.jpg 7477",
    },
}

_LIST_FORMAT = "'relative/path label' (a path under the dataset root, a space, an int >= 0)"
_CSV_FORMAT = "'path,label' (a path under the dataset root, a comma, a label)"
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Labels of more digits cannot be an int64 class index (and are not read as numbers).
_LABEL_DIGITS = 18
_DRIVE = re.compile(r"[A-Za-z]:[/\\]")


# --------------------------------------------------------------------------- checks


def _where(path: Path, lineno: int) -> str:
    return f"{path}, line {lineno}"


def _path_problem(name: str) -> str | None:
    """Why ``name`` cannot be a path under the root, or None."""
    if not name:
        return "an empty path"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "an absolute path (paths must be relative to the dataset root)"
    if ".." in re.split(r"[/\\]", name):
        return "a path with '..' (paths must stay under the dataset root)"
    return None


def _label_problem(text: str, num_classes: int | None) -> str | None:
    """Why ``text`` is not a class index below ``num_classes``, or None."""
    if not _INTEGER.fullmatch(text):
        return f"the label {text!r} is not an integer"
    if len(text.lstrip("+-").lstrip("0")) > _LABEL_DIGITS:
        return f"the label {_shorten(text)} is too large to be a class index"
    value = int(text)
    if value < 0:
        return f"the label {value} is negative"
    if num_classes is not None and value >= num_classes:
        return f"the label {value} is not below the number of classes ({num_classes})"
    return None


def _shorten(text: str, keep: int = 24) -> str:
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def _too_many_classes(label: int, rows: int, lines: str) -> str:
    """The message for a label that would size more classes than there are ``rows``."""
    return (f"the label {label} is not below {rows}, the number of {lines}: labels "
            f"0..{label} would make {label + 1} classes, each of which needs a training image "
            "(number the classes from 0, or declare them in dataset.options.classes)")


def _existing_files(folder: Path) -> set[str]:
    """Names of the files (or links to files) directly in ``folder``; empty if unreadable."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.is_file()}
    except OSError:
        return set()


def _missing(root: Path, names: Sequence[str]) -> list[int]:
    """Indices of ``names`` that are not files under ``root``; each folder is listed once."""
    listed: dict[str, set[str]] = {}
    missing = []
    for i, name in enumerate(names):
        parent, _, base = name.replace("\\", "/").rpartition("/")
        if parent not in listed:
            listed[parent] = _existing_files(root / parent if parent else root)
        if base not in listed[parent]:
            missing.append(i)
    return missing


def _check_files(path: Path, root: Path, names: Sequence[str], linenos: Sequence[int]) -> None:
    missing = _missing(root, names)
    if missing:
        first = missing[0]
        raise DatasetError(
            f"{len(missing)} of the {len(names)} files named in {path} do not exist under "
            f"{root}; the first is {names[first]!r} ({_where(path, linenos[first])}), "
            f"expected at {root / names[first]}. Point the dataset root at the folder the "
            "list's paths start from.")


def _list_path(path: str | os.PathLike, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ParameterError(name, "a str or os.PathLike path", path)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"The list file {path} does not exist.")
    return path


def _root_path(root: str | os.PathLike | None, name: str = "root") -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise ParameterError(name, "a str or os.PathLike path to the dataset folder", root)
    return Path(root).expanduser()


# --------------------------------------------------------------------------- readers


def read_list_file(path: str | os.PathLike, *, root: str | os.PathLike,
                   num_classes: int | None = None, check_files: bool = True
                   ) -> tuple[list[str], np.ndarray]:
    """Read a ``relative/path label`` list, the format of the long-tailed benchmark releases.

    Each non-blank line is a path relative to ``root`` and an integer label, split at the
    line's last run of whitespace (so a path may hold spaces).

    Parameters
    ----------
    path : str or PathLike
        The list file.
    root : str or PathLike
        The folder the paths are relative to.
    num_classes : int, optional
        Labels must be below it when given; otherwise below the number of images the list
        names (the classes are numbered from 0 and each needs a training image), so that
        no label sizes more than the file holds.
    check_files : bool, default True
        Check that every named file exists under ``root``.

    Returns
    -------
    names : list of str
        The paths as written, in file order.
    labels : ndarray
        ``int64`` labels, one per name.

    Raises
    ------
    DatasetError
        For a missing list file; for a line without a label, with a label that is not an
        integer, negative or not below ``num_classes`` (or the number of lines), or with an
        absolute path or one holding ``..`` (naming the file and line, quoting the line);
        and, with ``check_files``, for named files that do not exist (the count and the first
        one).
    """
    path = _list_path(path)
    root = _root_path(root)
    names: list[str] = []
    labels: list[int] = []
    linenos: list[int] = []
    top = (-1, 0, "")  # the highest label, its line and the line
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            problem = "no label after the path" if len(parts) < 2 else None
            if problem is None:
                problem = _path_problem(parts[0]) or _label_problem(parts[1], num_classes)
            if problem is not None:
                raise DatasetError(f"{_where(path, lineno)}: {problem}; expected {_LIST_FORMAT},"
                                   f" got {_shorten(line, 200)!r}.")
            names.append(parts[0])
            labels.append(int(parts[1]))
            linenos.append(lineno)
            if labels[-1] > top[0]:
                top = (labels[-1], lineno, line)
    if num_classes is None and top[0] >= len(labels):
        problem = _too_many_classes(top[0], len(labels), f"images {path.name} names")
        raise DatasetError(f"{_where(path, top[1])}: {problem}; got {_shorten(top[2], 200)!r}.")
    if check_files:
        _check_files(path, root, names, linenos)
    return names, np.asarray(labels, dtype=np.int64)


def read_csv_file(path: str | os.PathLike, *, root: str | os.PathLike,
                  classes: Sequence[str] | None = None, check_files: bool = True
                  ) -> tuple[list[str], np.ndarray, list[str]]:
    """Read a ``path,label`` CSV of images under ``root``.

    A first row whose first cell is ``path`` is a header and skipped. When every label is an
    integer the labels are class indices and the classes are ``"0"`` .. the highest label,
    which must be below the number of rows (each class needs an image), or ``classes``, which
    then bounds the labels; otherwise the labels are class names, and the classes are the
    sorted names, or ``classes`` when given (which fixes their order: read a test split with
    the training split's classes). Labels that are all numbers but not all integers
    (``2.0``, ``1e26``) are an error unless ``classes`` is given.

    Parameters
    ----------
    path : str or PathLike
        The CSV file (UTF-8, comma-separated, quoting as Python's ``csv`` reads it).
    root : str or PathLike
        The folder the paths are relative to.
    classes : sequence of str, optional
        The class names, in label order.
    check_files : bool, default True
        Check that every named file exists under ``root``.

    Returns
    -------
    names : list of str
    labels : ndarray
        ``int64`` class indices.
    classes : list of str

    Raises
    ------
    DatasetError
        As :func:`read_list_file`, and for a row without two cells, a class name not in
        ``classes`` or a label that is a number but no integer (naming the file and line,
        quoting the row).
    """
    path = _list_path(path)
    root = _root_path(root)
    if classes is not None:
        classes = [str(c) for c in classes]
    rows: list[tuple[int, str, str, str]] = []  # (line, path, label, the row as written)
    first = True
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        try:
            for cells in reader:
                lineno = reader.line_num
                cells = [c.strip() for c in cells]
                if not any(cells):
                    continue
                header, first = first and cells[0].lower() == "path", False
                if header:
                    continue
                written = ",".join(cells)
                if len(cells) != 2:
                    raise DatasetError(f"{_where(path, lineno)}: {len(cells)} cells; expected "
                                       f"{_CSV_FORMAT}, got {written!r}.")
                problem = _path_problem(cells[0]) or (None if cells[1] else "an empty label")
                if problem is not None:
                    raise DatasetError(f"{_where(path, lineno)}: {problem}; expected "
                                       f"{_CSV_FORMAT}, got {written!r}.")
                rows.append((lineno, cells[0], cells[1], written))
        except csv.Error as e:
            raise DatasetError(f"{_where(path, reader.line_num)}: not a readable CSV row "
                               f"({e}); expected {_CSV_FORMAT}.") from e
    integers = bool(rows) and all(_INTEGER.fullmatch(r[2]) for r in rows)
    if not integers and classes is None:
        _refuse_numbers(path, rows)
    labels: list[int] = []
    if integers:
        for lineno, _, label, written in rows:
            problem = _label_problem(label, None if classes is None else len(classes))
            if problem is None and classes is None and int(label) >= len(rows):
                problem = _too_many_classes(int(label), len(rows), f"rows of {path.name}")
            if problem is not None:
                raise DatasetError(f"{_where(path, lineno)}: {problem}; expected {_CSV_FORMAT},"
                                   f" got {_shorten(written, 200)!r}.")
            labels.append(int(label))
        if classes is None:
            classes = [str(c) for c in range(max(labels, default=-1) + 1)]
    else:
        if classes is None:
            classes = sorted({r[2] for r in rows})
        index = {c: i for i, c in enumerate(classes)}
        for lineno, _, label, written in rows:
            if label not in index:
                shown = ", ".join(repr(c) for c in classes[:5])
                more = f" (and {len(classes) - 5} more)" if len(classes) > 5 else ""
                raise DatasetError(f"{_where(path, lineno)}: the class {label!r} is not one of "
                                   f"the classes {shown}{more}; got {written!r}.")
            labels.append(index[label])
    names = [r[1] for r in rows]
    if check_files:
        _check_files(path, root, names, [r[0] for r in rows])
    return names, np.asarray(labels, dtype=np.int64), list(classes)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _refuse_numbers(path: Path, rows: list[tuple[int, str, str, str]]) -> None:
    """Labels that are all numbers, not all integers (``2.0``, ``1e26``): class indices
    written as floats, not class names; the first that is no integer is an error."""
    if not all(_is_number(r[2]) for r in rows):
        return
    lineno, _, label, written = next(r for r in rows if not _INTEGER.fullmatch(r[2]))
    raise DatasetError(f"{_where(path, lineno)}: the label {_shorten(label)!r} is a number but "
                       "not an integer; expected class indices (integers from 0) or class "
                       "names (to read numbers as names, list them in dataset.options.classes),"
                       f" got {_shorten(written, 200)!r}.")


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one a line (blank lines skipped), in label order.

    Raises
    ------
    DatasetError
        For a missing file, no names, or a name given twice (with its line).
    """
    path = _list_path(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, raw in enumerate(f, start=1):
            name = raw.strip()
            if not name:
                continue
            if name in seen:
                raise DatasetError(f"{_where(path, lineno)}: the class {name!r} is already "
                                   f"named on line {seen[name]}; expected one name a line, "
                                   "each once.")
            seen[name] = lineno
            names.append(name)
    if not names:
        raise DatasetError(f"{path} names no classes; expected one class name a line.")
    return names


# --------------------------------------------------------------------------- sources


def _check_options(source: str, options: dict[str, Any], known: Sequence[str]) -> None:
    for key, value in options.items():
        if key not in known:
            listed = ", ".join(repr(k) for k in known) or "none"
            raise ParameterError(f"dataset.options.{key}",
                                 f"an option {source!r} takes ({listed})", value)


def _folder(root: str | os.PathLike | None, source: str) -> Path:
    """The dataset root as a folder (a ``data_root`` error otherwise)."""
    if root is None:
        raise ParameterError("data_root", f"a folder holding {source!r}", None)
    if not isinstance(root, (str, os.PathLike)):
        raise ParameterError("data_root", "a str or os.PathLike path", root)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ParameterError("data_root", f"an existing folder holding {source!r} (its list "
                             "files and images)", str(root))
    return root


def _no_download(download: bool, source: str) -> None:
    if download:
        raise ParameterError("dataset.download", f"false: {source!r} cannot be downloaded "
                             "(its images come from the original dataset)", download)


def _option_path(root: Path, key: str, value: Any, *, required: bool, what: str) -> Path | None:
    """An option naming a file or folder, relative to ``root`` unless absolute."""
    if value is None:
        if required:
            raise ParameterError(f"dataset.options.{key}", what, None)
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ParameterError(f"dataset.options.{key}", what, value)
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _existing(path: Path, key: str, what: str) -> Path:
    if not path.exists():
        raise ParameterError(f"dataset.options.{key}", f"{what} (relative to the dataset root "
                             "or absolute) that exists", str(path))
    return path


def _check_coverage(train_y: np.ndarray, classes: list[str], path: Path) -> None:
    """Every class must have training images."""
    counts = np.bincount(train_y, minlength=len(classes))
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(f"{int(c)} ({classes[int(c)]!r})" for c in empty[:5])
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise DatasetError(f"{len(empty)} of the {len(classes)} classes have no training "
                           f"images in {path}: {shown}{more}; expected at least one image "
                           "in every class.")


def _folder_names(names: Sequence[str], labels: np.ndarray, num_classes: int,
                  key: Callable[[str], str | None]) -> list[str]:
    """Class names from the folders the paths lie in: ``key(path)`` for each label when all
    its paths agree and no other label shares it; ``str(label)`` otherwise."""
    seen: dict[int, set[str | None]] = defaultdict(set)
    for name, label in zip(names, labels.tolist(), strict=True):
        seen[label].add(key(name))
    found = [next(iter(seen[c])) if len(seen[c]) == 1 else None for c in range(num_classes)]
    uses = defaultdict(int)
    for f in found:
        uses[f] += 1
    return [f if f is not None and uses[f] == 1 else str(c) for c, f in enumerate(found)]


def _dataset(root: Path, train: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray],
             classes: list[str], name: str, paths: tuple[Path, Path]) -> FileDataset:
    for (names, _), path in zip((train, test), paths, strict=True):
        if not names:
            raise DatasetError(f"{path} names no images; expected one image a line.")
    _check_coverage(train[1], classes, paths[0])
    return FileDataset(root=root, train_files=train[0], train_y=train[1], test_files=test[0],
                       test_y=test[1], classes=classes, name=name, hflip=True)


def _generic(source: str, root: Any, download: bool, options: dict[str, Any], what: str
             ) -> tuple[Path, Path, Path, list[str] | None]:
    """The root, the train and test list files and the class names (or None) of ``filelist``
    and ``csv``."""
    root = _folder(root, source)
    _no_download(download, source)
    _check_options(source, options, ("train", "test", "classes"))
    paths = []
    for key in ("train", "test"):
        path = _option_path(root, key, options.get(key), required=True, what=what)
        paths.append(_existing(path, key, what))
    classes_path = _option_path(root, "classes", options.get("classes"), required=False,
                                what="the path of a text file of class names, one a line")
    classes = None
    if classes_path is not None:
        classes = read_class_names(_existing(classes_path, "classes", "a class-name file"))
    return root, paths[0], paths[1], classes


@DATASETS.register("filelist", inputs="image", needs_root=True, config=None, sizes=None,
                   profile="original")
def _filelist(*, root: Any = None, download: bool = False, in_memory: Any = None,
              **options: Any) -> FileDataset:
    root, train_path, test_path, classes = _generic(
        "filelist", root, download, options, "the path of a 'relative/path label' list file")
    train = read_list_file(train_path, root=root,
                           num_classes=None if classes is None else len(classes))
    if classes is None:  # the training list's labels number the classes
        classes = [str(c) for c in range(int(train[1].max(initial=-1)) + 1)]
    test = read_list_file(test_path, root=root, num_classes=len(classes) or None)
    return _dataset(root, train, test, classes, "filelist", (train_path, test_path))


@DATASETS.register("csv", inputs="image", needs_root=True, config=None, sizes=None,
                   profile="original")
def _csv(*, root: Any = None, download: bool = False, in_memory: Any = None,
         **options: Any) -> FileDataset:
    root, train_path, test_path, classes = _generic(
        "csv", root, download, options, "the path of a 'path,label' CSV file")
    train_names, train_y, classes = read_csv_file(train_path, root=root, classes=classes)
    test_names, test_y, _ = read_csv_file(test_path, root=root, classes=classes)
    return _dataset(root, (train_names, train_y), (test_names, test_y), classes, "csv",
                    (train_path, test_path))


def _release(source: str, root: Any, download: bool, options: dict[str, Any], *,
             eval_splits: tuple[str, ...], class_key: Callable[[str], str | None] | None
             ) -> FileDataset:
    """Read a released benchmark's lists from ``root`` (or ``options['lists']``)."""
    release = RELEASES[source]
    root = _folder(root, source)
    _no_download(download, source)
    _check_options(source, options, ("eval_split", "lists"))
    split = check_choice("dataset.options.eval_split",
                         options.get("eval_split", eval_splits[0]), eval_splits)
    lists = _option_path(root, "lists", options.get("lists"), required=False,
                         what="the folder holding the list files")
    lists = root if lists is None else _existing(lists, "lists", "a folder of list files")
    paths = {}
    for part, file in (("train", release["files"]["train"]), (split, release["files"][split])):
        paths[part] = lists / file
        if not paths[part].is_file():
            raise DatasetError(
                f"{release['title']} list file {paths[part]} does not exist; expected the "
                f"released {file} in the dataset root (or in dataset.options.lists), beside "
                f"the images its lines name, e.g. {release['example']!r}.")
    bound = release["classes"]
    train = read_list_file(paths["train"], root=root, num_classes=bound)
    test = read_list_file(paths[split], root=root, num_classes=bound)
    top = max(int(train[1].max(initial=-1)), int(test[1].max(initial=-1)))
    if class_key is None:
        classes = [str(c) for c in range(top + 1)]
    else:
        classes = _folder_names(train[0] + test[0], np.concatenate([train[1], test[1]]),
                                top + 1, class_key)
    return _dataset(root, train, test, classes, source, (paths["train"], paths[split]))


def _second_part(name: str) -> str | None:
    """``train/n01440764/x.JPEG`` -> ``n01440764``."""
    parts = name.split("/")
    return parts[1] if len(parts) >= 3 and parts[1] else None


def _middle_parts(name: str) -> str | None:
    """``train/airfield/x.jpg`` -> ``airfield`` (nested scene folders joined by ``/``)."""
    parts = name.split("/")
    return "/".join(parts[1:-1]) if len(parts) >= 3 else None


@DATASETS.register("imagenet_lt", inputs="image", needs_root=True, config="imagenet_lt",
                   sizes=(1000, 1280), profile="original")
def _imagenet_lt(*, root: Any = None, download: bool = False, in_memory: Any = None,
                 **options: Any) -> FileDataset:
    return _release("imagenet_lt", root, download, options, eval_splits=("test", "val"),
                    class_key=_second_part)


@DATASETS.register("places_lt", inputs="image", needs_root=True, config="places_lt",
                   sizes=(365, 4980), profile="original")
def _places_lt(*, root: Any = None, download: bool = False, in_memory: Any = None,
               **options: Any) -> FileDataset:
    return _release("places_lt", root, download, options, eval_splits=("test", "val"),
                    class_key=_middle_parts)


@DATASETS.register("inat2018", inputs="image", needs_root=True, config="inat2018",
                   sizes=(8142, 1000), profile="original")
def _inat2018(*, root: Any = None, download: bool = False, in_memory: Any = None,
              **options: Any) -> FileDataset:
    return _release("inat2018", root, download, options, eval_splits=("val",), class_key=None)
