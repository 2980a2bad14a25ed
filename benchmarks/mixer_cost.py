"""What mixing costs next to the training step it feeds.

Times, on one batch of CIFAR-sized images (128 x 3 x 32 x 32), the MAMix mixer (random
partner, one ``lam`` per batch) against one ResNet-32 training step (forward, backward and an
SGD step, bf16 autocast, channels_last), and prints the machine, both medians and their
ratio. The target is a ratio of at most 2%.

Run: ``python benchmarks/mixer_cost.py [--device cpu|cuda] [--repeats 30]``

Measured on AMD EPYC, 2 cores, torch 2.13.0+cpu, no GPU, the library's ResNet-32, three runs
on a machine shared with other jobs: mixer 0.20-0.97 ms, training step 127-130 ms, ratio
0.16-0.75%. (With another training job competing for both cores: 21 ms and 1103 ms, 1.94%.)
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from _machine import cpu_model, median_seconds

from tailmix.mixing import Mixer
from tailmix.models import build_model

# CIFAR-10 at imbalance ratio 100 (DESIGN section 1).
CIFAR10_LT_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30, help="training steps timed")
    args = parser.parse_args()
    device = torch.device(args.device)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none used"
    if device.type != "cuda" and torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} (not used)"
    print(f"CPU:    {cpu_model()}")
    print(f"cores:  {os.cpu_count()} (torch threads: {torch.get_num_threads()})")
    print(f"torch:  {torch.__version__}")
    print(f"GPU:    {gpu}")
    print(f"device: {device}, batch {args.batch} x 3 x 32 x 32, bf16 autocast, channels_last")

    g = torch.Generator(device=device).manual_seed(0)
    num_classes = len(CIFAR10_LT_COUNTS)
    x = torch.randn(args.batch, 3, 32, 32, generator=g, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (args.batch,), generator=g, device=device)

    mixer = Mixer.preset("mamix", class_counts=CIFAR10_LT_COUNTS).to(device)
    model = build_model("resnet32", num_classes=num_classes)
    model = model.to(device, memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    x_mix, target = mixer(x, y, generator=g)

    def mix_step():
        return mixer(x, y, generator=g)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x_mix)
        loss = torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_mix = median_seconds(mix_step, repeats=20 * args.repeats, warmup=20, device=device)
    t_step = median_seconds(train_step, repeats=args.repeats, warmup=3, device=device)
    print(f"mixer (mamix, random partner): {t_mix * 1e3:8.3f} ms  (median)")
    print(f"ResNet-32 training step:       {t_step * 1e3:8.3f} ms  (median)")
    ratio = t_mix / t_step
    verdict = "within" if ratio <= 0.02 else "ABOVE"
    print(f"ratio: {100 * ratio:.2f}% ({verdict} the 2% target)")


if __name__ == "__main__":
    main()
