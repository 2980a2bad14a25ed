"""The run configuration: YAML or a dict -> a validated, typed run specification.

A config is plain data (what YAML holds). :func:`resolve_config` fills defaults, rejects
unknown keys, wrong types and out-of-range values with messages that name the key, and
returns a new dict; :func:`resolve` goes on to the :class:`RunSpec`: the strategy's
composition with every share of the run turned into an epoch, and every component's
parameters checked - all without loading data. This is the only place defaults live;
nothing writes into a config afterwards.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tailmix._validation import ParameterError, check_choice, check_number, check_permutation
from tailmix.schedules import is_share, resolve_epoch  # noqa: F401 (shares of a run live there)

_NUM = (int, float)

# The warm-up a config that names none gets, as a share of the run: the CIFAR-LT protocol's
# 5 epochs of 200, none on a run under 20 epochs.
DEFAULT_WARMUP_SHARE = 0.025

# The imbalance ratio of a profile that cuts (exp, step) when the config names none.
DEFAULT_RATIO = 100

# section -> key -> (types, default). ``None`` in types means the key may be null.
#: Config keys that say where or how a run ran, not what it computed: a run resumed with
#: other values of these goes on as the same run, and a suite's cell whose ``config.yaml``
#: differs from the suite only in these is not stale.
MACHINE_KEYS = ("dataset.root", "dataset.download", "dataset.workers", "train.device",
                "log.progress", "log.tensorboard")

SCHEMA: dict[str, dict[str, tuple[tuple, Any]]] = {
    "dataset": {
        "name": ((str,), "digits"),
        "root": ((str, None), None),
        "download": ((bool,), False),
        "profile": ((str, None), None),  # null: the source's own (see _fill_profile)
        "ratio": (_NUM + (None,), None),  # null: DEFAULT_RATIO where the profile cuts
        "n_max": ((int, None), None),
        "counts": ((list, None), None),
        "class_order": ((list, None), None),
        "data_seed": ((int,), 0),
        "crop_padding": ((int, None), None),
        "hflip": ((bool, None), None),
        "options": ((dict,), {}),
        "in_memory": ((bool, str), "auto"),
        "image_size": ((int, None), None),
        "bad_images": ((str,), "refuse"),
        "max_pixels": ((int, None), 50_000_000),  # = data.files.MAX_PIXELS; 0 or null: no limit
        "workers": ((int, str), "auto"),
        "validation": ((dict, None), None),
    },
    "model": {
        "arch": ((str,), "resnet32"),
        "head": ((str, None), None),
        "pretrained": ((bool,), False),
        "backbone_lr": (_NUM + (None,), None),
        "freeze_backbone_epochs": (_NUM, 0),
        "max_norm": (_NUM + (None,), None),
    },
    "train": {
        "epochs": ((int,), 200),
        "batch_size": ((int,), 128),
        "lr": (_NUM, 0.1),
        "momentum": (_NUM, 0.9),
        "weight_decay": (_NUM, 2e-4),
        "nesterov": ((bool,), False),
        "schedule": ((str,), "step"),
        "warmup_epochs": (_NUM, DEFAULT_WARMUP_SHARE),
        "milestones": ((list, None), None),
        "lr_factors": ((list, None), None),
        "seed": ((int,), 0),
        "device": ((str,), "auto"),
        "precision": ((str,), "auto"),
        "channels_last": ((bool, str), "auto"),
        "compile": ((bool, str), False),
        "sync_batchnorm": ((bool,), False),
    },
    "eval": {
        "every": ((int,), 10),
        "batch_size": ((int, str), "auto"),
        "many_threshold": ((int,), 100),
        "few_threshold": ((int,), 20),
        "margins": ((bool,), True),
        "posthoc_tau": (_NUM, 1.0),
        "patience": ((int, None), None),
        "tau_norm": (_NUM + (None,), None),
    },
    "augment": {
        "policy": ((str, None), None),
        "num_ops": ((int,), 2),
        "magnitude": (_NUM, 9),
        "bins": ((int,), 31),
        "cutout": ((int,), 0),
    },
    "consistency": {
        "weight": (_NUM + (None,), None),
        "dim": ((int,), 128),
    },
    "sam": {
        "rho": (_NUM + (None,), None),
        "start": (_NUM, 0),
        "tail_below": (_NUM + (None,), None),
    },
    "crt": {
        "epochs": ((int,), 0),
        "lr": (_NUM + (None,), None),
        "weight_decay": (_NUM + (None,), None),
    },
    "log": {
        "progress": ((bool,), True),
        "tensorboard": ((bool,), False),
        "checkpoint_best": ((bool,), True),
    },
}
# Top-level keys that are not sections: (types, default).
TOP_LEVEL: dict[str, tuple[tuple, Any]] = {
    "strategy": ((str,), "ERM"),
    "sampler": ((dict, None), None),
    "mixer": ((dict, None), None),
    "loss": ((dict, None), None),
    "weights": ((dict, None), None),
    "generative": ((dict, None), None),
    "name": ((str, None), None),
    "plugins": ((list, None), None),
}

PRECISIONS = ("auto", "bf16", "fp32", "fp16")
SCHEDULES = ("step", "cosine")
# train.compile: false, true (= "default"), or a torch.compile mode.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _type_name(types: tuple) -> str:
    names = {int: "an int", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a mapping", None: "null"}
    return " or ".join(names.get(t, str(t)) for t in types)


# A number with an exponent but no dot or no exponent sign (1e-3, 5E2): YAML 1.1 reads it
# as a string; ``--set`` values read it as a float, and a config file gets a hint.
EXPONENT_NUMBER = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def _check_type(key: str, value: Any, types: tuple) -> Any:
    """``value`` if it is one of ``types`` (a finite number where numbers go), else a
    :class:`ParameterError` naming ``key``."""
    if value is None and None in types:
        return None
    if isinstance(value, bool) and bool not in types:
        raise ParameterError(key, _type_name(types), value)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, tuple(t for t in types if t is not None)):
        expected = _type_name(types)
        if float in types and isinstance(value, str) and EXPONENT_NUMBER.match(value.strip()):
            expected += (f" (YAML reads {value.strip()} as a string: write it with a dot and a "
                         f"signed exponent, e.g. {_yaml_float(value)})")
        raise ParameterError(key, expected, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(key, "a finite number", value)
    return value


def _yaml_float(text: str) -> str:
    """``1e-3`` spelled so that YAML 1.1 reads a float: ``1.0e-3``."""
    mantissa, exponent = re.split("[eE]", text.strip().replace("_", ""))
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}"


_INT64 = 2**63


def _refuse_non_finite(config: Mapping[str, Any]) -> None:
    """A NaN or infinity anywhere in ``config`` (YAML's ``.nan``, ``.inf``), or an int
    beyond 64 bits, is an error naming its key (``train.lr``, ``train.milestones[1]``,
    ``mixer.q``)."""
    stack: list[tuple[str, Any]] = [(str(k), v) for k, v in config.items()]
    seen: set[int] = set()
    while stack:
        key, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterError(key, "a finite number", value)
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise ParameterError(key, "a finite number (an int within 64 bits)",
                                 f"an int of {len(str(abs(value)))} digits")
        if isinstance(value, (dict, list)):
            if id(value) in seen:  # YAML anchors can make a structure hold itself
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                stack.extend((f"{key}.{sub}", v) for sub, v in value.items())
            else:
                stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))


def flat_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted key: value}`` (leaves: anything but a non-empty
    mapping).

    >>> flat_config({"train": {"lr": 0.1, "milestones": [0.8]}, "dataset": {"options": {}}})
    {'train.lr': 0.1, 'train.milestones': [0.8], 'dataset.options': {}}
    """
    if not isinstance(cfg, dict) or (prefix and not cfg):
        return {prefix: cfg}
    flat: dict[str, Any] = {}
    for k, v in cfg.items():
        flat.update(flat_config(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def default_config() -> dict[str, Any]:
    cfg: dict[str, Any] = {k: copy.deepcopy(d) for k, (_, d) in TOP_LEVEL.items()}
    for section, keys in SCHEMA.items():
        cfg[section] = {k: copy.deepcopy(d) for k, (_, d) in keys.items()}
    return cfg


AUGMENT_POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")


def _check_augment(a: dict[str, Any]) -> None:
    """``augment``: a policy name (null: none), its knobs, a cutout size (0: none)."""
    if a["policy"] is not None:
        check_choice("augment.policy", a["policy"], AUGMENT_POLICIES)
    check_number("augment.num_ops", a["num_ops"], low=1, integer=True)
    bins = check_number("augment.bins", a["bins"], low=2, integer=True)
    if a["policy"] == "randaugment":
        check_number("augment.magnitude", a["magnitude"], low=0, high=bins - 1)
    else:
        check_number("augment.magnitude", a["magnitude"], low=0)
    check_number("augment.cutout", a["cutout"], low=0, integer=True)


def _check_sam(sam: dict[str, Any], epochs: int) -> None:
    """``sam.rho`` (null: off) > 0; ``sam.start`` an epoch of the run or a share of it;
    ``sam.tail_below`` a class size (null: every class)."""
    if sam["rho"] is not None:
        check_number("sam.rho", sam["rho"], low=0, low_open=True)
    elif sam["tail_below"] is not None or sam["start"] != 0:
        key = "sam.tail_below" if sam["tail_below"] is not None else "sam.start"
        raise ParameterError("sam.rho", f"a radius > 0 when {key} is set (null turns SAM "
                             "off)", None)
    start = resolve_epoch("sam.start", sam["start"], epochs)
    if not 0 <= start < epochs:
        raise ParameterError("sam.start", f"an epoch before the run's end (0 to {epochs - 1}) "
                             "or a share of the run in (0, 1)", sam["start"])
    if sam["tail_below"] is not None:
        check_number("sam.tail_below", sam["tail_below"], low=0, low_open=True)


def resolve_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``config`` over the defaults and check every key, type and range.

    Component sections (``sampler``, ``mixer``, ``loss``, ``weights``) are checked by the
    components themselves when the strategy is built, still before any training.
    """
    return _resolve_config(config)[0]


def refuse_saved_plugins(config: Mapping[str, Any], where: str) -> None:
    """A config read from a saved file (a checkpoint, a run folder's ``config.yaml``) decides
    no import: each module its ``plugins`` names must have been imported by the user already
    (``--plugins MODULE`` on the command line, or ``import`` in Python), else this is an
    error naming the modules, before anything resolves the config (which would import them).
    """
    plugins = config.get("plugins")
    if plugins is None:
        return
    if not isinstance(plugins, list):
        raise ParameterError("plugins", f"a list of module names in {where}", plugins)
    missing = [m for m in plugins if not isinstance(m, str) or m not in sys.modules]
    if missing:
        names = " ".join(str(m) for m in missing)
        raise ParameterError("plugins", f"modules you import yourself: {where} names plugin "
                             f"modules, and tailmix imports no module that a saved file "
                             f"names; if you trust them, pass --plugins {names} (in Python, "
                             "import them first)", missing)


def _resolve_config(config: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """:func:`resolve_config`, and the notes on what it chose that the config did not say
    (a profile a source brings, milestones that merged on a short run)."""
    if not isinstance(config, (dict, type(None))):
        raise ParameterError("config", "a mapping of sections", type(config).__name__)
    config = copy.deepcopy(config or {})
    from tailmix.registry import import_plugins

    known = ", ".join(list(TOP_LEVEL) + list(SCHEMA))
    for key in config:
        if not isinstance(key, str) or key not in TOP_LEVEL and key not in SCHEMA:
            # 7, null, "" are named by their repr
            name = key if isinstance(key, str) and key.strip() else repr(key)
            raise ParameterError(name, f"one of the known top-level keys: {known}", key)
    _refuse_non_finite(config)
    plugins = config.get("plugins")
    if isinstance(plugins, list):
        for i, module in enumerate(plugins):
            if not isinstance(module, str) or not _MODULE_NAME.match(module):
                raise ParameterError(f"plugins[{i}]", "an importable module name (dotted "
                                     "identifiers, e.g. my_package.tailmix_parts)", module)
    import_plugins(plugins if isinstance(plugins, list) else None)
    cfg = default_config()
    _strategy_settings(cfg, config.get("strategy"))
    for key, value in config.items():
        if key in SCHEMA:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ParameterError(key, "a mapping", value)
            for sub, subvalue in value.items():
                if not isinstance(sub, str) or sub not in SCHEMA[key]:
                    raise ParameterError(
                        f"{key}.{sub}", "one of the known keys: " + ", ".join(SCHEMA[key]),
                        sub)
                cfg[key][sub] = _check_type(f"{key}.{sub}", subvalue, SCHEMA[key][sub][0])
        else:
            cfg[key] = _check_type(key, value, TOP_LEVEL[key][0])
    notes: list[str] = []
    _fill_profile(cfg["dataset"], config.get("dataset") or {}, notes)
    _fill_schedule(cfg["train"], notes)
    _check_ranges(cfg)
    _check_used(cfg, config)
    return cfg, notes


def _policy(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda cfg: cfg["augment"]["policy"] in names


#: Settings that only act under another one: (key, when it acts, what turns it on). A
#: config that sets one (to a value other than its default and not empty) where it would
#: not act is refused rather than silently ignored.
_ACTS_ONLY: tuple[tuple[str, Callable[[dict[str, Any]], bool], str], ...] = (
    ("sam.start", lambda c: c["sam"]["rho"] is not None, "sam.rho"),
    ("sam.tail_below", lambda c: c["sam"]["rho"] is not None, "sam.rho"),
    ("crt.lr", lambda c: c["crt"]["epochs"] > 0, "crt.epochs > 0"),
    ("crt.weight_decay", lambda c: c["crt"]["epochs"] > 0, "crt.epochs > 0"),
    ("consistency.dim", lambda c: c["consistency"]["weight"] is not None,
     "consistency.weight"),
    ("augment.num_ops", _policy("randaugment"), "augment.policy: randaugment"),
    ("augment.magnitude", _policy("randaugment"), "augment.policy: randaugment"),
    ("augment.bins", _policy("randaugment", "trivialaugment"),
     "augment.policy: randaugment or trivialaugment"),
)


def _check_used(cfg: dict[str, Any], given: Mapping[str, Any]) -> None:
    """Refuse a setting the config gives that the run would not use (:data:`_ACTS_ONLY`)."""
    defaults = default_config()
    for key, acts, switch in _ACTS_ONLY:
        section, sub = key.split(".")
        value = (given.get(section) or {}).get(sub)
        if value in (None, [], 0) or value == defaults[section][sub] or acts(cfg):
            continue
        raise ParameterError(key, f"left out unless {switch} (without it the run does not "
                             "use it)", value)


def _fill_profile(d: dict[str, Any], given: Mapping[str, Any], notes: list[str]) -> None:
    """``dataset.profile`` left out: the source's own (its ``profile`` metadata; ``exp``
    where it has none). A source that holds a user's data, or a release that is long-tailed
    already, brings ``original``: every training image, as it is. Asking such a source for a
    cut without naming a profile (``ratio`` or ``n_max``) means ``exp``, and ``counts``
    means ``counts``; a note says so. ``dataset.ratio`` left out is :data:`DEFAULT_RATIO`
    where the profile cuts, null with ``original``."""
    from tailmix.registry import DATASETS

    if d["profile"] is None:
        name = d["name"]
        own = DATASETS.meta(name).get("profile", "exp") if name in DATASETS else "exp"
        asked = [k for k in ("counts", "ratio", "n_max") if given.get(k) is not None]
        if own == "original" and asked:
            d["profile"] = "counts" if asked[0] == "counts" else "exp"
            notes.append(f"dataset.profile: {d['profile']!r}, as dataset.{asked[0]} is given "
                         f"({name!r} keeps every training image when no profile is named)")
        else:
            d["profile"] = own
            if own == "original":
                notes.append(f"dataset.profile: 'original' (the default of {name!r}): every "
                             "training image as it is; --profile exp --ratio R cuts it")
    if d["ratio"] is None and d["profile"] != "original":
        d["ratio"] = DEFAULT_RATIO


def _strategy_settings(cfg: dict[str, Any], name: Any) -> None:
    """Put a named strategy's own settings (``Strategy.settings``) over the defaults; the
    config's keys then go over them."""
    import tailmix.strategies  # noqa: F401  (the catalogue registers itself)
    from tailmix.registry import STRATEGIES

    if not isinstance(name, str) or name not in STRATEGIES:
        return
    for section, values in getattr(STRATEGIES.get(name, "strategy"), "settings", {}).items():
        for key, value in values.items():
            cfg[section][key] = copy.deepcopy(value)


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")

# The step schedule's milestones (shares of the run) and factors when a config gives none.
STEP_DEFAULTS = {"milestones": [0.8, 0.9], "lr_factors": [0.01, 0.0001]}


def _fill_schedule(t: dict[str, Any], notes: list[str]) -> None:
    """The schedule a config leaves out, and its shares of the run turned into epochs.

    The step schedule's milestones and factors default to :data:`STEP_DEFAULTS`, none for
    cosine decay; the warm-up to :data:`DEFAULT_WARMUP_SHARE` of the run. A warm-up given as
    a share becomes whole epochs. Milestones given as shares keep the run's shape at any
    length: one that lands before the run's second epoch is dropped, and one that lands on
    the epoch of the milestone before it merges with it (the earlier keeps its factor); a
    note says so. Epoch numbers are kept as given (:func:`_check_schedule` refuses those
    that do not fit the run).
    """
    check_choice("train.schedule", t["schedule"], SCHEDULES)
    epochs = check_number("train.epochs", t["epochs"], low=1, integer=True)
    step = t["schedule"] == "step"
    for key, default in STEP_DEFAULTS.items():
        if t[key] is None:
            t[key] = list(default) if step else []
    if t["schedule"] == "cosine" and t["milestones"]:
        raise ParameterError("train.milestones", "none with schedule 'cosine' (it decays "
                             "smoothly to zero)", t["milestones"])
    _fit_milestones(t, epochs, notes)
    if is_share(t["warmup_epochs"]):
        t["warmup_epochs"] = resolve_epoch("train.warmup_epochs", t["warmup_epochs"], epochs)


def _fit_milestones(t: dict[str, Any], epochs: int, notes: list[str]) -> None:
    """Drop the milestone shares that land before epoch 1 and merge those that land on the
    epoch before them (see :func:`_fill_schedule`)."""
    given, factors = t["milestones"], t["lr_factors"]
    if not isinstance(given, list) or not isinstance(factors, list) \
            or len(given) != len(factors):
        return  # refused by _check_schedule
    run = f"the {epochs}-epoch run"
    kept: list[tuple[int, Any, Any, int]] = []  # (index, milestone, factor, epoch)
    for i, (value, factor) in enumerate(zip(given, factors, strict=True)):
        if not is_share(value):
            epoch = value if isinstance(value, int) and not isinstance(value, bool) else None
            kept.append((i, value, factor, epoch))
            continue
        epoch = resolve_epoch(f"train.milestones[{i}]", value, epochs)
        if epoch < 1:
            notes.append(f"schedule: train.milestones[{i}] ({value}) left out: {run} has no "
                         "epoch to step at")
            continue
        if kept and kept[-1][3] == epoch:
            j, _, before, _ = kept[-1]
            notes.append(f"schedule: train.milestones[{i}] ({value}) lands on epoch {epoch} of "
                         f"{run}, as train.milestones[{j}] does: merged (lr x{before:g} from "
                         f"epoch {epoch})")
            continue
        kept.append((i, value, factor, epoch))
    if len(kept) < len(given):
        t["milestones"] = [m for _, m, _, _ in kept]
        t["lr_factors"] = [f for _, _, f, _ in kept]


def _check_schedule(t: dict[str, Any], epochs: int) -> tuple[int, ...]:
    """The lr milestones as epochs: each inside the run (epochs 1 to ``epochs - 1``), each
    after the one before it once shares are resolved; a warm-up shorter than the run. A
    value that does not fit is refused with the key that fixes it."""
    check_number("train.warmup_epochs", t["warmup_epochs"], low=0)
    if t["warmup_epochs"] >= epochs:
        raise ParameterError("train.warmup_epochs", f"fewer epochs than the run's {epochs} "
                             "(the lr would never reach train.lr): set --set "
                             f"train.warmup_epochs=N with N < {epochs}, or a share of the run "
                             "such as 0.05", t["warmup_epochs"])
    if len(t["milestones"]) != len(t["lr_factors"]):
        raise ParameterError("train.lr_factors", f"{len(t['milestones'])} factors, one per "
                             "milestone", t["lr_factors"])
    fix = ("set --set train.milestones=[...] to epochs inside the run, or to shares of it "
           "such as [0.8, 0.9]")
    out: list[int] = []
    for i, given in enumerate(t["milestones"]):
        key = f"train.milestones[{i}]"
        ep = resolve_epoch(key, given, epochs)
        share = "" if ep == given else f" ({given} of the run is epoch {ep})"
        if not 1 <= ep <= epochs - 1:
            inside = (f"an epoch inside the {epochs}-epoch run, 1 to {epochs - 1}"
                      if epochs > 1 else "none: a 1-epoch run has no epoch to step at")
            raise ParameterError(key, f"{inside}{share}: {fix}", given)
        if out and ep == out[-1]:
            before = t["milestones"][i - 1]
            raise ParameterError(
                key, f"a later epoch than train.milestones[{i - 1}]: train.milestones[{i - 1}] "
                f"({before}) and train.milestones[{i}] ({given}) both land on epoch {ep} of the "
                f"{epochs}-epoch run: {fix}", given)
        if out and ep < out[-1]:
            raise ParameterError(key, f"a later epoch than train.milestones[{i - 1}] (epoch "
                                 f"{out[-1]}): milestones in increasing order" + share, given)
        out.append(ep)
    for i, f in enumerate(t["lr_factors"]):
        check_number(f"train.lr_factors[{i}]", f, low=0, low_open=True)
    return tuple(out)


def _check_ranges(cfg: dict[str, Any]) -> None:
    from tailmix.data.dataset import PREPARE_PROFILES
    from tailmix.data.files import BAD_IMAGES
    from tailmix.models import HEADS, is_external
    from tailmix.registry import DATASETS, MODELS, STRATEGIES

    d, t, e = cfg["dataset"], cfg["train"], cfg["eval"]
    DATASETS.get(d["name"], "dataset.name")
    check_choice("dataset.profile", d["profile"], PREPARE_PROFILES)
    if d["ratio"] is not None:
        check_number("dataset.ratio", d["ratio"], low=1)
    if d["n_max"] is not None:
        check_number("dataset.n_max", d["n_max"], low=1, integer=True)
    check_number("dataset.data_seed", d["data_seed"], low=0, integer=True)
    if d["crop_padding"] is not None:
        check_number("dataset.crop_padding", d["crop_padding"], low=0, integer=True)
    _check_profile_keys(d)
    if DATASETS.meta(d["name"]).get("needs_root"):
        if d["root"] is None:
            raise ParameterError("dataset.root", f"a folder or file holding {d['name']!r} "
                                 "(give --data-root)", None)
        if not d["download"] and not Path(d["root"]).expanduser().exists():
            raise ParameterError("dataset.root", "an existing folder or file", d["root"])
    if d["in_memory"] != "auto" and not isinstance(d["in_memory"], bool):
        raise ParameterError("dataset.in_memory", "true, false or 'auto'", d["in_memory"])
    if d["image_size"] is not None:
        check_number("dataset.image_size", d["image_size"], low=8, integer=True)
    check_choice("dataset.bad_images", d["bad_images"], BAD_IMAGES)
    if d["max_pixels"] is not None:
        check_number("dataset.max_pixels", d["max_pixels"], low=0, integer=True)
    _check_validation(d["validation"])
    if isinstance(d["workers"], str):
        check_choice("dataset.workers", d["workers"], ("auto",))
    else:
        check_number("dataset.workers", d["workers"], low=0, integer=True)
    m = cfg["model"]
    if not is_external(m["arch"]):
        MODELS.get(m["arch"], "model.arch")
    _check_crop_padding(d, external=is_external(m["arch"]))
    check_source_options(d["name"], d["options"])
    if m["head"] is not None:
        check_choice("model.head", m["head"], HEADS)
    if m["backbone_lr"] is not None:
        check_number("model.backbone_lr", m["backbone_lr"], low=0)
    if m["max_norm"] is not None:
        check_number("model.max_norm", m["max_norm"], low=0, low_open=True)
    if cfg["eval"]["tau_norm"] is not None:
        check_number("eval.tau_norm", cfg["eval"]["tau_norm"], low=0)
    c = cfg["crt"]
    check_number("crt.epochs", c["epochs"], low=0, integer=True)
    for key in ("lr", "weight_decay"):
        if c[key] is not None:
            check_number(f"crt.{key}", c[key], low=0, low_open=key == "lr")
    check_choice("train.schedule", t["schedule"], SCHEDULES)
    STRATEGIES.get(cfg["strategy"], "strategy")
    epochs = check_number("train.epochs", t["epochs"], low=1, integer=True)
    _check_sam(cfg["sam"], epochs)
    _check_augment(cfg["augment"])
    if cfg["consistency"]["weight"] is not None:
        check_number("consistency.weight", cfg["consistency"]["weight"], low=0, low_open=True)
    check_number("consistency.dim", cfg["consistency"]["dim"], low=4, integer=True)
    check_number("train.batch_size", t["batch_size"], low=2, integer=True)
    freeze = resolve_epoch("model.freeze_backbone_epochs", m["freeze_backbone_epochs"],
                           epochs)
    if not 0 <= freeze < epochs:
        raise ParameterError("model.freeze_backbone_epochs", f"fewer than the run's "
                             f"{epochs} epochs", m["freeze_backbone_epochs"])
    check_number("train.lr", t["lr"], low=0, low_open=True)
    check_number("train.momentum", t["momentum"], low=0, high=1, high_open=True)
    check_number("train.weight_decay", t["weight_decay"], low=0)
    _check_schedule(t, epochs)
    check_choice("train.precision", t["precision"], PRECISIONS)
    if isinstance(t["channels_last"], str):
        check_choice("train.channels_last", t["channels_last"], ("auto",))
    if isinstance(t["compile"], str):
        check_choice("train.compile", t["compile"], COMPILE_MODES)
    dev = t["device"]
    if dev not in ("auto", "cpu", "cuda", "mps") and not dev.startswith("cuda:"):
        raise ParameterError("train.device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", dev)
    check_number("eval.every", e["every"], low=1, integer=True)
    if isinstance(e["batch_size"], str):
        check_choice("eval.batch_size", e["batch_size"], ("auto",))
    else:
        check_number("eval.batch_size", e["batch_size"], low=1, integer=True)
    check_number("eval.few_threshold", e["few_threshold"], low=0, integer=True)
    check_number("eval.many_threshold", e["many_threshold"], low=e["few_threshold"],
                 integer=True)
    check_number("eval.posthoc_tau", e["posthoc_tau"], low=0)
    if e["patience"] is not None:
        check_number("eval.patience", e["patience"], low=1, integer=True)
        if d["validation"] is None:
            raise ParameterError("eval.patience", "null without dataset.validation (early "
                                 "stopping on the test set would select on it)", e["patience"])


def _check_profile_keys(d: dict[str, Any]) -> None:
    """Keys a profile would ignore are errors: ``counts`` outside the ``counts`` profile,
    ``n_max`` and ``class_order`` with a named profile that fixes them; ``class_order``
    holds ints only (``1.0`` is not a class)."""
    from tailmix.data.profiles import NAMED_PROFILES

    profile = d["profile"]
    if d["counts"] is not None and profile != "counts":
        raise ParameterError("dataset.counts", f"null with profile {profile!r} (the counts "
                             "are read with profile 'counts' only)", d["counts"])
    if profile == "counts":
        counts = d["counts"]
        if counts is None or len(counts) < 2:
            raise ParameterError("dataset.counts", "a list of at least two positive ints "
                                 "(one per class) with profile 'counts'", counts)
        for i, n in enumerate(counts):
            check_number(f"dataset.counts[{i}]", n, low=1, integer=True)
    if profile in NAMED_PROFILES:
        named = NAMED_PROFILES[profile]
        for key, unset in (("n_max", "the largest class of the source"),
                           ("class_order", "the source's order")):
            if d[key] is not None:
                fixed = unset if named.get(key) is None else named[key]
                raise ParameterError(f"dataset.{key}", f"null with profile {profile!r} (it "
                                     f"fixes {key}: {fixed})", d[key])
    if d["class_order"] is not None:
        check_permutation("dataset.class_order", d["class_order"])


# Image sides of the built-in sources that read a fixed release (``image_size`` metadata
# of a registered source takes precedence).
_IMAGE_SIDES = {"digits": 8, "cifar10": 32, "cifar100": 32, "svhn": 32, "cinic10": 32,
                "tiny_imagenet": 64}


def _image_side(d: dict[str, Any], *, external: bool) -> int | None:
    """The side of the images a dataset section trains on, where known without reading."""
    from tailmix.registry import DATASETS

    if d["image_size"] is not None:
        return d["image_size"]
    if external:  # a torchvision or timm backbone may resize to its own input size
        return None
    meta = DATASETS.meta(d["name"])
    if meta.get("image_size") is not None:
        return meta["image_size"]
    if d["name"] in _IMAGE_SIDES and _is_builtin(DATASETS.get(d["name"])):
        return _IMAGE_SIDES[d["name"]]
    return None


def _check_crop_padding(d: dict[str, Any], *, external: bool) -> None:
    side = _image_side(d, external=external)
    if d["crop_padding"] is not None and side is not None and d["crop_padding"] >= side:
        raise ParameterError("dataset.crop_padding", f"smaller than the {side}-pixel side of "
                             f"the {d['name']!r} images", d["crop_padding"])


def _is_builtin(loader: Any) -> bool:
    return getattr(loader, "__module__", None) == "tailmix.data.sources"


# --------------------------------------------------------------------------- dataset options

# load_source's own keywords: a config sets them as dataset keys, never as options.
_NOT_OPTIONS = {
    "name": "not an option: dataset.name names the source",
    "root": "not an option: set dataset.root (or --data-root)",
    "download": "not an option: set dataset.download",
    "in_memory": "not an option: set dataset.in_memory",
    "bad_images": "not an option: set dataset.bad_images",
    "max_pixels": "not an option: set dataset.max_pixels",
}

# The readers behind the built-in sources, as (module, function); an entry's keyword-only
# parameters, less those the source itself passes, are the options it takes.
_BUILTIN_READERS: dict[str, tuple[tuple[str, str], ...]] = {
    "digits": (),
    "svhn": (("tailmix.data.svhn", "read_svhn"),),
    "cifar10": (("tailmix.data.cifar", "read_cifar"),
                ("tailmix.data.imagefolder", "read_imagefolder")),
    "cifar100": (("tailmix.data.cifar", "read_cifar"),
                 ("tailmix.data.imagefolder", "read_imagefolder")),
    "imagefolder": (("tailmix.data.imagefolder", "read_imagefolder"),),
    "cinic10": (("tailmix.data.imagefolder", "read_cinic10"),),
    "tiny_imagenet": (("tailmix.data.tinyimagenet", "read_tiny_imagenet"),),
    "arrays": (),
}
# Reader keywords a built-in source sets itself (``num_classes`` of CIFAR, the report
# ``name`` that load_source's own ``name`` shadows).
_PASSED_BY_SOURCE = {"download", "in_memory", "num_classes", "name", "bad_images",
                     "max_pixels"}
# Options a source reads through to a reader that checks their values.
_OPTION_CHECKS = ("train_split", "test_split", "eval_split", "cache_dir")


def _keywords(function: Any) -> tuple[str, ...] | None:
    """The keyword parameters ``function`` takes, or None when it takes ``**kwargs``."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                      inspect.Parameter.POSITIONAL_OR_KEYWORD))


def source_options(name: str) -> tuple[str, ...] | None:
    """The options (``dataset.options`` keys) the dataset source ``name`` takes.

    From the source's ``options`` metadata where it was registered with one; for the
    built-in sources, the keyword-only parameters of the readers they call (less those the
    source passes itself); else the keywords of the loader's signature. None when the
    loader takes ``**options`` and checks them itself.

    >>> source_options("cinic10")
    ('eval_split', 'cache_dir')
    >>> source_options("digits")
    ()
    """
    import importlib

    from tailmix.registry import DATASETS

    loader = DATASETS.get(name, "dataset.name")
    meta = DATASETS.meta(name)
    if meta.get("options") is not None:
        return tuple(meta["options"])
    if name in _BUILTIN_READERS and _is_builtin(loader):
        out: list[str] = []
        for module, function in _BUILTIN_READERS[name]:
            reader = getattr(importlib.import_module(module), function)
            for p in inspect.signature(reader).parameters.values():
                if (p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in out
                        and p.name not in _PASSED_BY_SOURCE):
                    out.append(p.name)
        return tuple(out)
    keywords = _keywords(loader)
    if keywords is None:
        return None
    return tuple(k for k in keywords if k not in _NOT_OPTIONS)


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

    if name in _BUILTIN_READERS and _is_builtin(DATASETS.get(name)):
        from tailmix.data.imagefolder import check_reader_options

        check_reader_options({k: v for k, v in options.items() if k in _OPTION_CHECKS},
                             prefix="dataset.options.",
                             eval_splits=("test", "valid") if name == "cinic10" else None)


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


# --------------------------------------------------------------------------- YAML


class _SetValueLoader(yaml.SafeLoader):
    """YAML for ``--set`` values: plain ``1e-3``, ``5E+2`` read as floats (YAML 1.1 wants
    ``1.0e-3``); quoted, they stay strings."""


_SetValueLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_NUMBER,
                                      list("-+0123456789."))


def _yaml_problem(error: yaml.YAMLError, text: str) -> str:
    """``line L, column C: what is wrong`` (1-based) from a PyYAML error on ``text``."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        what = ": ".join(str(p) for p in (error.context, error.problem) if p)
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
        return what
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow
        at = error.position
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        return (f"line {line}, column {column}: character #x{error.character:04x} is not "
                f"allowed in YAML ({error.reason}; a binary file?)")
    return str(error).split("\n")[0]


def parse_yaml(text: str, *, name: str, where: str, loader: type = yaml.SafeLoader) -> Any:
    """Parse one YAML document; malformed YAML is a :class:`ParameterError` naming ``name``
    and saying where (``where``, line and column) and what is wrong."""
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader (subclass): plain data only
    except yaml.YAMLError as error:
        raise ParameterError(name, "valid YAML", f"{where}, {_yaml_problem(error, text)}") from None
    except RecursionError:
        raise ParameterError(name, "valid YAML", f"{where}: nested too deeply") from None


def read_yaml(path: str | os.PathLike, *, name: str = "config") -> Any:
    """Read a YAML file: its one document, whatever it holds.

    Parameters
    ----------
    path : str or PathLike
    name : str, default "config"
        The parameter errors name (``"suite"`` for a suite file).

    Raises
    ------
    ParameterError
        Naming ``name``, with the file and the problem: unreadable (missing, a folder, no
        permission), not UTF-8 text (a binary file: where the first bad byte is), or not
        valid YAML (line, column and what the parser expected).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ParameterError(name, "a readable YAML file",
                             f"{path}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ParameterError(name, "a YAML file (UTF-8 text)",
                             f"{path}, line {line}, column {column}: byte "
                             f"0x{data[error.start]:02x} is not UTF-8 text (a binary file?)"
                             ) from None
    return parse_yaml(text, name=name, where=str(path))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (a mapping), with a clear error for anything else; a bare
    name (``cifar10_lt``) reads the config shipped with tailmix.

    Raises
    ------
    ParameterError
        Naming ``config``: no such file or shipped config, a file that is not UTF-8 text,
        malformed YAML (with the line and column), or YAML that is not a mapping.
    """
    from tailmix.shipped import config_path

    path = config_path(path)
    data = read_yaml(path, name="config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError("config", f"a YAML mapping in {path}", type(data).__name__)
    return data


def parse_set(item: str) -> tuple[str, Any]:
    """A ``--set KEY=VALUE`` argument: the dotted key and the value read as YAML.

    Plain numbers with an exponent (``1e-3``, ``5E+2``) are floats, though YAML 1.1 reads
    them as strings; a quoted value stays a string.

    >>> parse_set("train.lr=1e-3")
    ('train.lr', 0.001)
    >>> parse_set("mixer.q=-0.5"), parse_set("name='1e-3'")
    (('mixer.q', -0.5), ('name', '1e-3'))

    Raises
    ------
    ParameterError
        Naming ``--set``, with the argument: no ``=``, an empty key or key part
        (``train..lr``), or a value that is not valid YAML (with the column).
    """
    expected = "KEY=VALUE with a dotted config key (e.g. train.lr=0.05)"
    if not isinstance(item, str) or "=" not in item:
        raise ParameterError("--set", expected, item)
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part.strip() for part in key.split(".")):
        raise ParameterError("--set", expected, item)
    value = parse_yaml(text, name="--set", where=f"{item} (its value)", loader=_SetValueLoader)
    return key, value


#: What :func:`get_path` returns for a key the config does not hold.
ABSENT = object()


def get_path(config: dict[str, Any], dotted: str) -> Any:
    """``config['a']['b']`` for ``dotted = 'a.b'``, or :data:`ABSENT` when there is none."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config['a']['b'] = value`` for ``dotted = 'a.b'``, creating sections."""
    parts = dotted.split(".")
    if not dotted or any(not p for p in parts):
        raise ParameterError(dotted, "a dotted config key (e.g. train.lr)", dotted)
    node = config
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ParameterError(dotted, "a path through mappings", dotted)
    node[parts[-1]] = value


# --------------------------------------------------------------------------- the run spec


@dataclass(frozen=True)
class Composition:
    """A strategy's parts, as the builder makes them: each a mapping of a registered name
    (``preset`` for the mixer) and its parameters, epochs resolved; mixer and generative
    may be None."""

    sampler: dict[str, Any]
    mixer: dict[str, Any] | None
    loss: dict[str, Any]
    weights: dict[str, Any]
    generative: dict[str, Any] | None
    head: str

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy({"sampler": self.sampler, "mixer": self.mixer, "loss": self.loss,
                              "weights": self.weights, "generative": self.generative,
                              "head": self.head})


@dataclass(frozen=True)
class RunSpec:
    """A validated run specification: the resolved config sections, the composition and
    the schedule in epochs. Build objects from it with :func:`tailmix.build.build_run`.

    Attributes
    ----------
    config : dict
        The resolved config (every section with its defaults), as given to the builder.
    composition : Composition
    strategy : str
    epochs, seed : int
    milestones : tuple of int
        The lr milestones as epochs.
    notes : tuple of str
        What resolving chose that the config did not say (a source's own profile, shares of
        a short run that merged or moved), one line each, for the run's log.
    """

    config: dict[str, Any]
    composition: Composition
    strategy: str
    epochs: int
    seed: int
    milestones: tuple[int, ...]
    notes: tuple[str, ...] = ()

    @property
    def dataset(self) -> dict[str, Any]:
        return self.config["dataset"]

    @property
    def model(self) -> dict[str, Any]:
        return self.config["model"]

    @property
    def train(self) -> dict[str, Any]:
        return self.config["train"]

    @property
    def eval(self) -> dict[str, Any]:
        return self.config["eval"]

    @property
    def log(self) -> dict[str, Any]:
        return self.config["log"]

    def to_dict(self) -> dict[str, Any]:
        """The resolved config with its composition (what ``config.yaml`` records)."""
        return {**copy.deepcopy(self.config), "composition": self.composition.to_dict()}


def resolve(config: dict[str, Any] | RunSpec | None = None) -> RunSpec:
    """Resolve and validate a config into a :class:`RunSpec`, loading no data.

    Beyond :func:`resolve_config`: the strategy's composition under the config's overrides,
    shares of the run turned into epochs (milestones, ``weights.start_epoch``, M2m's
    warm-up), and every component built once on probe class counts (the profile's own
    counts where the source's size is known) so that a bad parameter fails here.
    """
    if isinstance(config, RunSpec):
        return config
    from tailmix.strategies import compose

    cfg, notes = _resolve_config(config)
    epochs = cfg["train"]["epochs"]
    milestones = _check_schedule(cfg["train"], epochs)
    comp = compose(cfg)
    w = comp["weights"]
    if w.get("name") == "drw" and w.get("start_epoch") is None:
        from tailmix.weights import DRW_START_FRACTION

        w["start_epoch"] = DRW_START_FRACTION
    if w.get("start_epoch") is not None:
        from tailmix.weights import resolve_start_epoch

        w["start_epoch"] = resolve_start_epoch(
            w["start_epoch"], epochs, milestones=milestones,
            lr_factors=cfg["train"]["lr_factors"], notes=notes)
    g = comp["generative"]
    if g is not None and g.get("name") == "m2m":
        from tailmix.generative.m2m import resolve_warmup

        g["warmup_epochs"] = resolve_warmup(g.get("warmup_epochs"), epochs)
        if g["warmup_epochs"] >= epochs:
            notes.append(f"generative.warmup_epochs: the {epochs}-epoch run is all M2m's "
                         "warm-up (plain training; translation needs 2 epochs or more)")
    spec = RunSpec(config=cfg, composition=Composition(**comp), strategy=cfg["strategy"],
                   epochs=epochs, seed=cfg["train"]["seed"], milestones=milestones,
                   notes=tuple(notes))
    try:
        counts = probe_counts(cfg["dataset"])
    except ParameterError as e:
        name = e.name if e.name.startswith("dataset") else f"dataset.{e.name}"
        raise ParameterError(name, e.expected, e.got) from e
    _check_model_inputs(cfg)
    check_components(spec, counts)
    return spec


def _check_model_inputs(cfg: dict[str, Any]) -> None:
    """A vector model for a source known to hold images is an error before any loading."""
    from tailmix.models import is_external
    from tailmix.registry import DATASETS, MODELS

    arch = cfg["model"]["arch"]
    if is_external(arch):
        return
    images = DATASETS.meta(cfg["dataset"]["name"]).get("inputs") == "image"
    if images and MODELS.meta(arch).get("inputs") == "vector":
        raise ParameterError("model.arch", f"an image model for {cfg['dataset']['name']!r} "
                             "(its inputs are images)", arch)


def probe_counts(dataset: dict[str, Any]) -> list[int]:
    """The training counts a dataset section implies, computed without reading data where
    the source's size is known (checking the profile against it); stand-in counts else."""
    from tailmix.data.profiles import NAMED_PROFILES, class_counts
    from tailmix.registry import DATASETS

    d = dataset
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


def check_components(spec: RunSpec, counts: list[int]) -> None:
    """Build every component of ``spec`` once on ``counts`` (no data): errors surface here
    with the config key they belong to."""
    from tailmix import components

    comp = spec.composition
    for key, make in (("sampler", components.make_sampler),
                      ("mixer", components.make_mixer), ("loss", components.make_loss),
                      ("weights", components.make_weights)):
        part = getattr(comp, key)
        if part is None:
            continue
        try:
            make(part, counts=counts, spec=spec)
        except ParameterError as e:
            name = e.name if e.name.startswith(f"{key}.") else f"{key}.{e.name}"
            raise ParameterError(name, e.expected, e.got) from e
        except TypeError as e:  # a parameter the component's constructor does not take
            raise ParameterError(key, "parameters the component takes", str(e)) from e
    components.check_head(comp, spec.config["crt"]["epochs"])
    if comp.generative is not None:
        components.make_generative(comp.generative, counts=counts)
