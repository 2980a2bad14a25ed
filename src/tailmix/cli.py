"""The ``tailmix`` command. argparse and YAML live here only; the library takes keywords.

Over 600 lines on purpose: every command's parser and its handler sit side by side in this
one module, so that a command reads from its flags to what it calls; each handler is thin
(the work is in the modules it calls).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from tailmix._validation import ParameterError
from tailmix._version import __version__

# Flags of `tailmix train` that set a config key.
FLAG_KEYS = {
    "dataset": "dataset.name",
    "data_root": "dataset.root",
    "ratio": "dataset.ratio",
    "profile": "dataset.profile",
    "arch": "model.arch",
    "strategy": "strategy",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "seed": "train.seed",
    "device": "train.device",
    "precision": "train.precision",
    "eval_every": "eval.every",
}


def _names(names: Any) -> str:
    return ", ".join(str(n) for n in names)


def _choices() -> dict[str, str]:
    """What the config flags take, in words, read from the registries (tailmix's own
    entries; a config's plugins add theirs when it is read)."""
    from tailmix.data.dataset import PREPARE_PROFILES
    from tailmix.pipeline.shipped import config_names
    from tailmix.registry import DATASETS, MODELS, STRATEGIES, load_builtins

    load_builtins()
    return {"configs": _names(config_names()), "datasets": _names(DATASETS),
            "models": _names(MODELS), "profiles": _names(PREPARE_PROFILES),
            "strategies": _names(STRATEGIES)}


def _add_config_flags(p: argparse.ArgumentParser, choices: dict[str, str], *,
                      strategy: bool = True, training: bool = True) -> None:
    """The flags that build a config: the data and strategy, and with ``training`` the
    run's length, optimiser, device and output."""
    p.add_argument("--config", "-c", help="YAML config file or a shipped config name "
                   f"({choices['configs']}); flags override it. Default: the dataset's "
                   "shipped config (digits when no --dataset, imagefolder when only "
                   "--data-root)")
    p.add_argument("--dataset", help=f"the data source: {choices['datasets']}")
    p.add_argument("--data-root", help="folder or file holding the dataset (alone: a folder "
                   "of your own images, CLASS/IMAGE or SPLIT/CLASS/IMAGE)")
    p.add_argument("--ratio", type=float, help="imbalance ratio n_max / n_min")
    p.add_argument("--profile", help=f"the long-tailed profile: {choices['profiles']}")
    p.add_argument("--arch", help=f"the network: {choices['models']}, or timm:NAME or "
                   "torchvision:NAME (a backbone of those packages)")
    if strategy:
        p.add_argument("--strategy", help=f"the strategy: {choices['strategies']} "
                       "(`tailmix strategies` describes them)")
    if training:
        p.add_argument("--epochs", type=int, help="length of the run in epochs")
        p.add_argument("--batch-size", type=int, help="the batch size (global: split "
                       "across processes)")
        p.add_argument("--lr", type=float, help="the learning rate the schedule starts from")
        p.add_argument("--seed", type=int, help="the run's seed (initialisation, batch "
                       "order, mixing)")
        p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
        p.add_argument("--precision", help="auto, bf16, fp32, fp16")
        p.add_argument("--eval-every", type=int, help="evaluate every N epochs (and at the "
                       "end)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set mixer.q=-0.5 (value read as YAML)")
    if training:
        p.add_argument("--no-progress", action="store_true", help="no progress bar: one "
                       "log line an epoch instead (also when the output is not a terminal)")


class _Refused(argparse.Action):
    """A spelling a command does not take: refused at once, naming the one it does."""

    def __init__(self, option_strings: list[str], dest: str, *, expected: str,
                 **kwargs: Any):
        self.expected = expected
        super().__init__(option_strings, dest, nargs="*", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        got = " ".join([option_string or self.dest, *values])
        parser.error(str(ParameterError(option_string or self.dest, self.expected, got)))


class _HelpFormatter(argparse.HelpFormatter):
    """Help text wrapped between words only: a strategy's name stays whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``tailmix: error:`` line, like tailmix's own."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tailmix: error: {message} (`{self.prog} --help` lists the "
                  "arguments)\n")


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config a command line asks for: file, then flags, then --set."""
    from tailmix.pipeline.config import load_config_file, set_path

    cfg = load_config_file(args.config) if args.config else _dataset_default(args)
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            if key == "dataset.ratio" and float(value).is_integer():
                value = int(value)
            set_path(cfg, key, value)
    _apply_sets(cfg, args.set)
    if getattr(args, "no_progress", False):
        set_path(cfg, "log.progress", False)
    _refuse_unread_root(cfg, getattr(args, "data_root", None))
    return cfg


def _refuse_unread_root(cfg: dict[str, Any], data_root: str | None) -> None:
    """``--data-root`` given for a dataset that reads no files is a mistake, not a no-op:
    the run would train on something else than the folder named."""
    from tailmix.registry import DATASETS, load_builtins

    load_builtins()
    name = (cfg.get("dataset") or {}).get("name", "digits")
    if data_root is not None and name in DATASETS and (
            DATASETS.meta(name).get("reads_root") is False):
        raise ParameterError("--data-root", f"absent: dataset {name!r} reads no files (for a "
                             "folder of your own images, --dataset imagefolder)", data_root)


def _apply_sets(cfg: dict[str, Any], items: list[str]) -> None:
    """Apply ``--set KEY=VALUE`` arguments to ``cfg`` in order."""
    from tailmix.pipeline.config import parse_set, set_path

    for item in items:
        set_path(cfg, *parse_set(item))


def _dataset_default(args: argparse.Namespace) -> dict[str, Any]:
    """The shipped config a dataset brings (its model, profile and schedule); an empty
    config for a dataset without one. No ``--dataset``: digits, or ``imagefolder`` when a
    ``--data-root`` is given."""
    from tailmix.pipeline.config import load_config_file, parse_set
    from tailmix.registry import DATASETS, load_builtins

    load_builtins()
    name = getattr(args, "dataset", None)
    for item in getattr(args, "set", None) or ():  # --set dataset.name=... names it too
        key, value = parse_set(item)
        if key == "dataset.name" and isinstance(value, str):
            name = value
    if name is None and getattr(args, "data_root", None) is not None:
        name = "imagefolder"  # a root of one's own images, the commonest case
        if os.environ.get("RANK", "0") == "0":  # said once under torchrun
            print("dataset.name: 'imagefolder', as --data-root is given without --dataset "
                  "(--dataset names another source)")
    name = name or "digits"
    shipped = DATASETS.meta(name).get("config") if name in DATASETS else None
    cfg = load_config_file(shipped) if shipped else {}
    cfg.setdefault("dataset", {})["name"] = name
    return cfg


def _default_out(cfg: dict[str, Any]) -> Path:
    """``runs/DATA/STRATEGY-sSEED``: DATA is the source and its imbalance ratio
    (``cifar10-r100``), or for a user's own data trained as it is (a source without a
    shipped config, profile ``original``) the source and the name of its folder
    (``imagefolder-pics``)."""
    from tailmix.registry import DATASETS

    d = cfg.get("dataset", {}) or {}
    name = d.get("name", "digits")
    strategy = cfg.get("strategy", "ERM")
    seed = (cfg.get("train") or {}).get("seed", 0)
    meta = DATASETS.meta(name) if name in DATASETS else {}
    own = meta.get("profile", "exp")
    kept = d.get("profile", own if d.get("ratio") is None else "exp") == "original"
    root = d.get("root")
    if kept and d.get("ratio") is None and meta.get("config", "") is None and (
            isinstance(root, str) and root):  # a user's own data: its folder's name
        data = f"{name}-{_folder_name(root)}"
    else:
        data = f"{name}-r{d.get('ratio', 100)}"
    return Path("runs") / data / f"{strategy}-s{seed}"


def _folder_name(root: str) -> str:
    """A data root's last name, less an archive ending, in characters safe in a folder name."""
    stem = Path(root).expanduser().resolve().name
    for end in (".zip", ".tar.gz", ".tgz", ".tar"):
        stem = stem.removesuffix(end)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "data"


# Flags of `tailmix train` a resumed run honours: they cannot change what it computes.
RESUME_FLAGS = ("device", "data_root", "no_progress")


def _out_folder(path: str | Path, flag: str = "--out") -> Path:
    """A folder to write into: refused when it is an existing file, or a path no file
    system call can take (a name over 255 bytes, a link loop)."""
    path = Path(path)
    try:
        path.stat()
    except FileNotFoundError:
        return path
    except OSError as e:
        from tailmix.io import os_error_text

        raise ParameterError(flag, "a folder that can be made here",
                             f"{path}: {os_error_text(e)}") from e
    if not path.is_dir():
        raise ParameterError(flag, "a folder (the run folder to write into)",
                             f"{path}: an existing file")
    return path


def _resume_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config of the run ``--resume`` names (its ``config.yaml``), with the flags that
    cannot change the run applied; any other flag is refused, not ignored."""
    from tailmix.pipeline.config import load_config_file, refuse_saved_plugins

    run = Path(args.resume)
    given = ["--config"] if args.config else []
    given += [f"--{flag.replace('_', '-')}" for flag in FLAG_KEYS
              if flag not in RESUME_FLAGS and getattr(args, flag, None) is not None]
    given += ["--set"] if args.set else []
    if args.out and Path(args.out).resolve() != run.resolve():
        given.append("--out")
    if given:
        raise ParameterError(", ".join(given), "left out with --resume: a resumed run keeps "
                             "the config it started with (--device, --data-root and "
                             "--no-progress may be given; start a new run with --out to "
                             "change anything else)", " ".join(given))
    if not (run / "config.yaml").is_file():
        raise ParameterError("--resume", "a run folder holding config.yaml and "
                             "checkpoints/last.pt", str(run))
    cfg = load_config_file(run / "config.yaml")
    for k in ("composition", "class_counts", "model_class"):
        cfg.pop(k, None)
    refuse_saved_plugins(cfg, f"the run folder's {run / 'config.yaml'}")
    if not isinstance(cfg.get("train"), dict) or not isinstance(cfg.get("dataset"), dict):
        raise ParameterError("--resume", "a run folder whose config.yaml is a tailmix run's",
                             str(run / "config.yaml"))
    if args.device is not None:
        cfg["train"]["device"] = args.device
    if args.data_root is not None:
        cfg["dataset"]["root"] = args.data_root
    if args.no_progress:
        cfg.setdefault("log", {})["progress"] = False
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from tailmix import distributed

    if args.allow_changes and not args.resume:
        raise ParameterError("--allow-changes", "given with --resume RUN_DIR (it lets a "
                             "resumed run go on with a changed config)", "no --resume")
    if args.force and args.resume:
        raise ParameterError("--force", "left out with --resume (it moves a run aside to "
                             "train anew; --resume continues it)", "--force --resume")
    if args.resume:
        cfg = _resume_config(args)
        out = _out_folder(args.resume, "--resume")
    else:
        cfg = build_config(args)
        out = _out_folder(args.out) if args.out else _default_out(cfg)
    args.run_folder = out  # what an interrupt's message names
    # Under torchrun every process runs this command; rank 0 alone writes and prints.
    distributed.init_from_env()
    try:
        result = _fit(cfg, out, resume=bool(args.resume), force=args.force,
                      allow_changes=args.allow_changes)
    except ParameterError as e:
        raise _flag_names(e, {"resume": "--resume"}) from e
    finally:
        distributed.destroy()
    if result is not None:
        _print_summary([(cfg.get("strategy", "ERM"), result)])
        print(f"results written to {out}")
    return 0


def _fit(cfg: dict[str, Any], out: Path, *, resume: bool, force: bool,
         allow_changes: bool) -> dict[str, Any] | None:
    """Train; the result on rank 0, None on the other processes. The trainer (and its
    process-group handles) is released on return, before the group is destroyed."""
    from tailmix.pipeline.build import build_run

    run = build_run(cfg, out, resume=resume, allow_changes=allow_changes, force=force)
    result = run.fit()
    return result if run.is_main else None


def _print_summary(rows: list[tuple[str, dict[str, Any]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from tailmix.metrics import METRIC_NAMES, REPORT_KEYS

    table = Table(title="final epoch, test set (%)", caption="bal.: balanced accuracy; "
                  "LA: top-1 after post-hoc logit adjustment")
    width = max(len(name) for name, _ in rows)
    table.add_column("run", no_wrap=True, min_width=width)
    short = {"balanced_accuracy": "bal.", "many_shot": "many", "medium_shot": "med.",
             "few_shot": "few", "macro_f1": "F1"}
    for key in REPORT_KEYS:
        table.add_column(short.get(key, METRIC_NAMES[key]), justify="right", no_wrap=True)
    table.add_column("LA", justify="right", no_wrap=True)
    selected = any("selected" in r for _, r in rows)
    if selected:  # runs with a validation set: test top-1 at the epoch chosen on it
        table.add_column("sel.", justify="right", no_wrap=True)
        table.caption += "; sel.: top-1 at the validation-selected epoch"

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    averaged = False
    for name, r in rows:
        lines = [(name, r["final"], r.get("selected"))]
        for kind in ("ema", "swa"):  # averaged weights, each on a line of its own
            if "final" in (r.get(kind) or {}):
                lines.append((f"{name} ({kind})", r[kind]["final"], None))
                averaged = True
        for label, m, sel in lines:
            extra = [f((sel or {}).get("top1"))] if selected else []
            table.add_row(label, *(f(m.get(k)) for k in REPORT_KEYS),
                          f((m.get("posthoc_la") or {}).get("top1")), *extra)
    if averaged:
        table.caption += "; (ema), (swa): the run's averaged weights"
    Console().print(table)


def cmd_compare(args: argparse.Namespace) -> int:
    """Train several strategies on one config and compare them."""
    from tailmix import distributed

    distributed.init_from_env()
    try:
        return _compare(args, is_main=distributed.rank() == 0)
    finally:
        distributed.destroy()


def _compare(args: argparse.Namespace, *, is_main: bool) -> int:
    from tailmix.pipeline.build import train
    from tailmix.pipeline.config import resolve
    from tailmix.tools.bench import config_difference

    base = build_config(args)
    out_root = _out_folder(args.out)
    rows, run_dirs = [], []
    # "ERM,DRW" as well as "ERM DRW": no strategy name holds a comma.
    args.strategies = [n for given in args.strategies for n in given.split(",") if n]
    for name in args.strategies:  # every run is checked before the first one trains
        try:
            resolve({**base, "strategy": name})
        except ParameterError as e:
            raise ParameterError(f"{name}: {e.name}", e.expected, e.got) from e
        out = _out_folder(out_root / name)
        # A run trained (or started) with other settings is not reused or continued.
        diff = None if args.force else config_difference(out, {**base, "strategy": name})
        if diff is not None:
            key, was, now = diff
            raise ParameterError(f"run {out}", "a run trained with this command's config "
                                 "(--force retrains it)",
                                 f"{key}: {was!r} in its config.yaml, {now!r} now")
    for name in args.strategies:
        cfg = {**base, "strategy": name}
        out = out_root / name
        done = out / "metrics.json"
        if done.is_file() and not args.force:
            import json

            result = json.loads(done.read_text())
            if is_main:
                print(f"{name}: finished run found in {out}, reusing it (--force to retrain)")
        else:
            resume = (out / "checkpoints" / "last.pt").is_file() and not args.force
            result = train(cfg, out, resume=resume, force=args.force)
        rows.append((name, result))
        run_dirs.append(out)
    if not is_main:
        return 0
    _print_summary(rows)
    from tailmix.tools.report import build_report

    html, _ = build_report(run_dirs, out_root / "report")
    print(f"comparison report: {html}")
    print(f"results written to {out_root}")
    return 0


def _json_file(path: Path | None) -> None:
    """Refuse a ``--json`` path that cannot take a file, before any work."""
    if path is not None and path.is_dir():
        raise ParameterError("--json", "a file path (not a folder) to write the figures to",
                             f"{path}: a folder")


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from tailmix.metrics import REPORT_KEYS
    from tailmix.pipeline.build import evaluate_checkpoint
    from tailmix.tools.predict import checkpoint_path

    try:  # a run folder names its checkpoint as predict and export read it
        path = checkpoint_path(args.run, args.checkpoint)
    except ParameterError as e:
        raise _flag_names(e, {"run": "RUN", "checkpoint": "--checkpoint"}) from e
    _json_file(args.json)
    try:
        m = evaluate_checkpoint(path, data_root=args.data_root, device=args.device,
                                weights=args.weights)
    except ParameterError as e:
        raise _flag_names(e, {"weights": "--weights"}) from e
    keys = ("epoch", *REPORT_KEYS)
    print(json.dumps({k: m.get(k) for k in keys}, indent=2))
    if args.json:
        from tailmix.io import write_json

        write_json(args.json, m)
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from tailmix.registry import STRATEGIES, load_builtins

    load_builtins()
    width = max(len(n) for n in STRATEGIES)
    for name, s in STRATEGIES.items():
        print(f"{name:<{width}}  {s.summary}" + (f" [{s.paper}]" if s.paper else ""))
    return 0


def cmd_margins(args: argparse.Namespace) -> int:
    from tailmix.tools.analysis import margins_for_run

    try:
        path = margins_for_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    except ParameterError as e:
        raise _flag_names(e, {"run_dir": "RUN"}) from e
    print(f"margins written to {path}")
    return 0


def cmd_neighbours(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tailmix.io import write_json
    from tailmix.tools.analysis import neighbour_balance

    _json_file(args.json)
    result = neighbour_balance(build_config(args))
    table = Table(title=f"{result['strategy']}: {result['k']} neighbours from "
                  f"{'the same class' if result['partner'] == 'knn_class' else 'any class'}, "
                  f"{result['rule']} labels",
                  caption="label mass: expected labels of the class per epoch, once every "
                  f"class is oversampled to {result['n_max']} examples")
    for col in ("class", "n", "own class", "most other", "share", "label mass"):
        table.add_column(col, justify="left" if col in ("class", "most other") else "right")
    for r in result["classes"]:
        table.add_row(r["class"], str(r["count"]), f"{100 * r['own_share']:.1f}%",
                      r["top_other"], f"{100 * r['top_other_share']:.1f}%",
                      f"{r['label_mass']:.0f}")
    Console().print(table)
    if args.json:
        print(f"written to {write_json(args.json, result)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tailmix.tools.report import build_report

    out = Path(args.out) if args.out else None
    if args.force and out is None:
        raise ParameterError("--force", "given with -o/--out naming the page or folder whose "
                             "report files it writes over", "no -o/--out")
    html, md = build_report([Path(r) for r in args.run_dirs], out, explicit=out is not None,
                            force=args.force)
    print(f"report written to {html}" + (f"\nsummary: {md}" if md is not None else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config or a suite (every cell, and where its data is) without loading
    data or training."""
    from tailmix.pipeline.config import load_config_file, read_yaml, resolve

    path = Path(args.target)
    if path.is_file():
        spec = read_yaml(path, name="config")  # malformed YAML: the file, line and column
        if isinstance(spec, dict) and "grid" in spec:
            from tailmix.tools.bench import load_suite, locate_data

            if args.set:
                raise ParameterError("--set", "a config to set keys of (a suite sets its "
                                     "runs' keys in its own overrides)",
                                     f"{path}: a suite")
            suite = load_suite(path, data_root=args.data_root)
            locate_data(suite)  # what `tailmix bench` meets before its first run trains
            print(f"{path}: suite {suite.name!r}, {len(suite.cells)} runs, all valid, "
                  "every run's data found")
            return 0
    cfg = load_config_file(args.target)
    if args.data_root:
        cfg.setdefault("dataset", {})["root"] = args.data_root
    _apply_sets(cfg, args.set)
    _refuse_unread_root(cfg, args.data_root)
    spec = resolve(cfg)
    from tailmix.data.locate import locate_source

    d = spec.dataset  # where `tailmix train` would find it, found without reading it
    locate_source(d["name"], root=d["root"], download=d["download"], **d["options"])
    print(f"{args.target}: valid ({spec.strategy} on {spec.dataset['name']}, "
          f"{spec.epochs} epochs), its data found")
    for note in spec.notes:
        print(note)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tailmix.pipeline.config import read_yaml
    from tailmix.tools.bench import load_suite, run_suite

    if Path(args.suite).is_file():
        read_yaml(args.suite, name="suite")  # malformed YAML: the file, line and column
    suite = load_suite(args.suite, data_root=args.data_root)
    out = run_suite(suite, _out_folder(args.out), train_missing=not args.table_only,
                    retrain_stale=args.retrain_stale)
    print((out / "table.md").read_text())
    print(f"tables and reports written to {out}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _flag_names(e: ParameterError, flags: dict[str, str]) -> ParameterError:
    """A library error re-named after the command-line flag that set the parameter."""
    return ParameterError(flags.get(e.name, e.name), e.expected, e.got)


def _parse_prior(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ParameterError("--prior", "comma-separated class probabilities, one per class "
                             "(e.g. 0.5,0.3,0.2)", text) from None


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict the class of every input with a trained run; write a CSV table."""
    from tailmix.io import check_output
    from tailmix.tools.predict import Predictor

    flags = {"checkpoint": "--checkpoint", "device": "--device", "batch_size": "--batch-size",
             "adjust": "--adjust", "prior": "--prior", "run": "RUN", "inputs": "INPUTS",
             "out": "--out", "weights": "--weights"}
    try:
        check_output(args.out, inputs=[*args.inputs, *_checkpoints_of(args.run)],
                     ours=_prediction_table, force=args.force, name="out")
        prior = _parse_prior(args.prior)
        pred = Predictor.from_run(args.run, device=args.device, checkpoint=args.checkpoint,
                                  batch_size=args.batch_size, weights=args.weights)
        rows = pred.predict_table(args.inputs, adjust=args.adjust, prior=prior, out=args.out)
    except ParameterError as e:
        raise _flag_names(e, flags) from e
    how = (f", post-hoc adjusted (tau {args.adjust:g})" if args.adjust is not None
           else ", for the given test prior" if prior is not None else "")
    print(f"wrote {len(rows)} predictions to {args.out} ({len(pred.classes)} classes{how})")
    return 0


def _checkpoints_of(run: str) -> list[Path]:
    """The run's checkpoint files (a run folder's, or the .pt file named)."""
    path = Path(run)
    return sorted((path / "checkpoints").glob("*.pt")) if path.is_dir() else [path]


def _prediction_table(path: Path) -> bool:
    """Whether ``path`` is a table an earlier ``predict`` wrote (its header)."""
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().startswith("input,prediction,probability")
    except (OSError, UnicodeDecodeError):
        return False


def cmd_export(args: argparse.Namespace) -> int:
    """Export a trained run's network (with its normalisation) to ONNX or TorchScript."""
    from tailmix.tools.export import export

    flags = {"format": "--format", "checkpoint": "--checkpoint", "run": "RUN", "out": "--out",
             "weights": "--weights"}
    try:
        export(args.run, out=args.out, format=args.format, checkpoint=args.checkpoint,
               force=args.force, weights=args.weights)
    except ParameterError as e:
        raise _flag_names(e, flags) from e
    return 0


def _add_plugins_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", nargs="+", metavar="MODULE",
                   help="modules to import first (from the working folder or installed) for "
                        "a run that uses your own registered parts: a checkpoint or run "
                        "folder that names plugins imports none of them itself")


def make_parser() -> argparse.ArgumentParser:
    """The ``tailmix`` command's parser; the lists in its help come from the registries."""
    choices = _choices()
    parser = _Parser(
        prog="tailmix",
        description="Deep imbalanced classification: train, evaluate, analyse and compare "
                    "strategies on long-tailed data.",
    )
    parser.add_argument("--version", action="version", version=f"tailmix {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error "
                        "instead of its one line (anywhere on the line; or set "
                        f"{DEBUG_VARIABLE}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="`tailmix COMMAND --help` lists its arguments")
    # Commands that read a user's own config import its plugins from the working folder.
    own = {"own_config": True}

    p = sub.add_parser("train", help="train one configuration")
    _add_config_flags(p, choices)
    p.add_argument("--out", "-o",
                   help="run folder (default runs/<dataset>-r<ratio>/<strategy>-s<seed>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--allow-changes", action="store_true", help="with --resume: go on with "
                   "a config.yaml edited since the checkpoint (the changed keys are recorded "
                   "in history.jsonl); without it a change is refused")
    p.add_argument("--force", action="store_true", help="train even when --out holds a run "
                   "or other files: they are moved aside to OUT.old-N first")
    _add_plugins_flag(p)
    p.set_defaults(func=cmd_train, **own)

    p = sub.add_parser("compare", help="train several strategies and compare them")
    _add_config_flags(p, choices, strategy=False)
    p.add_argument("--strategies", nargs="+", required=True, metavar="NAME",
                   help="the strategies to train, one run each (separated by spaces or "
                   f"commas): {choices['strategies']}")
    p.add_argument("--strategy", action=_Refused, expected="--strategies NAME [NAME ...] "
                   "(compare trains one run for each strategy it is given)")
    p.add_argument("--out", "-o", required=True, help="folder for the runs and the report")
    p.add_argument("--force", action="store_true", help="retrain finished runs (the old "
                   "ones are moved aside, not deleted)")
    p.set_defaults(func=cmd_compare, **own)

    p = sub.add_parser("eval", help="re-evaluate a run's checkpoint on its test set")
    p.add_argument("run", metavar="RUN", help="run folder (its checkpoints/last.pt, or "
                   "best.pt with --checkpoint best) or checkpoint .pt file")
    p.add_argument("--checkpoint", default="last", help="last or best (for a run folder)")
    p.add_argument("--weights", default="model", help="model (the network's own, "
                   "default), or ema or swa: an average the run kept (its ema or swa "
                   "config section)")
    p.add_argument("--data-root", help="override the dataset root stored in the checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--json", type=Path, help="also write all metrics to this JSON file")
    _add_plugins_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="run a benchmark suite (resumable) and tabulate it")
    p.add_argument("suite", type=Path, help="suite YAML, e.g. benchmarks/suites/*.yaml")
    p.add_argument("--data-root", help="override the suite's data root")
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--table-only", action="store_true",
                   help="only rebuild tables and reports from finished runs")
    p.add_argument("--retrain-stale", action="store_true",
                   help="retrain runs whose config.yaml differs from the suite's current "
                   "config for them (default: refuse, naming the run and the first "
                   "difference); the old run is moved aside, not deleted")
    p.set_defaults(func=cmd_bench, **own)

    p = sub.add_parser("check", help="validate a config or a benchmark suite (every run) "
                       "without loading data or training")
    p.add_argument("target", help="config YAML, shipped config name, or suite YAML")
    p.add_argument("--data-root", help="override the dataset root")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key before checking, as `tailmix train --set` does "
                   "(configs only)")
    p.set_defaults(func=cmd_check, **own)

    p = sub.add_parser("strategies", help="list the named strategies")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("margins", help="per-class margin analysis of a run")
    p.add_argument("run_dir", metavar="RUN", type=Path, help="run folder; margins.json is "
                   "written into it")
    p.add_argument("--checkpoint", default="last", help="last or best")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    _add_plugins_flag(p)
    p.set_defaults(func=cmd_margins)

    p = sub.add_parser("neighbours", help="where a SMOTE-style mixer's partners come from and "
                       "the label balance that results")
    _add_config_flags(p, choices, training=False)
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_neighbours, **own)

    p = sub.add_parser("report", help="HTML + Markdown report of one or more runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--out", "-o", help="output folder, or an .html path for the page alone "
                   "(default: the run folder for one run; a report-<a>-vs-<b> folder beside "
                   "the runs for several)")
    p.add_argument("--force", action="store_true", help="with -o: write over a page, summary "
                   "or figure folder there that tailmix report did not write")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="predict classes of images or feature vectors with a "
                       "trained run; writes a CSV table")
    p.add_argument("run", metavar="RUN", help="run folder or checkpoint .pt file")
    p.add_argument("inputs", metavar="INPUTS", nargs="+", help="image files, folders of "
                   "images (searched recursively), a .npy array or a .csv of feature vectors; "
                   "images of another size are resized and centre-cropped to the network's")
    p.add_argument("--out", "-o", required=True, help="the CSV to write: input, prediction, "
                   "probability, p_<class>...")
    p.add_argument("--adjust", type=float, metavar="TAU", help="post-hoc logit adjustment: "
                   "logits - TAU * log(training prior); 1 suits a balanced test set")
    p.add_argument("--prior", metavar="P1,P2,...", help="the test set's class prior, one "
                   "value per class (normalised): logits + log(prior) - log(training prior)")
    p.add_argument("--checkpoint", default="last", help="last or best (for a run folder)")
    p.add_argument("--weights", default="model", help="model (the network's own, "
                   "default), or ema or swa: an average the run kept (its ema or swa "
                   "config section)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, help="inputs per forward pass (default: the "
                   "run's eval.batch_size)")
    p.add_argument("--force", action="store_true", help="write over --out even when it is "
                   "an input, a run's own file or a file this command did not write")
    _add_plugins_flag(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a trained run's network to ONNX or TorchScript "
                       "(raw inputs in, logits out), checked against the checkpoint")
    p.add_argument("run", metavar="RUN", help="run folder or checkpoint .pt file")
    p.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--out", "-o", required=True, help="the file to write; the class names go "
                   "to FILE.classes.json too")
    p.add_argument("--checkpoint", default="last", help="last or best (for a run folder)")
    p.add_argument("--weights", default="model", help="model (the network's own, "
                   "default), or ema or swa: an average the run kept (its ema or swa "
                   "config section)")
    p.add_argument("--force", action="store_true", help="write over --out even when it is "
                   "an input, a run's own file or a file this command did not write")
    _add_plugins_flag(p)
    p.set_defaults(func=cmd_export)
    return parser


def _file_error(e: OSError) -> str | None:
    """One line for an ``OSError`` about a file (its path, what went wrong, what to do);
    None for one that names no file and is not a full or read-only disk."""
    from tailmix.io import FILE_ERROR_HINTS, os_error_text

    if e.filename is None and e.errno not in FILE_ERROR_HINTS:
        return None
    return f"{e.filename if e.filename is not None else 'a file'}: {os_error_text(e)}"


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupt leaves, in the words of the command it stopped."""
    if args.command == "train":
        run = getattr(args, "run_folder", None)
        if run is not None and (Path(run) / "checkpoints" / "last.pt").is_file():
            return f"interrupted; `tailmix train --resume {run}` continues the run"
        return "interrupted before the run's first checkpoint: there is nothing to resume"
    if args.command in ("compare", "bench"):
        return ("interrupted; the same command again keeps the finished runs and continues "
                "the unfinished one from its last checkpoint")
    return "interrupted"


#: Set to 1 (or pass --debug) to see the traceback of an error instead of its one line.
DEBUG_VARIABLE = "TAILMIX_DEBUG"


@contextlib.contextmanager
def _working_folder_importable(wanted: bool) -> Iterator[None]:
    """The working folder first on ``sys.path`` while a command reads a user's own config,
    as ``python -m`` puts it there, so that the config's ``plugins`` (modules beside it)
    import from the installed ``tailmix`` command too. Commands that read a checkpoint's
    config do not get it."""
    here = os.getcwd()
    add = wanted and (not sys.path or sys.path[0] not in ("", here))
    if add:
        sys.path.insert(0, here)
    try:
        yield
    finally:
        if add and here in sys.path:
            sys.path.remove(here)


def main(argv: list[str] | None = None) -> int:
    """Run the ``tailmix`` command; return its exit status.

    A user's mistake (a parameter, a dataset's files, a file that cannot be read or
    written) is one ``tailmix: error:`` line: status 2, or 1 for a run that fails as it
    trains or a file it cannot write. ``--debug`` anywhere on the line, or
    ``TAILMIX_DEBUG=1``, shows the traceback instead, for a bug report. An interrupt
    (Ctrl-C) at any moment is one line saying what it leaves, and status 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parsed: list[argparse.Namespace] = []
    command = next((a for a in argv if not a.startswith("-")), None)

    def starting(signum: int, frame: Any) -> None:
        # Ctrl-C while the command starts (importing torch and the registries): nothing is
        # written yet, and an import stopped half-way can leave a library broken for the
        # rest of the process, so the process ends here, at once.
        sys.stderr.write(f"tailmix: {_interrupted(argparse.Namespace(command=command))}\n")
        os._exit(130)

    try:
        previous = signal.signal(signal.SIGINT, starting)
    except ValueError:  # not the main thread: signals stay as they are
        previous = None

    def started() -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    try:
        return _run(argv, parsed, debug=debug, started=started)
    except KeyboardInterrupt:
        if debug:
            raise
        # Before the line is parsed, its first word is the command.
        args = parsed[0] if parsed else argparse.Namespace(
            command=next((a for a in argv if not a.startswith("-")), None))
        print(f"tailmix: {_interrupted(args)}", file=sys.stderr)
        return 130


def _run(argv: list[str], parsed: list[argparse.Namespace], *, debug: bool,
         started: Callable[[], None]) -> int:
    try:  # ``started``: the command's own work begins, Ctrl-C is KeyboardInterrupt again
        from tailmix.data.download import DatasetError
        from tailmix.pipeline.engine import TrainingError
        from tailmix.registry import import_plugins

        parser = make_parser()
    finally:
        started()
    args, unknown = parser.parse_known_args(argv)
    parsed.append(args)
    if unknown:  # named after the command, whose help lists what it takes
        parser.exit(2, f"tailmix: error: unrecognized arguments: {' '.join(unknown)} "
                    f"(`tailmix {args.command} --help` lists the arguments)\n")
    try:
        plugins = getattr(args, "plugins", None)
        with _working_folder_importable(getattr(args, "own_config", False) or bool(plugins)):
            import_plugins(plugins, param="--plugins")
            return args.func(args)
    except (ParameterError, DatasetError) as e:  # DatasetError: a dataset's files
        if debug:
            raise
        print(f"tailmix: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except TrainingError as e:
        if debug:
            raise
        print(f"tailmix: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except OSError as e:
        line = _file_error(e)
        if line is None or debug:
            raise
        print(f"tailmix: error: {_one_line(line)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
