"""Classifier heads: a plain linear layer or a cosine (normalised) classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailmix._validation import check_choice

HEADS = ("linear", "cosine")


class CosineHead(nn.Module):
    """Logits are cosines between the feature and each class's weight vector, in [-1, 1].

    The loss scales them (LDAM uses s = 30), so the head itself carries no temperature.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


def build_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    check_choice("head", kind, HEADS)
    if kind == "cosine":
        return CosineHead(in_features, num_classes)
    return nn.Linear(in_features, num_classes)
