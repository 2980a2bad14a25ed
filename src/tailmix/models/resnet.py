"""ResNets for small images.

``resnet32`` is He et al. (2016)'s CIFAR network: a 3x3 stem, three stages of five basic
blocks with 16, 32 and 64 channels, and parameter-free "option A" shortcuts (subsample and
zero-pad channels) where the shape changes; about 0.46 M parameters. ``resnet18`` is the
ImageNet ResNet-18 adapted to 32x32 inputs the usual way (3x3 stem, no max-pool, projection
shortcuts). Both end in global average pooling, so any input size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailmix.models.heads import build_head


class _PadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero channels appended on both sides."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.before = extra_channels // 2
        self.after = extra_channels - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if stride == 1 and in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _PadShortcut(stride, out_ch - in_ch)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of basic blocks with a 3x3 stem, returning logits (features on request)."""

    def __init__(
        self,
        *,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        shortcut: str = "A",
        head: str = "linear",
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers = []
        in_ch = widths[0]
        for stage, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(in_ch, width, stride, shortcut))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = in_ch
        self.head = build_head(head, in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        logits = self.head(f)
        return (logits, f) if return_features else logits


def resnet32(num_classes: int, *, in_channels: int = 3, head: str = "linear") -> ResNet:
    return ResNet(
        widths=(16, 32, 64), blocks=(5, 5, 5), num_classes=num_classes,
        in_channels=in_channels, shortcut="A", head=head,
    )


def resnet18(num_classes: int, *, in_channels: int = 3, head: str = "linear") -> ResNet:
    return ResNet(
        widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), num_classes=num_classes,
        in_channels=in_channels, shortcut="B", head=head,
    )
