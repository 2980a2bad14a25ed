"""Numbers that a change of code must not move, recorded and checked.

Two parts:

- **digits**: every catalogue strategy (and a few knob settings the catalogue does not reach)
  trained for a few epochs on the embedded digits data, seeded, on the CPU with two threads;
  recorded per epoch (lr, training loss and accuracy, test metrics on evaluated epochs) and
  at the end (every final metric). ``record`` writes them to ``tests/data/regression_digits.json``;
  ``check`` retrains and compares every value exactly. ``tests/test_api.py`` runs
  the same check in the test suite.
- **cifar**: the first epochs of every committed CIFAR-10-LT run of the CPU suite
  (``results/cifar10-lt-cpu/runs``), retrained from its own ``config.yaml`` and compared
  exactly with its committed ``history.jsonl`` (lr, training loss, training accuracy).
  Needs the suite's data (``--data-root``, default the root in each config).

Usage::

    python scripts/regression.py record            # digits -> tests/data/regression_digits.json
    python scripts/regression.py check             # digits, retrain and compare
    python scripts/regression.py cifar --epochs 2  # committed CIFAR cells, first 2 epochs

The record carries the fingerprint of the machine that made it (CPU vector capability, torch
version, threads). On a machine with the same fingerprint every value must be equal. On
another, kernels round differently in the last bits, and over a few epochs of training those
bits compound (a neighbour or an argmax flips, and the run takes another path), so there
the comparison keeps what the first steps decide: every epoch's lr exactly, and the first
epoch's training loss and accuracy within :data:`TOLERANCE` (relative). That still catches a
change of algorithm that acts from the start (``tests/test_api.py`` shows two).
"""

from __future__ import annotations

import argparse
import json
import math
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

# On a machine of another fingerprint the first epoch agrees within this relative tolerance:
# measured between an AVX2 and an AVX-512 CPU, the largest difference of a first epoch's
# training loss was 1.9e-5 (DeepSMOTE, whose autoencoder trains before it) and most were 0
# or 1e-7; later epochs drifted by up to 6 % as the runs diverged.
TOLERANCE = {"rel_tol": 1e-3, "abs_tol": 1e-9}


def fingerprint() -> dict[str, Any]:
    """What the last digits of the record depend on: the CPU's vector capability, the torch
    build and the number of threads (the order of floating-point sums)."""
    return {"cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "torch": torch.__version__, "threads": THREADS}


THREADS = 2

# name -> overrides of the digits config. Every catalogue strategy, then knob settings.
CASES: dict[str, dict[str, Any]] = {
    "ERM": {}, "CB": {}, "DRW": {}, "Focal": {}, "LDAM-DRW": {}, "LA": {}, "BS": {},
    "SMOTE": {}, "Borderline-SMOTE": {}, "Borderline-SMOTE-2": {}, "ADASYN": {},
    "soft-SMOTE": {}, "Mixup": {},
    "Mixup-DRW": {}, "Remix-DRW": {},
    "MAMix-DRW": {}, "Balanced-MixUp": {}, "CMO-DRW": {}, "CMO-BS": {}, "UniMix": {},
    "MiSLAS": {}, "GLMC": {},
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
    # The sections beyond the catalogue: SAM from half-way, ImbSAM, two views with
    # RandAugment and cutout, a frozen start with the backbone's own lr, a norm cap, cRT.
    "knobs/sam-from-half": {"strategy": "MAMix-DRW", "sam": {"rho": 0.05, "start": 0.5}},
    "knobs/imbsam": {"strategy": "ERM", "sam": {"rho": 0.05, "tail_below": 40}},
    "knobs/two-views-randaugment-cutout": {
        "strategy": "Mixup", "consistency": {"weight": 1.0, "dim": 16},
        "augment": {"policy": "randaugment", "cutout": 3}},
    "knobs/crt-frozen-start-max-norm": {
        "strategy": "ERM", "crt": {"epochs": 2, "lr": 0.05},
        "model": {"arch": "small_cnn", "freeze_backbone_epochs": 1, "backbone_lr": 0.01,
                  "max_norm": 1.0},
        "eval": {"tau_norm": 0.5}},
    "knobs/vectors-smote": {"strategy": "SMOTE", "model": {"arch": "mlp"},
                            "dataset": {"name": "arrays"}},
    "knobs/feature-borderline-soft": {"strategy": "Borderline-SMOTE",
                                      "mixer": {"partner": "knn_any", "rule": "soft",
                                                "space": "feature", "m_neighbors": 6}},
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
    if "DRW" in cfg["strategy"]:  # recorded with DRW from the x0.01 step at epoch 3 of 4
        cfg["weights"] = {"start_epoch": 3}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _history_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: h[k] for k in HISTORY_KEYS if k in h} for h in history]


def run_config(cfg: dict[str, Any], name: str, out: Path | None = None) -> dict[str, Any]:
    """Train one digits config (in ``out``, or a temporary folder) with the record's threads;
    its history rows and final metrics."""
    import tempfile

    from tailmix import train

    torch.set_num_threads(THREADS)
    if out is None:
        with tempfile.TemporaryDirectory() as tmp:
            return run_config(cfg, name, Path(tmp))
    data = digit_vectors() if cfg["dataset"]["name"] == "arrays" else None
    folder = out / name.replace("/", "_")
    result = train(cfg, folder, data=data, log=lambda _: None)
    lines = (folder / "history.jsonl").read_text().splitlines()
    history = [json.loads(x) for x in lines if x.strip()]
    return {"history": _history_rows(history), "final": dict(result["final"])}


def run_case(name: str, out: Path) -> dict[str, Any]:
    return run_config(case_config(name), name, out)


def digits(names: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    torch.set_num_threads(THREADS)
    names = names or list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        return {name: run_case(name, Path(tmp)) for name in names}


def compare(expected: Any, got: Any, path: str = "", *, rel_tol: float = 0.0,
            abs_tol: float = 0.0) -> list[str]:
    """Every difference between two JSON-like values, as 'path: expected != got'. Floats
    differ when they are further apart than ``rel_tol`` and ``abs_tol`` (as in
    :func:`math.isclose`); with both 0, when they are not equal."""
    kw = {"rel_tol": rel_tol, "abs_tol": abs_tol}
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(expected) | set(got)):
            if k not in got or k not in expected:
                out.append(f"{path}/{k}: {expected.get(k, '<missing>')!r} != "
                           f"{got.get(k, '<missing>')!r}")
            else:
                out += compare(expected[k], got[k], f"{path}/{k}", **kw)
        return out
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{path}: length {len(expected)} != {len(got)}"]
        return [d for i, (a, b) in enumerate(zip(expected, got, strict=True)) for d in
                compare(a, b, f"{path}[{i}]", **kw)]
    if isinstance(expected, float) and isinstance(got, float | int) and not isinstance(
            got, bool):
        same = math.isclose(expected, got, **kw) if rel_tol or abs_tol else expected == got
        return [] if same else [f"{path}: {expected!r} != {got!r}"]
    return [] if expected == got else [f"{path}: {expected!r} != {got!r}"]


def _schedule_and_first_epoch(cases: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each case's lr at every epoch, and its first epoch's row."""
    return ({n: [h["lr"] for h in c["history"]] for n, c in cases.items()},
            {n: c["history"][0] for n, c in cases.items()})


def check_digits(record: dict[str, Any], got: dict[str, Any]) -> tuple[list[str], str]:
    """The differences between a record and a new run of its cases, and how they were
    compared: every value exactly on a machine of the record's fingerprint; elsewhere the lr
    schedules exactly and the first epochs within :data:`TOLERANCE`."""
    here = fingerprint()
    if record["fingerprint"] == here:
        return compare(record["cases"], got), "exactly (same machine fingerprint)"
    want_lr, want_first = _schedule_and_first_epoch(record["cases"])
    got_lr, got_first = _schedule_and_first_epoch(got)
    diffs = compare(want_lr, got_lr, "/lr") + compare(want_first, got_first, "/first_epoch",
                                                      **TOLERANCE)
    return diffs, (f"as a machine of another fingerprint (recorded on "
                   f"{record['fingerprint']}, here {here}): lr schedules exactly, first "
                   f"epochs within {TOLERANCE}")


def first_epochs(config: dict[str, Any], epochs: int) -> list[dict[str, Any]]:
    """History rows of the first ``epochs`` epochs of ``config`` (whose schedule stays that
    of the whole run), trained without a run folder."""
    from tailmix.pipeline.build import build_run

    run = build_run(config, None, log=lambda _: None)
    return [run.trainer.train_epoch(e) for e in range(epochs)]


def cifar(epochs: int, data_root: str | None, only: list[str] | None) -> int:
    from tailmix.pipeline.config import load_config_file

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
        record = {"fingerprint": fingerprint(), "cases": digits()}
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
        print(f"recorded {len(CASES)} cases in {RECORD.relative_to(ROOT)}")
        return 0
    if args.command == "check":
        record = json.loads(RECORD.read_text())
        names = args.cases or list(record["cases"])
        diffs, how = check_digits({**record, "cases": {n: record["cases"][n] for n in names}},
                                  digits(names))
        print("\n".join(diffs[:40]) if diffs else f"{len(names)} cases agree {how}")
        return 1 if diffs else 0
    return cifar(args.epochs, args.data_root, args.only)


if __name__ == "__main__":
    sys.exit(main())
