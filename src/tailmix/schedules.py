"""Learning-rate schedules: ``(epoch, progress) -> lr``, applied by the trainer at every step."""

from __future__ import annotations

from tailmix._validation import check_number

__all__ = ["StepSchedule"]


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
