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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tailmix._validation import ParameterError, check_choice, check_number

_NUM = (int, float)

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
        "in_memory": ((bool, str), "auto"),
        "image_size": ((int, None), None),
        "bad_images": ((str,), "refuse"),
        "workers": ((int, str), "auto"),
        "validation": ((dict, None), None),
    },
    "model": {
        "arch": ((str,), "resnet32"),
        "head": ((str, None), None),
        "pretrained": ((bool,), False),
        "backbone_lr": (_NUM + (None,), None),
        "freeze_backbone_epochs": (_NUM, 0),
    },
    "train": {
        "epochs": ((int,), 200),
        "batch_size": ((int,), 128),
        "lr": (_NUM, 0.1),
        "momentum": (_NUM, 0.9),
        "weight_decay": (_NUM, 2e-4),
        "nesterov": ((bool,), False),
        "schedule": ((str,), "step"),
        "warmup_epochs": (_NUM, 5),
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
        "batch_size": ((int,), 1024),
        "many_threshold": ((int,), 100),
        "few_threshold": ((int,), 20),
        "margins": ((bool,), True),
        "posthoc_tau": (_NUM, 1.0),
        "patience": ((int, None), None),
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
    if not isinstance(config, (dict, type(None))):
        raise ParameterError("config", "a mapping of sections", type(config).__name__)
    config = copy.deepcopy(config or {})
    from tailmix.registry import import_plugins

    plugins = config.get("plugins")
    import_plugins(plugins if isinstance(plugins, list) else None)
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
    _fill_schedule(cfg["train"])
    _check_ranges(cfg)
    return cfg


# The step schedule's milestones (shares of the run) and factors when a config gives none.
STEP_DEFAULTS = {"milestones": [0.8, 0.9], "lr_factors": [0.01, 0.0001]}


def _fill_schedule(t: dict[str, Any]) -> None:
    """Milestones and factors: the step schedule's defaults, none for cosine decay."""
    check_choice("train.schedule", t["schedule"], SCHEDULES)
    for key, default in STEP_DEFAULTS.items():
        if t[key] is None:
            t[key] = list(default) if t["schedule"] == "step" else []
    if t["schedule"] == "cosine" and t["milestones"]:
        raise ParameterError("train.milestones", "none with schedule 'cosine' (it decays "
                             "smoothly to zero)", t["milestones"])


def _check_ranges(cfg: dict[str, Any]) -> None:
    from tailmix.data.dataset import PREPARE_PROFILES
    from tailmix.data.files import BAD_IMAGES
    from tailmix.models import HEADS, is_external
    from tailmix.registry import DATASETS, MODELS, STRATEGIES

    d, t, e = cfg["dataset"], cfg["train"], cfg["eval"]
    DATASETS.get(d["name"], "dataset.name")
    check_choice("dataset.profile", d["profile"], PREPARE_PROFILES)
    check_number("dataset.ratio", d["ratio"], low=1)
    if d["n_max"] is not None:
        check_number("dataset.n_max", d["n_max"], low=1, integer=True)
    check_number("dataset.data_seed", d["data_seed"], low=0, integer=True)
    if d["crop_padding"] is not None:
        check_number("dataset.crop_padding", d["crop_padding"], low=0, integer=True)
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
    _check_validation(d["validation"])
    if isinstance(d["workers"], str):
        check_choice("dataset.workers", d["workers"], ("auto",))
    else:
        check_number("dataset.workers", d["workers"], low=0, integer=True)
    m = cfg["model"]
    if not is_external(m["arch"]):
        MODELS.get(m["arch"], "model.arch")
    if m["head"] is not None:
        check_choice("model.head", m["head"], HEADS)
    if m["backbone_lr"] is not None:
        check_number("model.backbone_lr", m["backbone_lr"], low=0)
    c = cfg["crt"]
    check_number("crt.epochs", c["epochs"], low=0, integer=True)
    for key in ("lr", "weight_decay"):
        if c[key] is not None:
            check_number(f"crt.{key}", c[key], low=0, low_open=key == "lr")
    check_choice("train.schedule", t["schedule"], SCHEDULES)
    STRATEGIES.get(cfg["strategy"], "strategy")
    epochs = check_number("train.epochs", t["epochs"], low=1, integer=True)
    check_number("train.batch_size", t["batch_size"], low=2, integer=True)
    freeze = resolve_epoch("model.freeze_backbone_epochs", m["freeze_backbone_epochs"],
                           epochs)
    if not 0 <= freeze < epochs:
        raise ParameterError("model.freeze_backbone_epochs", f"fewer than the run's "
                             f"{epochs} epochs", m["freeze_backbone_epochs"])
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
    if e["patience"] is not None:
        check_number("eval.patience", e["patience"], low=1, integer=True)
        if d["validation"] is None:
            raise ParameterError("eval.patience", "null without dataset.validation (early "
                                 "stopping on the test set would select on it)", e["patience"])


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


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (a mapping), with a clear error for anything else; a bare
    name (``cifar10_lt``) reads the config shipped with tailmix."""
    from tailmix.shipped import config_path

    path = config_path(path)
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
    """

    config: dict[str, Any]
    composition: Composition
    strategy: str
    epochs: int
    seed: int
    milestones: tuple[int, ...]

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

    cfg = resolve_config(config)
    epochs = cfg["train"]["epochs"]
    milestones = tuple(resolve_epoch(f"train.milestones[{i}]", m, epochs)
                       for i, m in enumerate(cfg["train"]["milestones"]))
    comp = compose(cfg)
    w = comp["weights"]
    if w.get("start_epoch") is not None:
        w["start_epoch"] = resolve_epoch("weights.start_epoch", w["start_epoch"], epochs)
    g = comp["generative"]
    if g is not None and g.get("name") == "m2m":
        from tailmix.generative.m2m import resolve_warmup

        g["warmup_epochs"] = resolve_warmup(g.get("warmup_epochs", 0.8), epochs)
    spec = RunSpec(config=cfg, composition=Composition(**comp), strategy=cfg["strategy"],
                   epochs=epochs, seed=cfg["train"]["seed"], milestones=milestones)
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
    if d["class_order"] is not None and sorted(d["class_order"]) != list(range(num_classes)):
        raise ParameterError("dataset.class_order", f"a permutation of 0..{num_classes - 1}",
                             d["class_order"])
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
    from tailmix import build

    comp = spec.composition
    for key, make in (("sampler", build.make_sampler), ("mixer", build.make_mixer),
                      ("loss", build.make_loss), ("weights", build.make_weights)):
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
    build.check_head(comp)
    if comp.generative is not None:
        build.make_generative(comp.generative, counts=counts)
