"""Name -> factory maps: how a config's names become objects, and how a user adds one.

Seven registries, one mechanism::

    from tailmix.registry import LOSSES

    @LOSSES.register("my_loss")
    class MyLoss(SoftTargetLoss):
        ...

or ``tailmix.registry.register("loss", "my_loss")``. A config names registered entries
(``loss: {name: my_loss}``); ``plugins: [my_module]`` in a config imports a user's module
first, so its registrations reach the command line. Each entry may carry metadata
(``LOSSES.meta("ldam")``), read by the builders.

>>> r = Registry("widget")
>>> @r.register("round", sides=0)
... def round_widget():
...     return "o"
>>> r.get("round")(), r.meta("round")["sides"], "round" in r
('o', 0, True)
>>> r.get("square")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tailmix._validation.ParameterError: The 'widget' parameter must be one of 'round'. Got ...
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from tailmix._validation import ParameterError

__all__ = [
    "DATASETS",
    "LABEL_RULES",
    "LOSSES",
    "MODELS",
    "SAMPLERS",
    "STRATEGIES",
    "WEIGHT_SCHEDULES",
    "Registry",
    "import_plugins",
    "register",
]


class Registry:
    """A name -> object map with a ``register`` decorator and per-entry metadata.

    Parameters
    ----------
    kind : str
        What the entries are ("loss", "model", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, obj: Any = None, **meta: Any) -> Any:
        """Register ``obj`` under ``name`` (replacing an entry of that name).

        Used as ``@registry.register("name", **meta)`` or ``registry.register("name", obj)``.
        """
        if not isinstance(name, str) or not name:
            raise ParameterError(f"{self.kind} name", "a non-empty string", name)

        def add(target: Any) -> Any:
            self._items[name] = target
            self._meta[name] = dict(meta)
            return target

        return add if obj is None else add(obj)

    def get(self, name: Any, param: str | None = None) -> Any:
        """The entry ``name``; an unknown name is a :class:`ParameterError` naming ``param``
        (default: the registry's kind) and the registered names."""
        if not isinstance(name, str) or name not in self._items:
            choices = ", ".join(repr(n) for n in self._items)
            raise ParameterError(param or self.kind, f"one of {choices}", name)
        return self._items[name]

    def __getitem__(self, name: str) -> Any:
        """``registry[name]``, the same as :meth:`get` (kept for code that indexed the old
        name -> class dicts)."""
        return self.get(name)

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata given when ``name`` was registered."""
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


#: Dataset sources: ``loader(*, root, download, **options) -> RawDataset``. Metadata:
#: ``needs_root`` (bool), ``reads_root`` (False: reads no files), ``config`` (the packaged
#: config a bare ``--dataset`` starts from),
#: ``sizes`` ((classes, largest class in the training set) where known), ``profile`` (the
#: ``dataset.profile`` a config that names none gets; ``"exp"`` when absent).
DATASETS = Registry("dataset.name")
#: Networks: ``factory(*, num_classes, input_shape, head) -> nn.Module``; metadata
#: ``inputs``: ``"image"`` or ``"vector"``; ``side_limit``: the side larger images are
#: brought to when ``dataset.image_size`` is not set (224 when absent).
MODELS = Registry("model.arch")
#: Losses on soft targets: classes taking keyword arguments (``class_counts`` if needed).
LOSSES = Registry("loss.name")
#: Class-weight schedules: ``factory(*, class_counts, epochs, **params) -> WeightSchedule``.
WEIGHT_SCHEDULES = Registry("weights.name")
#: Anchor samplers: classes taking the keywords ``labels``, ``class_counts``, ``num_samples``,
#: ``rank``, ``world_size`` and ``seed`` (see :class:`tailmix.samplers.AnchorSampler`).
SAMPLERS = Registry("sampler.name")
#: Label rules: ``rule(lam, n_anchor, n_partner, **params) -> w``; metadata ``defaults``
#: (parameter -> default) and ``check`` (``params -> None``, raising on a bad value).
LABEL_RULES = Registry("rule")
#: Named compositions (:class:`tailmix.pipeline.strategies.Strategy`).
STRATEGIES = Registry("strategy")

_BY_KIND = {
    "dataset": DATASETS,
    "model": MODELS,
    "loss": LOSSES,
    "weights": WEIGHT_SCHEDULES,
    "sampler": SAMPLERS,
    "label_rule": LABEL_RULES,
    "strategy": STRATEGIES,
}

# Modules whose import registers the built-in entries.
_BUILTIN = (
    "tailmix.data.sources",
    "tailmix.data.lists",
    "tailmix.models",
    "tailmix.losses",
    "tailmix.weights",
    "tailmix.samplers",
    "tailmix.mixing.label_rules",
    "tailmix.pipeline.strategies",
)


def register(kind: str, name: str, obj: Any = None, **meta: Any) -> Any:
    """Register into the registry of ``kind`` (one of dataset, model, loss, weights,
    sampler, label_rule, strategy); a decorator when ``obj`` is omitted."""
    if kind not in _BY_KIND:
        raise ParameterError("kind", "one of " + ", ".join(repr(k) for k in _BY_KIND), kind)
    return _BY_KIND[kind].register(name, obj, **meta)


def load_builtins() -> None:
    """Import the modules that register tailmix's own entries (idempotent)."""
    for module in _BUILTIN:
        importlib.import_module(module)


def import_plugins(modules: list[str] | None, *, param: str = "plugins") -> None:
    """Import a config's ``plugins`` (module names) so their registrations take effect."""
    load_builtins()
    for i, module in enumerate(modules or []):
        if not isinstance(module, str) or not module:
            raise ParameterError(f"{param}[{i}]", "an importable module name", module)
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ParameterError(f"{param}[{i}]", "an importable module name (on sys.path "
                                 "or installed)", f"{module!r} ({error})") from error
        except SyntaxError as error:  # the user's file: where Python stopped reading it
            raise ParameterError(f"{param}[{i}]", "a module Python can read",
                                 f"{module!r}: {error.msg} ({error.filename}, line "
                                 f"{error.lineno})") from error
        except Exception as error:  # raised by the module's own code while importing
            where = _raised_in(error)
            raise ParameterError(f"{param}[{i}]", "a module that imports without an error",
                                 f"{module!r}: {type(error).__name__}: {error}{where}"
                                 ) from error


def _raised_in(error: BaseException) -> str:
    """`` (FILE, line N)``: where the innermost frame of ``error``'s traceback is."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "" if tb is None else f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})"


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
