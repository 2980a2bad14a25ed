"""ImageNet-style ResNets of bottleneck blocks: ResNet-50 and ResNeXt-50 (32x4d).

The layout is He et al. (2016)'s 50-layer network: a 7x7 stride-2 convolution and a 3x3
stride-2 max-pool reduce the input four times, then four stages of 3, 4, 6 and 3 bottleneck
blocks (1x1 reduce, 3x3, 1x1 expand by 4) with 256, 512, 1024 and 2048 output channels, the
first block of every stage after the first halving the resolution in its 3x3 convolution,
and global average pooling. ResNeXt (Xie et al., 2017) splits the 3x3 convolution into
``groups`` parallel paths of ``width_per_group`` channels each; ResNet-50 is the case of one
group of 64 channels. With 1000 classes the two have 25,557,032 and 25,028,904 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailmix.models.heads import build_head

#: A block's output channels per unit of its stage's base width.
EXPANSION = 4


class Bottleneck(nn.Module):
    """A residual block of a 1x1, a (grouped) 3x3 and a 1x1 convolution, each batch-normed.

    Parameters
    ----------
    in_ch : int
        Channels of the input.
    planes : int
        The stage's base width (64, 128, 256 or 512); the block outputs ``4 * planes``.
    stride : int
        Stride of the 3x3 convolution (and of the projection shortcut).
    groups : int
        Groups of the 3x3 convolution.
    width_per_group : int
        Channels per group at the first stage (``planes == 64``); later stages scale it with
        ``planes``.
    """

    def __init__(self, in_ch: int, planes: int, stride: int, groups: int, width_per_group: int):
        super().__init__()
        inner = groups * (planes * width_per_group // 64)
        out_ch = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        if stride == 1 and in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class BottleneckResNet(nn.Module):
    """A ResNet of bottleneck blocks with the ImageNet stem, returning logits (features on
    request).

    Parameters
    ----------
    blocks : tuple of int
        Blocks per stage; the stages' base widths are 64, 128, 256, 512, ... (doubling).
    num_classes : int
        Number of outputs.
    in_channels : int, default 3
        Channels of the input images.
    groups : int, default 1
        Groups of every block's 3x3 convolution (32 for ResNeXt-50 32x4d).
    width_per_group : int, default 64
        Channels per group in the first stage (4 for ResNeXt-50 32x4d).
    head : {"linear", "cosine"}, default "linear"
        The classifier head.
    zero_init_residual : bool, default True
        Start the last batch norm of every block at zero scale, so each block begins as the
        identity (Goyal et al., 2017).

    Attributes
    ----------
    feature_dim : int
        Width of the penultimate features, ``512 * 4 = 2048`` for four stages.
    head : nn.Module
        Maps the features to logits.
    """

    def __init__(
        self,
        *,
        blocks: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        head: str = "linear",
        zero_init_residual: bool = True,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, 2, 1)
        layers = []
        in_ch = 64
        for stage, n in enumerate(blocks):
            planes = 64 * 2**stage
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(Bottleneck(in_ch, planes, stride, groups, width_per_group))
                in_ch = planes * EXPANSION
        self.layers = nn.Sequential(*layers)
        self.feature_dim = in_ch
        self.head = build_head(head, in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        logits = self.head(f)
        return (logits, f) if return_features else logits


def resnet50(num_classes: int, *, in_channels: int = 3, head: str = "linear") -> BottleneckResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), one group of 64 channels."""
    return BottleneckResNet(
        blocks=(3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels, head=head,
    )


def resnext50_32x4d(
    num_classes: int, *, in_channels: int = 3, head: str = "linear"
) -> BottleneckResNet:
    """ResNeXt-50 (32x4d): bottleneck blocks (3, 4, 6, 3), 32 groups of 4 channels."""
    return BottleneckResNet(
        blocks=(3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels, groups=32,
        width_per_group=4, head=head,
    )
