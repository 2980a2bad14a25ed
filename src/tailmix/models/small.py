"""Small networks for tiny images (digits) and tabular feature vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailmix.models.heads import build_head


class SmallCNN(nn.Module):
    """Three 3x3 conv layers (32, 64, 128 channels) with batch norm, for images up to ~32 px."""

    def __init__(self, num_classes: int, *, in_channels: int = 1, head: str = "linear"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        )
        self.feature_dim = 128
        self.head = build_head(head, 128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        logits = self.head(f)
        return (logits, f) if return_features else logits


class MLP(nn.Module):
    """Two hidden layers with batch norm, for feature vectors."""

    def __init__(self, num_classes: int, *, in_features: int, hidden: int = 256,
                 head: str = "linear"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        )
        self.feature_dim = hidden
        self.head = build_head(head, hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        logits = self.head(f)
        return (logits, f) if return_features else logits
