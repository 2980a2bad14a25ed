"""Learning-rate schedules: ``(epoch, progress) -> lr``, applied by the trainer at every step;
and epochs given as shares of a run (:func:`resolve_epoch`), which every part that takes an
epoch reads through here."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tailmix._validation import ParameterError, check_number

__all__ = ["CosineSchedule", "StepSchedule", "Then", "is_share", "resolve_epoch",
           "resolve_start"]


def is_share(value: Any) -> bool:
    """Whether ``value`` is a share of the run (a float in (0, 1)) rather than an epoch."""
    return (isinstance(value, float) and not isinstance(value, bool)
            and not value.is_integer() and 0 < value < 1)


def resolve_epoch(name: str, value: Any, epochs: int) -> int:
    """An epoch given as an int (an epoch number) or a float in (0, 1) (a share of the run)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, "an epoch number (int) or a share of the run in (0, 1)", value)
    if isinstance(value, float) and not value.is_integer():
        if not 0 < value < 1:
            raise ParameterError(name, "an epoch number (int) or a share of the run in (0, 1)",
                                 value)
        # A share of the run always lands inside it (at most the last epoch).
        return min(int(round(value * epochs)), max(epochs - 1, 0))
    return int(value)


def resolve_start(name: str, value: Any, epochs: int) -> int:
    """:func:`resolve_epoch` for the epoch something starts at, which must lie in the run.

    >>> resolve_start("swa.start", 0.75, 60), resolve_start("sam.start", 5, 60)
    (45, 5)
    >>> try:
    ...     resolve_start("swa.start", 60, 60)
    ... except ParameterError as error:
    ...     print(str(error).split(" or ")[0])
    The 'swa.start' parameter must be an epoch before the run's end (0 to 59)
    """
    start = resolve_epoch(name, value, epochs)
    if not 0 <= start < epochs:
        raise ParameterError(name, f"an epoch before the run's end (0 to {epochs - 1}) or a "
                             "share of the run in (0, 1)", value)
    return start


class StepSchedule:
    """Linear warm-up over the first ``warmup_epochs``, then step factors at milestones.

    >>> lr = StepSchedule(base_lr=0.1, warmup_epochs=2, milestones=[8], factors=[0.01])
    >>> [round(lr(e, 1.0), 4) for e in (0, 1, 7, 8)]
    [0.05, 0.1, 0.1, 0.001]
    """

    def __init__(self, *, base_lr: float, warmup_epochs: float, milestones: list[int],
                 factors: list[float]):
        self.base_lr = check_number("base_lr", base_lr, low=0, low_open=True)
        self.warmup = check_number("warmup_epochs", warmup_epochs, low=0)
        self.steps = sorted(zip(milestones, factors, strict=True))

    def __call__(self, epoch: int, progress: float) -> float:
        """lr at ``epoch`` (0-based) after the share ``progress`` in [0, 1] of its steps."""
        lr = self.base_lr
        for m, f in self.steps:
            if epoch >= m:
                lr = self.base_lr * f
        if self.warmup > 0 and epoch + progress < self.warmup:
            lr = lr * (epoch + progress) / self.warmup
        return lr


class CosineSchedule:
    """Linear warm-up over the first ``warmup_epochs``, then half a cosine from ``base_lr``
    down to ``final_lr`` at the end of ``epochs``.

    >>> lr = CosineSchedule(base_lr=0.1, warmup_epochs=0, epochs=10)
    >>> [round(lr(e, 1.0), 4) for e in (0, 4, 9)]
    [0.0976, 0.05, 0.0]
    """

    def __init__(self, *, base_lr: float, warmup_epochs: float, epochs: int,
                 final_lr: float = 0.0):
        self.base_lr = check_number("base_lr", base_lr, low=0, low_open=True)
        self.warmup = check_number("warmup_epochs", warmup_epochs, low=0)
        self.epochs = check_number("epochs", epochs, low=1, integer=True)
        self.final_lr = check_number("final_lr", final_lr, low=0)

    def __call__(self, epoch: int, progress: float) -> float:
        t = epoch + progress
        if self.warmup > 0 and t < self.warmup:
            return self.base_lr * t / self.warmup
        span = max(self.epochs - self.warmup, 1e-12)
        share = min(max((t - self.warmup) / span, 0.0), 1.0)
        return self.final_lr + (self.base_lr - self.final_lr) * 0.5 * (1 + math.cos(
            math.pi * share))


class Then:
    """One schedule until ``switch_epoch``, another after it (counting its epochs from 0):
    the main run, then a classifier re-training stage.

    >>> lr = Then(StepSchedule(base_lr=0.1, warmup_epochs=0, milestones=[], factors=[]),
    ...           CosineSchedule(base_lr=0.5, warmup_epochs=0, epochs=2), switch_epoch=3)
    >>> [round(lr(e, 1.0), 4) for e in (2, 3, 4)]
    [0.1, 0.25, 0.0]
    """

    def __init__(self, first: Callable[[int, float], float],
                 second: Callable[[int, float], float], *, switch_epoch: int):
        self.first, self.second, self.switch_epoch = first, second, switch_epoch

    def __call__(self, epoch: int, progress: float) -> float:
        if epoch < self.switch_epoch:
            return self.first(epoch, progress)
        return self.second(epoch - self.switch_epoch, progress)
