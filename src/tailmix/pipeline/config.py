"""The run configuration: YAML or a dict -> a validated, typed run specification.

A config is plain data (what YAML holds): top-level keys (the strategy, its components, a
name, plugins) and sections. Each section is a typed object defined beside the feature it
configures (:mod:`tailmix.pipeline.sections`), and this module knows none of them by name.
:func:`resolve_config` fills defaults, rejects unknown keys and wrong types, lets every
section fill what depends on the keys given and check itself (messages name the key), and
returns the resolved config as a new dict; :func:`resolve` goes on to the :class:`RunSpec`:
the typed sections with their shares of the run turned into epochs, and the strategy's
composition with every component checked - all without loading data. Defaults live on the
sections and the components' factories; nothing writes into a config afterwards.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tailmix._validation import ParameterError, check_type, refuse_non_finite
from tailmix.pipeline.configfile import (  # noqa: F401 (re-exported: configs as files)
    ABSENT,
    EXPONENT_NUMBER,
    flat_config,
    get_path,
    load_config_file,
    parse_set,
    parse_yaml,
    read_yaml,
    set_path,
    yaml_float,
)
from tailmix.pipeline.sections import Sections, key_types, sections
from tailmix.registry import refuse_saved_plugins  # noqa: F401 (re-exported)
from tailmix.schedules import is_share, resolve_epoch  # noqa: F401 (shares of a run live there)

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


def schema() -> dict[str, dict[str, tuple[tuple, Any]]]:
    """section -> key -> (types, default), from the registered sections; ``None`` in types
    means the key may be null."""
    return {key: key_types(cls) for key, cls in sections().items()}


def machine_keys() -> tuple[str, ...]:
    """Config keys that say where or how a run ran, not what it computed: a run resumed
    with other values of these goes on as the same run, and a suite's cell whose
    ``config.yaml`` differs from the suite only in these is not stale."""
    return tuple(f"{key}.{name}" for key, cls in sections().items() for name in cls.MACHINE)


# Names this module gave before the dataset section moved beside the data.
_MOVED = {"DEFAULT_RATIO": "tailmix.data.section", "probe_counts": "tailmix.data.section",
          "source_options": "tailmix.data.section",
          "check_source_options": "tailmix.data.section",
          "DEFAULT_WARMUP_SHARE": "tailmix.pipeline.training",
          "STEP_DEFAULTS": "tailmix.pipeline.training",
          "PRECISIONS": "tailmix.pipeline.training", "SCHEDULES": "tailmix.pipeline.training",
          "COMPILE_MODES": "tailmix.pipeline.training", "AUGMENT_POLICIES": "tailmix.data.augment",
          "check_components": "tailmix.pipeline.components"}


def __getattr__(name: str) -> Any:  # computed or moved names, read when first asked for
    if name == "SCHEMA":
        return schema()
    if name == "MACHINE_KEYS":
        return machine_keys()
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_config(given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults of every key: the built-in sections', and those of a plugin's section
    that ``given`` (a config) names. A plugin's section is part of a config only where the
    config names it, so registering one changes no other run's config."""
    from tailmix.pipeline.sections import BUILTIN

    cfg: dict[str, Any] = {k: copy.deepcopy(d) for k, (_, d) in TOP_LEVEL.items()}
    for key, keys in schema().items():
        if key in BUILTIN or key in (given or {}):
            cfg[key] = {k: copy.deepcopy(d) for k, (_, d) in keys.items()}
    return cfg


def resolve_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``config`` over the defaults and check every key, type and range.

    Component sections (``sampler``, ``mixer``, ``loss``, ``weights``) are checked by the
    components themselves when the strategy is built, still before any training.
    """
    return _resolve_config(config)[0]


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _resolve_config(config: dict[str, Any] | None
                    ) -> tuple[dict[str, Any], list[str], Sections]:
    """:func:`resolve_config`, the notes on what it chose that the config did not say (a
    profile a source brings, milestones that merged on a short run), and the sections."""
    if not isinstance(config, (dict, type(None))):
        raise ParameterError("config", "a mapping of sections", type(config).__name__)
    config = copy.deepcopy(config or {})
    refuse_non_finite(config)
    plugins = config.get("plugins")
    if isinstance(plugins, list):
        for i, module in enumerate(plugins):
            if not isinstance(module, str) or not _MODULE_NAME.match(module):
                raise ParameterError(f"plugins[{i}]", "an importable module name (dotted "
                                     "identifiers, e.g. my_package.tailmix_parts)", module)
    from tailmix.registry import STRATEGIES, import_plugins

    import_plugins(plugins if isinstance(plugins, list) else None)
    keys = schema()  # after the plugins, which may bring sections
    known = ", ".join(list(TOP_LEVEL) + list(keys))
    for key in config:
        if not isinstance(key, str) or key not in TOP_LEVEL and key not in keys:
            # 7, null, "" are named by their repr
            name = key if isinstance(key, str) and key.strip() else repr(key)
            raise ParameterError(name, f"one of the known top-level keys: {known}", key)
    cfg = default_config(config)
    _strategy_settings(cfg, config.get("strategy"))
    for key, value in config.items():
        if key in keys:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ParameterError(key, "a mapping", value)
            for sub, subvalue in value.items():
                if not isinstance(sub, str) or sub not in keys[key]:
                    raise ParameterError(
                        f"{key}.{sub}", "one of the known keys: " + ", ".join(keys[key]), sub)
                cfg[key][sub] = check_type(f"{key}.{sub}", subvalue, keys[key][sub][0])
        else:
            cfg[key] = check_type(key, value, TOP_LEVEL[key][0])
    notes: list[str] = []
    run = Sections({key: cls(**cfg[key]) for key, cls in sections().items() if key in cfg})
    for part in run:
        part.prepare(config.get(part.KEY) or {}, notes)
    STRATEGIES.get(cfg["strategy"], "strategy")
    for part in run:
        part.check(run)
    _check_used(run, config)
    cfg.update(run.to_dict())
    return cfg, notes, run


def _check_used(run: Sections, given: Mapping[str, Any]) -> None:
    """Refuse a setting the config gives that the run would not use (a section's
    ``ACTS_ONLY``): set to a value other than its default and not empty."""
    for part in run:
        defaults = key_types(type(part))
        for key, (switch, acts) in part.ACTS_ONLY.items():
            value = (given.get(part.KEY) or {}).get(key)
            if value in (None, [], 0) or value == defaults[key][1] or acts(part):
                continue
            raise ParameterError(f"{part.KEY}.{key}", f"left out unless {switch} (without it "
                                 "the run does not use it)", value)


def _strategy_settings(cfg: dict[str, Any], name: Any) -> None:
    """Put a named strategy's own settings (``Strategy.settings``) over the defaults; the
    config's keys then go over them."""
    import tailmix.pipeline.strategies  # noqa: F401  (the catalogue registers itself)
    from tailmix.registry import STRATEGIES

    if not isinstance(name, str) or name not in STRATEGIES:
        return
    for section, values in getattr(STRATEGIES.get(name, "strategy"), "settings", {}).items():
        for key, value in values.items():
            cfg[section][key] = copy.deepcopy(value)


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
    """A validated run specification: the resolved config, its typed sections, the
    composition and the schedule in epochs. Build objects from it with
    :func:`tailmix.pipeline.build.build_run`.

    Attributes
    ----------
    config : dict
        The resolved config (every section with its defaults): what ``config.yaml`` records.
    composition : Composition
    strategy : str
    epochs, seed : int
    milestones : tuple of int
        The lr milestones as epochs.
    notes : tuple of str
        What resolving chose that the config did not say (a source's own profile, shares of
        a short run that merged or moved), one line each, for the run's log.
    sections : Sections
        The typed sections, also read as attributes: ``spec.train.lr``, ``spec.sam.rho``.
    """

    config: dict[str, Any]
    composition: Composition
    strategy: str
    epochs: int
    seed: int
    milestones: tuple[int, ...]
    notes: tuple[str, ...] = ()
    sections: Sections = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or "config" not in self.__dict__:
            raise AttributeError(key)
        parts = self.__dict__.get("sections")
        if parts is not None:
            return getattr(parts, key)
        kind = sections().get(key)  # a spec made without its sections: from its config
        if kind is None or key not in self.config:
            raise AttributeError(key)
        return kind(**self.config[key])

    def to_dict(self) -> dict[str, Any]:
        """The resolved config with its composition (what ``config.yaml`` records)."""
        return {**copy.deepcopy(self.config), "composition": self.composition.to_dict()}


def resolve(config: dict[str, Any] | RunSpec | None = None) -> RunSpec:
    """Resolve and validate a config into a :class:`RunSpec`, loading no data.

    Beyond :func:`resolve_config`: every section's shares of the run turned into epochs,
    the strategy's composition under the config's overrides (``weights.start_epoch`` and
    M2m's warm-up resolved), and every component built once on probe class counts (the
    profile's own counts where the source's size is known) so that a bad parameter fails
    here.
    """
    if isinstance(config, RunSpec):
        return config
    from tailmix.data.section import probe_counts
    from tailmix.pipeline.components import check_components, resolve_composition
    from tailmix.pipeline.strategies import compose

    cfg, notes, run = _resolve_config(config)
    epochs = run.train.epochs
    for part in run:
        part.resolve(epochs, notes)
    milestones = run.train.milestone_epochs
    comp = compose(cfg)
    resolve_composition(comp, run, notes)
    spec = RunSpec(config=cfg, composition=Composition(**comp), strategy=cfg["strategy"],
                   epochs=epochs, seed=run.train.seed, milestones=milestones,
                   notes=tuple(notes), sections=run)
    try:
        counts = probe_counts(cfg["dataset"])
    except ParameterError as e:
        name = e.name if e.name.startswith("dataset") else f"dataset.{e.name}"
        raise ParameterError(name, e.expected, e.got) from e
    check_components(spec, counts)
    return spec
