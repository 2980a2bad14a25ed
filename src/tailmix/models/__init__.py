"""Networks. Every model maps inputs to logits; ``model(x, return_features=True)`` also
returns the penultimate features, and ``model.features(x)`` returns them alone."""

from __future__ import annotations

from torch import nn

from tailmix._validation import ParameterError, check_choice
from tailmix.models.heads import HEADS, CosineHead
from tailmix.models.resnet import ResNet, resnet18, resnet32
from tailmix.models.small import MLP, SmallCNN

ARCHS = ("resnet32", "resnet18", "small_cnn", "mlp")


def build_model(
    arch: str,
    *,
    num_classes: int,
    input_shape: tuple[int, ...] = (3, 32, 32),
    head: str = "linear",
) -> nn.Module:
    """Build a network by name for inputs of ``input_shape`` (C, H, W) or (D,)."""
    check_choice("arch", arch, ARCHS)
    check_choice("head", head, HEADS)
    if arch == "mlp":
        if len(input_shape) != 1:
            raise ParameterError("arch", "an image model for image inputs (not 'mlp')", arch)
        return MLP(num_classes, in_features=input_shape[0], head=head)
    if len(input_shape) != 3:
        raise ParameterError("arch", "'mlp' for feature-vector inputs", arch)
    in_ch = input_shape[0]
    if arch == "small_cnn":
        return SmallCNN(num_classes, in_channels=in_ch, head=head)
    factory = resnet32 if arch == "resnet32" else resnet18
    return factory(num_classes, in_channels=in_ch, head=head)


__all__ = ["ARCHS", "HEADS", "CosineHead", "MLP", "ResNet", "SmallCNN", "build_model",
           "resnet18", "resnet32"]
