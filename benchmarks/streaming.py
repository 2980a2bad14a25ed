"""Streaming images from disk against holding them in memory.

Writes a long-tailed JPEG folder (default 20,000 training images of 96x96 in 50 classes,
exp profile ratio 10, plus 20 test images a class), then trains one epoch of ResNet-32 on it
twice, each in a fresh process: once streaming (``dataset.in_memory: false``: Pillow decodes
in DataLoader worker processes, random-resized crop to 96x96) and once in memory (every
image decoded first, device-resident ``uint8``). For each it prints images/s of the epoch,
the peak resident memory of the training process and of its largest worker, and, for
streaming, the decode share: the part of the epoch the training loop spent waiting for
decoded batches, and what decoding alone costs per image on one core. A third run streams a
folder a quarter the size, to show that streaming memory does not grow with the data.

Run: python benchmarks/streaming.py [--root DIR] [--images 20000] [--workers auto]
The folders are written under --root (default a temporary folder) and kept for reruns.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import describe
from PIL import Image


def class_counts(total: int, classes: int, ratio: float) -> list[int]:
    shares = ratio ** (-np.arange(classes) / (classes - 1))
    return [max(1, int(n)) for n in np.floor(shares / shares.sum() * total)]


def write_folder(root: Path, *, images: int, classes: int, size: int, test_per_class: int = 20,
                 ratio: float = 10.0) -> list[int]:
    """A SPLIT/CLASS/IMAGE folder of random textured JPEGs (kept if already complete)."""
    counts = class_counts(images, classes, ratio)
    done = root / "complete.json"
    if done.is_file() and json.loads(done.read_text()) == counts:
        return counts
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, per_class in (("train", counts), ("test", [test_per_class] * classes)):
        for c, n in enumerate(per_class):
            folder = root / split / f"c{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = rng.uniform(40, 215, 3)
            freq = 1 + c % 7
            for i in range(n):
                wave = np.sin(2 * np.pi * freq * (xx + rng.uniform()) + 3 * yy)[..., None]
                pixels = colour + 60 * wave + rng.normal(0, 25, (size, size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    folder / f"{i:05d}.jpg", quality=90)
    done.write_text(json.dumps(counts))
    return counts


def child(args: argparse.Namespace) -> None:
    """One epoch in this process; prints one JSON line of figures."""
    import torch

    from tailmix.data.files import decode_image
    from tailmix.pipeline.build import build_run

    torch.manual_seed(0)
    streaming = args.child == "stream"
    cfg = {"dataset": {"name": "imagefolder", "root": str(args.folder), "profile": "original",
                       "in_memory": not streaming, "image_size": args.size,
                       "workers": "auto" if args.workers == "auto" else int(args.workers)},
           "model": {"arch": args.arch}, "strategy": args.strategy,
           "train": {"epochs": 1, "batch_size": args.batch_size, "device": "cpu",
                     "warmup_epochs": 0},
           "eval": {"margins": False}, "log": {"progress": False}}
    start = time.perf_counter()
    run = build_run(cfg, None, log=lambda _: None)
    load_s = time.perf_counter() - start
    step, waited = run.trainer.step, [0.0]
    load = getattr(step, "load", None)

    def timed_load(slices, seed):
        inner = load(slices, seed)
        if inner is None:
            return None

        def gen():
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(inner)
                except StopIteration:
                    return
                waited[0] += time.perf_counter() - t0
                yield item
        return gen()

    if load is not None:
        step.load = timed_load
    row = run.trainer.train_epoch(0)
    out = {"mode": args.child, "images": len(run.data.train_labels),
           "images_per_s": row["images_per_s"], "epoch_s": row["epoch_time_s"],
           "build_s": load_s,
           "wait_share": waited[0] / row["epoch_time_s"] if streaming else 0.0,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    if streaming:
        files = run.data.train_inputs
        names = files.names[:300]
        blobs = [files.reader.read(n) for n in names]
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for b in blobs:
            decode_image(b, args.size, rng=rng)
        per_image = (time.perf_counter() - t0) / len(blobs)
        out["decode_ms_per_image"] = 1000 * per_image
        out["workers"] = files.workers
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--classes", type=int, default=50)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--strategy", default="ERM")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", default="auto")
    p.add_argument("--child", choices=("stream", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    root = args.root or Path(tempfile.gettempdir()) / "tailmix-streaming-bench"
    print(describe())
    print(f"settings: {args.images} training images of {args.size}x{args.size} in "
          f"{args.classes} classes, {args.arch}, {args.strategy}, batch {args.batch_size}, "
          f"workers {args.workers}, one epoch")
    runs = [("stream", args.images), ("memory", args.images), ("stream", args.images // 4)]
    rows = []
    for mode, n in runs:
        folder = root / f"lt-{n}-{args.size}px-{args.classes}c"
        t0 = time.perf_counter()
        write_folder(folder, images=n, classes=args.classes, size=args.size)
        written = time.perf_counter() - t0
        env = {**os.environ, "TAILMIX_CACHE": str(root / "cache")}
        cmd = [sys.executable, __file__, "--child", mode, "--folder", str(folder),
               "--size", str(args.size), "--arch", args.arch, "--strategy", args.strategy,
               "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode:
            sys.exit(f"{mode} run failed:\n{result.stderr[-3000:]}")
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["folder_written_s"] = written
        rows.append(row)
        print(json.dumps(row))
    print()
    print("| mode | training images | img/s | epoch s | peak RSS main (MiB) | peak RSS worker "
          "(MiB) | waiting for decode | decode ms/img (1 core) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        decode = f"{r['decode_ms_per_image']:.2f}" if "decode_ms_per_image" in r else "-"
        wait = f"{100 * r['wait_share']:.0f} %" if r["mode"] == "stream" else "-"
        worker = f"{r['peak_worker_rss_mib']:.0f}" if r["mode"] == "stream" else "-"
        print(f"| {r['mode']} | {r['images']} | {r['images_per_s']:.0f} | {r['epoch_s']:.1f} | "
              f"{r['peak_rss_mib']:.0f} | {worker} | {wait} | {decode} |")


if __name__ == "__main__":
    main()
