"""Config sections: one typed object per section, defined beside the feature it configures.

A section is a dataclass registered with :func:`section`. Its fields are its keys: their
defaults are the config's defaults and their annotations its types (``float`` takes an int
too, ``X | None`` takes null). The config (:mod:`tailmix.pipeline.config`) reads keys, defaults and
types from here and knows no section by name. A section then does five things, each once:

``prepare(given, notes)``
    fills what the config leaves out and depends on what it gives (a source's own profile,
    the schedule's milestones); ``given`` is the section as the user wrote it.
``check(run)``
    checks its values, ``run`` holding every section (``run.train.epochs``); a bad value is a
    :class:`~tailmix._validation.ParameterError` naming its key.
``resolve(epochs, notes)``
    turns its shares of the run into epochs, kept as attributes beside the fields, so the
    fields keep what the config said (what ``config.yaml`` records).
``adapt(data)``
    adjusts the loaded data (:class:`~tailmix.data.LongTailData`), e.g. its batch
    augmentation.
``contribute(run)``
    adds what it brings to a run being built (:class:`Assembly`): step arguments, a
    gradient rule, callbacks, parameter groups, a stage after the main run.

:data:`ACTS_ONLY` on a section lists its keys that act only under another of its keys: a
config that sets one where it would not act is refused rather than silently ignored.

The built-in sections are those :data:`BUILTIN` names, in its order (the order of a saved
``config.yaml``), each defined in the module it names; a plugin module registers its own
section by defining one, and a config holds a plugin's section only where it names it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Assembly", "Section", "Sections", "section", "sections", "key_types"]

#: The built-in sections, in the order of a saved config: key -> the module defining it.
BUILTIN = {"dataset": "tailmix.data.section", "model": "tailmix.models.section",
           "train": "tailmix.pipeline.training", "eval": "tailmix.pipeline.evaluation",
           "augment": "tailmix.data.augment", "consistency": "tailmix.consistency",
           "sam": "tailmix.sam", "ema": "tailmix.averaging", "swa": "tailmix.averaging",
           "crt": "tailmix.pipeline.stages",
           "log": "tailmix.pipeline.evaluation"}

_SECTIONS: dict[str, type[Section]] = {}


class Section:
    """The base of a config section (see the module's text); every method is optional."""

    KEY: ClassVar[str] = ""
    #: key -> (what turns it on, for the message; whether it acts, given the section).
    ACTS_ONLY: ClassVar[Mapping[str, tuple[str, Callable[[Any], bool]]]] = {}
    #: Keys that say where or how a run ran, not what it computed (see config.machine_keys).
    MACHINE: ClassVar[tuple[str, ...]] = ()

    def prepare(self, given: Mapping[str, Any], notes: list[str]) -> None:
        """Fill what depends on the keys the config gives."""

    def check(self, run: Sections) -> None:
        """Check the values; ``run`` holds every section."""

    def resolve(self, epochs: int, notes: list[str]) -> None:
        """Turn shares of the run into epochs (attributes beside the fields)."""

    def adapt(self, data: Any) -> None:
        """Adjust the loaded data (its batch augmentation)."""

    def contribute(self, run: Assembly) -> None:
        """Add what the section brings to a run being built."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    # Read as a mapping too (``section["lr"]``, ``.get``, ``in``, ``dict(section)``), for
    # code written when sections were mappings.

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def items(self) -> list[tuple[str, Any]]:
        return [(key, getattr(self, key)) for key in self.keys()]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default


def section(key: str) -> Callable[[type], type]:
    """Register a dataclass as the config section ``key``."""

    def register(cls: type) -> type:
        if not (dataclasses.is_dataclass(cls) and issubclass(cls, Section)):
            raise TypeError(f"section {key!r}: a dataclass derived from Section")
        cls.KEY = key
        for name in cls.ACTS_ONLY:
            if name not in {f.name for f in dataclasses.fields(cls)}:
                raise TypeError(f"section {key!r}: ACTS_ONLY names no key {name!r}")
        _SECTIONS[key] = cls
        return cls

    return register


def sections() -> dict[str, type[Section]]:
    """Every registered section, the built-in ones first in :data:`BUILTIN`'s order."""
    for module in dict.fromkeys(BUILTIN.values()):
        importlib.import_module(module)
    order = {key: i for i, key in enumerate(BUILTIN)}
    return dict(sorted(_SECTIONS.items(), key=lambda item: order.get(item[0], len(order))))


def key_types(cls: type) -> dict[str, tuple[tuple, Any]]:
    """``{key: (types, default)}`` of a section class, from its fields' annotations
    (``float`` -> int or float; ``X | None`` -> X or null; ``list[int]`` -> list)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[tuple, Any]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) \
            or typing.get_origin(hint) is typing.Union else (hint,)
        kinds: list[Any] = []
        for part in parts:
            if part is type(None):
                kinds.append(None)
            elif part is float:
                kinds += [int, float]
            else:
                kinds.append(typing.get_origin(part) or part)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = (tuple(kinds), default)
    return out


class Sections:
    """Every section of a resolved config, by key (``run.train.epochs``)."""

    def __init__(self, items: Mapping[str, Section]):
        self._items = dict(items)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_items"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Section:
        return self._items[key]

    def __iter__(self):
        return iter(self._items.values())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {key: s.to_dict() for key, s in self._items.items()}


@dataclass
class Assembly:
    """A run being built (:func:`tailmix.pipeline.build.build_run`): what the sections read and
    what they add. The builder makes the step from ``step_args`` once every section has
    contributed, then applies ``stages`` in order, each ``(sampler, step, lr, epochs) ->
    (sampler, step, lr, epochs)``."""

    spec: Any
    data: Any
    network: Any
    optimizer: Any
    device: Any
    counts: list[int]
    rank: int = 0
    world_size: int = 1
    out: Any = None  # the run folder (None: nothing is written)
    log: Callable[[str], None] = print
    step_args: dict[str, Any] = field(default_factory=dict)
    gradient: Any = None
    callbacks: list[Any] = field(default_factory=list)
    stages: list[Callable[..., tuple]] = field(default_factory=list)
    #: Epochs the backbone is frozen for at the start, and the first epoch of classifier
    #: re-training (None: none); one :class:`tailmix.pipeline.stages.Stages` callback applies
    #: both, re-initialising the head when re-training starts (``retrain_reset_head``) and
    #: keeping the frozen backbone's batch-norm statistics or re-estimating them from the
    #: re-training's batches (``retrain_batchnorm_stats``).
    frozen_until: int = 0
    retrain_from: int | None = None
    retrain_reset_head: bool = True
    retrain_batchnorm_stats: bool = False

    def add_param_group(self, params: list[Any]) -> None:
        """Parameters trained beside the network's, at the scheduled lr."""
        lr = self.spec.train.lr
        self.optimizer.add_param_group({"params": params, "lr": lr, "lr_scale": 1.0})
