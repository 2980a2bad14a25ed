"""Run folders read for a report, and the numbers and text derived from them.

:class:`RunRecord` and :func:`load_run` read a run folder's ``config.yaml``,
``metrics.json``, ``history.jsonl`` and ``margins.json``; the helpers here clean
``margins.json``, order and name the classes, size the shot groups, summarise the config and
format values for tables and legends.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tailmix._validation import ParameterError
from tailmix.metrics import shot_groups

_MISSING = "—"


# ----------------------------------------------------------------------------- loading


@dataclass
class RunRecord:
    """The files of one run folder, read and parsed.

    Attributes
    ----------
    path
        The run folder.
    label
        A short name for tables and legends (the strategy, else the folder name).
    config, metrics, margins
        Parsed ``config.yaml``, ``metrics.json`` and ``margins.json`` (``None`` if absent).
    history
        One dict per line of ``history.jsonl`` (empty if absent).
    notes
        Human-readable remarks about missing or unreadable files.
    """

    path: Path
    label: str
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    margins: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _read_optional(path: Path, parse, notes: list[str]):
    if not path.is_file():
        notes.append(f"{path.name} not found")
        return None
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as err:
        notes.append(f"{path.name} could not be read ({type(err).__name__})")
        return None


def _parse_history(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by an interrupted run
        if isinstance(row, dict):
            rows.append(row)
    return rows


def load_run(run_dir: str | Path) -> RunRecord:
    """Read the files of one run folder; missing optional files are noted, not fatal.

    Parameters
    ----------
    run_dir
        Folder written by a training run.

    Returns
    -------
    RunRecord
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ParameterError("run_dir", "an existing run folder", str(run_dir))
    notes: list[str] = []
    config = _read_optional(path / "config.yaml", yaml.safe_load, notes)
    metrics = _read_optional(path / "metrics.json", json.loads, notes)
    history = _read_optional(path / "history.jsonl", _parse_history, notes) or []
    margins = _read_optional(path / "margins.json", json.loads, notes)
    config = config if isinstance(config, dict) else None
    metrics = metrics if isinstance(metrics, dict) else None
    margins = _clean_margins(margins)
    label = (metrics or {}).get("strategy") or _config_value(config, "strategy") or path.name
    return RunRecord(path, str(label), config, metrics, history, margins, notes)


_MARGIN_LISTS = ("mean", "median", "p10", "min", "count")


def _clean_counts(value: Any) -> list[float] | None:
    """Class counts as a list of finite numbers >= 0, or None for anything else."""
    if isinstance(value, list) and value and all(_is_number(n) and n >= 0 for n in value):
        return value
    return None


def _clean_margins(margins: Any) -> dict[str, Any] | None:
    """``margins.json`` in the shape the figures and tables read, whatever the file held.

    Anything but an object is None; ``class_counts`` is kept only as a list of finite
    numbers >= 0; a ``train`` or ``test`` split only as an object, its per-class entries
    only as lists (their non-numbers are skipped where they are read) and its ``slope`` and
    ``intercept`` only as finite numbers. A run that diverged leaves all of them null.
    """
    if not isinstance(margins, dict):
        return None
    clean = dict(margins)
    clean["class_counts"] = _clean_counts(margins.get("class_counts"))
    for name in ("train", "test"):
        split = margins.get(name)
        if not isinstance(split, dict):
            clean.pop(name, None)
            continue
        split = dict(split)
        for key in _MARGIN_LISTS:
            if not isinstance(split.get(key), list):
                split[key] = []
        for key in ("slope", "intercept"):
            if not _is_number(split.get(key)):
                split[key] = None
        clean[name] = split
    return clean


# ----------------------------------------------------------------------------- classes

#: A margin slope fitted on fewer classes than this is shown with what it rests on.
_MIN_FIT_CLASSES = 4


def _count_order(counts: Sequence[float] | None, num_classes: int) -> list[int]:
    """Class indices by training count, largest first, ties by index (index order when the
    counts are unknown or do not match)."""
    if not counts or len(counts) != num_classes:
        return list(range(num_classes))
    return sorted(range(num_classes), key=lambda c: (-counts[c], c))


def _class_names(classes: Any, num_classes: int) -> list[str]:
    """The recorded class names, else the class indices, as strings."""
    if isinstance(classes, list) and len(classes) == num_classes:
        return [str(c) for c in classes]
    return [str(c) for c in range(num_classes)]


def _run_counts(run: RunRecord) -> list[float] | None:
    """The run's training class counts: metrics.json's, else margins.json's or the config's."""
    return (_clean_counts((run.metrics or {}).get("class_counts"))
            or (run.margins or {}).get("class_counts")
            or _clean_counts((run.config or {}).get("class_counts")))


def _group_sizes(counts: Sequence[float] | None, thresholds: tuple[int, int]) -> dict[str, int]:
    """Classes in each many-/medium-/few-shot group; empty when the counts are unknown."""
    if not counts:
        return {}
    try:
        groups = shot_groups(counts, *thresholds)
    except ParameterError:  # counts that are not whole numbers
        return {}
    return {name: len(members) for name, members in groups.items()}


def _group_note(size: int | None) -> str:
    """What a shot-group figure rests on, when that is too few classes to call it a group."""
    if size == 0:
        return "no class in group"
    if size == 1:
        return "rests on 1 class"
    return ""


def _fit_classes(split: dict[str, Any], counts: Sequence[float] | None) -> int | None:
    """How many classes a split's margin slope was fitted on (``n_used``, else counted as
    the fit counts them: a positive finite mean margin and n_c > 0)."""
    used = split.get("n_used")
    if isinstance(used, int) and not isinstance(used, bool) and used >= 0:
        return used
    if not counts:
        return None
    means = split.get("mean") or []
    return sum(1 for n, m in zip(counts, means, strict=False)
               if n > 0 and _is_number(m) and m > 0)


def _fit_note(split: dict[str, Any] | None, counts: Sequence[float] | None) -> str:
    """A warning for a margin slope fitted on too few classes ("fitted on 2 classes")."""
    if not isinstance(split, dict) or not _is_number(split.get("slope")):
        return ""
    used = _fit_classes(split, counts)
    if used is None or used >= _MIN_FIT_CLASSES:
        return ""
    return f"fitted on {used} class{'' if used == 1 else 'es'}"


def _noted(text: str, note: str) -> str:
    return f"{text} ({note})" if note else text


def _group_cell(value: Any, size: int | None) -> str:
    """A shot group's accuracy, with what it rests on when that is 0 or 1 classes (a value
    missing for another reason is left bare)."""
    if size == 0 or _is_number(value):
        return _noted(_fmt_pct(value), _group_note(size))
    return _fmt_pct(value)


# ----------------------------------------------------------------------------- config


_CONFIG_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("dataset", ("dataset.name", "data.name", "dataset", "data.dataset")),
    ("profile", ("profile", "imbalance_profile", "imbalance_type", "imbalance.type")),
    ("ratio", ("ratio", "imbalance_ratio", "imb_ratio", "rho")),
    ("model", ("model.name", "model.arch", "model", "arch", "architecture")),
    ("strategy", ("strategy.name", "strategy")),
    ("epochs", ("epochs", "num_epochs")),
    ("batch size", ("batch_size", "batch")),
    ("lr", ("lr", "learning_rate", "base_lr")),
    ("seed", ("seed",)),
    ("device", ("device",)),
]


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            items.extend(_flatten(value, f"{prefix}{key}."))
    else:
        items.append((prefix[:-1], obj))
    return items


def _config_value(config: dict[str, Any] | None, name: str) -> Any:
    """The first scalar setting matching one of the field's key patterns, shallow first."""
    patterns = dict(_CONFIG_FIELDS).get(name, (name,))
    flat = sorted(_flatten(config or {}), key=lambda kv: kv[0].count("."))
    for pattern in patterns:
        for key, value in flat:
            if (key == pattern or key.endswith("." + pattern)) and value is not None:
                if not isinstance(value, (list, dict)):
                    return value
    return None


def _shot_thresholds(config: dict[str, Any] | None) -> tuple[int, int]:
    """The run's many-/few-shot limits (the library's defaults when not in the config)."""
    many = _config_value(config, "many_threshold")
    few = _config_value(config, "few_threshold")
    many = int(many) if _is_number(many) else 100
    few = int(few) if _is_number(few) else 20
    return (many, few) if few <= many else (100, 20)


def _ratio_text(counts: Sequence[float], configured: Any) -> str:
    """The imbalance ratio of the training counts (largest over smallest), with the config's
    ratio beside it when that says something else."""
    largest, smallest = max(counts), min(counts)
    if smallest == 0:
        text = f"unbounded ({_fmt_value(largest)} / 0: a class has no training images)"
    else:
        ratio = largest / smallest
        text = _fmt_value(float(ratio))
        if _is_number(configured) and math.isclose(ratio, configured, rel_tol=1e-6):
            return text
    if _is_number(configured):
        text += f"; the config asked for {_fmt_value(configured)}"
    return text


def _config_summary(run: RunRecord) -> list[tuple[str, str]]:
    metrics = run.metrics or {}
    counts = _run_counts(run)
    rows = []
    for name, _ in _CONFIG_FIELDS:
        value = metrics.get("device") if name == "device" else None
        if value is None:
            value = _config_value(run.config, name)
        if value is None and name in ("dataset", "strategy", "epochs", "seed"):
            value = metrics.get(name)
        text = _fmt_value(value)
        if name == "ratio" and counts:
            text = _ratio_text(counts, value)
        rows.append((name, text))
    if counts:
        positive = [n for n in counts if n > 0]
        ratio = f", n_max / n_min = {max(counts)} / {min(positive)}" if positive else ""
        rows.append(("classes", f"{len(counts)}{ratio}"))
    if metrics.get("train_time_s") is not None:
        rows.append(("train time", _fmt_duration(metrics["train_time_s"])))
    speeds = [r["images_per_s"] for r in run.history if _is_number(r.get("images_per_s"))]
    if speeds:
        rows.append(("throughput", f"{np.median(speeds):,.0f} images/s (median over epochs)"))
    return rows


# ----------------------------------------------------------------------------- formatting


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _fmt_value(value: Any) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_pct(value: Any) -> str:
    return f"{value:.2f}" if _is_number(value) else _MISSING


def _fmt_slope(value: Any) -> str:
    if not _is_number(value):
        return _MISSING
    return f"{value:+.3f}" if abs(value) < 1e4 else f"{value:+.3g}"


def _fmt_duration(seconds: float) -> str:
    if not _is_number(seconds):
        return _MISSING
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "run"

