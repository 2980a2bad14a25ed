"""The ``dataset`` config section: which source, which cut of it, how it is read.

:class:`DatasetSection` holds the keys and their defaults, fills the profile a config
leaves out from the source's own, and checks every key against what the source is known to
hold (its registry metadata: ``sizes``, ``image_size``, ``options`` or ``readers``), all
without reading data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailmix._validation import (
    ParameterError,
    check_choice,
    check_number,
    check_permutation,
    keywords,
)
from tailmix.pipeline.sections import Section, Sections, section

__all__ = ["DEFAULT_RATIO", "DEFAULT_SIDE_LIMIT", "DatasetSection", "check_source_options",
           "probe_counts", "source_options"]

# The imbalance ratio of a profile that cuts (exp, step) when the config names none.
DEFAULT_RATIO = 100
#: The largest side images train at when ``dataset.image_size`` is not set, for a network
#: that names none (its ``side_limit`` metadata: 64 for the CIFAR-style ResNet-32, ResNet-18
#: and small CNN, 224 for the ImageNet-style ResNet-50 and ResNeXt-50): larger images (a
#: folder of photos) are resized and centre-cropped to it, which bounds memory and time.
DEFAULT_SIDE_LIMIT = 224


@section("dataset")
@dataclass
class DatasetSection(Section):
    """The ``dataset`` config section (see the README's configuration reference)."""

    name: str = "digits"
    root: str | None = None
    download: bool = False
    profile: str | None = None  # null: the source's own (see prepare)
    ratio: float | None = None  # null: DEFAULT_RATIO where the profile cuts
    n_max: int | None = None
    counts: list | None = None
    class_order: list | None = None
    data_seed: int = 0
    crop_padding: int | None = None
    hflip: bool | None = None
    options: dict = field(default_factory=dict)
    in_memory: bool | str = "auto"
    image_size: int | None = None
    bad_images: str = "refuse"
    max_pixels: int | None = 50_000_000  # = data.files.MAX_PIXELS; 0 or null: no limit
    workers: int | str = "auto"
    validation: dict | None = None

    MACHINE = ("root", "download", "workers")

    def prepare(self, given: Mapping[str, Any], notes: list[str]) -> None:
        """``profile`` left out: the source's own (its ``profile`` metadata; ``exp`` where it
        has none). A source that holds a user's data, or a release that is long-tailed
        already, brings ``original``: every training image, as it is. Asking such a source
        for a cut without naming a profile (``ratio`` or ``n_max``) means ``exp``, and
        ``counts`` means ``counts``; a note says so. ``ratio`` left out is
        :data:`DEFAULT_RATIO` where the profile cuts, null with ``original``."""
        from tailmix.registry import DATASETS

        if self.profile is None:
            name = self.name
            own = DATASETS.meta(name).get("profile", "exp") if name in DATASETS else "exp"
            asked = [k for k in ("counts", "ratio", "n_max") if given.get(k) is not None]
            if own == "original" and asked:
                self.profile = "counts" if asked[0] == "counts" else "exp"
                notes.append(f"dataset.profile: {self.profile!r}, as dataset.{asked[0]} is "
                             f"given ({name!r} keeps every training image when no profile "
                             "is named)")
            else:
                self.profile = own
                if own == "original":
                    notes.append(f"dataset.profile: 'original' (the default of {name!r}): "
                                 "every training image as it is; --profile exp --ratio R "
                                 "cuts it")
        if self.ratio is None and self.profile != "original":
            self.ratio = DEFAULT_RATIO

    def check(self, run: Sections) -> None:
        from tailmix.data.dataset import PREPARE_PROFILES
        from tailmix.data.files import BAD_IMAGES
        from tailmix.models import is_external
        from tailmix.registry import DATASETS

        DATASETS.get(self.name, "dataset.name")
        check_choice("dataset.profile", self.profile, PREPARE_PROFILES)
        if self.ratio is not None:
            check_number("dataset.ratio", self.ratio, low=1)
        if self.n_max is not None:
            check_number("dataset.n_max", self.n_max, low=1, integer=True)
        check_number("dataset.data_seed", self.data_seed, low=0, integer=True)
        if self.crop_padding is not None:
            check_number("dataset.crop_padding", self.crop_padding, low=0, integer=True)
        self._check_profile_keys()
        if DATASETS.meta(self.name).get("needs_root"):
            if self.root is None:
                raise ParameterError("dataset.root", f"a folder or file holding "
                                     f"{self.name!r} (give --data-root)", None)
            if not self.download and not Path(self.root).expanduser().exists():
                raise ParameterError("dataset.root", "an existing folder or file", self.root)
        if self.in_memory != "auto" and not isinstance(self.in_memory, bool):
            raise ParameterError("dataset.in_memory", "true, false or 'auto'", self.in_memory)
        if self.image_size is not None:
            check_number("dataset.image_size", self.image_size, low=8, integer=True)
        check_choice("dataset.bad_images", self.bad_images, BAD_IMAGES)
        if self.max_pixels is not None:
            check_number("dataset.max_pixels", self.max_pixels, low=0, integer=True)
        _check_validation(self.validation)
        if isinstance(self.workers, str):
            check_choice("dataset.workers", self.workers, ("auto",))
        else:
            check_number("dataset.workers", self.workers, low=0, integer=True)
        side = self.image_side(external=is_external(run.model.arch))
        if self.crop_padding is not None and side is not None and self.crop_padding >= side:
            raise ParameterError("dataset.crop_padding", f"smaller than the {side}-pixel side "
                                 f"of the {self.name!r} images", self.crop_padding)
        check_source_options(self.name, self.options)

    def _check_profile_keys(self) -> None:
        """Keys a profile would ignore are errors: ``counts`` outside the ``counts``
        profile, ``n_max`` and ``class_order`` with a named profile that fixes them;
        ``class_order`` holds ints only (``1.0`` is not a class)."""
        from tailmix.data.profiles import NAMED_PROFILES

        profile = self.profile
        if self.counts is not None and profile != "counts":
            raise ParameterError("dataset.counts", f"null with profile {profile!r} (the counts "
                                 "are read with profile 'counts' only)", self.counts)
        if profile == "counts":
            counts = self.counts
            if counts is None or len(counts) < 2:
                raise ParameterError("dataset.counts", "a list of at least two positive ints "
                                     "(one per class) with profile 'counts'", counts)
            for i, n in enumerate(counts):
                check_number(f"dataset.counts[{i}]", n, low=1, integer=True)
        if profile in NAMED_PROFILES:
            named = NAMED_PROFILES[profile]
            for key, unset in (("n_max", "the largest class of the source"),
                               ("class_order", "the source's order")):
                if getattr(self, key) is not None:
                    fixed = unset if named.get(key) is None else named[key]
                    raise ParameterError(f"dataset.{key}", f"null with profile {profile!r} (it "
                                         f"fixes {key}: {fixed})", getattr(self, key))
        if self.class_order is not None:
            check_permutation("dataset.class_order", self.class_order)

    def image_side(self, *, external: bool) -> int | None:
        """The side of the images the section trains on, where known without reading."""
        from tailmix.registry import DATASETS

        if self.image_size is not None:
            return self.image_size
        if external:  # a torchvision or timm backbone may resize to its own input size
            return None
        return DATASETS.meta(self.name).get("image_size")

    def load(self, raw: Any = None, *, model: Any, log: Callable[[str], None] = print) -> Any:
        """The section's dataset (:class:`~tailmix.data.LongTailData`), cut to its
        profile; ``raw`` supplies in-memory data for the ``arrays`` source (see
        :func:`tailmix.data.from_arrays`); ``model`` is the model section (a torchvision or
        timm backbone brings its own input size and normalisation).

        A source that lists image files (a :class:`~tailmix.data.files.FileDataset`) is
        scanned for unusable files (``bad_images``, ``max_pixels``), then decoded into
        memory or streamed while training (``in_memory``); a streamed image's size and
        normalisation come from ``image_size`` and the backbone's own preprocessing where it
        has one. Files left out as unusable are logged in one line and counted in the
        data's ``skipped_images``.
        """
        from tailmix.data import load_source, prepare_dataset
        from tailmix.data.files import (
            FileDataset,
            first_size,
            materialise,
            scan_images,
            skipped_note,
            stream_or_memory,
        )
        from tailmix.registry import DATASETS

        d = self
        pre = _preprocessing(model)
        size = d.image_size or (pre["input_size"][1] if pre else None)
        limit = _side_limit(model.arch)
        if raw is None:
            # A reader lists as files the images it cannot hold as one array (of differing
            # sizes) or that are larger than the network takes: decoded smaller below.
            raw = load_source(d.name, root=d.root, download=d.download,
                              in_memory=d.in_memory, bad_images=d.bad_images,
                              max_pixels=d.max_pixels,
                              max_side=limit if size is None else None, **d.options)
            for note in getattr(raw, "notes", ()):  # how the source was read
                log(note)
            if getattr(raw, "skipped", None):  # left out by a reader that decodes
                log(skipped_note(raw.skipped))
        elif d.name != "arrays":
            raise ParameterError("dataset.name", "'arrays' when data is passed in", d.name)
        kw: dict[str, Any] = {}
        decoded = None
        if pre is not None:  # a torchvision or timm backbone normalises its own way
            mean, std = pre["mean"], pre["std"]
            if not isinstance(raw, FileDataset) and raw.is_image and raw.train_x.shape[1] == 1:
                # Grey images (a timm backbone built with in_chans=1) take one channel's
                # statistics; three would broadcast every batch to three channels.
                mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
            kw.update(mean=mean, std=std)
        if isinstance(raw, FileDataset):
            bad = {"bad_images": d.bad_images, "max_pixels": d.max_pixels}
            raw = scan_images(raw, **bad, log=log)
            workers = None if d.workers == "auto" else d.workers
            n = len(raw.train_files) + len(raw.test_files)
            side = size or _side_limited(min(first_size(raw, **bad)), limit, log)
            if not stream_or_memory(d.in_memory, n, 3 * side * side):
                raw = materialise(raw, side, workers=workers, **bad, log=log)
                decoded = {"image_size": side, "resize": side}
            else:
                kw.update(image_size=side, resize=pre["resize"] if pre else None,
                          workers=workers, **bad)
        decodes = DATASETS.meta(d.name).get("decodes") if d.name in DATASETS else False
        if size is None and decodes and raw.is_image and not isinstance(raw, FileDataset):
            side = min(raw.train_x.shape[2:])  # a reader's own array: at most the limit
            if _side_limited(side, limit, log) != side:  # recorded: predict resizes alike
                size = limit
                decoded = {"image_size": size, "resize": size}
        if size is not None and raw.is_image and not isinstance(raw, FileDataset):
            raw = _resized(raw, size)
        data = prepare_dataset(
            raw, profile=d.profile, ratio=d.ratio, n_max=d.n_max, counts=d.counts,
            data_seed=d.data_seed, class_order=d.class_order,
            crop_padding=d.crop_padding, hflip=d.hflip, validation=d.validation, **kw,
        )
        data.decoded = decoded
        return data


def _side_limit(arch: Any) -> int:
    """The network's ``side_limit`` metadata, else :data:`DEFAULT_SIDE_LIMIT`."""
    from tailmix.registry import MODELS

    if isinstance(arch, str) and arch in MODELS:
        return int(MODELS.meta(arch).get("side_limit", DEFAULT_SIDE_LIMIT))
    return DEFAULT_SIDE_LIMIT


def _side_limited(side: int, limit: int, log: Callable[[str], None]) -> int:
    """The side images of their own size ``side`` train at when ``dataset.image_size`` is
    not set: their own, at most the network's ``limit`` (a note says so)."""
    if side <= limit:
        return side
    log(f"dataset.image_size: {limit}, as the images are larger ({side} pixels on the first "
        f"one's shorter side) than the network's default limit: each is resized and "
        "centre-cropped to it; dataset.image_size sets another size")
    return limit


def _resized(raw: Any, size: int) -> Any:
    """In-memory images brought to ``size x size`` (``dataset.image_size``): the shorter
    side resized (antialiased bilinear), then the central square."""
    import dataclasses

    import numpy as np
    import torch
    import torch.nn.functional as F

    def fit(x: Any) -> Any:
        h, w = x.shape[2:]
        if (h, w) == (size, size):
            return x
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        out = []
        for s in range(0, len(x), 1024):
            t = torch.from_numpy(np.ascontiguousarray(x[s:s + 1024])).float()
            t = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True,
                              align_corners=False)
            top, left = (nh - size) // 2, (nw - size) // 2
            t = t[:, :, top:top + size, left:left + size]
            out.append(t.round().clamp(0, 255).to(torch.uint8).numpy())
        return np.concatenate(out) if out else x[:, :, :size, :size]

    return dataclasses.replace(raw, train_x=fit(raw.train_x), test_x=fit(raw.test_x))


def _preprocessing(m: Any) -> dict[str, Any] | None:
    """A torchvision or timm backbone's input size, resize and normalisation (None for the
    built-in networks, which normalise with the training set's own statistics); ``m`` is
    the model section."""
    from tailmix.models import is_external, preprocessing

    return preprocessing(m.arch, pretrained=m.pretrained) if is_external(m.arch) else None


def probe_counts(dataset: Mapping[str, Any] | DatasetSection) -> list[int]:
    """The training counts a dataset section implies, computed without reading data where
    the source's size is known (checking the profile against it); stand-in counts else."""
    from tailmix.data.profiles import NAMED_PROFILES, class_counts
    from tailmix.registry import DATASETS

    d = dataset.to_dict() if isinstance(dataset, DatasetSection) else dataset
    sizes = DATASETS.meta(d["name"]).get("sizes")
    profile, n_max = d["profile"], d["n_max"]
    if profile in NAMED_PROFILES:
        profile, n_max = NAMED_PROFILES[profile]["profile"], NAMED_PROFILES[profile]["n_max"]
    if sizes is None:
        if profile == "counts" and d["counts"]:
            return class_counts("counts", num_classes=len(d["counts"]), n_max=1, ratio=1,
                                counts=d["counts"])
        return [100, 10]
    num_classes, largest = sizes
    if d["class_order"] is not None:
        check_permutation("dataset.class_order", d["class_order"], num_classes)
    if profile == "original":
        return [largest] * num_classes
    if n_max is not None and n_max > largest:
        raise ParameterError("dataset.n_max", f"at most {largest} (the largest class of "
                             f"{d['name']!r})", n_max)
    return class_counts(profile, num_classes=num_classes, n_max=n_max or largest,
                        ratio=d["ratio"], counts=d["counts"])


# load_source's own keywords: a config sets them as dataset keys, never as options.
_NOT_OPTIONS = {
    "name": "not an option: dataset.name names the source",
    "root": "not an option: set dataset.root (or --data-root)",
    "download": "not an option: set dataset.download",
    "in_memory": "not an option: set dataset.in_memory",
    "bad_images": "not an option: set dataset.bad_images",
    "max_pixels": "not an option: set dataset.max_pixels",
}

# Reader keywords a built-in source sets itself (``num_classes`` of CIFAR, the report
# ``name`` that load_source's own ``name`` shadows).
_PASSED_BY_SOURCE = {"download", "in_memory", "num_classes", "name", "bad_images",
                     "max_pixels", "max_side"}
# Options a source reads through to a reader that checks their values.
_OPTION_CHECKS = ("train_split", "test_split", "eval_split", "cache_dir", "test_share",
                  "split_seed")


def source_options(name: str) -> tuple[str, ...] | None:
    """The options (``dataset.options`` keys) the dataset source ``name`` takes.

    From the source's ``options`` metadata where it was registered with one; else from its
    ``readers`` metadata, the keyword-only parameters of the readers it calls (less those
    the source passes itself); else the keywords of the loader's signature. None when the
    loader takes ``**options`` and checks them itself.

    >>> source_options("cinic10")
    ('eval_split', 'cache_dir')
    >>> source_options("digits")
    ()
    """
    from tailmix.registry import DATASETS

    loader = DATASETS.get(name, "dataset.name")
    meta = DATASETS.meta(name)
    if meta.get("options") is not None:
        return tuple(meta["options"])
    if meta.get("readers") is not None:
        out: list[str] = []
        for module, function in meta["readers"]:
            reader = getattr(importlib.import_module(module), function)
            for name in keywords(reader, keyword_only=True, named_only=True) or ():
                if name not in out and name not in _PASSED_BY_SOURCE:
                    out.append(name)
        return tuple(out)
    names = keywords(loader)
    if names is None:
        return None
    return tuple(k for k in names if k not in _NOT_OPTIONS)


def check_source_options(name: str, options: Mapping[str, Any]) -> None:
    """Check a dataset section's ``options`` against what the source ``name`` takes, before
    any data is read.

    Raises
    ------
    ParameterError
        Naming ``dataset.options.<key>``: for a key the source does not take (the message
        lists those it does), one of load_source's own keywords (``root``, ``download``,
        ``in_memory``, ``name``), or a bad value of a built-in reader's option.
    """
    if not isinstance(options, Mapping):
        raise ParameterError("dataset.options", "a mapping of the source's options", options)
    accepted = source_options(name)
    for key, value in options.items():
        param = f"dataset.options.{key}"
        if not isinstance(key, str):
            raise ParameterError(param, "an option name (a string)", key)
        if key in _NOT_OPTIONS:
            raise ParameterError(param, _NOT_OPTIONS[key], value)
        if accepted is not None and key not in accepted:
            listed = ", ".join(repr(k) for k in accepted)
            raise ParameterError(param, f"an option {name!r} takes ({listed})" if accepted
                                 else f"absent: {name!r} takes no options", value)
    from tailmix.registry import DATASETS

    meta = DATASETS.meta(name)
    if meta.get("readers"):
        from tailmix.data.imagefolder import check_reader_options

        check_reader_options({k: v for k, v in options.items() if k in _OPTION_CHECKS},
                             prefix="dataset.options.", eval_splits=meta.get("eval_splits"))


def _check_validation(v: dict[str, Any] | None) -> None:
    """``{per_class: n}`` (balanced) or ``{share: s}`` (following the profile)."""
    if v is None:
        return
    expected = "{per_class: N} (N images of every class) or {share: S} (0 < S < 1 of each"
    expected += " class's training count)"
    if len(v) != 1 or next(iter(v)) not in ("per_class", "share"):
        raise ParameterError("dataset.validation", expected, v)
    if "per_class" in v:
        check_number("dataset.validation.per_class", v["per_class"], low=1, integer=True)
    else:
        check_number("dataset.validation.share", v["share"], low=0, high=1, low_open=True,
                     high_open=True)
