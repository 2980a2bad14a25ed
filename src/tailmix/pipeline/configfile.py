"""Configs as files and command-line values: YAML read with errors that say where, a bare
name read as a shipped config, ``--set KEY=VALUE`` values, and dotted keys into a config
(one key, or every key flat).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tailmix._validation import EXPONENT_NUMBER, ParameterError, yaml_float

__all__ = ["ABSENT", "EXPONENT_NUMBER", "flat_config", "get_path", "load_config_file", "parse_set",
           "parse_yaml", "read_yaml", "set_path", "yaml_float"]

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
    from tailmix.pipeline.shipped import config_path

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
