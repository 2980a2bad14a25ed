"""What the augmentation policies cost per training batch.

Times :class:`tailmix.data.BatchAugment` on one batch of CIFAR-sized ``uint8`` images
(128 x 3 x 32 x 32): random crop with 4 pixels of padding and horizontal flip alone, then
with each policy (AutoAugment CIFAR-10, RandAugment 2 ops at magnitude 9 of 31,
TrivialAugment) and with Cutout 16, and prints the machine and, per pipeline, the median
milliseconds per batch and images per second. Runs on the CPU and, when there is one, on
the GPU.

Run: ``python benchmarks/augment_cost.py [--device all|cpu|cuda] [--repeats 30] [--threads N]``

Figures: ``benchmarks/README.md``. On a machine shared with a training job, pass
``--threads 1``: two threads on busy cores wait for each other and every figure comes out
many times slower.
"""

from __future__ import annotations

import argparse

import torch
from _machine import describe, median_seconds

from tailmix.data import BatchAugment
from tailmix.data.autoaugment import AutoAugment, RandAugment, TrivialAugment

# CIFAR-10 channel statistics (any values do: normalisation is a fixed cost).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def pipelines() -> dict[str, dict]:
    return {
        "crop+flip": {},
        "+ cutout 16": {"cutout": 16},
        "+ AutoAugment cifar10": {"policy": AutoAugment(policy="cifar10")},
        "+ RandAugment 2 ops, m 9/31": {"policy": RandAugment(num_ops=2, magnitude=9)},
        "+ TrivialAugment 31 bins": {"policy": TrivialAugment(num_bins=31)},
        "+ AutoAugment + cutout 16": {"policy": AutoAugment(), "cutout": 16},
    }


def run(device: torch.device, batch: int, repeats: int) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\ndevice: {device} ({name}), batch {batch} x 3 x 32 x 32 uint8, "
          f"median of {repeats}")
    g = torch.Generator(device=device).manual_seed(0)
    raw = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device,
                        generator=g)
    base = None
    for label, kwargs in pipelines().items():
        augment = BatchAugment(mean=torch.tensor(MEAN), std=torch.tensor(STD), crop_padding=4,
                               hflip=True, **kwargs).to(device)
        seconds = median_seconds(lambda a=augment: a(raw, g), repeats=repeats, warmup=3,
                                 device=device)
        base = seconds if base is None else base
        print(f"  {label:30s} {seconds * 1e3:8.2f} ms/batch  {batch / seconds:10.0f} images/s"
              f"  ({seconds / base:5.1f}x crop+flip)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", help="all (cpu, and cuda if any), cpu, cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30, help="batches timed per pipeline")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: torch's default); 1 on a shared machine")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(describe())
    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    for device in devices:
        run(torch.device(device), args.batch, args.repeats)


if __name__ == "__main__":
    main()
