"""Classifier heads: a plain linear layer or a cosine (normalised) classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailmix._validation import check_choice, check_number

HEADS = ("linear", "cosine")


class CosineHead(nn.Module):
    """Outputs are cosines between the feature and each class's weight vector, in [-1, 1].

    The loss scales them as it trains (LDAM uses ``s = 30``), so ``forward`` returns the bare
    cosines. ``scale`` is that factor, kept for the outputs' other readers: the logits of
    evaluation, prediction and export are ``scale * cos`` (:func:`logit_scale`), so their
    softmax is the one the loss trained.

    Parameters
    ----------
    in_features, num_classes : int
    scale : float, default 1.0
        The loss's logit scale (:attr:`tailmix.losses.SoftTargetLoss.logit_scale`), ``> 0``;
        a buffer that moves with the module but stays out of its ``state_dict`` (a run
        sets it from its loss).
    """

    def __init__(self, in_features: int, num_classes: int, *, scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.register_buffer("scale", torch.tensor(1.0), persistent=False)
        self.set_scale(scale)
        self.reset_parameters()

    def set_scale(self, scale: float) -> None:
        """Set :attr:`scale` (``> 0``) in place."""
        self.scale.fill_(check_number("scale", scale, low=0.0, low_open=True))

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, num_classes={self.weight.shape[0]}, " \
               f"scale={float(self.scale):g}"


def _head(model: nn.Module) -> nn.Module | None:
    """``model.head``, looking through a DistributedDataParallel wrapper."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "head", None)


def logit_scale(model: nn.Module) -> Tensor | None:
    """The factor that turns ``model``'s outputs into logits: the ``scale`` of its cosine
    head (``model.head``), or None (the outputs are the logits already)."""
    head = _head(model)
    return head.scale if isinstance(head, CosineHead) else None


def set_logit_scale(model: nn.Module, scale: float) -> None:
    """Give ``model``'s cosine head (``model.head``) the loss's logit ``scale``; a network
    without one is left alone."""
    head = _head(model)
    if isinstance(head, CosineHead):
        head.set_scale(scale)


def build_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    check_choice("head", kind, HEADS)
    if kind == "cosine":
        return CosineHead(in_features, num_classes)
    return nn.Linear(in_features, num_classes)
