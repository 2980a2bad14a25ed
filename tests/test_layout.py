"""The package's layers: parts usable in any loop at the top level, ``tailmix.pipeline``
(config -> build -> engine), ``tailmix.tools`` (on finished runs); each imports only
downward, and the names from before the layers still import."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tailmix"

#: Pipeline modules a part may import: the protocols a part implements (a config section,
#: a callback, a training step), not the machinery that runs them.
PROTOCOLS = {"tailmix.pipeline.sections", "tailmix.pipeline.callbacks",
             "tailmix.pipeline.steps"}
ENTRY = {"tailmix", "tailmix.__main__", "tailmix.cli", "tailmix.sklearn", "tailmix._moved"}


def _layer(name: str) -> str:
    if name in ENTRY:
        return "entry"
    if name.startswith("tailmix.tools"):
        return "tools"
    if name.startswith("tailmix.pipeline"):
        return "pipeline"
    return "parts"


def _imports(path: Path, module: str):
    """(line, imported module) for every absolute or relative import of a tailmix module,
    those inside functions included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:  # ``from tailmix.pipeline import build``: a module
                full = f"{base}.{alias.name}"
                yield node.lineno, full if (SRC.parent / full.replace(".", "/")).exists() \
                    or (SRC.parent / (full.replace(".", "/") + ".py")).exists() else base


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path, ".".join(path.relative_to(SRC.parent).with_suffix("").parts) \
            .removesuffix(".__init__")


def test_each_layer_imports_only_downward():
    wrong = []
    for path, module in _modules():
        layer = _layer(module)
        for line, name in _imports(path, module):
            if not name.startswith("tailmix"):
                continue
            target = _layer(name)
            if layer == "parts" and target == "pipeline" and name not in PROTOCOLS \
                    or layer in ("parts", "pipeline") and target in ("tools", "entry") \
                    and name != "tailmix":
                wrong.append(f"{module}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_package_imports_its_modules_by_their_names_now():
    from tailmix._moved import new_name

    old = [f"{module}:{line} {name}" for path, module in _modules()
           for line, name in _imports(path, module) if new_name(name)]
    assert not old, "\n".join(old)


@pytest.mark.parametrize("old", ["tailmix.build", "tailmix.config", "tailmix.engine",
                                 "tailmix.predict", "tailmix.report", "tailmix.report.page",
                                 "tailmix.strategies", "tailmix.callbacks"])
def test_an_old_name_is_the_moved_module_itself(old, monkeypatch):
    from tailmix._moved import new_name

    was, now = importlib.import_module(old), importlib.import_module(new_name(old))
    assert was is now and sys.modules[old] is now
    assert now.__spec__.name == new_name(old)  # its own spec, not the alias's
    monkeypatch.setattr(was, "_patched_here", 1, raising=False)
    assert now._patched_here == 1


def test_the_layers_cover_every_module():
    """No module is left at the top level but the parts and the entry points."""
    top = {p.stem for p in SRC.glob("*.py")}
    from tailmix._moved import MOVED

    assert not top & set(MOVED), top & set(MOVED)
    assert (SRC / "pipeline" / "build.py").is_file() and (SRC / "tools" / "predict.py").is_file()
