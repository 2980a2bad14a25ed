"""Training and evaluation speed of tailmix against a plain PyTorch loop.

ResNet-32 on CIFAR-10-LT (exp, ratio 100: 12,406 training images), batch 128, for ERM and
MAMix-DRW. The plain loop is written the way the reference package trains: fp32, a
DataLoader whose dataset crops, flips and normalises one image at a time, a Python loop over
the examples for the MAMix label weights, and a second forward pass on the clean batch to
log accuracy. tailmix runs its own training epoch (device-resident uint8 data, batched
augmentation, bf16 autocast and channels_last where they help, no host sync in the step).

Both sides run the same number of steps on the same images; seconds per epoch are
extrapolated from the measured steps to the 97 steps of a full epoch.

Run: python benchmarks/train_speed.py [--data-root ZIP_OR_FOLDER] [--steps 40] [--device cpu]
Without --data-root (or when it is missing) random uint8 images with the same class counts
are used; speed does not depend on pixel values.

With ``--outside ZIP`` (an image-folder zip, ``train/<class>/``, ``test/<class>/``) it
measures time outside training instead: a 1-epoch run of the shipped ``cifar10_lt`` config
in fp32, in a fresh process, less its training epoch (loading, evaluation, margins,
checkpoints), against a plain loop's fixed time: starting Python with torch, decoding the
images it trains and tests on with PIL, and one pass over the test set (batch 128, fp32).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _machine import describe
from PIL import Image, ImageOps

from tailmix.data import from_arrays
from tailmix.mixing import Mixer
from tailmix.models import build_model
from tailmix.pipeline.build import Run, build_run
from tailmix.pipeline.steps import predict

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def synthetic_raw():
    rng = np.random.default_rng(0)
    n = sum(COUNTS)
    y = np.repeat(np.arange(10), COUNTS)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    ty = np.repeat(np.arange(10), 1000)
    tx = rng.integers(0, 256, (10000, 3, 32, 32), dtype=np.uint8)
    return from_arrays(x, y, tx, ty, name="cifar10-synthetic")


def tailmix_config(strategy: str, device: str, data_root: str | None) -> dict:
    ds = ({"name": "cifar10", "root": data_root, "ratio": 100} if data_root else
          {"name": "arrays", "profile": "original"})  # the synthetic images, passed in
    return {"dataset": ds, "model": {"arch": "resnet32"}, "strategy": strategy,
            "train": {"epochs": 200, "batch_size": 128, "device": device},
            "log": {"progress": False}, "eval": {"margins": False}}


class Truncated:
    """A sampler's epoch plan cut to its first ``n`` slots: a few timed steps of an epoch."""

    def __init__(self, base, n: int):
        self.base, self.n = base, n

    def epoch_plan(self, epoch: int, seed: int, generator=None):
        idx, mask = self.base.epoch_plan(epoch, seed, generator)
        return idx[: self.n], None if mask is None else mask[: self.n]


def time_tailmix(strategy: str, args, raw) -> tuple[float, Run]:
    cfg = tailmix_config(strategy, args.device, args.data_root)
    run = build_run(cfg, None, data=raw)
    trainer = run.trainer
    sampler = trainer.sampler
    trainer.sampler = Truncated(sampler, 3 * 128)
    trainer.train_epoch(0)  # warm-up
    trainer.sampler = Truncated(sampler, args.steps * 128)
    rates = [trainer.train_epoch(170 + r)["images_per_s"] for r in range(args.repeats)]
    trainer.sampler = sampler
    return statistics.median(rates), run


class PerImageDataset(torch.utils.data.Dataset):
    """One image at a time, as torchvision's RandomCrop(32, padding=4), RandomHorizontalFlip,
    ToTensor and Normalize do it: a PIL image per example (torchvision itself is not
    needed; the operations are the same PIL calls)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std):
        self.x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # HWC, as the reference stores
        self.y = y
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = Image.fromarray(self.x[i])
        img = ImageOps.expand(img, border=4, fill=0)
        dy, dx = random.randint(0, 8), random.randint(0, 8)
        img = img.crop((dx, dy, dx + 32, dy + 32))
        if random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (t.float().div(255) - self.mean) / self.std, int(self.y[i])


def plain_mamix_weights(y, index, counts, lam, q=-0.25):
    """The label weight of each example, one example at a time."""
    w = []
    for i in range(len(y)):
        n_i, n_j = counts[y[i].item()], counts[y[index[i]].item()]
        k_i, k_j = n_i ** q, n_j ** q
        m = k_i / (k_i + k_j)
        share = 1 - lam  # the anchor's input share in the reference's convention
        lam_p = 1 - share
        w.append(1 - 0.5 * lam_p / m if lam_p <= m else 0.5 * (1 - lam_p) / (1 - m))
    return torch.tensor(w)


def time_plain(strategy: str, args, x: np.ndarray, y: np.ndarray, mean, std) -> float:
    device = torch.device(args.device)
    torch.manual_seed(0)
    random.seed(0)
    model = build_model("resnet32", num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    beta = 0.9999
    eff = (1 - beta) / (1 - np.power(beta, COUNTS))
    cls_w = torch.tensor(eff / eff.sum() * 10, dtype=torch.float32, device=device)
    loader = torch.utils.data.DataLoader(PerImageDataset(x, y, mean, std), batch_size=128,
                                         shuffle=True, num_workers=args.workers)
    mixing = strategy != "ERM"
    done, seen, t0 = 0, 0, None
    while done < args.steps + 3:
        for xb, yb in loader:
            if done == 3:
                t0, seen = time.perf_counter(), 0
            xb, yb = xb.to(device), yb.to(device)
            if mixing:
                lam = float(np.random.beta(1.0, 1.0))
                index = torch.randperm(len(yb), device=device)
                mixed = (1 - lam) * xb + lam * xb[index]
                w = plain_mamix_weights(yb, index, COUNTS, lam).to(device)
                out = model(mixed)
                la = F.cross_entropy(out, yb, weight=cls_w, reduction="none")
                lb = F.cross_entropy(out, yb[index], weight=cls_w, reduction="none")
                loss = (w * la + (1 - w) * lb).mean()
                clean = model(xb)  # the second, clean forward pass for logging accuracy
                _ = (clean.argmax(1) == yb).float().sum().item()
            else:
                out = model(xb)
                loss = F.cross_entropy(out, yb)
                _ = (out.argmax(1) == yb).float().sum().item()
            opt.zero_grad()
            loss.backward()
            opt.step()
            _ = loss.item()
            seen += len(yb)
            done += 1
            if done >= args.steps + 3:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - t0)


def time_eval(run: Run) -> float:
    data = run.data
    kw = dict(batch_size=1024, device=run.device, amp=run.amp,
              channels_last=run.trainer.step.channels_last)
    predict(run.trainer.model, data.test_inputs[:2048], data.augment, **kw)
    t = time.perf_counter()
    predict(run.trainer.model, data.test_inputs, data.augment, **kw)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    return len(data.test_inputs) / (time.perf_counter() - t)


def time_mixer_share(run: Run) -> tuple[float, float]:
    """Median seconds of the mixer alone and of one full training step, same batch."""
    dev = run.device
    data = run.data
    mixer = Mixer.preset("mamix", class_counts=data.class_counts).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = data.augment(data.train_inputs[:128], gen)
    y = data.train_labels[:128]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def med(fn, n=20):
        out = []
        for _ in range(n + 3):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t)
        return statistics.median(out[3:])

    mix_s = med(lambda: mixer(x, y, generator=gen))
    model, opt = run.trainer.model, run.trainer.optimizer
    xm = x.contiguous(memory_format=torch.channels_last) if run.trainer.step.channels_last else x

    def step():
        with torch.autocast(dev.type, dtype=run.amp, enabled=run.amp is not None):
            out = model(xm)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return mix_s, med(step, 10)


def run_outside_training(zip_path: str, device: str, margins: bool) -> tuple[float, float]:
    """Wall seconds of a 1-epoch ``cifar10_lt`` run (fp32) in a fresh process, and its
    training epoch's seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "tailmix", "train", "-c", "cifar10_lt", "--data-root",
               zip_path, "--epochs", "1", "--set", "train.precision=fp32", "--set",
               f"train.device={device}", "--set", f"eval.margins={str(margins).lower()}",
               "--no-progress", "--out", f"{tmp}/run"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return wall, metrics["train_time_s"]


def plain_fixed_time(zip_path: str, device: str) -> tuple[float, float, float]:
    """A plain loop's seconds outside training: Python with torch started, the images of
    the ratio-100 training set (the first files of each class) and the test set decoded with
    PIL, one pass over the test set at batch 128 in fp32."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    started = time.perf_counter() - start
    start = time.perf_counter()
    train, test = [], []
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))
        classes = sorted({n.split("/")[-2] for n in names})
        for c, cls in enumerate(classes):
            kept = [n for n in names if f"train/{cls}/" in n][:COUNTS[c]]
            kept += [n for n in names if f"test/{cls}/" in n]
            for n in kept:
                img = Image.open(io.BytesIO(z.read(n))).convert("RGB")
                (test if "test/" in n else train).append(np.asarray(img))
    x = torch.from_numpy(np.stack(test)).permute(0, 3, 1, 2).contiguous()
    loading = time.perf_counter() - start
    dev = torch.device(device)
    model = build_model("resnet32", num_classes=10).to(dev).eval()
    mean = torch.tensor([0.4914, 0.4822, 0.4465], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616], device=dev).view(1, 3, 1, 1)
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(x), 128):
            model((x[s:s + 128].to(dev).float() / 255 - mean) / std)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return started, loading, time.perf_counter() - start


def outside_training(args) -> None:
    print(describe())
    print(f"settings: cifar10_lt config, 1 epoch, fp32, device {args.device}; data "
          f"{args.outside}")
    started, loading, evaluation = plain_fixed_time(args.outside, args.device)
    plain = started + loading + evaluation
    print(f"plain loop fixed time: {plain:.1f} s (python + torch {started:.1f} s, decoding "
          f"{loading:.1f} s, one test pass {evaluation:.1f} s)", flush=True)
    for margins in (True, False):
        wall, train_s = run_outside_training(args.outside, args.device, margins)
        outside = wall - train_s
        print(f"tailmix 1-epoch run, margins {'on ' if margins else 'off'}: {wall:.1f} s, "
              f"training {train_s:.1f} s, outside training {outside:.1f} s "
              f"(x{outside / plain:.2f} the plain loop's fixed time)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", help="CIFAR-10 root or image-folder zip (default: synthetic)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain loop")
    p.add_argument("--outside", metavar="ZIP", help="measure time outside training on this "
                   "image-folder zip instead (see the module's docstring)")
    args = p.parse_args()
    if args.outside:
        outside_training(args)
        return
    print(describe())
    print(f"settings: ResNet-32, CIFAR-10-LT ratio 100 ({sum(COUNTS)} images), batch 128, "
          f"{args.steps} timed steps x {args.repeats}, device {args.device}, plain-loop "
          f"DataLoader workers {args.workers}")
    raw = None if args.data_root else synthetic_raw()
    print(f"data: {args.data_root or 'synthetic uint8 images'}")
    steps_per_epoch = -(-sum(COUNTS) // 128)
    rows = []
    run = None
    for strategy in ("ERM", "MAMix-DRW"):
        rate, run = time_tailmix(strategy, args, raw)
        d = run.data
        x = d.train_inputs.cpu().numpy()
        y = d.train_labels.cpu().numpy()
        mean = d.augment.mean.cpu().tolist()
        std = d.augment.std.cpu().tolist()
        plain = time_plain(strategy, args, x, y, mean, std)
        rows.append((strategy, rate, plain))
        print(f"{strategy:<10} tailmix {rate:8.0f} img/s ({steps_per_epoch * 128 / rate:6.1f} "
              f"s/epoch, precision {run.amp or 'fp32'}, channels_last "
              f"{run.trainer.step.channels_last})   plain loop {plain:7.0f} img/s "
              f"({steps_per_epoch * 128 / plain:6.1f} s/epoch)   speed-up x{rate / plain:.2f}",
              flush=True)
    print(f"evaluation: {time_eval(run):.0f} img/s (batch 1024, no augmentation)")
    mix_s, step_s = time_mixer_share(run)
    print(f"mixer (mamix, batch 128): {mix_s * 1e3:.2f} ms; training step {step_s * 1e3:.1f} ms;"
          f" mixer share {100 * mix_s / (mix_s + step_s):.2f}% of the step")
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak host memory of this process (both loops, data, models): {peak:.0f} MiB")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
