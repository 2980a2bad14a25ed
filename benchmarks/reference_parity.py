"""Parity with the reference package: its own DRW and MAMix-DRW code on tailmix's data.

Trains the reference package's (imbalanced-DL, Cheng, Mai, Lin) code on exactly the training
subset and augmentation a cell of a tailmix suite trains on, so that its figures and
tailmix's can be set side by side on one machine, one seed, one data copy.

What is the reference's, imported from the checkout given with ``--reference`` (nothing of it
is copied here): the network (``imbalanceddl.net.network.Network``: ResNet-32 and a bias-free
linear classifier), the optimiser and its learning-rate rule (``Trainer._init_optimizer``,
``adjust_learning_rate``), DRW's class weights (``get_criterion``) and the training epoch of
each strategy (``train_one_epoch``: MAMix's mixing and loss for MAMix-DRW).

What is adapted, and only that:

- the device: the reference calls ``.cuda(gpu)`` throughout; without a GPU those calls leave
  tensors and modules where they are;
- the data feed: the trainer's ``train_loader`` yields tailmix's training subset in a seeded
  random order, in batches of the cell's size, augmented by tailmix's batch augmentation
  (crop with padding, flip, normalisation), as the tailmix run of the cell is;
- what the reference's trainer imports but this path never calls stands in empty: two
  logging packages when they are not installed (``tensorboardX``, ``torchmetrics``) and its
  M2m helpers (which ask the terminal for its width as they load), and the strategy
  package's index, which imports every trainer with its own dependencies;
- the length of the run: the reference's rule knows 200, 300 and 400 epochs, and switches DRW
  on at ``epoch // 160``. A run of E epochs reads both at the virtual epoch
  ``round(e * 200 / E)`` after the 5 warm-up epochs, so that at 60 epochs the lr steps to
  x0.01 at epoch 48 and to x0.0001 at 54, and DRW starts at 48: the protocol tailmix's CPU
  suite scales from 200 epochs.

The final epoch's weights are evaluated with tailmix's metrics on the cell's test set.
Every epoch ends with a checkpoint (model, optimiser, random states); an interrupted run
started again with the same arguments goes on from it.

Run::

    python benchmarks/reference_parity.py --reference PATH --strategy DRW \\
        [--suite benchmarks/suites/cifar10_lt_cpu.yaml] [--seed 0] [--out results/...]

It writes ``OUT/<strategy>-s<seed>/`` with ``history.jsonl`` (lr, epoch time), ``metrics.json``
(tailmix's metrics of the final epoch, the reference's commit, the machine) and
``checkpoints/last.pt``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from _machine import describe
from torch import nn

from tailmix._validation import ParameterError
from tailmix.io import atomic_write_text, save_torch, write_json
from tailmix.metrics import compute_metrics
from tailmix.pipeline.build import load_data
from tailmix.pipeline.clock import RunningClock
from tailmix.pipeline.config import resolve
from tailmix.pipeline.steps import predict
from tailmix.tools.bench import load_suite

#: tailmix strategy -> (the reference's trainer module and class, its strategy name)
STRATEGIES = {"DRW": ("imbalanceddl.strategy._drw", "DRWTrainer", "DRW"),
              "MAMix-DRW": ("imbalanceddl.strategy._mamix_drw", "MAMixTrainer", "MAMix_DRW")}
WARMUP = 5  # the reference's warm-up epochs, kept as they are
NATIVE_EPOCHS = 200  # the schedule the reference's rule is read at


def virtual_epoch(epoch: int, epochs: int) -> int:
    """The 0-based epoch of the reference's 200-epoch rule that ``epoch`` of an
    ``epochs``-epoch run reads: the warm-up as it is, then the run stretched to 200."""
    if epochs == NATIVE_EPOCHS or epoch < WARMUP:
        return epoch
    return round(epoch * NATIVE_EPOCHS / epochs)


def _stand_ins(reference: Path) -> None:
    """Empty modules for what the reference's trainer imports at load time but the path
    here never calls: the logging packages where they are not installed, and its M2m
    helpers (which ask the terminal for its width as they load, and fail without one).
    The strategy package is entered without its index, which imports every trainer (M2m's
    and DeepSMOTE's with their own dependencies); its modules load as they are."""
    import imbalanceddl  # noqa: F401 (the package itself: its index defines names only)

    strategy = types.ModuleType("imbalanceddl.strategy")
    strategy.__path__ = [str(reference / "imbalanceddl" / "strategy")]
    sys.modules.setdefault("imbalanceddl.strategy", strategy)
    sys.modules.setdefault("imbalanceddl.utils.m2m_utils",
                           types.SimpleNamespace(Logger=None))
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=None)
    try:
        from torchmetrics.functional import precision_recall  # noqa: F401
    except ImportError:
        functional = types.SimpleNamespace(precision_recall=None)
        sys.modules["torchmetrics"] = types.SimpleNamespace(F1Score=None,
                                                            functional=functional)
        sys.modules["torchmetrics.functional"] = functional


def _cuda_stays_put() -> None:
    """Without a GPU, the reference's ``.cuda(gpu)`` calls leave tensors and modules where
    they are."""
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        nn.Module.cuda = lambda self, *args, **kwargs: self


class _Feed:
    """The reference trainer's ``train_loader``: tailmix's training subset, a seeded random
    order each epoch, augmented as tailmix augments; yields ``(inputs, labels)``."""

    def __init__(self, data, batch_size: int, seed: int, max_batches: int | None = None):
        self.data, self.batch_size, self.seed, self.epoch = data, batch_size, seed, 0
        self.max_batches = max_batches  # a quick check of the path: epochs cut short

    def __len__(self) -> int:
        n = math.ceil(len(self.data.train_labels) / self.batch_size)
        return n if self.max_batches is None else min(n, self.max_batches)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.data.train_labels), generator=g)
        for s in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[s:s + self.batch_size]
            raw = self.data.train_inputs[index]
            yield self.data.augment(raw, g), self.data.train_labels[index]


class _NoWriter:
    """The trainer's TensorBoard writer: every call does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class _Logits(nn.Module):
    """The reference's network returns ``(logits, features)``; evaluation reads logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def _commit(reference: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _trainer(reference: Path, strategy: str, data, spec, out: Path,
             max_batches: int | None):
    """The reference's trainer for ``strategy``, made without its constructor (which opens
    its own log folders and data loaders): the attributes its methods read, set here."""
    import importlib

    sys.path.insert(0, str(reference))
    _stand_ins(reference)
    _cuda_stays_put()
    module, cls, name = STRATEGIES[strategy]
    trainer_cls = getattr(importlib.import_module(module), cls)
    from imbalanceddl.net.network import Network

    counts = [int(c) for c in data.class_counts]
    t = spec.train
    cfg = types.SimpleNamespace(
        epochs=NATIVE_EPOCHS, learning_rate=t.lr, momentum=t.momentum,
        weight_decay=t.weight_decay, optimizer="sgd", strategy=name, dataset="cifar10",
        backbone="resnet32", classifier="dot_product_classifier", num_classes=len(counts),
        cls_num_list=counts, gpu=0 if torch.cuda.is_available() else None,
        mamix_ratio=-0.25, print_freq=10 ** 9, best_model=None)
    trainer = object.__new__(trainer_cls)
    trainer.cfg, trainer.strategy = cfg, name
    trainer.model = Network(cfg).to("cuda" if torch.cuda.is_available() else "cpu")
    trainer.optimizer = trainer._init_optimizer()
    trainer.cls_num_list = counts
    trainer.train_loader = _Feed(data, t.batch_size, spec.seed, max_batches)
    trainer.train_dataset = None
    trainer.log_training = open(out / "reference_train_log.csv", "a", encoding="utf-8")
    trainer.tf_writer = _NoWriter()
    return trainer


def _keep_history_until(history: Path, epoch: int) -> None:
    """Keep the history's rows of the epochs the checkpoint holds. Each row is written
    before its epoch's checkpoint, so a process stopped between the two leaves a row of an
    epoch that is trained again (dropped here), and one stopped while writing a row leaves
    a line cut short (dropped too): each epoch ends with exactly one row."""
    if not history.is_file():
        return
    rows = []
    for line in history.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["epoch"] <= epoch:
                rows.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # blank, or cut short by a stop
    atomic_write_text(history, "".join(f"{line}\n" for line in rows))


def run(reference: Path, strategy: str, suite_path: Path, seed: int, out_root: Path,
        max_batches: int | None = None) -> Path:
    """Train the reference's ``strategy`` on the suite's ratio-100 cell of it (resuming
    from the folder's checkpoint), evaluate, and return the run folder."""
    suite = load_suite(suite_path)
    cells = [c for c in suite.cells if c.strategy == strategy and c.seed == seed]
    if not cells:
        raise ParameterError("--strategy", f"a strategy with a seed-{seed} cell in "
                             f"{suite_path.name}", strategy)
    spec = resolve(suite.config(cells[0]))
    data = load_data(spec)
    out = out_root / f"{strategy}-s{seed}"
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    trainer = _trainer(reference, strategy, data, spec, out, max_batches)
    ckpt_path, start = out / "checkpoints" / "last.pt", 0
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        trainer.model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch"])
        np.random.set_state(ckpt["numpy"])
        start = ckpt["epoch"]
    history = out / "history.jsonl"
    _keep_history_until(history, start)
    epochs = spec.epochs
    with RunningClock() as clock:  # epoch times leave out spells the process was stopped
        for epoch in range(start, epochs):
            began, stopped = clock.reading()
            trainer.epoch = virtual_epoch(epoch, epochs)
            trainer.adjust_learning_rate()
            trainer.get_criterion()
            trainer.epoch = trainer.train_loader.epoch = epoch
            trainer.train_one_epoch()
            end, stopped_end = clock.reading()
            row = {"epoch": epoch + 1, "lr": trainer.optimizer.param_groups[0]["lr"],
                   "virtual_epoch": virtual_epoch(epoch, epochs), "epoch_time_s": end - began}
            if stopped_end > stopped:
                row["stopped_s"] = stopped_end - stopped
            with open(history, "a", encoding="utf-8") as f:  # kept on resume if the
                f.write(json.dumps(row) + "\n")              # checkpoint below lands
            state = {"epoch": epoch + 1, "model": trainer.model.state_dict(),
                     "optimizer": trainer.optimizer.state_dict(),
                     "torch": torch.get_rng_state(), "numpy": np.random.get_state()}
            save_torch(ckpt_path, state)
    device = next(trainer.model.parameters()).device
    logits = predict(_Logits(trainer.model), data.test_inputs, data.augment, batch_size=1000,
                     device=device)
    metrics = compute_metrics(logits, data.test_labels, data.class_counts)
    write_json(out / "metrics.json", {
        "strategy": strategy, "seed": seed, "epochs": epochs, "final": metrics,
        "reference": {"path_name": reference.name, "commit": _commit(reference)},
        "machine": describe(), "max_batches": max_batches})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, required=True,
                   help="a checkout of the reference package (holding imbalanceddl/)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), default="DRW")
    p.add_argument("--suite", type=Path, default=Path("benchmarks/suites/cifar10_lt_cpu.yaml"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/cifar10-lt-cpu-parity/reference"))
    p.add_argument("--max-batches", type=int, default=None,
                   help="cut every epoch to this many batches: a quick check of the path")
    args = p.parse_args()
    if not (args.reference / "imbalanceddl").is_dir():
        print(f"tailmix: error: --reference must be a checkout of the reference package "
              f"(a folder holding imbalanceddl/); got {str(args.reference)!r}", file=sys.stderr)
        return 2
    print(describe())
    try:
        out = run(args.reference, args.strategy, args.suite, args.seed, args.out,
                  args.max_batches)
    except ParameterError as e:
        print(f"tailmix: error: {e}", file=sys.stderr)
        return 2
    final = json.loads((out / "metrics.json").read_text())["final"]
    print(f"{args.strategy} (reference code), seed {args.seed}: final top-1 "
          f"{final['top1']:.2f}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
