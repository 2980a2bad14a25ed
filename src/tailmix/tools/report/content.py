"""The report's content as sections of paragraphs, tables and figures.

One run's sections and the sections comparing several runs, built here and written as
HTML and Markdown by :mod:`tailmix.tools.report.page`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from tailmix._validation import ParameterError
from tailmix.metrics import METRIC_NAMES, precision_recall
from tailmix.tools.report.figures import (
    _BY_COUNT,
    _draw,
    _fig_compare_curves,
    _fig_compare_margins,
    _fig_confusion,
    _fig_learning_curves,
    _fig_margins,
    _fig_per_class,
    _fig_reliability,
    _Image,
)
from tailmix.tools.report.runs import (
    _MIN_FIT_CLASSES,
    _MISSING,
    RunRecord,
    _class_names,
    _clean_counts,
    _config_summary,
    _count_order,
    _fit_note,
    _flatten,
    _fmt_pct,
    _fmt_slope,
    _fmt_value,
    _group_cell,
    _group_sizes,
    _is_number,
    _noted,
    _run_counts,
    _shot_thresholds,
    _slug,
)

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
    """The sections comparing several runs: "Comparison", "Config differences", and the
    learning curves and margins of all runs.

    The comparison table has one row per run: its final-epoch test metrics, margin slopes,
    the selected (else best) top-1, and the post-hoc logit-adjusted top-1 when any run has
    one. A metric column's best value is bold when one run alone has it as shown. A figure
    no run has data for is replaced by a note.
    """
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

