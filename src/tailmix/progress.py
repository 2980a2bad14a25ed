"""A rich progress bar for training: epoch, loss, lr and images/s."""

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
