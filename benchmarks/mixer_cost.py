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
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tailmix.mixing import BatchMixer

# CIFAR-10 at imbalance ratio 100 (DESIGN section 1).
CIFAR10_LT_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_resnet32(num_classes: int) -> nn.Module:
    try:
        from tailmix.models import build_model
    except ImportError:
        return _FallbackResNet32(num_classes)
    return build_model("resnet32", num_classes=num_classes)


class _Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.pad = out_ch - in_ch
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class _FallbackResNet32(nn.Module):
    """ResNet-32 for CIFAR (3 stages x 5 basic blocks, 16/32/64 channels)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        blocks, in_ch = [], 16
        for out_ch, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(5):
                blocks.append(_Block(in_ch, out_ch, stride if i == 0 else 1))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    counts = torch.tensor(CIFAR10_LT_COUNTS, dtype=torch.float32, device=device)
    x = torch.randn(args.batch, 3, 32, 32, generator=g, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (args.batch,), generator=g, device=device)

    mixer = BatchMixer.preset("mamix").to(device)
    model = build_resnet32(num_classes).to(device, memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    x_mix, target = mixer.mix(x, y, counts, g)

    def mix_step():
        return mixer.mix(x, y, counts, g)

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
