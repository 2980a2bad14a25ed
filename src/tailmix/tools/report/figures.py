"""The report's figures and their rendering to PNG.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas; pyplot
and the global backend are never touched.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tailmix._validation import ParameterError
from tailmix.metrics import shot_groups
from tailmix.tools.report.runs import (
    RunRecord,
    _class_names,
    _clean_counts,
    _count_order,
    _fit_note,
    _fmt_pct,
    _fmt_slope,
    _fmt_value,
    _group_note,
    _is_number,
    _noted,
)

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
    """Each class's final test accuracy as a bar, classes by training count, largest first
    (index order without counts that match the classes); None without per-class accuracy.

    With the counts, bars are coloured by many-/medium-/few-shot group (grey where the
    counts are not whole numbers), a legend names the groups that have classes, and a panel
    below shows each class's training images (log scale when they span more than 5x). Up
    to 20 classes, every bar is labelled with its value ("n/a" for a missing one).
    """
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

