"""Build a report and photograph it with a headless Chromium, to check how it looks.

Without run folders, synthetic runs are written (a 10-class and a 100-class long-tailed
problem, two strategies each) and reports are built for one run and for a comparison. With
run folders, one report is built over all of them. The report files and the screenshots go
to the output folder (a new temporary folder unless ``--out`` is given).

Usage::

    python scripts/screenshot_report.py [RUN_DIR ...] [--out FOLDER] [--height PIXELS]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from tailmix.margins import margin_report
from tailmix.metrics import compute_metrics
from tailmix.tools.report import build_report


def long_tailed_counts(num_classes: int, n_max: int, ratio: float) -> list[int]:
    return [math.floor(n_max * ratio ** (-c / (num_classes - 1))) for c in range(num_classes)]


def synthetic_logits(
    labels: torch.Tensor,
    counts: list[int],
    *,
    skill: float,
    prior_bias: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Logits of a fake classifier: true-class boost plus a pull toward large classes."""
    num_classes = len(counts)
    log_prior = torch.log(torch.tensor(counts, dtype=torch.float32) / sum(counts))
    noise = torch.randn(labels.shape[0], num_classes, generator=gen) * 1.3
    boost = skill * torch.nn.functional.one_hot(labels, num_classes).float()
    return noise + boost + prior_bias * log_prior


def write_synthetic_run(
    folder: Path,
    *,
    strategy: str,
    num_classes: int,
    epochs: int,
    seed: int,
    skill: float,
    prior_bias: float,
    with_margins: bool = True,
) -> Path:
    """Write a run folder whose files follow the training loop's formats."""
    gen = torch.Generator().manual_seed(seed)
    counts = long_tailed_counts(num_classes, 500 if num_classes == 10 else 250, 100.0)
    classes = (
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        if num_classes == 10
        else [f"class_{c:02d}" for c in range(num_classes)]
    )
    train_labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    test_labels = torch.arange(num_classes).repeat_interleave(100 if num_classes == 10 else 20)
    train_logits = synthetic_logits(
        train_labels, counts, skill=skill + 2.0, prior_bias=prior_bias, gen=gen
    )
    test_logits = synthetic_logits(test_labels, counts, skill=skill, prior_bias=prior_bias, gen=gen)
    final = compute_metrics(test_logits, test_labels, counts)
    prior = torch.log(torch.tensor(counts, dtype=torch.float32))
    adjusted = compute_metrics(test_logits - prior_bias * prior, test_labels, counts)
    final["posthoc_la"] = {k: adjusted[k] for k in ("top1", "balanced_accuracy", "few_shot")}
    final["posthoc_la"]["tau"] = prior_bias

    history = []
    step_epochs = (int(epochs * 0.8), int(epochs * 0.9))
    for epoch in range(1, epochs + 1):
        lr = 0.1 * min(1.0, epoch / 5)
        lr *= 0.01 if epoch > step_epochs[0] else 1.0
        lr *= 0.01 if epoch > step_epochs[1] else 1.0
        progress = 1 - math.exp(-epoch / (epochs / 4))
        jitter = float(torch.randn(1, generator=gen)) * 0.02
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": 2.3 * (1 - 0.75 * progress) + jitter,
            "train_acc": 100 * (0.1 + 0.8 * progress) + 100 * jitter,
            "epoch_time_s": 20.0 + float(torch.rand(1, generator=gen)),
            "images_per_s": 620.0 + 30 * float(torch.rand(1, generator=gen)),
        }
        if epoch % 2 == 0 or epoch == epochs:
            scale = progress if epoch < epochs else 1.0
            row.update(
                top1=final["top1"] * scale + 100 * jitter,
                balanced_accuracy=final["balanced_accuracy"] * scale + 100 * jitter,
                many_shot=(final["many_shot"] or 0) * scale,
                medium_shot=(final["medium_shot"] or 0) * scale,
                few_shot=(final["few_shot"] or 0) * scale**2,
                test_loss=final["nll"] / max(scale, 0.3),
            )
        history.append(row)
    evaluated = [r for r in history if "top1" in r]
    best_row = max(evaluated, key=lambda r: r["top1"])
    best = {k: best_row[k] for k in ("epoch", "top1", "balanced_accuracy", "few_shot")}

    config = {
        "dataset": {
            "name": "cifar10" if num_classes == 10 else "cifar100",
            "profile": "exp",
            "ratio": 100,
            "data_seed": 0,
        },
        "model": {"arch": "resnet32", "head": None},
        "train": {
            "epochs": epochs,
            "batch_size": 128,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 2e-4,
            "seed": seed,
            "device": "auto",
        },
        "eval": {"every": 2, "many_threshold": 100, "few_threshold": 20, "margins": with_margins},
        "strategy": strategy,
    }
    metrics = {
        "final": final,
        "best": best,
        "class_counts": counts,
        "classes": classes,
        "strategy": strategy,
        "dataset": config["dataset"]["name"],
        "epochs": epochs,
        "seed": seed,
        "train_time_s": sum(r["epoch_time_s"] for r in history),
        "device": "cpu",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if with_margins:
        margins = margin_report(train_logits, train_labels, test_logits, test_labels, counts)
        (folder / "margins.json").write_text(json.dumps(margins, indent=2))
    return folder


def synthetic_runs(root: Path) -> dict[str, list[Path]]:
    """Two 10-class runs and two 100-class runs (one of them without margins.json)."""
    return {
        "cifar10": [
            write_synthetic_run(
                root / "c10_erm",
                strategy="ERM",
                num_classes=10,
                epochs=60,
                seed=0,
                skill=3.2,
                prior_bias=0.9,
            ),
            write_synthetic_run(
                root / "c10_mamix",
                strategy="MAMix-DRW",
                num_classes=10,
                epochs=60,
                seed=1,
                skill=3.6,
                prior_bias=0.3,
            ),
        ],
        "cifar100": [
            write_synthetic_run(
                root / "c100_erm",
                strategy="ERM",
                num_classes=100,
                epochs=40,
                seed=2,
                skill=3.0,
                prior_bias=0.9,
            ),
            write_synthetic_run(
                root / "c100_mixup",
                strategy="Mixup-DRW",
                num_classes=100,
                epochs=40,
                seed=3,
                skill=3.3,
                prior_bias=0.4,
                with_margins=False,
            ),
        ],
    }


def screenshot(html_path: Path, png_path: Path, height: int) -> Path:
    """Render ``html_path`` with a headless Chromium into ``png_path``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found; install it (apt-get install -y chromium) and rerun.")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            f"--window-size=1400,{height}",
            html_path.resolve().as_uri(),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    return png_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run folders (default: synthetic)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: temp)")
    parser.add_argument("--height", type=int, default=6000, help="screenshot height in pixels")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="tailmix-report-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.run_dirs:
        reports = {"report": args.run_dirs}
    else:
        runs = synthetic_runs(out / "runs")
        reports = {
            "single_c10": runs["cifar10"][1:],
            "compare_c10": runs["cifar10"],
            "single_c100": runs["cifar100"][:1],
            "compare_c100": runs["cifar100"],
        }
    for name, run_dirs in reports.items():
        html_path, md_path = build_report(run_dirs, out / name)
        shot = screenshot(html_path, out / f"{name}.png", args.height)
        print(f"{name}: {html_path} ({html_path.stat().st_size / 1e6:.1f} MB) -> {shot}")


if __name__ == "__main__":
    main()
