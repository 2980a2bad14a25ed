"""Reports on finished runs: one self-contained HTML page and a Markdown summary.

A run folder holds ``config.yaml``, ``metrics.json``, ``history.jsonl`` and optionally
``margins.json``. :func:`build_report` reads one or several such folders and writes

* an HTML page with inline CSS and every figure embedded as a base64 PNG, so the file can be
  mailed or archived on its own and opens without any network access;
* into a folder (not for an ``.html`` path, which is the page alone), a Markdown summary
  with the same tables, its figures written as PNG files in a folder next to it.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas; pyplot
and the global backend are never touched.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tailmix._validation import ParameterError
from tailmix.io import REPORT_MARKER, RUN_FILES, atomic_write_bytes, atomic_write_text
from tailmix.metrics import METRIC_NAMES, precision_recall, shot_groups

__all__ = ["RunRecord", "build_report", "load_run"]

_DPI = 120
_CSS_DPI = 96  # CSS pixels per inch: images are shown at their drawn size, sharp on HiDPI
_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.85,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_GROUP_COLORS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
_SPLIT_COLORS = {"train": "#1f77b4", "test": "#d62728"}
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


# ----------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        if _is_number(row.get(key)):
            xs.append(row.get("epoch", i + 1))
            ys.append(float(row[key]))
    return xs, ys


def _plot_series(ax, history, key, label, **style) -> bool:
    xs, ys = _series(history, key)
    if not xs:
        return False
    marker = "o" if len(xs) < len(history) or len(xs) <= 30 else None
    ax.plot(xs, ys, label=label, marker=marker, markersize=3, **style)
    return True


def _finish_axes(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _fig_learning_curves(history: list[dict[str, Any]], group_sizes: dict[str, int]) -> Figure:
    fig = _new_figure(12, 7.5)
    (ax_loss, ax_lr), (ax_acc, ax_shot) = fig.subplots(2, 2)

    _plot_series(ax_loss, history, "train_loss", "train loss", color=_SPLIT_COLORS["train"])
    _plot_series(ax_loss, history, "test_loss", "test loss", color=_SPLIT_COLORS["test"])
    _finish_axes(ax_loss, "Loss", "epoch", "loss")

    if _plot_series(ax_lr, history, "lr", "learning rate", color="0.2"):
        lrs = [v for v in _series(history, "lr")[1] if v > 0]
        if lrs and max(lrs) / min(lrs) > 50:
            ax_lr.set_yscale("log")
    else:
        _empty_note(ax_lr, "no learning rate recorded")
    _finish_axes(ax_lr, "Learning rate", "epoch", "lr", legend=False)

    _plot_series(ax_acc, history, "train_acc", "train accuracy (augmented)", color="0.5")
    _plot_series(ax_acc, history, "top1", "test top-1", color=_SPLIT_COLORS["test"])
    _plot_series(
        ax_acc, history, "balanced_accuracy", "test balanced", color="#9467bd", linestyle="--"
    )
    _finish_axes(ax_acc, "Accuracy", "epoch", "accuracy (%)")

    drawn = False
    for group in ("many", "medium", "few"):
        label = _noted(f"{group}-shot", _group_note(group_sizes.get(group)))
        drawn |= _plot_series(ax_shot, history, f"{group}_shot", label,
                              color=_GROUP_COLORS[group])
    if not drawn:
        _empty_note(ax_shot, "no evaluated epochs with shot groups")
    _finish_axes(ax_shot, "Test accuracy by class size", "epoch", "accuracy (%)")
    return fig


def _class_ticks(ax, names: list[str], named: bool, axis: str = "x") -> None:
    """Tick the classes, drawn in the order of ``names``: every name up to 20 classes
    (slanted on the x axis when they are the recorded names), else every 10th or 50th
    position."""
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    num_classes = len(names)
    if num_classes <= 20:
        labels = [name[:14] for name in names]
        if named and axis == "x":
            set_ticks(range(num_classes), labels, rotation=40, ha="right", rotation_mode="anchor")
        else:
            set_ticks(range(num_classes), labels)
    else:
        step = 10 if num_classes <= 200 else 50
        positions = range(0, num_classes, step)
        set_ticks(positions, [names[p][:14] for p in positions])


_BY_COUNT = "by training count, largest first"


def _fig_per_class(metrics: dict[str, Any], thresholds: tuple[int, int]) -> Figure | None:
    accuracy = metrics.get("final", {}).get("per_class_accuracy")
    if not accuracy:
        return None
    num_classes = len(accuracy)
    counts = _clean_counts(metrics.get("class_counts"))
    counts = counts if counts and len(counts) == num_classes else None
    order = _count_order(counts, num_classes)
    classes = metrics.get("classes")
    named = isinstance(classes, list) and len(classes) == num_classes
    names = _class_names(classes, num_classes)
    few_classes = num_classes <= 20
    fig = _new_figure(12, 5.6 if few_classes else 5.0)
    if counts:
        ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.25])
    else:
        ax, ax_count = fig.subplots(), None

    colors = ["0.55"] * num_classes
    handles = []
    groups = {}
    if counts:
        try:
            groups = shot_groups(counts, *thresholds)
        except ParameterError:  # counts that are not whole numbers
            groups = {}
    if groups:
        from matplotlib.patches import Patch

        for group, members in groups.items():
            for c in members:
                colors[c] = _GROUP_COLORS[group]
            if members:
                label = _noted(f"{group}-shot", _group_note(len(members)))
                handles.append(Patch(color=_GROUP_COLORS[group], label=label))
    accuracy = [accuracy[c] for c in order]
    colors = [colors[c] for c in order]
    names = [names[c] for c in order]
    heights = [a if _is_number(a) else 0.0 for a in accuracy]
    ax.bar(range(num_classes), heights, width=0.8, color=colors, alpha=0.9)
    if few_classes:
        for c, a in enumerate(accuracy):
            label = f"{a:.0f}" if _is_number(a) else "n/a"
            ax.text(c, (a if _is_number(a) else 0) + 1.5, label, ha="center", va="bottom")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlim(-0.7, num_classes - 0.3)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Per-class test accuracy", loc="left")
    if handles:
        ax.legend(
            handles=handles,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=len(handles),
            frameon=False,
            borderaxespad=0.2,
        )

    bottom = ax_count or ax
    if ax_count is not None:
        counts = [counts[c] for c in order]
        ax_count.bar(range(num_classes), counts, width=0.8, color="0.45")
        positive = [n for n in counts if n > 0]
        if positive and max(positive) / min(positive) > 5:
            ax_count.set_yscale("log")
            ax_count.set_ylim(min(positive) / 1.5, max(positive) * (4 if few_classes else 1.5))
        elif positive:
            ax_count.set_ylim(0, max(positive) * 1.3)
        if few_classes:
            for c, n in enumerate(counts):
                ax_count.text(c, n * 1.12 if n > 0 else 0, _fmt_value(n), ha="center",
                              va="bottom")
        ax_count.set_ylabel("train images n_c")
    _class_ticks(bottom, names, named)
    bottom.set_xlabel(f"class, {_BY_COUNT}" if counts else "class")
    return fig


def _fig_confusion(metrics: dict[str, Any]) -> Figure | None:
    matrix = metrics.get("final", {}).get("confusion_matrix")
    if not matrix:
        return None
    cm = np.asarray(matrix, dtype=float)
    num_classes = cm.shape[0]
    counts = _clean_counts(metrics.get("class_counts"))
    counts = counts if counts and len(counts) == num_classes else None
    order = _count_order(counts, num_classes)
    cm = cm[np.ix_(order, order)]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = 5.3 if num_classes <= 20 else 6.2
    fig = _new_figure(size + 0.9, size)
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    classes = metrics.get("classes")
    named = isinstance(classes, list) and len(classes) == num_classes
    names = [_class_names(classes, num_classes)[c] for c in order]
    _class_ticks(ax, names, named, "x")
    _class_ticks(ax, names, named, "y")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (rows normalised)"
                 + (f"\nclasses {_BY_COUNT}" if counts else ""))
    if num_classes <= 20:
        fontsize = 9 if num_classes <= 12 else 7.5
        for i in range(num_classes):
            for j in range(num_classes):
                if norm[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{100 * norm[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=fontsize,
                        color="white" if norm[i, j] > 0.55 else "black",
                    )
    return fig


def _fig_reliability(metrics: dict[str, Any]) -> Figure | None:
    final = metrics.get("final", {})
    rel = final.get("reliability")
    if not rel or not rel.get("bin_count"):
        return None
    counts = np.asarray(rel["bin_count"], dtype=float)
    num_bins = len(counts)
    edges = np.asarray(rel.get("bin_edges") or np.linspace(0, 100, num_bins + 1), dtype=float)
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    acc = np.array([a if _is_number(a) else np.nan for a in rel["bin_accuracy"]], dtype=float)
    conf = np.array([c if _is_number(c) else np.nan for c in rel["bin_confidence"]], float)
    filled = counts > 0

    fig = _new_figure(5.4, 5.3)
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(
        centers[filled],
        acc[filled],
        width=width[filled],
        color="#1f77b4",
        alpha=0.85,
        edgecolor="white",
        label="accuracy in bin",
    )
    gap_low = np.minimum(acc, conf)[filled]
    ax.bar(
        centers[filled],
        np.abs(acc - conf)[filled],
        bottom=gap_low,
        width=width[filled],
        color="#d62728",
        alpha=0.35,
        hatch="//",
        edgecolor="#d62728",
        label="gap to confidence",
    )
    ax.plot([0, 100], [0, 100], linestyle="--", color="0.3", linewidth=1, label="perfect")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ece = final.get("ece")
    ax.set_title(f"Reliability diagram (ECE {_fmt_pct(ece)} %)")
    ax.legend(loc="upper left")
    ax_count.bar(centers, counts, width=width, color="0.5", edgecolor="white")
    ax_count.set_ylabel("examples")
    ax_count.set_xlabel("confidence (%)")
    return fig


def _fit_curve(split: dict[str, Any], counts: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The fitted power law, drawn over the class sizes the fit used."""
    slope, intercept = split.get("slope"), split.get("intercept")
    means = split.get("mean") or []
    positive = [n for n, m in zip(counts, means, strict=False) if n > 0 and _is_number(m) and m > 0]
    if not (_is_number(slope) and _is_number(intercept) and positive):
        return None
    xs = np.geomspace(min(positive), max(positive), 50)
    with np.errstate(over="ignore", invalid="ignore"):
        ys = np.exp(float(intercept)) * xs ** float(slope)
    return (xs, ys) if np.isfinite(ys).all() else None  # an absurd fit is not drawn


def _margin_points(split: dict[str, Any], counts: list[int], key: str = "mean"):
    values = split.get(key) or []
    pairs = [(n, v) for n, v in zip(counts, values, strict=False) if n > 0 and _is_number(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _fig_margins(margins: dict[str, Any]) -> Figure | None:
    """Margins against class size per split; None when no split has a finite margin of a
    class with examples (no margins.json content to draw)."""
    counts = margins.get("class_counts") or []
    splits = [
        s for s in ("train", "test")
        if isinstance(margins.get(s), dict)
        and any(_margin_points(margins[s], counts, key)[0] for key in ("p10", "median", "mean"))
    ]
    if not counts or not splits:
        return None
    fig = _new_figure(12, 4.6)
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, splits, strict=True):
        split = margins[name]
        color = _SPLIT_COLORS[name]
        xs, ys = _margin_points(split, counts, "p10")
        ax.scatter(xs, ys, s=14, marker="v", color="0.55", label="10th percentile", zorder=2)
        xs, ys = _margin_points(split, counts, "median")
        ax.scatter(xs, ys, s=18, marker="x", color="0.25", label="median", zorder=3)
        xs, ys = _margin_points(split, counts, "mean")
        ax.scatter(xs, ys, s=30, color=color, label="mean", zorder=4)
        curve = _fit_curve(split, counts)
        if curve is not None:
            ax.plot(
                *curve,
                color=color,
                linestyle="--",
                linewidth=1.5,
                label=_noted(f"fit on means: slope {_fmt_slope(split['slope'])}",
                             _fit_note(split, counts)),
                zorder=3,
            )
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_xscale("log")
        _finish_axes(
            ax,
            f"{name.capitalize()} set margins",
            "training images n_c (log)",
            "margin z_y - max other z_k" if name == splits[0] else "",
        )
    return fig


def _run_colors(count: int) -> list:
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _fig_compare_curves(runs: list[RunRecord]) -> Figure | None:
    if not any(r.history for r in runs):
        return None
    fig = _new_figure(13, 4.4)
    axes = fig.subplots(1, 3)
    panels = [
        ("top1", "Test top-1", "accuracy (%)"),
        ("few_shot", "Test few-shot accuracy", "accuracy (%)"),
        ("train_loss", "Train loss", "loss"),
    ]
    for ax, (key, title, ylabel) in zip(axes, panels, strict=True):
        drawn = False
        for run, color in zip(runs, _run_colors(len(runs)), strict=True):
            drawn |= _plot_series(ax, run.history, key, run.label, color=color)
        if not drawn:
            _empty_note(ax, f"no {key} recorded")
        _finish_axes(ax, title, "epoch", ylabel, legend=False)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[2].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5))
    return fig


def _fig_compare_margins(runs: list[RunRecord]) -> Figure | None:
    """Mean margins of every run that has some; None when none has a finite one."""
    points: dict[str, list[tuple[RunRecord, list, list]]] = {"train": [], "test": []}
    for run in runs:
        counts = (run.margins or {}).get("class_counts")
        for name, found in points.items():
            split = (run.margins or {}).get(name)
            if counts and isinstance(split, dict):
                xs, ys = _margin_points(split, counts)
                if xs:
                    found.append((run, xs, ys))
    if not points["train"] and not points["test"]:
        return None
    fig = _new_figure(12, 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    colors = dict(zip([r.label for r in runs], _run_colors(len(runs)), strict=True))
    for ax, name in zip(axes, ("train", "test"), strict=True):
        for run, xs, ys in points[name]:
            split = run.margins[name]
            color = colors[run.label]
            note = _fit_note(split, run.margins["class_counts"])
            slope = _fmt_slope(split.get("slope")) + (f", {note}" if note else "")
            label = f"{run.label} (slope {slope})"
            ax.scatter(xs, ys, s=22, color=color, label=label, zorder=3)
            curve = _fit_curve(split, run.margins["class_counts"])
            if curve is not None:
                ax.plot(*curve, color=color, linestyle="--", linewidth=1.3)
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        if points[name]:
            ax.set_xscale("log")
        else:
            _empty_note(ax, f"no finite {name} margins")
        _finish_axes(
            ax,
            f"Mean {name} margin per class",
            "training images n_c (log)",
            "mean margin" if name == "train" else "",
        )
    return fig


@dataclass
class _Image:
    name: str
    title: str
    png: bytes
    width_px: int


def _render(fig: Figure | None, name: str, title: str) -> _Image | None:
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    width_px = round(fig.get_figwidth() * _CSS_DPI)
    return _Image(name, title, buf.getvalue(), width_px)


def _draw(builder, *args, name: str, title: str) -> _Image | None:
    with matplotlib.rc_context(_RC):
        return _render(builder(*args), name, title)


# ----------------------------------------------------------------------------- document


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    summary: str | None = None  # set: the table is folded away under this line


@dataclass
class _Section:
    title: str
    anchor: str
    level: int = 2
    paragraphs: list[str] = field(default_factory=list)
    tables: list[_Table] = field(default_factory=list)
    images: list[_Image] = field(default_factory=list)
    code: str | None = None
    footnote: str | None = None


_METRIC_ROWS = list(METRIC_NAMES.items())


def _posthoc(metrics: dict[str, Any]) -> dict[str, Any]:
    """Post-hoc logit-adjusted results, stored at the top level or inside ``final``."""
    found = metrics.get("posthoc_la") or (metrics.get("final") or {}).get("posthoc_la")
    return found if isinstance(found, dict) else {}


def _metrics_table(metrics: dict[str, Any], group_sizes: dict[str, int]
                   ) -> tuple[_Table, str]:
    final = metrics.get("final") or {}
    selected = metrics.get("selected")
    best = selected or metrics.get("best") or {}
    best_epoch = best.get("epoch")
    best_header = ("epoch chosen on the validation set" if selected
                   else "best epoch (chosen on test set)")
    if best_epoch is not None:
        best_header += f", epoch {best_epoch}"
    header = ["metric (%)", "final (last epoch)", best_header]
    posthoc = _posthoc(metrics)
    if posthoc:
        tau = posthoc.get("tau")
        header.append(
            "final + post-hoc logit adjustment" + (f" (tau {tau:g})" if _is_number(tau) else "")
        )
    rows = []
    for key, name in _METRIC_ROWS:
        size = group_sizes.get(key.removesuffix("_shot")) if key.endswith("_shot") else None
        row = [name] + [_group_cell(source.get(key), size)
                        for source in (final, best, *([posthoc] if posthoc else []))]
        rows.append(row)
    nll_row = ["NLL (nats)", _fmt_value(final.get("nll")), _fmt_value(best.get("nll"))]
    rows.append(nll_row + ([_fmt_value(posthoc.get("nll"))] if posthoc else []))
    note = (
        "The final column is the result to quote. The best epoch is picked by looking at the "
        "test set, which flatters a method; it is shown for comparison with papers that "
        "report it."
    )
    if selected:
        note = ("Test metrics of the final epoch and of the epoch with the best validation "
                "balanced accuracy; the test set was read once, after training.")
    return _Table(header, rows), note


def _per_class_table(metrics: dict[str, Any]) -> _Table | None:
    """Each class's training and test images, precision and recall (from the final
    confusion matrix), classes by training count; None without a usable matrix."""
    matrix = (metrics.get("final") or {}).get("confusion_matrix")
    try:
        scores = precision_recall(matrix)
    except ParameterError:
        return None
    num_classes = len(scores["precision"])
    counts = _clean_counts(metrics.get("class_counts"))
    counts = counts if counts and len(counts) == num_classes else None
    names = _class_names(metrics.get("classes"), num_classes)
    rows = [[names[c], _fmt_value(counts[c]) if counts else _MISSING, str(sum(matrix[c])),
             _fmt_pct(scores["precision"][c]), _fmt_pct(scores["recall"][c])]
            for c in _count_order(counts, num_classes)]
    header = ["class", "train images", "test images", "precision (%)", "recall (%)"]
    summary = (f"precision and recall of the {num_classes} classes" if num_classes > 20
               else None)
    return _Table(header, rows, summary=summary)


def _run_sections(run: RunRecord, prefix: str, level: int) -> list[_Section]:
    """The sections describing one run in detail."""
    slug = _slug(prefix + run.label)
    thresholds = _shot_thresholds(run.config)
    group_sizes = _group_sizes(_run_counts(run), thresholds)
    sections = []

    summary = _Section("Configuration", f"{slug}-config", level)
    summary.tables.append(_Table(["setting", "value"], [list(r) for r in _config_summary(run)]))
    summary.paragraphs.append(f"Run folder: {run.path.name}")
    if run.notes:
        summary.paragraphs.append("Files: " + "; ".join(run.notes) + ".")
    if run.config:
        summary.code = yaml.safe_dump(run.config, sort_keys=False)
    sections.append(summary)

    results = _Section("Results", f"{slug}-results", level)
    if run.metrics and run.metrics.get("final"):
        table, note = _metrics_table(run.metrics, group_sizes)
        results.tables.append(table)
        results.footnote = note
    else:
        results.paragraphs.append(
            "No final metrics: metrics.json is missing or has no 'final' entry, so there is no "
            "per-class accuracy, confusion matrix or reliability diagram either."
        )
    sections.append(results)

    curves = _Section("Learning curves", f"{slug}-curves", level)
    if run.history:
        curves.images.append(
            _draw(_fig_learning_curves, run.history, group_sizes, name=f"{prefix}curves",
                  title="curves")
        )
    else:
        curves.paragraphs.append("No learning curves: history.jsonl is missing or empty.")
    sections.append(curves)

    if run.metrics and run.metrics.get("final"):
        per_class = _Section("Per-class results", f"{slug}-per-class", level)
        table = _per_class_table(run.metrics)
        if table is not None:
            per_class.tables.append(table)
            per_class.paragraphs.append(
                f"Classes {_BY_COUNT}. Precision: the share of the test images predicted as "
                "the class that are of it (— for a class never predicted); recall: the share "
                "of the class's test images predicted as it, its accuracy. Both from the "
                "final confusion matrix.")
        image = _draw(
            _fig_per_class, run.metrics, thresholds, name=f"{prefix}per_class", title="per class"
        )
        per_class.images.append(image)
        if image is None:
            per_class.paragraphs.append("metrics.json has no per-class accuracy.")
        sections.append(per_class)

        errors = _Section("Confusion and calibration", f"{slug}-confusion", level)
        for builder, name, missing in (
            (_fig_confusion, "confusion", "metrics.json has no confusion matrix."),
            (_fig_reliability, "reliability", "metrics.json has no reliability bins."),
        ):
            image = _draw(builder, run.metrics, name=f"{prefix}{name}", title=name)
            errors.images.append(image)
            if image is None:
                errors.paragraphs.append(missing)
        sections.append(errors)

    margins = _Section("Margins against class size", f"{slug}-margins", level)
    image = (
        _draw(_fig_margins, run.margins, name=f"{prefix}margins", title="margins")
        if (run.margins)
        else None
    )
    if image is not None:
        margins.images.append(image)
        margins.paragraphs.append(
            "Margin of an example: its true-class logit minus the largest other logit. The "
            "dashed line is the least-squares fit of log(mean margin) on log(n_c) over classes "
            "with a positive mean margin; LDAM's analysis suggests a slope near -0.25."
        )
        few = [f"{name} slope {_fmt_slope(run.margins[name]['slope'])}, {note}"
               for name in ("train", "test")
               if (note := _fit_note(run.margins.get(name), run.margins.get("class_counts")))]
        if few:
            margins.paragraphs.append(
                f"Warning: a slope fitted on fewer than {_MIN_FIT_CLASSES} classes says little "
                "about how margins grow with class size (" + "; ".join(few) + ").")
    elif run.margins is not None:
        margins.paragraphs.append(
            "No margins figure: margins.json holds no finite margins (a run whose loss "
            "diverged leaves them empty)."
        )
    else:
        margins.paragraphs.append(
            "No margins: margins.json is missing or unreadable (compute it with `tailmix "
            "margins RUN_DIR`)."
        )
    sections.append(margins)
    for section in sections:
        section.images = [img for img in section.images if img is not None]
    return sections


_NOT_SET = "(not set)"
_MAX_CONFIG_TEXT = 60  # characters of a config value shown in the differences table


def _config_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _MAX_CONFIG_TEXT else text[:_MAX_CONFIG_TEXT - 1] + "…"


def _config_differences(runs: list[RunRecord]
                        ) -> tuple[list[str], list[list[str]], list[str]]:
    """The flattened config keys whose values differ between the runs that have a config.

    Returns the table header (``key`` and those runs' labels), one row per differing key
    (in the order the configs list them) and the labels of the runs without a config.
    A config is ``config.yaml``, else a ``config`` object in ``metrics.json``.
    """
    configs, without = [], []
    for run in runs:
        config = run.config or (run.metrics or {}).get("config")
        if isinstance(config, dict):
            configs.append((run.label, dict(_flatten(config))))
        else:
            without.append(run.label)
    keys = list(dict.fromkeys(key for _, flat in configs for key in flat))
    rows = []
    for key in keys:
        # JSON spelling tells 1 from 1.0 and true; a key a run lacks is a value of its own
        values = [json.dumps(flat[key], sort_keys=True) if key in flat else None
                  for _, flat in configs]
        if len(set(values)) > 1:
            rows.append([key] + [_config_text(flat[key]) if key in flat else _NOT_SET
                                 for _, flat in configs])
    return ["key"] + [label for label, _ in configs], rows, without


def _comparison_sections(runs: list[RunRecord]) -> list[_Section]:
    table = _Section("Comparison", "comparison")
    has_posthoc = any(_posthoc(r.metrics or {}) for r in runs)
    header = [
        "run",
        "top-1",
        "balanced",
        "many",
        "medium",
        "few",
        "macro F1",
        "ECE",
        "slope (train)",
        "slope (test)",
        "selected / best top-1 †",
    ]
    if has_posthoc:
        header.append("top-1 + post-hoc LA")
    rows, raw = [], []
    for run in runs:
        metrics = run.metrics or {}
        final = metrics.get("final") or {}
        margins = run.margins or {}
        values = [final.get(k) for k, _ in _METRIC_ROWS]
        sizes = _group_sizes(_run_counts(run), _shot_thresholds(run.config))
        splits = [margins.get(s) or {} for s in ("train", "test")]
        best = metrics.get("selected") or metrics.get("best") or {}
        row = [run.label]
        row += [_group_cell(v, sizes.get(k.removesuffix("_shot")) if k.endswith("_shot")
                            else None) for v, (k, _) in zip(values, _METRIC_ROWS, strict=True)]
        row += [_noted(_fmt_slope(split.get("slope")),
                       _fit_note(split, margins.get("class_counts"))) for split in splits]
        best_text = _fmt_pct(best.get("top1"))
        if best.get("epoch") is not None and best_text != _MISSING:
            best_text += f" (ep. {best['epoch']}{', val.' if 'selected' in metrics else ''})"
        row.append(best_text)
        if has_posthoc:
            row.append(_fmt_pct(_posthoc(metrics).get("top1")))
        rows.append(row)
        raw.append(values)
    bold = set()
    for col, (key, _) in enumerate(_METRIC_ROWS):
        # Compared as shown: two runs that both read 0.00 tie, and a tie is not bolded.
        column = [(float(_fmt_pct(v[col])), i) for i, v in enumerate(raw) if _is_number(v[col])]
        if len(column) > 1:
            target = (min if key == "ece" else max)(v for v, _ in column)
            winners = [i for v, i in column if v == target]
            if len(winners) == 1:
                bold.add((winners[0], col + 1))
    table.tables.append(_Table(header, rows, bold))
    table.paragraphs.append(
        "Final-epoch test metrics in percent (ECE: lower is better). A column's best value is "
        "in bold when one run alone has it as shown; a tie is not bolded. "
        "Slope: fitted slope of log(mean margin) on log(n_c). A value that rests on too few "
        f"classes says so: a shot group with 0 or 1 classes, a slope fitted on fewer than "
        f"{_MIN_FIT_CLASSES}."
    )
    table.footnote = ("† the epoch chosen on the validation set (val.) for runs with one, "
                      "else the best epoch chosen on the test set, which flatters a method.")
    missing = [f"{r.label}: {', '.join(r.notes)}" for r in runs if r.notes]
    if missing:
        table.paragraphs.append("Missing files. " + "; ".join(missing) + ".")

    config = _Section("Config differences", "comparison-config")
    header, differing, without = _config_differences(runs)
    if differing:
        config.tables.append(_Table(header, differing))
        config.paragraphs.append("The config keys on which the runs differ (flattened, "
                                 f"{_NOT_SET} where a run's config lacks the key); every other "
                                 "key is equal across the runs.")
    elif len(header) > 2:
        config.paragraphs.append("identical configs: the runs agree on every config key.")
    else:
        config.paragraphs.append("No config differences to show: fewer than two runs have a "
                                 "config.")
    if without:
        config.paragraphs.append("Without a config.yaml, left out: " + ", ".join(without) + ".")

    curves = _Section("Learning curves, all runs", "comparison-curves")
    image = _draw(_fig_compare_curves, runs, name="compare_curves", title="curves")
    if image is not None:
        curves.images.append(image)
    else:
        curves.paragraphs.append("No run has a history.jsonl: no curves to compare.")

    margins = _Section("Margins against class size, all runs", "comparison-margins")
    image = _draw(_fig_compare_margins, runs, name="compare_margins", title="margins")
    if image is not None:
        margins.images.append(image)
    else:
        margins.paragraphs.append("No run has a margins.json with finite margins: no "
                                  "margins to compare.")
    return [table, config, curves, margins]


# ----------------------------------------------------------------------------- writers

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #1d2330; background: #f6f7f9; font-size: 15px; line-height: 1.45; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 32px 0 10px; border-bottom: 2px solid #d8dce3;
     padding-bottom: 4px; }
h3 { font-size: 17px; margin: 22px 0 8px; }
.subtitle { color: #5a6272; margin: 0 0 16px; }
nav { background: #fff; border: 1px solid #d8dce3; border-radius: 6px; padding: 8px 16px;
      font-size: 14px; }
nav a { color: #2458b3; text-decoration: none; margin-right: 14px; white-space: nowrap; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #d8dce3; padding: 4px 10px; text-align: right; }
th { background: #eef1f5; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
td b { color: #0b5d1e; }
figure { margin: 10px 0; background: #fff; border: 1px solid #d8dce3; border-radius: 6px;
         padding: 8px; display: inline-block; max-width: calc(100% - 18px); }
figure img { display: block; max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.note { color: #5a6272; font-size: 13px; }
details { margin: 6px 0; }
details > summary { cursor: pointer; color: #2458b3; }
details.run { background: #fff; border: 1px solid #d8dce3; border-radius: 6px;
              padding: 4px 16px 16px; margin: 16px 0; }
details.run > summary { font-size: 19px; font-weight: 600; color: #1d2330; padding: 6px 0; }
pre { background: #fff; border: 1px solid #d8dce3; padding: 10px; overflow-x: auto;
      font-size: 13px; }
"""


def _html_table(table: _Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, cell in enumerate(row):
            text = html.escape(cell)
            cells.append(f"<td><b>{text}</b></td>" if (i, j) in table.bold else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    page = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if table.summary:
        page = f"<details><summary>{html.escape(table.summary)}</summary>{page}</details>"
    return page


def _html_section(section: _Section) -> str:
    tag = f"h{section.level}"
    parts = [f'<{tag} id="{section.anchor}">{html.escape(section.title)}</{tag}>']
    parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
    parts += [_html_table(t) for t in section.tables]
    if section.footnote:
        parts.append(f'<p class="note">{html.escape(section.footnote)}</p>')
    if section.images:
        figures = []
        for img in section.images:
            data = base64.b64encode(img.png).decode("ascii")
            figures.append(
                f'<figure><img alt="{html.escape(img.title)}" style="width: {img.width_px}px" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
        parts.append('<div class="figures">' + "".join(figures) + "</div>")
    if section.code:
        parts.append(
            "<details><summary>full resolved config</summary>"
            f"<pre>{html.escape(section.code)}</pre></details>"
        )
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: _Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in table.header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(table.header) - 1)) + "|")
    for i, row in enumerate(table.rows):
        cells = [
            f"**{_md_cell(c)}**" if (i, j) in table.bold else _md_cell(c) for j, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if table.summary:
        text = f"<details><summary>{html.escape(table.summary)}</summary>\n\n{text}\n\n</details>"
    return text


def _md_section(section: _Section, image_dir: str) -> str:
    parts = ["#" * section.level + " " + section.title]
    parts += section.paragraphs
    parts += [_md_table(t) for t in section.tables]
    if section.footnote:
        parts.append(f"*{section.footnote}*")
    parts += [f"![{img.title}]({image_dir}/{img.name}.png)" for img in section.images]
    if section.code:
        parts.append(
            "<details><summary>full resolved config</summary>\n\n```yaml\n"
            + section.code.rstrip()
            + "\n```\n\n</details>"
        )
    return "\n\n".join(parts)


_MAX_FOLDER_NAME = 80  # characters of a default comparison folder's name


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def _default_folder(run_dirs: list[Path]) -> Path:
    """Where a report goes without ``out``: the run folder for one run, else a folder
    ``report-<name1>-vs-<name2>...`` in the runs' common parent (the current directory if
    they share nothing below the root)."""
    if len(run_dirs) == 1:
        return run_dirs[0]
    absolute = [Path(os.path.abspath(p)) for p in run_dirs]
    try:
        parent = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    except ValueError:  # different drives
        parent = None
    if parent is None or parent == Path(parent.anchor):
        parent = Path.cwd()
    names = [_safe_name(p.name)[:32] for p in absolute]
    name = "report-" + "-vs-".join(names)
    if len(name) > _MAX_FOLDER_NAME:
        digest = hashlib.sha1("\0".join(map(str, absolute)).encode()).hexdigest()[:8]
        tail = f"-and-{len(names) - 1}-more-{digest}"
        name = "report-" + names[0][: _MAX_FOLDER_NAME - len("report-") - len(tail)] + tail
    folder = parent / name
    if not any(Path(p).is_absolute() for p in run_dirs):
        try:  # relative in, relative out
            folder = Path(os.path.relpath(folder))
        except ValueError:
            pass
    return folder


def _output_paths(run_dirs: list[Path], out: str | Path | None
                  ) -> tuple[Path, Path | None, Path | None]:
    """The page, the Markdown summary and its figure folder that a report writes; an
    ``.html`` path is the page alone (no summary, no figure folder: None)."""
    if out is None:
        folder = _default_folder(run_dirs)
    else:
        out = Path(out)
        if out.suffix.lower() in (".html", ".htm"):
            return out, None, None
        if out.suffix.lower() == ".md":
            raise ParameterError("out", "a folder or an .html path", str(out))
        folder = out
    return folder / "report.html", folder / "report.md", folder / "report_files"


#: The file a report leaves in every folder it writes its page, summary and figures to:
#: which of the folder's files are its own (JSON, ``{"written_by": "tailmix report",
#: "files": [names]}``). A page named by an ``.html`` path gets none.
MARKER = REPORT_MARKER
# How the pages this module writes begin: recognises reports written before the marker.
_HTML_START = b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
_MD_STARTS = (b"# tailmix run report", b"# tailmix comparison of")
_OUT = "-o/--out"


def _marked(folder: Path) -> set[str] | None:
    """The names the folder's marker lists; None without a marker (an unreadable marker
    marks the folder but lists nothing)."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def _is_our_page(path: Path) -> bool:
    """Whether ``path`` is an HTML page or Markdown summary this module wrote."""
    try:
        with path.open("rb") as f:
            head = f.read(400)
    except OSError:
        return False
    if path.suffix.lower() == ".md":
        return head.startswith(_MD_STARTS)
    return head.startswith(_HTML_START) and b"<title>tailmix " in head


def _is_ours(path: Path, marked: set[str] | None, pages: list[Path]) -> bool:
    """Whether the existing ``path`` (a page or the figure folder) may be rewritten."""
    if marked is not None and path.name in marked:
        return True
    if path.is_file():
        return _is_our_page(path)
    entries = list(path.iterdir())
    # A figure folder from before the marker: PNG files only, beside a page of ours.
    return not entries or (all(e.is_file() and e.suffix == ".png" for e in entries)
                           and any(p.is_file() and _is_our_page(p) for p in pages))


def _is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a report: a marker, or a page of ours (an older report)."""
    if (folder / MARKER).is_file():
        return True
    return any(e.suffix.lower() in (".html", ".md") and e.is_file() and _is_our_page(e)
               for e in folder.iterdir())


def _holds_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in RUN_FILES)


def _among_run_files(folder: Path) -> bool:
    """Whether ``folder`` is, or is inside, a run's ``checkpoints`` folder or a place named
    after one of its own files (``metrics.json`` before training wrote it). A run folder
    itself, wherever it is, is not."""
    folder = Path(os.path.abspath(folder))
    for path in (folder, *folder.parents):
        if _holds_run(path):
            return False
        if path.name in ("checkpoints", *RUN_FILES) and _holds_run(path.parent):
            return True
    return False


def _check_output(html_path: Path, md_path: Path | None, image_dir: Path | None, *,
                  explicit: bool, force: bool) -> set[str] | None:
    """Refuse an output that could harm the user's files; return the folder's marked names.

    See :func:`build_report` for the rules.
    """
    folder = html_path.parent
    for path in (folder, *folder.parents):  # the first one that exists must be a folder
        if path.exists():
            if not path.is_dir():
                raise ParameterError(_OUT, "a folder or an .html path (a file is in the way)",
                                     str(path))
            break
    # A report's own names (.html, .md, _files) are never a run's file; its folder could be.
    if _among_run_files(folder):
        raise ParameterError(_OUT, "a place outside a run's own files (config.yaml, "
                             "metrics.json, history.jsonl, margins.json, checkpoints/)",
                             str(html_path))
    written = [(p, kind) for p, kind in ((html_path, "file"), (md_path, "file"),
                                         (image_dir, "folder")) if p is not None]
    for path, kind in written:
        if path.exists() and path.is_dir() != (kind == "folder"):
            raise ParameterError(_OUT, f"a place where {path.name} can be written as a {kind}",
                                 str(path))
    if not folder.is_dir():
        return None
    marked = _marked(folder)
    named_page = md_path is None
    if (not explicit and not named_page and marked is None
            and not _holds_run(folder)
            and not _is_report_folder(folder) and any(folder.iterdir())):
        raise ParameterError(
            _OUT, f"a new or empty folder, a run folder, or a folder tailmix report wrote "
            f"(marked by {MARKER}); name it with {_OUT} to write into it anyway", str(folder))
    if force:
        return marked
    pages = [p for p in (html_path, md_path) if p is not None]
    how = "pass --force" if explicit else f"name it with {_OUT} and pass --force"
    for path, _ in written:
        if path.exists() and not _is_ours(path, marked, pages):
            raise ParameterError(
                _OUT, f"a place where {path.name} is new or was written by tailmix report "
                f"(this one was not: write elsewhere, or {how} to overwrite it)", str(path))
    return marked


def _unique_labels(runs: list[RunRecord]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            run.label = f"{run.label} ({run.path.name})"
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):
        if labels.count(run.label) > 1:
            run.label = f"{run.label} #{i + 1}"


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    per_run: bool = True,
    explicit: bool = False,
    force: bool = False,
) -> tuple[Path, Path | None]:
    """Write an HTML report, and for a folder a Markdown summary, for one or several runs.

    Parameters
    ----------
    run_dirs
        Run folders (each with ``config.yaml``, ``metrics.json``, ``history.jsonl`` and
        optionally ``margins.json``; missing files leave their sections with a note).
    out
        Where to write. A folder gets ``report.html``, ``report.md`` and the Markdown's
        figures in ``report_files/``; a path ending in ``.html`` (or ``.htm``) is the HTML
        page alone, written there and nothing else (its figures are embedded). Defaults to
        the run folder when there is only one; for several, to a folder
        ``report-<run1>-vs-<run2>...`` (run folder names, made file-name safe; a long list
        is cut short and given a hash) in the runs' common parent folder, or in the current
        directory if they share none below the root.
    per_run
        With several runs, also add each run's own sections after the comparison (the
        default); False keeps the page to the comparison, for large grids.
    explicit
        Whether the user named ``out`` (the command line's ``-o``): then a folder holding
        other things may receive the report's new files. Needs ``out``.
    force
        Write over the page, summary and figure folder at ``out`` even when they were not
        written by a report (the command line's ``--force``). Needs ``explicit``.

    Returns
    -------
    tuple
        The HTML path and the Markdown path written (its figures are in the folder
        ``report_files`` beside it); the Markdown path is None for an ``.html`` ``out``.

    Raises
    ------
    ParameterError
        Naming ``run_dirs`` for a missing run folder, ``out`` for a ``.md`` path, and
        ``-o/--out`` for an output the rules below refuse.

    Notes
    -----
    A report never writes over a file it did not write, nor litters a folder that is not
    its own. Every folder it writes a summary to gets a marker, ``.tailmix-report``,
    listing the report's files there.

    * Unless ``explicit``, a folder ``out`` (or the default) must be new, empty, a run
      folder (it holds ``config.yaml``, ``metrics.json`` or ``history.jsonl``) or a report
      folder (it has the marker, or a report page written before markers existed); an
      ``.html`` path names the page itself, so its folder may hold anything.
    * Unless ``force``, an existing page, summary or figure folder is rewritten only if
      the marker lists it or it is recognisably a report page of this module (by its first
      line; for the figure folder: PNG files only, beside such a page).

    Whatever ``explicit`` and ``force`` say, ``out`` cannot run through an existing file,
    the report cannot go among a run's own files (into its ``checkpoints`` folder, or a
    folder named after one of its files), and the pages and figure folder cannot replace
    a folder or file of the other kind.
    """
    if isinstance(run_dirs, (str, Path)) or not isinstance(run_dirs, Sequence) or not run_dirs:
        raise ParameterError("run_dirs", "a non-empty sequence of run folders", run_dirs)
    paths = [Path(p) for p in run_dirs]
    for path in paths:
        if not path.is_dir():
            raise ParameterError("run_dirs", "existing run folders", str(path))
    for name, value in (("explicit", explicit), ("force", force)):
        if not isinstance(value, bool):
            raise ParameterError(name, "true or false", value)
    if explicit and out is None:
        raise ParameterError("explicit", "False when out is None (only a place the user "
                             "named is explicit)", explicit)
    if force and not explicit:
        raise ParameterError("force", "False unless explicit is True (only a place the user "
                             "named may be written over)", force)
    html_path, md_path, image_dir = _output_paths(paths, out)
    marked = _check_output(html_path, md_path, image_dir, explicit=explicit, force=force)

    runs = [load_run(p) for p in paths]
    _unique_labels(runs)
    if len(runs) == 1:
        title = f"tailmix run report: {runs[0].label}"
        groups = [(None, _run_sections(runs[0], "", 2))]
    else:
        title = f"tailmix comparison of {len(runs)} runs"
        groups = [(None, _comparison_sections(runs))]
        for i, run in enumerate(runs if per_run else [], start=1):
            groups.append((run, _run_sections(run, f"run{i}_", 3)))
    datasets = sorted({str((r.metrics or {}).get("dataset")) for r in runs} - {"None"})
    subtitle = ", ".join(datasets) + (" · " if datasets else "") + ", ".join(r.label for r in runs)

    nav = []
    body = []
    for run, sections in groups:
        if run is None:
            nav += [f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections]
            body += [_html_section(s) for s in sections]
        else:
            anchor = _slug(f"run-{run.label}")
            nav.append(f'<a href="#{anchor}">{html.escape(run.label)}</a>')
            inner = "\n".join(_html_section(s) for s in sections)
            body.append(
                f'<details class="run" open id="{anchor}"><summary>Run: '
                f"{html.escape(run.label)}</summary>\n{inner}\n</details>"
            )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><main><h1>{html.escape(title)}</h1>"
        f'<p class="subtitle">{html.escape(subtitle)}</p>'
        f"<nav>{''.join(nav)}</nav>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )

    if md_path is None or image_dir is None:  # an .html path: the page it names, alone
        atomic_write_text(html_path, page)
        return html_path, None
    md_parts = [f"# {title}", subtitle]
    for run, sections in groups:
        if run is not None:
            md_parts.append(f"## Run: {run.label}")
        md_parts += [_md_section(s, image_dir.name) for s in sections]
    ours = sorted((marked or set()) | {html_path.name, md_path.name, image_dir.name})
    marker = {"written_by": "tailmix report", "files": ours}
    atomic_write_text(html_path.parent / MARKER, json.dumps(marker, indent=1) + "\n")
    for _, sections in groups:
        for section in sections:
            for img in section.images:
                atomic_write_bytes(image_dir / f"{img.name}.png", img.png)
    atomic_write_text(html_path, page)
    atomic_write_text(md_path, "\n\n".join(md_parts) + "\n")
    return html_path, md_path
