"""The YAML configs shipped inside the package.

The configs live in ``tailmix/configs/`` and are installed with the package as data files,
so :func:`config_path` finds them by name from an installed wheel as well as from a
checkout (where the repository's ``configs/`` folder is a link to the same files).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tailmix._validation import ParameterError

__all__ = ["config_names", "config_path"]

_SUFFIX = ".yaml"


def _config_dir():
    return resources.files("tailmix") / "configs"


def config_names() -> list[str]:
    """The names of the shipped configs, without the ``.yaml`` suffix.

    Returns
    -------
    list of str
        Sorted config names, e.g. ``"cifar10_lt"`` for ``tailmix/configs/cifar10_lt.yaml``;
        empty if the package holds no configs.

    Examples
    --------
    >>> "digits" in config_names()
    True
    """
    folder = _config_dir()
    if not folder.is_dir():
        return []
    return sorted(
        entry.name[: -len(_SUFFIX)]
        for entry in folder.iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    )


def config_path(name_or_path: str | Path) -> Path:
    """Resolve a config file path or the name of a shipped config to a file path.

    Parameters
    ----------
    name_or_path
        A path to an existing file, returned as is; or the bare name of a shipped config,
        with or without the ``.yaml`` suffix (``"cifar10_lt"`` or ``"cifar10_lt.yaml"``).
        An existing file wins over a shipped config of the same name.

    Returns
    -------
    Path
        The given path, or the path of the packaged config file.

    Raises
    ------
    ParameterError
        If ``name_or_path`` is neither an existing file nor a shipped config name; the
        message lists the shipped names.

    Examples
    --------
    >>> config_path("digits").name
    'digits.yaml'
    >>> config_path("digits.yaml") == config_path("digits")
    True
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    names = config_names()
    if text and "/" not in text and "\\" not in text:
        stem = text[: -len(_SUFFIX)] if text.endswith(_SUFFIX) else text
        if stem in names:
            # Installed packages are real files in site-packages, so the traversable is a
            # path; ``Path`` of it gives the file without any temporary extraction.
            return Path(str(_config_dir() / f"{stem}{_SUFFIX}"))
    expected = "an existing YAML file or a shipped config name (" + ", ".join(names) + ")"
    raise ParameterError("config", expected, text)
