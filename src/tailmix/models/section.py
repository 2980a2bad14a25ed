"""The ``model`` config section: the network, its head and how its parts train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.pipeline.sections import Assembly, Section, Sections, section
from tailmix.schedules import resolve_epoch

__all__ = ["ModelSection", "needs_head"]


@section("model")
@dataclass
class ModelSection(Section):
    """The ``model`` config section: ``arch`` (a registered network, or ``torchvision:NAME``
    / ``timm:NAME``), its ``head`` (null: the strategy's), ``pretrained`` weights, the
    backbone's own lr (null: ``train.lr``), a frozen backbone for the first
    ``freeze_backbone_epochs`` (an epoch or a share of the run) and a norm cap on the
    classifier's rows (``max_norm``, null: none)."""

    arch: str = "resnet32"
    head: str | None = None
    pretrained: bool = False
    backbone_lr: float | None = None
    freeze_backbone_epochs: float = 0
    max_norm: float | None = None

    def check(self, run: Sections) -> None:
        from tailmix.models import HEADS, is_external
        from tailmix.registry import DATASETS, MODELS

        if not is_external(self.arch):
            MODELS.get(self.arch, "model.arch")
        if self.head is not None:
            check_choice("model.head", self.head, HEADS)
        if self.backbone_lr is not None:
            check_number("model.backbone_lr", self.backbone_lr, low=0)
        if self.max_norm is not None:
            check_number("model.max_norm", self.max_norm, low=0, low_open=True)
        epochs = run.train.epochs
        freeze = resolve_epoch("model.freeze_backbone_epochs", self.freeze_backbone_epochs,
                               epochs)
        if not 0 <= freeze < epochs:
            raise ParameterError("model.freeze_backbone_epochs", f"fewer than the run's "
                                 f"{epochs} epochs", self.freeze_backbone_epochs)
        if is_external(self.arch):
            return
        # A vector model for a source known to hold images.
        images = DATASETS.meta(run.dataset.name).get("inputs") == "image"
        if images and MODELS.meta(self.arch).get("inputs") == "vector":
            raise ParameterError("model.arch", f"an image model for {run.dataset.name!r} "
                                 "(its inputs are images)", self.arch)

    def resolve(self, epochs: int, notes: list[str]) -> None:
        self.unfreeze_epoch = resolve_epoch("model.freeze_backbone_epochs",
                                            self.freeze_backbone_epochs, epochs)

    def contribute(self, run: Assembly) -> None:
        """The frozen epochs, and the norm cap on the classifier's rows."""
        if self.unfreeze_epoch:
            needs_head(run.network, "a frozen backbone")
        run.frozen_until = self.unfreeze_epoch
        if self.max_norm is not None:
            from tailmix.pipeline.callbacks import MaxNorm

            run.callbacks.append(MaxNorm(run.network, self.max_norm))


def needs_head(network: Any, what: str) -> None:
    """Refuse a network without a ``head`` module (the classifier a stage trains alone)."""
    from torch import nn

    if not isinstance(getattr(network, "head", None), nn.Module):
        raise ParameterError("model", f"a network with a head module (model.head) for {what}",
                             type(network).__name__)
