"""The run configuration: one nested dict with a fixed schema, checked before any work.

A config is plain data (what YAML holds). :func:`resolve_config` fills defaults, rejects
unknown keys, wrong types and out-of-range values with messages that name the key, and
returns a new dict; nothing writes into a config afterwards.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tailmix._validation import ParameterError, check_choice, check_number

_NUM = (int, float)
_ANY = object

# section -> key -> (types, default). ``None`` in types means the key may be null.
SCHEMA: dict[str, dict[str, tuple[tuple, Any]]] = {
    "dataset": {
        "name": ((str,), "digits"),
        "root": ((str, None), None),
        "download": ((bool,), False),
        "profile": ((str,), "exp"),
        "ratio": (_NUM, 100),
        "n_max": ((int, None), None),
        "counts": ((list, None), None),
        "class_order": ((list, None), None),
        "data_seed": ((int,), 0),
        "crop_padding": ((int, None), None),
        "hflip": ((bool, None), None),
        "options": ((dict,), {}),
    },
    "model": {
        "arch": ((str,), "resnet32"),
        "head": ((str, None), None),
    },
    "train": {
        "epochs": ((int,), 200),
        "batch_size": ((int,), 128),
        "lr": (_NUM, 0.1),
        "momentum": (_NUM, 0.9),
        "weight_decay": (_NUM, 2e-4),
        "nesterov": ((bool,), False),
        "warmup_epochs": (_NUM, 5),
        "milestones": ((list,), [0.8, 0.9]),
        "lr_factors": ((list,), [0.01, 0.0001]),
        "seed": ((int,), 0),
        "device": ((str,), "auto"),
        "precision": ((str,), "auto"),
        "channels_last": ((bool, str), "auto"),
        "compile": ((bool, str), False),
        "sync_batchnorm": ((bool,), False),
    },
    "eval": {
        "every": ((int,), 10),
        "batch_size": ((int,), 1024),
        "many_threshold": ((int,), 100),
        "few_threshold": ((int,), 20),
        "margins": ((bool,), True),
        "posthoc_tau": (_NUM, 1.0),
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
}

PRECISIONS = ("auto", "bf16", "fp32", "fp16")
# train.compile: false, true (= "default"), or a torch.compile mode.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _type_name(types: tuple) -> str:
    names = {int: "an int", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a mapping", None: "null"}
    return " or ".join(names.get(t, str(t)) for t in types)


def _check_type(key: str, value: Any, types: tuple) -> Any:
    if value is None and None in types:
        return None
    if isinstance(value, bool) and bool not in types:
        raise ParameterError(key, _type_name(types), value)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, tuple(t for t in types if t is not None)):
        raise ParameterError(key, _type_name(types), value)
    return value


def default_config() -> dict[str, Any]:
    cfg: dict[str, Any] = {k: copy.deepcopy(d) for k, (_, d) in TOP_LEVEL.items()}
    for section, keys in SCHEMA.items():
        cfg[section] = {k: copy.deepcopy(d) for k, (_, d) in keys.items()}
    return cfg


def resolve_epoch(name: str, value: Any, epochs: int) -> int:
    """An epoch given as an int (an epoch number) or a float in (0, 1) (a share of the run)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, "an epoch number (int) or a share of the run in (0, 1)", value)
    if isinstance(value, float) and not value.is_integer():
        if not 0 < value < 1:
            raise ParameterError(name, "an epoch number (int) or a share of the run in (0, 1)",
                                 value)
        # A share of the run always lands inside it (at most the last epoch).
        return min(int(round(value * epochs)), max(epochs - 1, 0))
    return int(value)


def resolve_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``config`` over the defaults and check every key, type and range.

    Component sections (``sampler``, ``mixer``, ``loss``, ``weights``) are checked by the
    components themselves when the strategy is built, still before any training.
    """
    config = copy.deepcopy(config or {})
    if not isinstance(config, dict):
        raise ParameterError("config", "a mapping of sections", type(config).__name__)
    cfg = default_config()
    for key, value in config.items():
        if key in SCHEMA:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ParameterError(key, "a mapping", value)
            for sub, subvalue in value.items():
                if sub not in SCHEMA[key]:
                    raise ParameterError(
                        f"{key}.{sub}", "one of the known keys: " + ", ".join(SCHEMA[key]),
                        sub)
                cfg[key][sub] = _check_type(f"{key}.{sub}", subvalue, SCHEMA[key][sub][0])
        elif key in TOP_LEVEL:
            cfg[key] = _check_type(key, value, TOP_LEVEL[key][0])
        else:
            known = ", ".join(list(TOP_LEVEL) + list(SCHEMA))
            raise ParameterError(key, f"one of the known top-level keys: {known}", key)
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: dict[str, Any]) -> None:
    from tailmix.data.dataset import PREPARE_PROFILES
    from tailmix.data.sources import NEEDS_ROOT, SOURCES
    from tailmix.models import ARCHS, HEADS
    from tailmix.strategies import STRATEGIES

    d, t, e = cfg["dataset"], cfg["train"], cfg["eval"]
    check_choice("dataset.name", d["name"], SOURCES)
    check_choice("dataset.profile", d["profile"], PREPARE_PROFILES)
    check_number("dataset.ratio", d["ratio"], low=1)
    if d["n_max"] is not None:
        check_number("dataset.n_max", d["n_max"], low=1, integer=True)
    check_number("dataset.data_seed", d["data_seed"], low=0, integer=True)
    if d["crop_padding"] is not None:
        check_number("dataset.crop_padding", d["crop_padding"], low=0, integer=True)
    if d["name"] in NEEDS_ROOT:
        if d["root"] is None:
            raise ParameterError("dataset.root", f"a folder or file holding {d['name']!r} "
                                 "(give --data-root)", None)
        if not d["download"] and not Path(d["root"]).expanduser().exists():
            raise ParameterError("dataset.root", "an existing folder or file", d["root"])
    check_choice("model.arch", cfg["model"]["arch"], ARCHS)
    if cfg["model"]["head"] is not None:
        check_choice("model.head", cfg["model"]["head"], HEADS)
    check_choice("strategy", cfg["strategy"], STRATEGIES)
    epochs = check_number("train.epochs", t["epochs"], low=1, integer=True)
    check_number("train.batch_size", t["batch_size"], low=2, integer=True)
    check_number("train.lr", t["lr"], low=0, low_open=True)
    check_number("train.momentum", t["momentum"], low=0, high=1, high_open=True)
    check_number("train.weight_decay", t["weight_decay"], low=0)
    check_number("train.warmup_epochs", t["warmup_epochs"], low=0)
    if len(t["milestones"]) != len(t["lr_factors"]):
        raise ParameterError("train.lr_factors", f"{len(t['milestones'])} factors, one per "
                             "milestone", t["lr_factors"])
    for i, m in enumerate(t["milestones"]):
        ep = resolve_epoch(f"train.milestones[{i}]", m, epochs)
        check_number(f"train.milestones[{i}]", ep, low=0, integer=True)
    for i, f in enumerate(t["lr_factors"]):
        check_number(f"train.lr_factors[{i}]", f, low=0, low_open=True)
    check_choice("train.precision", t["precision"], PRECISIONS)
    if isinstance(t["channels_last"], str):
        check_choice("train.channels_last", t["channels_last"], ("auto",))
    if isinstance(t["compile"], str):
        check_choice("train.compile", t["compile"], COMPILE_MODES)
    dev = t["device"]
    if dev not in ("auto", "cpu", "cuda", "mps") and not dev.startswith("cuda:"):
        raise ParameterError("train.device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", dev)
    check_number("eval.every", e["every"], low=1, integer=True)
    check_number("eval.batch_size", e["batch_size"], low=1, integer=True)
    check_number("eval.few_threshold", e["few_threshold"], low=0, integer=True)
    check_number("eval.many_threshold", e["many_threshold"], low=e["few_threshold"],
                 integer=True)
    check_number("eval.posthoc_tau", e["posthoc_tau"], low=0)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (a mapping), with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("config", "an existing YAML file", str(path))
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError("config", f"a YAML mapping in {path}", type(data).__name__)
    return data


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config['a']['b'] = value`` for ``dotted = 'a.b'``, creating sections."""
    parts = dotted.split(".")
    node = config
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ParameterError(dotted, "a path through mappings", dotted)
    node[parts[-1]] = value
