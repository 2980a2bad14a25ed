"""The ``train`` config section: the optimiser, the lr schedule and where and how it runs.

:class:`TrainSection` fills the schedule a config leaves out (the step schedule's
milestones and factors, a warm-up as a share of the run), keeps milestone shares in the
run's shape at any length, checks every key, and turns the milestones into epochs once
(``milestone_epochs``). It builds the run's SGD optimiser and lr schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.pipeline.sections import Section, Sections, section
from tailmix.schedules import is_share, resolve_epoch

__all__ = ["DEFAULT_WARMUP_SHARE", "STEP_DEFAULTS", "TrainSection"]

# The warm-up a config that names none gets, as a share of the run: the CIFAR-LT protocol's
# 5 epochs of 200, none on a run under 20 epochs.
DEFAULT_WARMUP_SHARE = 0.025

# The step schedule's milestones (shares of the run) and factors when a config gives none.
STEP_DEFAULTS = {"milestones": [0.8, 0.9], "lr_factors": [0.01, 0.0001]}

PRECISIONS = ("auto", "bf16", "fp32", "fp16")
SCHEDULES = ("step", "cosine")
# train.compile: false, true (= "default"), or a torch.compile mode.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@section("train")
@dataclass
class TrainSection(Section):
    """The ``train`` config section (see the README's configuration reference)."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    schedule: str = "step"
    warmup_epochs: float = DEFAULT_WARMUP_SHARE
    milestones: list | None = None
    lr_factors: list | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool | str = False
    sync_batchnorm: bool = False
    accumulate: int = 1

    MACHINE = ("device",)

    def prepare(self, given: Mapping[str, Any], notes: list[str]) -> None:
        """The schedule a config leaves out, and its shares of the run turned into epochs.

        The step schedule's milestones and factors default to :data:`STEP_DEFAULTS`, none
        for cosine decay; the warm-up to :data:`DEFAULT_WARMUP_SHARE` of the run. A warm-up
        given as a share becomes whole epochs. Milestones given as shares keep the run's
        shape at any length: one that lands before the run's second epoch is dropped, and
        one that lands on the epoch of the milestone before it merges with it (the earlier
        keeps its factor); a note says so. Epoch numbers are kept as given (:meth:`check`
        refuses those that do not fit the run).
        """
        check_choice("train.schedule", self.schedule, SCHEDULES)
        epochs = check_number("train.epochs", self.epochs, low=1, integer=True)
        step = self.schedule == "step"
        for key, default in STEP_DEFAULTS.items():
            if getattr(self, key) is None:
                setattr(self, key, list(default) if step else [])
        if self.schedule == "cosine" and self.milestones:
            raise ParameterError("train.milestones", "none with schedule 'cosine' (it decays "
                                 "smoothly to zero)", self.milestones)
        self._fit_milestones(epochs, notes)
        if is_share(self.warmup_epochs):
            self.warmup_epochs = resolve_epoch("train.warmup_epochs", self.warmup_epochs,
                                               epochs)

    def _fit_milestones(self, epochs: int, notes: list[str]) -> None:
        """Drop the milestone shares that land before epoch 1 and merge those that land on
        the epoch before them (see :meth:`prepare`)."""
        given, factors = self.milestones, self.lr_factors
        if not isinstance(given, list) or not isinstance(factors, list) \
                or len(given) != len(factors):
            return  # refused by check
        run = f"the {epochs}-epoch run"
        kept: list[tuple[int, Any, Any, int | None]] = []  # (index, milestone, factor, epoch)
        for i, (value, factor) in enumerate(zip(given, factors, strict=True)):
            if not is_share(value):
                epoch = value if isinstance(value, int) and not isinstance(value, bool) else None
                kept.append((i, value, factor, epoch))
                continue
            epoch = resolve_epoch(f"train.milestones[{i}]", value, epochs)
            if epoch < 1:
                notes.append(f"schedule: train.milestones[{i}] ({value}) left out: {run} has "
                             "no epoch to step at")
                continue
            if kept and kept[-1][3] == epoch:
                j, _, before, _ = kept[-1]
                notes.append(f"schedule: train.milestones[{i}] ({value}) lands on epoch {epoch} "
                             f"of {run}, as train.milestones[{j}] does: merged (lr "
                             f"x{before:g} from epoch {epoch})")
                continue
            kept.append((i, value, factor, epoch))
        if len(kept) < len(given):
            self.milestones = [m for _, m, _, _ in kept]
            self.lr_factors = [f for _, _, f, _ in kept]

    def check(self, run: Sections) -> None:
        check_choice("train.schedule", self.schedule, SCHEDULES)
        epochs = check_number("train.epochs", self.epochs, low=1, integer=True)
        check_number("train.batch_size", self.batch_size, low=2, integer=True)
        check_number("train.accumulate", self.accumulate, low=1, integer=True)
        check_number("train.lr", self.lr, low=0, low_open=True)
        check_number("train.momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("train.weight_decay", self.weight_decay, low=0)
        self.milestone_epochs = self._check_schedule(epochs)
        check_choice("train.precision", self.precision, PRECISIONS)
        if isinstance(self.channels_last, str):
            check_choice("train.channels_last", self.channels_last, ("auto",))
        if isinstance(self.compile, str):
            check_choice("train.compile", self.compile, COMPILE_MODES)
        dev = self.device
        if dev not in ("auto", "cpu", "cuda", "mps") and not dev.startswith("cuda:"):
            raise ParameterError("train.device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
                                 dev)

    def _check_schedule(self, epochs: int) -> tuple[int, ...]:
        """The lr milestones as epochs: each inside the run (epochs 1 to ``epochs - 1``),
        each after the one before it once shares are resolved; a warm-up shorter than the
        run. A value that does not fit is refused with the key that fixes it."""
        check_number("train.warmup_epochs", self.warmup_epochs, low=0)
        if self.warmup_epochs >= epochs:
            raise ParameterError("train.warmup_epochs", f"fewer epochs than the run's {epochs} "
                                 "(the lr would never reach train.lr): set --set "
                                 f"train.warmup_epochs=N with N < {epochs}, or a share of the "
                                 "run such as 0.05", self.warmup_epochs)
        milestones, factors = self.milestones, self.lr_factors
        if len(milestones) != len(factors):
            raise ParameterError("train.lr_factors", f"{len(milestones)} factors, one per "
                                 "milestone", factors)
        fix = ("set --set train.milestones=[...] to epochs inside the run, or to shares of "
               "it such as [0.8, 0.9]")
        out: list[int] = []
        for i, given in enumerate(milestones):
            key = f"train.milestones[{i}]"
            ep = resolve_epoch(key, given, epochs)
            share = "" if ep == given else f" ({given} of the run is epoch {ep})"
            if not 1 <= ep <= epochs - 1:
                inside = (f"an epoch inside the {epochs}-epoch run, 1 to {epochs - 1}"
                          if epochs > 1 else "none: a 1-epoch run has no epoch to step at")
                raise ParameterError(key, f"{inside}{share}: {fix}", given)
            if out and ep == out[-1]:
                before = milestones[i - 1]
                raise ParameterError(
                    key, f"a later epoch than train.milestones[{i - 1}]: "
                    f"train.milestones[{i - 1}] ({before}) and train.milestones[{i}] "
                    f"({given}) both land on epoch {ep} of the {epochs}-epoch run: {fix}",
                    given)
            if out and ep < out[-1]:
                raise ParameterError(key, f"a later epoch than train.milestones[{i - 1}] "
                                     f"(epoch {out[-1]}): milestones in increasing order"
                                     + share, given)
            out.append(ep)
        for i, f in enumerate(factors):
            check_number(f"train.lr_factors[{i}]", f, low=0, low_open=True)
        return tuple(out)

    def lr_schedule(self) -> Any:
        """The main run's lr schedule: step decay or cosine, after a linear warm-up."""
        from tailmix.schedules import CosineSchedule, StepSchedule

        if self.schedule == "cosine":
            return CosineSchedule(base_lr=self.lr, warmup_epochs=self.warmup_epochs,
                                  epochs=self.epochs)
        return StepSchedule(base_lr=self.lr, warmup_epochs=self.warmup_epochs,
                            milestones=list(self.milestone_epochs), factors=self.lr_factors)

    def optimizer(self, network: Any, *, backbone_lr: float | None) -> Any:
        """SGD over the network's parameter groups (the backbone's own lr where set)."""
        import torch

        from tailmix.pipeline.stages import param_groups

        return torch.optim.SGD(param_groups(network, lr=self.lr, backbone_lr=backbone_lr),
                               lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay, nesterov=self.nesterov)
