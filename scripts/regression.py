"""Numbers that a change of code must not move, recorded and checked.

Two parts:

- **digits**: every catalogue strategy (and a few knob settings the catalogue does not reach)
  trained for a few epochs on the embedded digits data, seeded, on the CPU with two threads;
  recorded per epoch (lr, training loss and accuracy, test metrics on evaluated epochs) and
  at the end (every final metric). ``record`` writes them to ``tests/data/regression_digits.json``;
  ``check`` retrains and compares every value exactly. ``tests/test_regression.py`` runs
  the same check in the test suite.
- **cifar**: the first epochs of every committed CIFAR-10-LT run of the CPU suite
  (``results/cifar10-lt-cpu/runs``), retrained from its own ``config.yaml`` and compared
  exactly with its committed ``history.jsonl`` (lr, training loss, training accuracy).
  Needs the suite's data (``--data-root``, default the root in each config).

Usage::

    python scripts/regression.py record            # digits -> tests/data/regression_digits.json
    python scripts/regression.py check             # digits, retrain and compare
    python scripts/regression.py cifar --epochs 2  # committed CIFAR cells, first 2 epochs

Exact equality holds on one machine and one torch build; other CPUs may differ in the last
digits (kernel rounding).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "data" / "regression_digits.json"
CIFAR_RUNS = ROOT / "results" / "cifar10-lt-cpu" / "runs"
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "top1", "balanced_accuracy",
                "many_shot", "medium_shot", "few_shot", "test_loss")

_DIGITS = {
    "dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
    "model": {"arch": "small_cnn"},
    "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1,
              "weight_decay": 5e-4, "precision": "fp32", "device": "cpu", "seed": 3},
    "eval": {"every": 2, "many_threshold": 60},
    "log": {"progress": False},
}

# name -> overrides of the digits config. Every catalogue strategy, then knob settings.
CASES: dict[str, dict[str, Any]] = {
    "ERM": {}, "CB": {}, "DRW": {}, "Focal": {}, "LDAM-DRW": {}, "LA": {}, "BS": {},
    "SMOTE": {}, "soft-SMOTE": {}, "Mixup": {}, "Mixup-DRW": {}, "Remix-DRW": {},
    "MAMix-DRW": {},
    "M2m": {"generative": {"warmup_epochs": 2, "steps": 3}},
    "DeepSMOTE": {"generative": {"ae_epochs": 2, "latent_dim": 16, "width": 8}},
    "knobs/feature-knn": {"strategy": "soft-SMOTE",
                          "mixer": {"space": "feature", "refresh_every": 2}},
    "knobs/cutmix-example": {"strategy": "MAMix-DRW",
                             "mixer": {"input_mode": "cutmix", "lam_per": "example",
                                       "alpha": 0.4}},
    "knobs/class-balanced-anchors": {"strategy": "Remix-DRW",
                                     "mixer": {"anchors": "class_balanced"}},
    "knobs/sqrt-sampler-focal": {"strategy": "Focal", "sampler": {"name": "sqrt"},
                                 "weights": {"name": "inverse"}},
    "knobs/vectors-mixup": {"strategy": "Mixup", "model": {"arch": "mlp"},
                            "dataset": {"name": "arrays"}},
    "knobs/vectors-smote": {"strategy": "SMOTE", "model": {"arch": "mlp"},
                            "dataset": {"name": "arrays"}},
    "knobs/vectors-m2m": {"strategy": "M2m", "model": {"arch": "mlp"},
                          "dataset": {"name": "arrays"},
                          "generative": {"warmup_epochs": 2, "steps": 3}},
}


def digit_vectors():
    """The digits data as float feature vectors (64 pixel values in [0, 1])."""
    from tailmix.data import from_arrays, load_source

    raw = load_source("digits")
    flat = [a.reshape(len(a), -1).astype("float32") / 255.0 for a in (raw.train_x, raw.test_x)]
    return from_arrays(flat[0], raw.train_y, flat[1], raw.test_y, classes=raw.classes)


def case_config(name: str) -> dict[str, Any]:
    over = dict(CASES[name])
    cfg = json.loads(json.dumps(_DIGITS))
    cfg["strategy"] = over.pop("strategy", name)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _history_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: h[k] for k in HISTORY_KEYS if k in h} for h in history]


def run_case(name: str, out: Path) -> dict[str, Any]:
    from tailmix import train

    cfg = case_config(name)
    data = digit_vectors() if cfg["dataset"]["name"] == "arrays" else None
    result = train(cfg, out / name.replace("/", "_"), data=data, log=lambda _: None)
    lines = (out / name.replace("/", "_") / "history.jsonl").read_text().splitlines()
    history = [json.loads(x) for x in lines if x.strip()]
    final = {k: v for k, v in result["final"].items()}
    return {"history": _history_rows(history), "final": final}


def digits(names: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    torch.set_num_threads(2)
    names = names or list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        return {name: run_case(name, Path(tmp)) for name in names}


def compare(expected: Any, got: Any, path: str = "") -> list[str]:
    """Every difference between two JSON-like values, as 'path: expected != got'."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(expected) | set(got)):
            if k not in got or k not in expected:
                out.append(f"{path}/{k}: {expected.get(k, '<missing>')!r} != "
                           f"{got.get(k, '<missing>')!r}")
            else:
                out += compare(expected[k], got[k], f"{path}/{k}")
        return out
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{path}: length {len(expected)} != {len(got)}"]
        return [d for i, (a, b) in enumerate(zip(expected, got, strict=True)) for d in
                compare(a, b, f"{path}[{i}]")]
    return [] if expected == got else [f"{path}: {expected!r} != {got!r}"]


def first_epochs(config: dict[str, Any], epochs: int) -> list[dict[str, Any]]:
    """History rows of the first ``epochs`` epochs of ``config`` (whose schedule stays that
    of the whole run), trained without a run folder."""
    from tailmix.build import build_run

    run = build_run(config, None, log=lambda _: None)
    return [run.trainer.train_epoch(e) for e in range(epochs)]


def cifar(epochs: int, data_root: str | None, only: list[str] | None) -> int:
    from tailmix.config import load_config_file

    torch.set_num_threads(2)
    failures = 0
    for run_dir in sorted(CIFAR_RUNS.glob("*/*")):
        label = f"{run_dir.parent.name}/{run_dir.name}"
        if only and label not in only and run_dir.name not in only:
            continue
        cfg = load_config_file(run_dir / "config.yaml")
        for k in ("composition", "class_counts"):
            cfg.pop(k, None)
        if data_root:
            cfg["dataset"]["root"] = data_root
        cfg["log"]["progress"] = False
        lines = (run_dir / "history.jsonl").read_text().splitlines()[:epochs]
        want = [{k: json.loads(x)[k] for k in ("epoch", "lr", "train_loss", "train_acc")}
                for x in lines]
        got = [{k: h[k] for k in ("epoch", "lr", "train_loss", "train_acc")}
               for h in first_epochs(cfg, epochs)]
        diffs = compare(want, got)
        failures += bool(diffs)
        print(f"{label}: {'identical' if not diffs else 'DIFFERENT'} over {epochs} epochs"
              + "".join(f"\n  {d}" for d in diffs[:8]), flush=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("record", help="train the digits cases and write the record")
    c = sub.add_parser("check", help="retrain the digits cases and compare with the record")
    c.add_argument("cases", nargs="*", help="case names (default: all)")
    q = sub.add_parser("cifar", help="first epochs of the committed CIFAR-10-LT runs")
    q.add_argument("--epochs", type=int, default=2)
    q.add_argument("--data-root")
    q.add_argument("--only", nargs="*", help="run folders (e.g. cifar10-r100/ERM-s0)")
    args = p.parse_args(argv)
    if args.command == "record":
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(digits(), indent=1) + "\n")
        print(f"recorded {len(CASES)} cases in {RECORD.relative_to(ROOT)}")
        return 0
    if args.command == "check":
        want = json.loads(RECORD.read_text())
        names = args.cases or list(want)
        diffs = compare({n: want[n] for n in names}, digits(names))
        print("\n".join(diffs[:40]) if diffs else f"{len(names)} cases identical")
        return 1 if diffs else 0
    return cifar(args.epochs, args.data_root, args.only)


if __name__ == "__main__":
    sys.exit(main())
