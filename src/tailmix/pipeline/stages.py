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

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tailmix._validation import ParameterError, check_number
from tailmix.pipeline.callbacks import Callback, TrainState
from tailmix.pipeline.sections import Assembly, Section, Sections, section
from tailmix.pipeline.steps import Batch, StepOutput

__all__ = ["CrtSection", "PhasedStep", "Stages", "WeightDecayFrom", "param_groups"]


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

    def batches(self, plan: list[tuple[torch.Tensor, torch.Tensor | None]], seed: int):
        # Both steps read the same inputs; the first decides how they are read.
        from tailmix.pipeline.steps import as_planned

        return getattr(self.before, "batches", as_planned)(plan, seed)

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
    reset_head : bool, default True
        Re-initialise the head at ``crt_epoch`` (False: re-train it from the main run's
        weights, as MiSLAS does); its optimiser state is cleared either way.
    batchnorm_stats : bool, default False
        From ``crt_epoch`` on, re-estimate the frozen backbone's batch-norm statistics from
        the re-training's (class-balanced) batches, its weights still fixed: MiSLAS's "shift
        learning" on batch normalisation.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 unfreeze_epoch: int = 0, crt_epoch: int | None = None, seed: int = 0,
                 reset_head: bool = True, batchnorm_stats: bool = False):
        self.model, self.optimizer = model, optimizer
        self.unfreeze_epoch, self.crt_epoch, self.seed = unfreeze_epoch, crt_epoch, seed
        self.reset_head, self.batchnorm_stats = reset_head, batchnorm_stats
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
            shift = self.batchnorm_stats and epoch >= (self.crt_epoch or epoch + 1)
            for m in self.model.modules():
                if id(m) not in self.head_modules and m is not self.model:
                    m.train(shift and isinstance(m, nn.modules.batchnorm._BatchNorm))
        if epoch == self.crt_epoch:
            self._reset_head()

    def _reset_head(self) -> None:
        """Re-initialise the head (seeded) unless it is kept; either way its optimiser state
        (momentum) starts afresh, as a new stage's optimiser would."""
        from tailmix import seeding

        if self.reset_head:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeding.derive_seed(self.seed, "head"))
                for m in self.model.head.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        for p in self.model.head.parameters():
            self.optimizer.state.pop(p, None)


@section("crt")
@dataclass
class CrtSection(Section):
    """The ``crt`` config section: ``epochs`` of classifier re-training after the main run
    (0: none; a float in (0, 1): that share of the main run's epochs, at least one), at
    cosine lr from ``lr`` (null: ``train.lr``) with weight decay
    ``weight_decay`` (null: ``train.weight_decay``), with the ``loss`` mapping's loss (null:
    cross-entropy; e.g. ``{name: las}``, label-aware smoothing), a re-initialised head
    unless ``reinit`` is false, and the backbone's batch-norm statistics re-estimated from
    the class-balanced batches when ``shift_bn`` (MiSLAS's stage two: ``loss: {name: las},
    reinit: false``, and ``shift_bn: true`` on CIFAR-100-LT)."""

    epochs: float = 0
    lr: float | None = None
    weight_decay: float | None = None
    loss: dict | None = None
    reinit: bool = True
    shift_bn: bool = False

    ACTS_ONLY = {key: ("crt.epochs > 0", lambda s: s.epochs > 0)
                 for key in ("lr", "weight_decay", "loss", "reinit", "shift_bn")}

    def check(self, run: Sections) -> None:
        expected = "a number of epochs (an int >= 0) or a share of the main run in (0, 1)"
        try:
            if isinstance(self.epochs, float) and not self.epochs.is_integer():
                check_number("crt.epochs", self.epochs, low=0, high=1, low_open=True,
                             high_open=True)
            else:
                check_number("crt.epochs", self.epochs, low=0, integer=True)
        except ParameterError:
            raise ParameterError("crt.epochs", expected, self.epochs) from None
        for key in ("lr", "weight_decay"):
            if getattr(self, key) is not None:
                check_number(f"crt.{key}", getattr(self, key), low=0, low_open=key == "lr")
        if self.loss is not None:
            self._loss([2, 1])  # its parameters, on stand-in counts: no data is read here

    def resolve(self, epochs: int, notes: list[str]) -> None:
        share = isinstance(self.epochs, float) and not self.epochs.is_integer()
        self.retrain_epochs = max(1, round(self.epochs * epochs)) if share \
            else int(self.epochs)

    def _loss(self, counts: list[int]) -> Any:
        """The re-training's loss (cross-entropy unless ``loss`` names another), for a
        linear head: the loss reads the head's outputs as logits."""
        from tailmix.losses import build_loss
        from tailmix.pipeline.components import make_loss
        from tailmix.registry import LOSSES

        if self.loss is None:
            return build_loss("ce", class_counts=counts)
        try:
            loss = make_loss(self.loss, counts=counts)
            if getattr(LOSSES.get(self.loss["name"], "name"), "requires_cosine_head", False):
                raise ParameterError("name", "a loss on a linear head's logits (cRT trains a "
                                     "linear head)", self.loss["name"])
        except ParameterError as e:
            name = e.name if e.name.startswith("loss.") else f"loss.{e.name}"
            raise ParameterError(f"crt.{name}", e.expected, e.got) from e
        return loss

    def contribute(self, run: Assembly) -> None:
        """After the main run: class-balanced anchors, the section's loss (plain
        cross-entropy by default), no mixing, no extra terms, cosine lr; the run gets
        ``epochs`` more."""
        if self.retrain_epochs == 0:
            return
        from tailmix.models.section import needs_head

        needs_head(run.network, "cRT")
        switch = run.spec.epochs
        run.retrain_from = switch
        lr = self.lr if self.lr is not None else run.spec.train.lr

        def stage(sampler: Any, step: Any, schedule: Any, epochs: int) -> tuple:
            from tailmix.pipeline.steps import MixStep
            from tailmix.samplers import Phased, build_sampler
            from tailmix.schedules import CosineSchedule, Then

            data = run.data
            balanced = build_sampler("class_balanced", labels=data.train_labels.cpu(),
                                     class_counts=data.class_counts, rank=run.rank,
                                     world_size=run.world_size, seed=run.spec.seed)
            loss = self._loss(data.class_counts).to(run.device)
            after = MixStep(**{**run.step_args, "consistency": None, "split_classes": False,
                               "mixer": None, "weights": lambda epoch: None, "loss": loss})
            second = CosineSchedule(base_lr=lr, warmup_epochs=0, epochs=self.retrain_epochs)
            return (Phased(before=sampler, after=balanced, switch_epoch=switch),
                    PhasedStep(step, after, switch_epoch=switch),
                    Then(schedule, second, switch_epoch=switch), epochs + self.retrain_epochs)

        run.stages.append(stage)
        run.retrain_reset_head, run.retrain_batchnorm_stats = self.reinit, self.shift_bn
        if self.weight_decay is not None:
            run.callbacks.append(WeightDecayFrom(run.optimizer, switch, self.weight_decay))


class WeightDecayFrom(Callback):
    """Sets every parameter group's weight decay to ``value`` at ``epoch`` (a resumed run
    gets it back with the optimiser's state)."""

    def __init__(self, optimizer: torch.optim.Optimizer, epoch: int, value: float):
        self.optimizer, self.epoch, self.value = optimizer, epoch, value

    def on_epoch_start(self, state: TrainState, epoch: int) -> None:
        if epoch == self.epoch:
            for group in self.optimizer.param_groups:
                group["weight_decay"] = self.value
