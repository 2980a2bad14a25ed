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

A block lists ``datasets`` (default: the base config's), ``ratios`` (the base config's, else
100), ``strategies`` (ERM) and ``seeds`` (0), each a non-empty list naming a value once; its
``overrides`` change the config of its runs (not the keys the grid sets) and its ``tag``
names them in their folders. ``load_suite`` checks every field and every cell's config
before anything trains: a name that becomes a folder is a plain name (letters, digits,
``. _ - + = @ , ~``) of at most :data:`NAME_BYTES` bytes. ``locate_data`` then finds every
cell's data without reading it; ``tailmix check`` does both, and ``run_suite`` finds the data
of the cells it is to train before the first one starts.

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
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tailmix._validation import ParameterError, check_number
from tailmix.io import atomic_write_text, csv_cell
from tailmix.metrics import REPORT_KEYS
from tailmix.pipeline.config import (
    DEFAULT_RATIO,
    flat_config,
    load_config_file,
    read_yaml,
    resolve,
)

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

#: Config keys the grid sets for every cell: a suite's ``overrides`` cannot set them (the
#: grid's value would replace it silently), a block's neither.
SUITE_SET_KEYS = {"strategy": "strategies", "train.seed": "seeds"}
BLOCK_SET_KEYS = {**SUITE_SET_KEYS, "dataset.name": "datasets", "dataset.ratio": "ratios"}

#: The longest folder name a suite writes, in bytes (UTF-8): file systems allow 255, and
#: a stale run's folder gets a suffix (``.stale-N``) beside it.
NAME_BYTES = 200

_FOLDER_NAME = re.compile(r"\w(?:[\w .+=@,~-]*[\w+=@,~-])?")


_ABSENT = object()


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
    """Read and check a suite file; every cell's config is validated before any training.

    Every field is checked as it is read (its type, a list that is empty or names a value
    twice, a name that becomes a folder), then every cell's config is resolved; the data is
    not looked at (:func:`locate_data` finds it).

    Raises
    ------
    ParameterError
        Naming the field (``suite.grid[1].seeds[0]``), or the cell and the config key.
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError("suite", "an existing suite YAML file", str(path))
    spec = read_yaml(path, name="suite") or {}  # malformed YAML: the line and column
    if not isinstance(spec, dict):
        raise ParameterError("suite", "a YAML mapping", type(spec).__name__)
    for key in spec:
        if key not in SUITE_KEYS:
            raise ParameterError(f"suite.{key}", "one of " + ", ".join(SUITE_KEYS), key)
    if not spec.get("name"):
        raise ParameterError("suite.name", "a non-empty name", spec.get("name"))
    name = _check_folder_name("suite.name", spec["name"])
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise ParameterError("suite.description", "a text (a string)", description)
    base = _base_config(spec.get("base_config"))
    overrides = _overrides("suite.overrides", spec.get("overrides"), SUITE_SET_KEYS)
    _deep_update(base, overrides)
    given_root = spec.get("data_root")
    if given_root is not None and (not isinstance(given_root, str) or not given_root):
        raise ParameterError("suite.data_root", "the path of the folder or file holding the "
                             "data (a string)", given_root)
    root = data_root or given_root
    if root is not None:
        base.setdefault("dataset", {})["root"] = str(root)
    grid = spec.get("grid")
    if not isinstance(grid, list) or not grid:
        raise ParameterError("suite.grid", "a non-empty list of blocks", grid)
    cells: list[Cell] = []
    folders: dict[str, Cell] = {}  # case-folded: one folder on a case-insensitive disk
    for i, block in enumerate(grid):
        for cell in _block_cells(f"suite.grid[{i}]", block, base):
            if cell in cells:  # the same run listed by two blocks: trained once
                continue
            other = folders.setdefault(cell.folder.casefold(), cell)
            if other != cell:
                raise ParameterError(f"suite.grid[{i}].tag", "a tag that tells this block's "
                                     f"runs apart ({cell.folder} is also the folder of "
                                     f"{other.folder} with other settings elsewhere)",
                                     block.get("tag"))
            cells.append(cell)
    suite = Suite(name, base, cells, description or "")
    for cell in cells:  # fail fast: a typo in the last cell must not wait hours
        try:
            resolve(suite.config(cell))
        except ParameterError as e:
            raise ParameterError(f"suite cell {cell.folder}: {e.name}", e.expected, e.got) from e
    return suite


def _base_config(value: Any) -> dict[str, Any]:
    """The suite's ``base_config`` read (an empty config when absent)."""
    if value is None:
        return {}
    if not isinstance(value, str) or not value:
        raise ParameterError("suite.base_config", "the path of a config YAML file or a "
                             "shipped config name (a string)", value)
    try:
        return load_config_file(value)
    except ParameterError as e:
        raise ParameterError("suite.base_config", e.expected, e.got) from e


def _overrides(key: str, value: Any, set_by_grid: dict[str, str]) -> dict[str, Any]:
    """A mapping of config changes that sets none of the keys the grid sets."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParameterError(key, "a mapping of config changes", value)
    for dotted, field in set_by_grid.items():
        node: Any = value
        for part in dotted.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT:
            raise ParameterError(f"{key}.{dotted}", f"absent: the grid sets it for every run "
                                 f"(list the values in a block's {field})", node)
    return value


def _block_cells(key: str, block: Any, base: dict[str, Any]) -> list[Cell]:
    """The cells of one grid block, every field checked."""
    if not isinstance(block, dict):
        raise ParameterError(key, "a mapping", block)
    for field in block:
        if field not in GRID_KEYS:
            raise ParameterError(f"{key}.{field}", "one of " + ", ".join(GRID_KEYS), field)
    over = _overrides(f"{key}.overrides", block.get("overrides"), BLOCK_SET_KEYS)
    tag = block.get("tag")
    tag = "" if tag is None else _check_folder_name(f"{key}.tag", tag)
    d = base.get("dataset") if isinstance(base.get("dataset"), dict) else {}
    datasets = _grid_list(f"{key}.datasets", block.get("datasets", _ABSENT), _check_name,
                          "dataset names", d.get("name", "digits"), "dataset.name")
    ratio = d.get("ratio", DEFAULT_RATIO)
    ratios = _grid_list(f"{key}.ratios", block.get("ratios", _ABSENT), _check_ratio,
                        "imbalance ratios", ratio, "dataset.ratio")
    strategies = _grid_list(f"{key}.strategies", block.get("strategies", _ABSENT),
                            _check_name, "strategy names", "ERM", "strategy")
    seeds = _grid_list(f"{key}.seeds", block.get("seeds", _ABSENT), _check_seed, "seeds",
                       0, "train.seed")
    extra = dict(tag=tag, overrides=json.dumps(over, sort_keys=True))
    cells = [Cell(ds, r, strategy, seed, **extra) for ds in datasets for r in ratios
             for strategy in strategies for seed in seeds]
    for cell in cells:
        for part, fix in zip(cell.folder.split("/"), ("the dataset name or the ratio",
                                                       "the strategy name or the tag"),
                             strict=True):
            if len(part.encode("utf-8")) > NAME_BYTES:
                raise ParameterError(key, f"runs whose folder names fit in {NAME_BYTES} bytes "
                                     f"(shorten {fix})", _shortened(part))
    return cells


def _grid_list(key: str, value: Any, check: Callable[[str, Any], Any], what: str,
               default: Any, default_key: str) -> list[Any]:
    """A block's list of values, each checked, none twice (they would train into one
    folder); ``default`` (the base config's ``default_key``) when the block gives none."""
    if value is _ABSENT:
        if default is None:
            raise ParameterError(key, f"a list of {what} (the base config's {default_key} "
                                 "is null, and a run's folder is named after it)", None)
        return [check(default_key, default)]
    if not isinstance(value, list) or not value:
        field = key.rsplit(".", 1)[1]
        raise ParameterError(key, f"a non-empty list of {what}" + (
            "" if default is None else f" (or no {field} key, for {default!r})"), value)
    checked = [check(f"{key}[{j}]", v) for j, v in enumerate(value)]
    for j, v in enumerate(checked):
        if v in checked[:j]:
            raise ParameterError(f"{key}[{j}]", f"a value not listed before (it repeats "
                                 f"{key}[{checked.index(v)}]: both would train into one "
                                 "folder)", value[j])
    return checked


def _check_name(key: str, value: Any) -> str:
    """A registered name (a string) that can be part of a folder name."""
    if not isinstance(value, str):
        raise ParameterError(key, "a name (a string)", value)
    return _check_folder_name(key, value)


def _check_ratio(key: str, value: Any) -> int | float:
    return check_number(key, value, low=1)


def _check_seed(key: str, value: Any) -> int:
    return check_number(key, value, low=0, high=2**63 - 1, integer=True)


def _shortened(text: str) -> str:
    size = len(text.encode("utf-8"))
    return text if size <= 60 else f"{text[:40]}... ({size} bytes)"


def _check_folder_name(key: str, name: Any) -> str:
    """A name used as one folder under the results folder (a suite's, a tag): letters,
    digits and ``. _ - + = @ , ~`` (spaces inside), starting with a letter, digit or ``_``
    (so no ``/``, ``..``, hidden or absolute path: it could write outside ``--out``), at
    most :data:`NAME_BYTES` bytes."""
    number = isinstance(name, (int, float)) and not isinstance(name, bool)
    text = str(name) if number else name if isinstance(name, str) else None
    if (text is None or not _FOLDER_NAME.fullmatch(text)
            or len(text.encode("utf-8")) > NAME_BYTES):
        raise ParameterError(key, f"a plain folder name of at most {NAME_BYTES} bytes: "
                             "letters, digits and . _ - + = @ , ~ (spaces inside), starting "
                             "with a letter, digit or _ (runs are written in folders named "
                             "after it, under --out)",
                             _shortened(text) if isinstance(text, str) else name)
    return text


def locate_data(suite: Suite, cells: Iterable[Cell] | None = None) -> None:
    """Find the data of every cell (of ``cells``, default all) without reading it
    (:func:`tailmix.data.locate.locate_source`): a run whose files are missing fails here,
    before the first one trains. Cells that read the same data are looked for once.

    Raises
    ------
    DatasetError
        Naming the first cell whose files are missing and what was expected.
    ParameterError
        Naming the cell and the key, for a missing root or an option the source's reader
        would refuse.
    """
    from tailmix.data.download import DatasetError
    from tailmix.data.locate import locate_source

    found: set[str] = set()
    for cell in suite.cells if cells is None else cells:
        d = resolve(suite.config(cell)).dataset
        source = json.dumps([d["name"], d["root"], d["download"], d["options"]],
                            sort_keys=True, default=str)
        if source in found:
            continue
        try:
            locate_source(d["name"], root=d["root"], download=d["download"], **d["options"])
        except ParameterError as e:
            raise ParameterError(f"suite cell {cell.folder}: {e.name}", e.expected, e.got) from e
        except DatasetError as e:
            raise DatasetError(f"suite cell {cell.folder}: {e}") from e
        found.add(source)


def config_difference(run_dir: str | Path, config: dict[str, Any]
                      ) -> tuple[str, Any, Any] | None:
    """How the run in ``run_dir`` (its ``config.yaml``) differs from ``config`` resolved:
    the first differing key, its value in the run and in ``config``; None when they agree
    up to :func:`tailmix.pipeline.config.machine_keys`, or when the folder holds no run. A run
    resumed with a changed config (recorded in its ``history.jsonl``) is a run of neither
    config: it differs at the first changed key."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return None
    from tailmix.pipeline.callbacks import read_history

    try:
        history = read_history(Path(run_dir))
    except ParameterError:
        history = []
    for row in history:
        changed = row.get("config_changes")
        if isinstance(changed, dict) and changed:
            key, (was, now) = next(iter(changed.items()))
            return (key, was, f"{now!r} from epoch {row['epoch'] + 1} (resumed with a "
                    "changed config)")
    try:
        was = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        was = None
    if not isinstance(was, dict):
        return ("config.yaml", "unreadable", "a mapping")
    from tailmix.pipeline.config import default_config, machine_keys

    machine = machine_keys()
    was = {k: v for k, v in was.items() if k not in ("class_counts", "model_class")}
    # Through YAML as config.yaml was: tuples become lists, numbers keep their type.
    now = yaml.safe_load(yaml.safe_dump(resolve(config).to_dict(), sort_keys=False))
    default = flat_config(default_config())
    for key, value in flat_config(now).items():
        if key in machine or any(key.startswith(m + ".") for m in machine):
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
    from tailmix.pipeline.config import resolve_epoch

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
    from tailmix.io import set_aside

    return set_aside(run_dir, "stale", name=f"suite cell {run_dir}")


def run_suite(suite: Suite, out_root: str | Path = "results", *,
              log: Callable[[str], None] = print, train_missing: bool = True,
              retrain_stale: bool = False) -> Path:
    """Train every unfinished cell, then write the tables and reports; return the folder.

    Every cell's folder is checked before anything trains: one holding a run of another
    config than the suite's current one for the cell (:func:`config_difference`) is
    refused, or with ``retrain_stale`` moved aside (``<folder>.stale-N``) and trained
    again.
    The data of every cell still to train is then found (:func:`locate_data`).

    Raises
    ------
    ParameterError
        Naming the stale cell and the first key that differs.
    DatasetError
        Naming the first cell to train whose data is missing.
    """
    from tailmix.pipeline.build import train

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
    if train_missing:  # the data of every run still to train, found before the first trains
        locate_data(suite, [c for c in suite.cells if c in stale
                            or not (runs / c.folder / "metrics.json").is_file()])
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
            "machine": "; ".join(sorted({_machine(m) for m, _ in results} - {None})) or None,
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


def _machine(metrics: dict[str, Any]) -> str | None:
    """Where a run trained, as its metrics.json recorded it (None where it did not): the
    accelerator, or the CPU's capability and threads, and the precision."""
    env = metrics.get("environment") or {}
    if env.get("accelerator"):
        where = str(env["accelerator"])
    elif env.get("cpu_capability"):
        where = f"{env['cpu_capability']} CPU, {env.get('cpu_threads', '?')} threads"
    else:
        return None
    precision = (metrics.get("speed") or {}).get("precision")
    return f"{where}, {precision}" if precision else where


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
              "margin_slope", "published_top1", "train_time_min", "machine"]
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
        "guide, not a like-for-like comparison when the schedule or data differ). Train "
        "min: the training epochs' time, on the machine named after it (- where the run did "
        "not record it); times from different machines do not compare.", "",
        "| dataset | ratio | strategy | epochs | seeds | top-1 | "
        + ("top-1, validation-selected epoch | " if selected else "")
        + "balanced | many | medium | few | macro F1 | ECE | margin slope | published top-1 | "
        "train min | machine |",
        "|---|---:|---|---:|---:|---:|" + ("---:|" if selected else "")
        + "---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    if selected:  # said in the paragraph above the table
        lines[-4] += (" The validation-selected column is the test top-1 at the epoch with "
                      "the best validation balanced accuracy (runs with dataset.validation).")
    for r in rows:
        sel = f"| {_fmt(r['selected_top1'], r['selected_top1_std'])} " if selected else ""
        lines.append(
            f"| {r['dataset']} | {_fmt(r['ratio'], digits=0)} | {r['strategy']} | {r['epochs']} "
            f"| {r['seeds']} | {_fmt(r['top1'], r['top1_std'])} {sel}"
            f"| {_fmt(r['balanced_accuracy'])} | {_fmt(r['many_shot'])} "
            f"| {_fmt(r['medium_shot'])} | {_fmt(r['few_shot'])} | {_fmt(r['macro_f1'])} "
            f"| {_fmt(r['ece'])} | {_fmt_slope(r)} "
            f"| {_fmt(r['published_top1'])} | {_fmt(r['train_time_min'], digits=1)} "
            f"| {r['machine'] or '-'} |")
    if missing:
        lines += ["", f"Not yet run ({len(missing)}): " + ", ".join(missing) + ". "
                  "`tailmix bench` on this suite trains them (finished runs are kept)."]
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    _write_reports(suite, out)
    return rows


def _write_reports(suite: Suite, out: Path) -> None:
    from tailmix.tools.report import build_report

    groups: dict[str, list[Path]] = {}
    for cell in suite.cells:
        run_dir = out / "runs" / cell.folder
        if (run_dir / "metrics.json").is_file() and cell.seed == min(
                c.seed for c in suite.cells if c.dataset == cell.dataset
                and c.ratio == cell.ratio and c.name == cell.name):
            groups.setdefault(cell.folder.split("/")[0], []).append(run_dir)
    for name, dirs in groups.items():
        build_report(dirs, out / "reports" / name, per_run=False)
