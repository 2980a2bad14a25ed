"""Images read lazily from disk: a dataset as file names and labels, decoded while training.

A :class:`FileDataset` is what a streaming source returns: the training and test files (paths
relative to a folder or members of a zip) with their labels. :func:`tailmix.data.prepare_dataset`
cuts it to a long-tailed profile like any dataset and wraps each split as an
:class:`ImageFiles`, which stands where an in-memory ``uint8`` tensor stands elsewhere: it has a
length, a shape ``(N, 3, S, S)`` and indexing, and it decodes.

Decoding runs in ``DataLoader`` worker processes with Pillow. JPEGs are decoded at a reduced
scale when the output allows (``Image.draft``), so a large photo costs a fraction of a full
decode. Training images get a random-resized crop (scale 0.08-1, aspect 3/4-4/3) to ``S x S``,
drawn from the run's ``decode`` stream per sample (the same crops for any number of workers);
evaluation images are resized (shorter side to ``resize``) and centre-cropped. Flips and
normalisation stay in the on-device :class:`~tailmix.data.augment.BatchAugment`.

A file that cannot be decoded is reported with its path, and refused (the run stops, the last
checkpoint stays) or skipped (dropped from its batch) by the ``bad_images`` setting;
:func:`scan_images` finds most such files before training from their headers and ends. An
image of more pixels than ``max_pixels`` (default :data:`MAX_PIXELS`) is such a file too,
found from its header before anything is decoded; the limit stands in for Pillow's own
decompression-bomb check (``Image.MAX_IMAGE_PIXELS``) wherever a dataset's images are read.

Over 600 lines on purpose: listing, scanning, decoding in workers, skipping unusable
files and reading an epoch ahead are one loader's parts; each reads the others' records
(:class:`_Failed`, the decode seeds), so they stay in one module.
"""

from __future__ import annotations

import io
import math
import os
import sys
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.data.download import DatasetError
from tailmix.seeding import sample_seed

__all__ = ["BAD_IMAGES", "IN_MEMORY_LIMIT", "MAX_PIXELS", "FileDataset", "ImageFiles",
           "centre_box", "check_decoding", "decode_image", "default_workers", "materialise",
           "open_image", "pixels_problem", "scan_images", "skipped_note", "stream_or_memory"]

BAD_IMAGES = ("refuse", "skip")
#: Decoded training and test pixels above which ``in_memory: auto`` streams (bytes).
IN_MEMORY_LIMIT = 2 * 1024**3
# The resize before the evaluation centre crop: the shorter side to S / 0.875 (224 -> 256).
EVAL_CROP_SHARE = 0.875
#: Pixels (width x height) above which an image is not decoded but refused or skipped
#: (``dataset.max_pixels``; 0 or None: no limit). A 50-megapixel RGB image is 150 MB decoded.
MAX_PIXELS = 50_000_000
_DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
                  ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)
_PILLOW_LIMIT = threading.Lock()


def open_image(data: bytes) -> Image.Image:
    """Open encoded image bytes lazily (the header only), without Pillow's own
    decompression-bomb check: callers compare the size with their ``max_pixels`` (see
    :func:`pixels_problem`) before anything is decoded."""
    with _PILLOW_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def pixels_problem(width: int, height: int, max_pixels: int | None) -> str | None:
    """Why an image of ``width x height`` is not decoded (no pixels, or more than
    ``max_pixels``; 0 or None: no limit), said of the image ("is ..."), or None."""
    if width < 1 or height < 1:
        return "has no pixels"
    if max_pixels and width * height > max_pixels:
        return (f"is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more "
                f"than dataset.max_pixels ({max_pixels / 1e6:g} megapixels); shrink it, or "
                "raise dataset.max_pixels (0: no limit)")
    return None


def check_decoding(bad_images: Any, max_pixels: Any, *, prefix: str = "") -> None:
    """Check the ``bad_images`` (one of :data:`BAD_IMAGES`) and ``max_pixels`` (an int >= 0,
    or None) of a reader that decodes; errors name ``prefix + key``."""
    check_choice(prefix + "bad_images", bad_images, BAD_IMAGES)
    if max_pixels is not None:
        check_number(prefix + "max_pixels", max_pixels, low=0, integer=True)


def default_workers() -> int:
    """Decoding worker processes: the CPU count less one for the training process, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# --------------------------------------------------------------------------- reading


class _Reader:
    """Bytes of files under a folder or members of a zip; a process opens its own handle."""

    def __init__(self, root: str | Path | None, prefix: str = ""):
        self.root = None if root is None else Path(root)
        self.prefix = prefix
        self.is_zip = self.root is not None and self.root.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def where(self, name: str) -> str:
        if self.root is None:
            return name
        if self.is_zip:
            return f"{self.root}:{self.prefix}{name}"
        return str(self.root / (self.prefix + name))

    def read(self, name: str) -> bytes:
        if not self.is_zip:
            return Path(self.where(name)).read_bytes()
        if self._zip is None or self._pid != os.getpid():  # a forked worker opens its own
            self._zip = zipfile.ZipFile(self.root)
            self._pid = os.getpid()
        return self._zip.read(self.prefix + name)

    def peek(self, name: str, head: int = 1 << 16, tail: int = 1024
             ) -> tuple[bytes, bytes, int]:
        """The first ``head`` and last ``tail`` bytes of a file, and its size, reading only
        those from a folder (a zip member is read whole)."""
        if self.is_zip:
            data = self.read(name)
            return data[:head], data[-tail:], len(data)
        with open(self.where(name), "rb") as f:
            first = f.read(head)
            size = f.seek(0, os.SEEK_END)
            if size <= head:
                return first, first[-tail:], size
            f.seek(max(0, size - tail))
            return first, f.read(), size

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None, "_pid": -1}


@dataclass
class FileDataset:
    """A dataset as image files and labels, read when used.

    Attributes
    ----------
    root : Path or None
        The folder the names are relative to, or a ``.zip`` whose members they are; None when
        the names are full paths.
    train_files, test_files : list of str
        Relative POSIX paths (or zip members) of each split's images.
    train_y, test_y : ndarray
        ``int64`` labels in ``0..len(classes) - 1``, one per file.
    classes : list of str
    name : str
    hflip : bool
        Whether horizontal flips suit the images.
    prefix : str
        A folder inside ``root`` every name is under (a zip holding one top-level folder).
    skipped : list of str
        Files left out as unusable (``bad_images: skip``), each as its path and why.
    notes : list of str
        Lines for the run's log on how the source was read (a held-out test set, say).
    """

    root: Path | None
    train_files: list[str]
    train_y: np.ndarray
    test_files: list[str]
    test_y: np.ndarray
    classes: list[str]
    name: str = "files"
    hflip: bool = True
    prefix: str = ""
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        return True

    @property
    def reader(self) -> _Reader:
        return _Reader(self.root, self.prefix)


def decode_image(data: bytes, size: int, *, resize: int | None = None,
                 rng: np.random.Generator | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to an RGB ``uint8`` array ``(3, size, size)``.

    With ``rng``: a random-resized crop (area 8-100 % of the image, aspect ratio 3/4-4/3,
    ten tries, then the central crop of the clamped ratio). Without: shorter side resized to
    ``resize`` (default ``size / 0.875``), then the central ``size x size``. JPEGs are
    decoded at the smallest of 1, 1/2, 1/4, 1/8 scale that keeps the crop at least ``size``
    pixels. Raises what Pillow raises for an unreadable file, and
    :class:`~tailmix.data.download.DatasetError` for an image of no pixels or more than
    ``max_pixels`` (default None: no limit; a dataset's images are read with
    :data:`MAX_PIXELS`), found from its header.
    """
    with open_image(data) as im:
        w, h = im.size
        problem = pixels_problem(w, h, max_pixels)
        if problem is not None:
            raise DatasetError(f"the image {problem}")
        if rng is None:
            box = centre_box(w, h, size, resize=resize)
        else:
            box = _random_box(w, h, rng)
        bw, bh = box[2] - box[0], box[3] - box[1]
        if im.format == "JPEG":
            # The draft keeps the image at least this large, so the box stays >= size px.
            im.draft("RGB", (max(1, math.ceil(w * size / bw)), max(1, math.ceil(h * size / bh))))
            fx, fy = im.size[0] / w, im.size[1] / h
            box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
        im = im.convert("RGB")
        out = im.resize((size, size), Image.Resampling.BILINEAR, box=box,
                        reducing_gap=None if rng is None else 2.0)
        return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)


def eval_resize(size: int) -> int:
    """The shorter side an image is resized to before its central ``size x size`` crop when
    no other is recorded: ``size / 0.875`` (224 -> 256)."""
    return max(size, round(size / EVAL_CROP_SHARE))


def centre_box(w: int, h: int, size: int, *, resize: int | None = None
               ) -> tuple[float, float, float, float]:
    """The evaluation crop of a ``w x h`` image as a box in its pixels: the central square
    that becomes ``size x size`` once the shorter side is resized to ``resize`` (default
    ``size / 0.875``)."""
    short = resize or eval_resize(size)
    side = size / (short / min(w, h))
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def _random_box(w: int, h: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    area = w * h
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw, ch = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return (x0, y0, x0 + cw, y0 + ch)
    ratio = min(max(w / h, 3 / 4), 4 / 3)
    cw, ch = (w, w / ratio) if w / h < ratio else (h * ratio, h) if w / h > ratio else (w, h)
    return ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)


# --------------------------------------------------------------------------- scanning


_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


def _header(reader: _Reader, name: str, max_pixels: int | None
            ) -> tuple[tuple[int, int] | None, str | None]:
    """A file's (width, height) from its header, and why it cannot be used (unreadable, not
    an image, no pixels or more than ``max_pixels``, cut short), or None; nothing is
    decoded."""
    try:
        data, tail, size = reader.peek(name)
        try:
            with open_image(data) as im:
                fmt, (w, h) = im.format, im.size
        except _DECODE_ERRORS:
            if size <= len(data):
                raise
            data = reader.read(name)  # a header longer than the first bytes read
            with open_image(data) as im:
                fmt, (w, h) = im.format, im.size
    except (FileNotFoundError, PermissionError, IsADirectoryError, KeyError,
            zipfile.BadZipFile) as e:
        return None, f"cannot be read ({e.__class__.__name__}: {e})"
    except UnidentifiedImageError:
        return None, "is not an image Pillow reads"
    except _DECODE_ERRORS as e:
        return None, f"is damaged ({e})"
    problem = pixels_problem(w, h, max_pixels)
    if problem is None and fmt == "JPEG" and _JPEG_END not in tail:
        problem = "is cut short (no JPEG end marker)"
    if problem is None and fmt == "PNG" and _PNG_END not in tail:
        problem = "is cut short (no PNG end chunk)"
    return (w, h), problem


def _header_problem(reader: _Reader, name: str, max_pixels: int | None = MAX_PIXELS
                    ) -> str | None:
    """Why a file cannot be used (see :func:`_header`), or None."""
    return _header(reader, name, max_pixels)[1]


def skipped_note(skipped: Sequence[str], of: int | None = None) -> str:
    """One log line for image files left out: their count and the first few."""
    count = f"{len(skipped)} of {of}" if of is not None else str(len(skipped))
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    files = "image file" if len(skipped) == 1 and of is None else "image files"
    return (f"data: skipping {count} {files} that cannot be used "
            f"(dataset.bad_images: skip): {'; '.join(skipped[:5])}{more}")


def scan_images(data: FileDataset, *, bad_images: str = "refuse",
                max_pixels: int | None = MAX_PIXELS, log=print) -> FileDataset:
    """Check every file's header and end before training, decoding nothing.

    A file is bad when it cannot be read, is not an image, has no pixels or more than
    ``max_pixels`` (0 or None: no limit), or is cut short. ``refuse``: raise
    :class:`~tailmix.data.download.DatasetError` with the count of bad files and the first
    few paths. ``skip``: log them in one line and return the dataset without them (listed
    in its ``skipped``).
    """
    check_choice("dataset.bad_images", bad_images, BAD_IMAGES)
    reader = data.reader
    names = [*data.train_files, *data.test_files]
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        problems = list(pool.map(lambda n: _header_problem(reader, n, max_pixels), names,
                                 chunksize=64))
    bad = [(n, p) for n, p in zip(names, problems, strict=True) if p is not None]
    if not bad:
        return data
    described = [f"{reader.where(n)} {p}" for n, p in bad]
    if bad_images == "refuse":
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DatasetError(f"{len(bad)} of {len(names)} image files cannot be used: "
                           f"{'; '.join(described[:5])}{more}. Fix or remove them, or set "
                           "dataset.bad_images: skip to train without them.")
    log(skipped_note(described, len(names)))
    dropped = {n for n, _ in bad}
    keep_train = [i for i, n in enumerate(data.train_files) if n not in dropped]
    keep_test = [i for i, n in enumerate(data.test_files) if n not in dropped]
    return replace(data, train_files=[data.train_files[i] for i in keep_train],
                   train_y=data.train_y[keep_train],
                   test_files=[data.test_files[i] for i in keep_test],
                   test_y=data.test_y[keep_test], skipped=[*data.skipped, *described])


def first_size(data: FileDataset, *, bad_images: str = "refuse",
               max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the first usable training image, from its header.

    ``refuse``: the first training image must be usable (a
    :class:`~tailmix.data.download.DatasetError` naming it otherwise); ``skip``: the first
    that is, in file order.
    """
    reader = data.reader
    for name in data.train_files:
        size, problem = _header(reader, name, max_pixels)
        if problem is None:
            return size
        if bad_images != "skip":
            raise DatasetError(f"Image {reader.where(name)} {problem}. Fix or remove it, or set "
                               "dataset.bad_images: skip to train without such files.")
    raise DatasetError(f"None of the {len(data.train_files)} training images of {data.name!r} "
                       "can be used (see dataset.bad_images: skip); expected at least one "
                       "readable image.")


def stream_or_memory(setting: Any, n_images: int, image_bytes: int) -> bool:
    """Whether to stream: ``in_memory`` is True (never), False (always) or ``"auto"``
    (stream when the decoded images would pass :data:`IN_MEMORY_LIMIT`)."""
    if setting == "auto":
        return n_images * image_bytes > IN_MEMORY_LIMIT
    return not setting


# --------------------------------------------------------------------------- decoding sets


@dataclass(frozen=True)
class _Failed:
    """A file that could not be decoded: what a decoding worker returns in its place instead
    of raising, so that the training process reports it in one line (a worker's exception
    reaches it wrapped in the worker's traceback)."""

    where: str
    reason: str

    def described(self) -> str:
        return f"{self.where}: {self.reason}"

    def refusal(self) -> DatasetError:
        return DatasetError(f"Cannot decode image {self.where}: {self.reason} (set "
                            "dataset.bad_images: skip to drop such files from their batch)")


class _Decode(torch.utils.data.Dataset):
    """Item ``(index, seed)`` -> ``(3, S, S)`` uint8 array, or a :class:`_Failed` for a file
    that cannot be decoded. ``seed`` None decodes for evaluation."""

    def __init__(self, files: ImageFiles):
        self.reader, self.names = files.reader, files.names
        self.size, self.resize, self.max_pixels = files.size, files.resize, files.max_pixels

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, item: tuple[int, int | None]) -> np.ndarray | _Failed:
        i, seed = item
        name = self.names[i]
        try:
            rng = None if seed is None else np.random.default_rng(seed)
            return decode_image(self.reader.read(name), self.size, resize=self.resize, rng=rng,
                                max_pixels=self.max_pixels)
        except _DECODE_ERRORS as e:  # a DatasetError (too many pixels) is a ValueError
            reason = str(e) if isinstance(e, DatasetError) else f"{e.__class__.__name__}: {e}"
            return _Failed(self.reader.where(name), reason)


def _collate(items: list[np.ndarray | _Failed]
             ) -> tuple[torch.Tensor, torch.Tensor | None, list[_Failed]]:
    """A batch: the decoded images, the mask of the items that decoded (None: all did) and
    the files that did not."""
    failed = [a for a in items if isinstance(a, _Failed)]
    arrays = [a for a in items if not isinstance(a, _Failed)]
    x = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, dtype=torch.uint8)
    if not failed:
        return x, None, []
    return x, torch.tensor([not isinstance(a, _Failed) for a in items]), failed


class _Batches(torch.utils.data.Sampler):
    def __init__(self, batches: list[list[tuple[int, int | None]]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class ImageFiles:
    """A split of image files standing in for a ``uint8`` tensor ``(N, 3, S, S)``.

    Indexing decodes (for evaluation, in this process); :meth:`batches` and
    :meth:`epoch_batches` decode in ``workers`` worker processes, ahead of use. A file that
    cannot be decoded (or has more than ``max_pixels``) stops the reading with a
    :class:`~tailmix.data.download.DatasetError` naming it, or with ``bad_images: skip`` is
    left out of its training batch and recorded in ``skipped`` (path -> why; subsets share
    it), logged the first time.
    """

    reader: _Reader
    names: list[str]
    size: int
    resize: int | None = None
    workers: int = field(default_factory=default_workers)
    bad_images: str = "refuse"
    pin_memory: bool = False
    max_pixels: int | None = MAX_PIXELS
    skipped: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    # -- what a tensor has ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.names), 3, self.size, self.size))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def dim(self) -> int:
        return 4

    def to(self, *args: Any, **kwargs: Any) -> ImageFiles:
        return self

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageFiles:
        return replace(self, names=[self.names[int(i)] for i in index])

    def subset_names(self, names: Sequence[str]) -> ImageFiles:
        """Other files of the same source, read the same way."""
        return replace(self, names=list(names))

    def __getitem__(self, index: Any) -> torch.Tensor:
        """Decoded images (evaluation transform) for an int, slice, or index tensor/array."""
        if isinstance(index, slice):
            picks = range(len(self.names))[index]
        elif isinstance(index, int):
            return self[[index]][0]
        else:
            picks = torch.as_tensor(index).reshape(-1).tolist()
        dec = _Decode(self)
        out = [dec[(int(i), None)] for i in picks]
        failed = [a for a in out if isinstance(a, _Failed)]
        if failed:
            raise self._needed(failed[0])
        if not out:
            return torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.from_numpy(np.stack(out))

    # -- bad files --------------------------------------------------------------------------

    def _needed(self, failed: _Failed) -> DatasetError:
        """The error for a file that does not decode where every image is needed
        (evaluation, a mixing partner)."""
        if self.bad_images != "skip":
            return failed.refusal()
        return DatasetError(f"Cannot decode image {failed.where}: {failed.reason}. It is needed "
                            "where no image can be left out (evaluation, or a mixing partner), "
                            "so dataset.bad_images: skip cannot drop it: fix or remove it.")

    def note_failed(self, failed: Sequence[_Failed]) -> None:
        """Files that did not decode where they may be left out: ``refuse`` raises for the
        first; ``skip`` records them in :attr:`skipped`, logging each the first time."""
        if failed and self.bad_images != "skip":
            raise failed[0].refusal()
        for f in failed:
            if f.where not in self.skipped:
                self.skipped[f.where] = f.reason
                print(f"tailmix: skipping unreadable image {f.described()}", file=sys.stderr)

    # -- decoding ahead ---------------------------------------------------------------------

    def _loader(self, batches: list[list[tuple[int, int | None]]]) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            _Decode(self), batch_sampler=_Batches(batches), num_workers=self.workers,
            collate_fn=_collate, pin_memory=self.pin_memory,
            prefetch_factor=4 if self.workers else None)

    def decoded(self, batch_size: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[_Failed]]]:
        """Every image in order, evaluation transform, ``batch_size`` at a time, as
        ``(images, keep, failed)``: ``keep`` None or the mask of the files that decoded,
        ``failed`` the files that did not (nothing is raised for them)."""
        n = len(self.names)
        plan = [[(i, None) for i in range(s, min(s + batch_size, n))]
                for s in range(0, n, batch_size)]
        return iter(self._loader(plan))

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every image in order, evaluation transform, ``batch_size`` at a time; a file that
        does not decode is an error (evaluation needs every image)."""
        for x, _, failed in self.decoded(batch_size):
            if failed:
                raise self._needed(failed[0])
            yield x

    def epoch_batches(self, slices: Sequence[torch.Tensor], seed: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Training batches for the planned index slices: ``(images, keep)``, ``keep`` None
        or the mask of the slice's files that decoded (``bad_images: skip``). Each sample's
        crop comes from ``(seed, its position in the epoch)``."""
        plan, pos = [], 0
        for s in slices:
            ids = s.tolist()
            plan.append([(i, sample_seed(seed, pos + j)) for j, i in enumerate(ids)])
            pos += len(ids)
        for x, keep, failed in self._loader(plan):
            self.note_failed(failed)
            yield x, keep


def planned_batches(inputs: Any, plan: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
                    seed: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None,
                                                 torch.Tensor | None]]:
    """An epoch's planned batches as ``(position, index, synthetic mask, raw inputs)``.

    ``plan`` holds each batch's dataset indices and synthetic mask (None: none). Inputs in
    memory give ``raw`` None (the step indexes them). Image files
    (:class:`ImageFiles`) are decoded ahead by workers (:meth:`ImageFiles.epoch_batches`,
    crops seeded by ``seed``); the files that could not be decoded (``bad_images: skip``)
    are left out of their batch, index and mask alike, and a batch left with fewer than two
    examples is skipped (its position is not yielded).
    """
    if not isinstance(inputs, ImageFiles):
        for position, (index, synthetic) in enumerate(plan):
            yield position, index, synthetic, None
        return
    loaded = inputs.epoch_batches([index.cpu() for index, _ in plan], seed)
    for position, ((index, synthetic), (raw, keep)) in enumerate(zip(plan, loaded,
                                                                     strict=True)):
        if keep is not None:  # files that could not be decoded were skipped
            keep = keep.to(index.device)
            index = index[keep]
            synthetic = None if synthetic is None else synthetic[keep]
            if len(index) < 2:
                continue
        yield position, index, synthetic, raw




def materialise(data: FileDataset, size: int | None, *, workers: int | None = None,
                log=print, bad_images: str = "refuse", max_pixels: int | None = MAX_PIXELS):
    """Decode every image once (evaluation transform at ``size``; None: the first image's
    shorter side) into an in-memory :class:`~tailmix.data.base.RawDataset`.

    A file that cannot be decoded is a :class:`~tailmix.data.download.DatasetError` naming
    it, or with ``bad_images: skip`` left out of its split (its label too), logged in one
    line and listed in the result's ``skipped``.
    """
    from tailmix.data.base import RawDataset

    check_choice("dataset.bad_images", bad_images, BAD_IMAGES)
    if size is None:
        size = min(first_size(data, bad_images=bad_images, max_pixels=max_pixels))
    out, kept, failures = {}, {}, []
    for key, names in (("train", data.train_files), ("test", data.test_files)):
        files = ImageFiles(data.reader, list(names), size, resize=size,
                           workers=default_workers() if workers is None else workers,
                           bad_images=bad_images, max_pixels=max_pixels)
        parts, masks = [], []
        for x, keep, failed in files.decoded(512):
            if failed and bad_images != "skip":
                raise failed[0].refusal()
            failures += failed
            if len(x):
                parts.append(x)
            masks.append(torch.ones(len(x), dtype=torch.bool) if keep is None else keep)
        out[key] = (torch.cat(parts).numpy() if parts
                    else np.zeros((0, 3, size, size), dtype=np.uint8))
        kept[key] = torch.cat(masks).numpy() if masks else np.zeros(0, dtype=bool)
    described = [f.described() for f in failures]
    if described:
        log(skipped_note(described, len(data.train_files) + len(data.test_files)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RawDataset(train_x=out["train"], train_y=np.asarray(data.train_y)[kept["train"]],
                          test_x=out["test"], test_y=np.asarray(data.test_y)[kept["test"]],
                          classes=list(data.classes), name=data.name, hflip=data.hflip,
                          skipped=[*data.skipped, *described])


def check_names(names: Sequence[str], key: str) -> None:
    """Reject absolute paths and ``..`` parts in a list of relative names."""
    for n in names:
        if n.startswith("/") or ".." in n.split("/"):
            raise ParameterError(key, "paths relative to the dataset root", n)
