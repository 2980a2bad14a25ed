"""Module names from before the package had layers, still importable.

``tailmix.build``, ``tailmix.predict``, ``tailmix.report.page`` and the rest now live in
:mod:`tailmix.pipeline` (config -> build -> engine) and :mod:`tailmix.tools` (what works
on finished runs). Importing an old name gives the very module object of the new one, so
its names, its private helpers and anything patched on it are shared.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

#: Old top-level module -> the package it moved to.
MOVED = {
    **{name: "tailmix.pipeline" for name in (
        "build", "callbacks", "checkpoints", "components", "config", "configfile", "engine",
        "evaluation", "hardware", "progress", "sections", "shipped", "stages", "steps",
        "strategies", "training")},
    **{name: "tailmix.tools" for name in ("analysis", "bench", "export", "predict", "report")},
}


def new_name(fullname: str) -> str | None:
    """The module's name now (``tailmix.report.page`` -> ``tailmix.tools.report.page``), or
    None for a name that did not move."""
    parts = fullname.split(".")
    if len(parts) < 2 or parts[0] != "tailmix" or parts[1] not in MOVED:
        return None
    return ".".join([MOVED[parts[1]], *parts[1:]])


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old name with the module under its new one."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(new_name(spec.name))
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old name's spec on the module: its own again, so
        # that a reload or pickling finds it.
        module.__spec__ = self._specs.pop(module.__name__)


def install() -> None:
    if not any(type(f).__name__ == "_OldNames" for f in sys.meta_path):  # once, also when
        # a test re-imports the package
        sys.meta_path.insert(0, _OldNames())  # before the path finder, which would load
        # a second copy of a moved package's submodule under its old name
