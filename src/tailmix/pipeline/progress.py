"""Training progress: a rich progress bar (epoch, loss, lr and images/s) on a terminal, and
one log line an epoch where there is no bar."""

from __future__ import annotations

import time
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EpochProgress:
    """Shows the steps of the current epoch and the overall epoch count.

    The running loss is a device tensor; it is read (one host sync) only when the bar
    refreshes, every ``refresh_steps`` steps, never on every step.
    """

    def __init__(self, *, total_epochs: int, start_epoch: int = 0, label: str = "train",
                 refresh_steps: int = 25, console: Console | None = None):
        self.total, self.epoch = total_epochs, start_epoch
        self.label, self.refresh_steps = label, refresh_steps
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
            console=console or Console(stderr=True), transient=False,
        )
        self._t0 = time.perf_counter()

    def __enter__(self) -> EpochProgress:
        self.progress.__enter__()
        self.run_task = self.progress.add_task(self.label, total=self.total,
                                               completed=self.epoch, info="")
        self.step_task = self.progress.add_task(f"epoch {self.epoch + 1}", total=1, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def step(self, s: int, n: int, loss_sum: torch.Tensor, seen: int, lr: float) -> None:
        if s == 1:
            self._t0 = time.perf_counter()
            self.progress.reset(self.step_task, total=n,
                                description=f"epoch {self.epoch + 1}/{self.total}")
        if s % self.refresh_steps == 0 or s == n:
            rate = seen / max(time.perf_counter() - self._t0, 1e-9)
            info = f"loss {float(loss_sum) / max(seen, 1):.4f}  lr {lr:.4g}  {rate:,.0f} img/s"
            self.progress.update(self.step_task, completed=s, info=info)

    def epoch_done(self, row: dict[str, Any]) -> None:
        self.epoch = row["epoch"]
        info = f"loss {row['train_loss']:.4f}"
        if "top1" in row:
            info += f"  test top-1 {row['top1']:.2f}  bal {row['balanced_accuracy']:.2f}"
        self.progress.update(self.run_task, completed=self.epoch, info=info)


def epoch_line(row: dict[str, Any], *, total_epochs: int, elapsed_s: float,
               label: str | None = None) -> str:
    """One epoch's row in one line: epoch, training loss and accuracy, lr, time since
    the start, and the evaluation's figures when the epoch was evaluated.

    >>> print(epoch_line({"epoch": 2, "train_loss": 1.23456, "train_acc": 56.7, "lr": 0.05,
    ...                   "top1": 61.2, "balanced_accuracy": 58.25}, total_epochs=3,
    ...                  elapsed_s=75.2))
    epoch 2/3  loss 1.2346  train acc 56.70  lr 0.05  elapsed 1m15s  test top-1 61.20  bal. 58.25
    """
    parts = [f"epoch {row['epoch']}/{total_epochs}", f"loss {row['train_loss']:.4f}",
             f"train acc {row['train_acc']:.2f}", f"lr {row['lr']:.4g}",
             f"elapsed {_clock(elapsed_s)}"]
    for prefix, what in (("val_", "val"), ("", "test")):
        if row.get(f"{prefix}top1") is not None:
            parts.append(f"{what} top-1 {row[f'{prefix}top1']:.2f}")
            if row.get(f"{prefix}balanced_accuracy") is not None:
                parts.append(f"bal. {row[f'{prefix}balanced_accuracy']:.2f}")
    line = "  ".join(parts)
    return f"{label}: {line}" if label else line


def _clock(seconds: float) -> str:
    """``12.3s``, ``4m05s`` or ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
