"""Benchmark suites: a grid of strategies x datasets x ratios x seeds, resumable, tabulated.

A suite is a YAML file::

    name: cifar10-lt-cpu
    base_config: configs/cifar10_lt.yaml     # relative to the working directory
    overrides: {train: {epochs: 60}}         # applied to every run
    data_root: data/cifar10-lt-jpeg.zip
    grid:
      - {strategies: [ERM, MAMix-DRW], ratios: [100], seeds: [0]}
      - {strategies: [ERM, MAMix-DRW], ratios: [200], seeds: [0]}

``run_suite`` trains every cell into ``results/<name>/runs/<dataset>-r<ratio>/<strategy>-s<seed>``
(finished runs are skipped, interrupted ones resume from their last checkpoint), then writes
``table.md``, ``table.csv`` and one comparison report per dataset and ratio.

A cell's folder that holds a run trained with another config than the suite's current one
for it (the suite was edited since) is stale: ``run_suite`` refuses it, naming the cell and
the first key that differs, before anything trains; ``retrain_stale=True`` (``tailmix bench
--retrain-stale``) moves the old run aside and trains the cell again. Refusing is the
default because a suite's runs can take hours: an edit should not silently throw them away,
nor a table mix runs of two configs.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tailmix._validation import ParameterError
from tailmix.config import load_config_file, resolve
from tailmix.io import atomic_write_text, csv_cell
from tailmix.metrics import REPORT_KEYS

# Published top-1 (%) for the paper's protocol (ResNet-32, 200 epochs, ratio 100), from the
# reference package's README (DESIGN section 4).
PUBLISHED: dict[tuple[str, int], dict[str, float]] = {
    ("cifar10", 100): {"ERM": 71.23, "DRW": 75.08, "M2m": 76.15, "DeepSMOTE": 76.66,
                       "LDAM-DRW": 77.75, "Mixup-DRW": 82.11, "Remix-DRW": 81.82,
                       "MAMix-DRW": 82.29},
    ("cifar100", 100): {"ERM": 38.46, "LDAM-DRW": 41.28, "Mixup-DRW": 46.91,
                        "MAMix-DRW": 46.93},
}

SUITE_KEYS = ("name", "description", "base_config", "overrides", "data_root", "grid")
GRID_KEYS = ("strategies", "ratios", "seeds", "datasets", "overrides", "tag")

#: Config keys that say where or how a run ran, not what it computed: a cell whose
#: ``config.yaml`` differs from the suite only in these is not stale.
MACHINE_KEYS = ("dataset.root", "dataset.download", "dataset.workers", "train.device",
                "log.progress", "log.tensorboard")


@dataclass(frozen=True)
class Cell:
    """One run of a suite; ``overrides`` (a block's own config changes, as sorted JSON)
    and ``tag`` (which names them in the folder) come from its grid block."""

    dataset: str
    ratio: float
    strategy: str
    seed: int
    tag: str = ""
    overrides: str = "{}"

    @property
    def name(self) -> str:
        return f"{self.strategy}-{self.tag}" if self.tag else self.strategy

    @property
    def folder(self) -> str:
        r = int(self.ratio) if float(self.ratio).is_integer() else self.ratio
        return f"{self.dataset}-r{r}/{self.name}-s{self.seed}"


@dataclass
class Suite:
    name: str
    base: dict[str, Any]
    cells: list[Cell]
    description: str = ""

    def config(self, cell: Cell) -> dict[str, Any]:
        cfg = _deep_update(copy.deepcopy(self.base), json.loads(cell.overrides))
        cfg.setdefault("dataset", {})
        cfg["dataset"]["name"] = cell.dataset
        cfg["dataset"]["ratio"] = cell.ratio
        cfg["strategy"] = cell.strategy
        cfg.setdefault("train", {})["seed"] = cell.seed
        return cfg


def _deep_update(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def load_suite(path: str | Path, *, data_root: str | None = None) -> Suite:
    """Read and check a suite file; every cell's config is validated before any training."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("suite", "an existing suite YAML file", str(path))
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict):
        raise ParameterError("suite", "a YAML mapping", type(spec).__name__)
    for key in spec:
        if key not in SUITE_KEYS:
            raise ParameterError(f"suite.{key}", "one of " + ", ".join(SUITE_KEYS), key)
    if not spec.get("name"):
        raise ParameterError("suite.name", "a non-empty name", spec.get("name"))
    spec["name"] = _check_folder_name("suite.name", spec["name"])
    base = load_config_file(spec["base_config"]) if spec.get("base_config") else {}
    _deep_update(base, spec.get("overrides") or {})
    root = data_root or spec.get("data_root")
    if root is not None:
        base.setdefault("dataset", {})["root"] = str(root)
    grid = spec.get("grid")
    if not isinstance(grid, list) or not grid:
        raise ParameterError("suite.grid", "a non-empty list of blocks", grid)
    default_ds = (base.get("dataset") or {}).get("name", "digits")
    cells: list[Cell] = []
    for i, block in enumerate(grid):
        if not isinstance(block, dict):
            raise ParameterError(f"suite.grid[{i}]", "a mapping", block)
        for key in block:
            if key not in GRID_KEYS:
                raise ParameterError(f"suite.grid[{i}].{key}", "one of " + ", ".join(GRID_KEYS),
                                     key)
        over = block.get("overrides") or {}
        if not isinstance(over, dict):
            raise ParameterError(f"suite.grid[{i}].overrides", "a mapping of config changes",
                                 over)
        tag = str(block.get("tag") or "")
        if tag:
            _check_folder_name(f"suite.grid[{i}].tag", tag)
        extra = dict(tag=tag, overrides=json.dumps(over, sort_keys=True))
        for ds in block.get("datasets", [default_ds]):
            for ratio in block.get("ratios", [(base.get("dataset") or {}).get("ratio", 100)]):
                for strategy in block.get("strategies", ["ERM"]):
                    for seed in block.get("seeds", [0]):
                        cell = Cell(ds, ratio, strategy, int(seed), **extra)
                        clash = [c for c in cells if c.folder == cell.folder and c != cell]
                        if clash:
                            raise ParameterError(f"suite.grid[{i}].tag", "a tag that tells "
                                                 f"this block's runs apart ({cell.folder} "
                                                 "has other overrides elsewhere)", block.get("tag"))
                        if cell not in cells:
                            cells.append(cell)
    suite = Suite(spec["name"], base, cells, spec.get("description", ""))
    for cell in cells:  # fail fast: a typo in the last cell must not wait hours
        try:
            resolve(suite.config(cell))
        except ParameterError as e:
            raise ParameterError(f"suite cell {cell.folder}: {e.name}", e.expected, e.got) from e
    return suite


def _check_folder_name(key: str, name: Any) -> str:
    """A name used as one folder under the results folder: no path separators, no ``.`` or
    ``..``, nothing absolute (it could write outside ``--out``)."""
    number = isinstance(name, (int, float)) and not isinstance(name, bool)
    text = str(name) if number else name if isinstance(name, str) else None
    if (text is None or text.strip() in ("", ".", "..") or "/" in text or "\\" in text
            or "\0" in text or Path(text).is_absolute() or text != text.strip()):
        raise ParameterError(key, "a plain folder name (no '/', '\\', '..' or absolute "
                             "path: the runs go in a folder of that name under --out)", name)
    return text


_ABSENT = object()


def _flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted key: value}`` (leaves: anything but a mapping)."""
    if not isinstance(cfg, dict) or (prefix and not cfg):
        return {prefix: cfg}
    flat: dict[str, Any] = {}
    for k, v in cfg.items():
        flat.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def config_difference(run_dir: str | Path, config: dict[str, Any]
                      ) -> tuple[str, Any, Any] | None:
    """How the run in ``run_dir`` (its ``config.yaml``) differs from ``config`` resolved:
    the first differing key, its value in the run and in ``config``; None when they agree
    up to :data:`MACHINE_KEYS`, or when the folder holds no run."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return None
    try:
        was = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        was = None
    if not isinstance(was, dict):
        return ("config.yaml", "unreadable", "a mapping")
    from tailmix.config import default_config

    was = {k: v for k, v in was.items() if k not in ("class_counts", "model_class")}
    # Through YAML as config.yaml was: tuples become lists, numbers keep their type.
    now = yaml.safe_load(yaml.safe_dump(resolve(config).to_dict(), sort_keys=False))
    default = _flat(default_config())
    for key, value in _flat(now).items():
        if key in MACHINE_KEYS or any(key.startswith(m + ".") for m in MACHINE_KEYS):
            continue
        node: Any = was
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT:  # a key newer than the run: a difference only if it is set
            if key in default and value == default[key]:
                continue
            return key, "<absent>", value
        if node != value and not _same_epoch(key, node, value, was):
            return key, node, value
    return None  # keys only the run has: settings this version no longer has


#: Composition keys that an older config.yaml may hold as a share of the run, where the
#: resolved composition now holds the epoch.
SHARE_KEYS = ("composition.weights.start_epoch", "composition.generative.warmup_epochs")


def _same_epoch(key: str, was: Any, now: Any, run: dict[str, Any]) -> bool:
    """Whether ``was`` (a share of the run's epochs) is the epoch ``now``."""
    from tailmix.config import resolve_epoch

    train = run.get("train")
    epochs = train.get("epochs") if isinstance(train, dict) else None
    if key not in SHARE_KEYS or not isinstance(was, float) or isinstance(epochs, bool) \
            or not isinstance(epochs, int):
        return False
    try:
        return resolve_epoch(key, was, epochs) == now
    except ParameterError:
        return False


def _set_aside(run_dir: Path) -> Path:
    """Move a stale run out of its cell's folder (kept beside it, never deleted)."""
    from tailmix.io import LOCK_NAME, lock_folder

    lock_folder(run_dir, name=f"suite cell {run_dir}")  # nobody is training into it now
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(aside)  # the lock goes with it, and is removed there
    (aside / LOCK_NAME).unlink(missing_ok=True)
    return aside


def run_suite(suite: Suite, out_root: str | Path = "results", *,
              log: Callable[[str], None] = print, train_missing: bool = True,
              retrain_stale: bool = False) -> Path:
    """Train every unfinished cell, then write the tables and reports; return the folder.

    Every cell's folder is checked before anything trains: one holding a run of another
    config than the suite's current one for the cell (:func:`config_difference`) is
    refused, or with ``retrain_stale`` moved aside (``<folder>.stale-N``) and trained
    again.

    Raises
    ------
    ParameterError
        Naming the stale cell and the first key that differs.
    """
    from tailmix.build import train

    out = Path(out_root) / suite.name
    runs = out / "runs"
    stale = []
    for cell in suite.cells:
        diff = config_difference(runs / cell.folder, suite.config(cell))
        if diff is None:
            continue
        if not retrain_stale or not train_missing:
            key, was, now = diff
            raise ParameterError(f"suite cell {cell.folder}", "a run trained with the suite's "
                                 "current config for it (`tailmix bench --retrain-stale` "
                                 "retrains stale runs, keeping the old ones aside)",
                                 f"{key}: {was!r} in its config.yaml, {now!r} in the suite")
        stale.append(cell)
    for cell in stale:
        key = config_difference(runs / cell.folder, suite.config(cell))[0]
        aside = _set_aside(runs / cell.folder)
        log(f"{cell.folder}: stale ({key} differs from the suite), moved to {aside.name}; "
            "it will be trained again")
    for i, cell in enumerate(suite.cells, 1):
        run_dir = runs / cell.folder
        if (run_dir / "metrics.json").is_file():
            log(f"[{i}/{len(suite.cells)}] {cell.folder}: finished, skipped")
            continue
        if not train_missing:
            continue
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        log(f"[{i}/{len(suite.cells)}] {cell.folder}: {'resuming' if resume else 'training'}")
        train(suite.config(cell), run_dir, resume=resume)
    write_tables(suite, out)
    return out


def _collect(suite: Suite, out: Path) -> list[dict[str, Any]]:
    groups: dict[tuple[str, float, str], list[tuple[dict, dict | None]]] = {}
    for cell in suite.cells:
        run_dir = out / "runs" / cell.folder
        mpath = run_dir / "metrics.json"
        if not mpath.is_file():
            continue
        metrics = json.loads(mpath.read_text())
        margins = None
        if (run_dir / "margins.json").is_file():
            margins = json.loads((run_dir / "margins.json").read_text())
        groups.setdefault((cell.dataset, cell.ratio, cell.name), []).append((metrics, margins))
    rows = []
    for (ds, ratio, strategy), results in groups.items():
        fits = [mg["train"] for _, mg in results if mg and mg["train"].get("slope") is not None]
        slopes = [fit["slope"] for fit in fits]
        row = {
            "dataset": ds, "ratio": ratio, "strategy": strategy, "seeds": len(results),
            "epochs": results[0][0]["epochs"],
            "train_time_min": statistics.mean(m["train_time_s"] for m, _ in results) / 60,
        }
        for key in REPORT_KEYS:
            row[key], row[key + "_std"] = _mean_std([m["final"].get(key) for m, _ in results])
        row["selected_top1"], row["selected_top1_std"] = _mean_std(
            [(m.get("selected") or {}).get("top1") for m, _ in results])
        row["margin_slope"] = statistics.mean(slopes) if slopes else None
        # the fewest classes a seed's slope was fitted on (None when not recorded)
        used = [fit["n_used"] for fit in fits if isinstance(fit.get("n_used"), int)]
        row["margin_slope_classes"] = min(used) if used else None
        row["published_top1"] = PUBLISHED.get((ds, int(ratio)), {}).get(strategy)
        rows.append(row)
    from tailmix.registry import STRATEGIES

    order = {name: i for i, name in enumerate(STRATEGIES)}  # the catalogue's (paper's) order
    rows.sort(key=lambda r: (r["dataset"], r["ratio"], order.get(r["strategy"], len(order))))
    return rows


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _fmt(v: Any, std: Any = None, digits: int = 2) -> str:
    if v is None:
        return "-"
    if std is not None and std > 0:
        return f"{v:.{digits}f} ± {std:.{digits}f}"
    return f"{v:.{digits}f}"


def _fmt_slope(row: dict[str, Any]) -> str:
    """The margin slope, with what it rests on when a seed's fit used fewer than 4 classes."""
    text, used = _fmt(row["margin_slope"], digits=3), row.get("margin_slope_classes")
    if row["margin_slope"] is None or used is None or used >= 4:
        return text
    return f"{text} (fitted on {used} class{'' if used == 1 else 'es'})"


def write_tables(suite: Suite, out: Path) -> list[dict[str, Any]]:
    """Write ``table.md``, ``table.csv`` and comparison reports from the finished runs."""
    rows = _collect(suite, out)
    missing = [c.folder for c in suite.cells
               if not (out / "runs" / c.folder / "metrics.json").is_file()]
    buf = io.StringIO()
    selected = any(r["selected_top1"] is not None for r in rows)
    fields = ["dataset", "ratio", "strategy", "epochs", "seeds", "top1", "top1_std",
              *(["selected_top1", "selected_top1_std"] if selected else []),
              "balanced_accuracy", "many_shot", "medium_shot", "few_shot", "macro_f1", "ece",
              "margin_slope", "published_top1", "train_time_min"]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 4) if isinstance(v, float) else csv_cell(v))
                    for k, v in r.items()})
    atomic_write_text(out / "table.csv", buf.getvalue())
    lines = [f"# {suite.name}", ""]
    if suite.description:
        lines += [suite.description.strip(), ""]
    lines += [
        "Final-epoch test metrics in percent (mean ± std over seeds where there are several).",
        "Slope: fitted slope of log(mean train margin) on log(n_c). Published: the reference "
        "package's top-1 for the 200-epoch protocol on the official CIFAR release (a rough "
        "guide, not a like-for-like comparison when the schedule or data differ).", "",
        "| dataset | ratio | strategy | epochs | seeds | top-1 | "
        + ("top-1, validation-selected epoch | " if selected else "")
        + "balanced | many | medium | few | macro F1 | ECE | margin slope | published top-1 | "
        "train min |",
        "|---|---:|---|---:|---:|---:|" + ("---:|" if selected else "")
        + "---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if selected:
        lines[-3:-2] = [lines[-3] + " The validation-selected column is the test top-1 at "
                        "the epoch with the best validation balanced accuracy (runs with "
                        "dataset.validation)."]
    for r in rows:
        sel = f"| {_fmt(r['selected_top1'], r['selected_top1_std'])} " if selected else ""
        lines.append(
            f"| {r['dataset']} | {_fmt(r['ratio'], digits=0)} | {r['strategy']} | {r['epochs']} "
            f"| {r['seeds']} | {_fmt(r['top1'], r['top1_std'])} {sel}"
            f"| {_fmt(r['balanced_accuracy'])} | {_fmt(r['many_shot'])} "
            f"| {_fmt(r['medium_shot'])} | {_fmt(r['few_shot'])} | {_fmt(r['macro_f1'])} "
            f"| {_fmt(r['ece'])} | {_fmt_slope(r)} "
            f"| {_fmt(r['published_top1'])} | {_fmt(r['train_time_min'], digits=1)} |")
    if missing:
        lines += ["", f"Not yet run ({len(missing)}): " + ", ".join(missing) + ". "
                  "`tailmix bench` on this suite trains them (finished runs are kept)."]
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    _write_reports(suite, out)
    return rows


def _write_reports(suite: Suite, out: Path) -> None:
    from tailmix.report import build_report

    groups: dict[str, list[Path]] = {}
    for cell in suite.cells:
        run_dir = out / "runs" / cell.folder
        if (run_dir / "metrics.json").is_file() and cell.seed == min(
                c.seed for c in suite.cells if c.dataset == cell.dataset
                and c.ratio == cell.ratio and c.name == cell.name):
            groups.setdefault(cell.folder.split("/")[0], []).append(run_dir)
    for name, dirs in groups.items():
        build_report(dirs, out / "reports" / name, per_run=False)
