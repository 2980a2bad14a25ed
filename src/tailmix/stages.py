"""Stages of a run for networks with a backbone and a head: a frozen backbone for the first
epochs of a fine-tuning run, a separate learning rate for the backbone, and classifier
re-training (cRT) after the main run.

cRT (Kang et al., "Decoupling representation and classifier for long-tailed recognition",
ICLR 2020) keeps the representation the main run learned and trains only a freshly
initialised classifier, with class-balanced sampling and plain cross-entropy. Here it is a
stage of the same run: from ``switch_epoch`` on, the trainer's sampler, step and lr schedule
are the second stage's (:class:`~tailmix.samplers.Phased`, :class:`PhasedStep`,
:class:`~tailmix.schedules.Then`), and :class:`Stages` freezes the backbone and re-initialises
the head at the switch. Nothing in the trainer knows about it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tailmix.callbacks import Callback, TrainState
from tailmix.steps import Batch, StepOutput

__all__ = ["PhasedStep", "Stages", "param_groups"]


def param_groups(model: nn.Module, *, lr: float, backbone_lr: float | None
                 ) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: the backbone, then the head (``model.head``), each
    with the ``lr_scale`` the trainer multiplies the scheduled lr by (the backbone's is
    ``backbone_lr / lr``). One group of everything when the backbone has the same lr."""
    if backbone_lr is None or getattr(model, "head", None) is None:
        return [{"params": list(model.parameters())}]
    head = {id(p) for p in model.head.parameters()}
    body = [p for p in model.parameters() if id(p) not in head]
    return [{"params": body, "lr_scale": backbone_lr / lr, "name": "backbone"},
            {"params": list(model.head.parameters()), "lr_scale": 1.0, "name": "head"}]


class PhasedStep:
    """One step before ``switch_epoch``, another from it on (each with its own per-epoch
    hook and state)."""

    def __init__(self, before: Any, after: Any, *, switch_epoch: int):
        self.before, self.after, self.switch_epoch = before, after, switch_epoch

    def _current(self, epoch: int) -> Any:
        return self.before if epoch < self.switch_epoch else self.after

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        step = self._current(epoch)
        if hasattr(step, "start_epoch"):
            step.start_epoch(epoch, model)

    def load(self, slices: list[torch.Tensor], seed: int):
        # Both steps read the same inputs; the first decides how they are read.
        return self.before.load(slices, seed) if hasattr(self.before, "load") else None

    def state_dict(self) -> dict[str, Any]:
        state = getattr(self.before, "state_dict", dict)()
        return {"before": state} if state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("before") and hasattr(self.before, "load_state_dict"):
            self.before.load_state_dict(state["before"])

    def __call__(self, model: nn.Module, batch: Batch) -> StepOutput:
        return self._current(batch.epoch)(model, batch)


class Stages(Callback):
    """Freezes the backbone (gradients off, batch-norm statistics fixed) before
    ``unfreeze_epoch`` and from ``crt_epoch`` on; at ``crt_epoch`` re-initialises the head
    (seeded) and clears its optimiser state.

    Parameters
    ----------
    model : nn.Module
        The bare network; ``model.head`` is the classifier.
    optimizer : torch.optim.Optimizer
    unfreeze_epoch : int
        Epochs with a frozen backbone at the start (0: none).
    crt_epoch : int or None
        The first classifier re-training epoch, or None.
    seed : int
        Seeds the re-initialised head.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 unfreeze_epoch: int = 0, crt_epoch: int | None = None, seed: int = 0):
        self.model, self.optimizer = model, optimizer
        self.unfreeze_epoch, self.crt_epoch, self.seed = unfreeze_epoch, crt_epoch, seed
        head = {id(p) for p in model.head.parameters()}
        self.body = [p for p in model.parameters() if id(p) not in head]
        self.head_modules = {id(m) for m in model.head.modules()}

    def frozen(self, epoch: int) -> bool:
        return epoch < self.unfreeze_epoch or (
            self.crt_epoch is not None and epoch >= self.crt_epoch)

    def on_epoch_start(self, state: TrainState, epoch: int) -> None:
        frozen = self.frozen(epoch)
        for p in self.body:
            p.requires_grad_(not frozen)
        if frozen:  # batch-norm statistics stay those of the representation
            for m in self.model.modules():
                if id(m) not in self.head_modules and m is not self.model:
                    m.eval()
        if epoch == self.crt_epoch:
            self._reset_head()

    def _reset_head(self) -> None:
        from tailmix import seeding

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeding.derive_seed(self.seed, "init") + 1)
            for m in self.model.head.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        for p in self.model.head.parameters():
            self.optimizer.state.pop(p, None)
