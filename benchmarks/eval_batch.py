"""Evaluation speed of ResNet-32 on 32x32 images at several batch sizes.

The network in eval mode under ``torch.inference_mode``, fp32, on normalised CIFAR-sized
inputs already on the device, in both memory formats (contiguous and channels_last). Each
figure is the median over ``--repeats`` passes of ``--images`` images; the batch sizes are
interleaved within each repeat so that load from elsewhere falls on all of them alike.
``eval.batch_size: auto`` takes its CPU and CUDA values from these figures.

Run: python benchmarks/eval_batch.py [--device cpu] [--images 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _machine import describe

from tailmix.models import build_model

SIZES = (32, 64, 128, 256, 512, 1024)


def images_per_second(model: torch.nn.Module, x: torch.Tensor, batch_size: int,
                      channels_last: bool) -> float:
    """Images per second of one pass over ``x`` in batches of ``batch_size``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            model(x[s:s + batch_size].contiguous(memory_format=fmt))
    sync()
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=2048, help="images per timed pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help="comma-separated batch sizes")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    device = torch.device(args.device)
    print(describe())
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"settings: ResNet-32, 32x32 inputs, fp32, inference_mode, device {device} "
          f"(CPU capability {capability}), {args.images} images a pass, median of "
          f"{args.repeats}", flush=True)
    torch.manual_seed(0)
    model = build_model("resnet32", num_classes=10).to(device).eval()
    x = torch.randn(args.images, 3, 32, 32, device=device)
    rates: dict[tuple[bool, int], list[float]] = {}
    for fmt in (False, True):  # warm-up: every shape once
        model.to(memory_format=torch.channels_last if fmt else torch.contiguous_format)
        for b in sizes:
            images_per_second(model, x[:2 * b], b, fmt)
    for r in range(args.repeats):
        for fmt in (False, True):
            model.to(memory_format=torch.channels_last if fmt else torch.contiguous_format)
            for b in sizes:
                rates.setdefault((fmt, b), []).append(images_per_second(model, x, b, fmt))
        print(f"repeat {r + 1}: " + ", ".join(
            f"{b} {'cl' if fmt else 'c'} {v[-1]:.0f}" for (fmt, b), v in rates.items()),
              flush=True)
    print(f"{'batch':>6} {'contiguous img/s':>17} {'channels_last img/s':>20}")
    for b in sizes:
        plain, last = (statistics.median(rates[(fmt, b)]) for fmt in (False, True))
        print(f"{b:>6} {plain:>17.0f} {last:>20.0f}")


if __name__ == "__main__":
    main()
