"""Networks. Every model maps inputs to logits; ``model(x, return_features=True)`` also
returns the penultimate features, and ``model.features(x)`` returns them alone.

A network is a factory registered in :data:`tailmix.registry.MODELS` (re-exported here as
``ARCHS``), called as ``factory(num_classes=..., input_shape=..., head=...)``; its ``inputs``
metadata (``"image"`` for ``(C, H, W)`` inputs, ``"vector"`` for ``(D,)`` ones) lets
:func:`build_model` refuse a network for the wrong kind of data::

    @MODELS.register("my_cnn", inputs="image")
    def my_cnn(*, num_classes, input_shape, head):
        return MyCNN(num_classes, in_channels=input_shape[0], head=head)

Backbones of torchvision and timm are named ``"torchvision:<name>"`` and ``"timm:<name>"``
(not registered; see :mod:`tailmix.models.external`), and :func:`adapt` brings any other
network that returns logits into the contract.
"""

from __future__ import annotations

from torch import nn

from tailmix._validation import ParameterError, check_choice
from tailmix.models.bottleneck import BottleneckResNet, resnet50, resnext50_32x4d
from tailmix.models.external import Split, adapt, build_external, is_external, preprocessing
from tailmix.models.heads import HEADS, CosineHead
from tailmix.models.resnet import ResNet, resnet18, resnet32
from tailmix.models.small import MLP, SmallCNN
from tailmix.registry import MODELS

#: The registered architectures (the registry itself: ``"resnet32" in ARCHS``, iteration).
ARCHS = MODELS

# The number of dimensions of one input, for each kind of ``inputs`` metadata.
_INPUT_NDIM = {"image": 3, "vector": 1}


@MODELS.register("resnet32", inputs="image", side_limit=64)
def _resnet32(*, num_classes: int, input_shape: tuple[int, ...], head: str) -> nn.Module:
    return resnet32(num_classes, in_channels=input_shape[0], head=head)


@MODELS.register("resnet18", inputs="image", side_limit=64)
def _resnet18(*, num_classes: int, input_shape: tuple[int, ...], head: str) -> nn.Module:
    return resnet18(num_classes, in_channels=input_shape[0], head=head)


@MODELS.register("resnet50", inputs="image", side_limit=224)
def _resnet50(*, num_classes: int, input_shape: tuple[int, ...], head: str) -> nn.Module:
    return resnet50(num_classes, in_channels=input_shape[0], head=head)


@MODELS.register("resnext50_32x4d", inputs="image", side_limit=224)
def _resnext50_32x4d(*, num_classes: int, input_shape: tuple[int, ...], head: str) -> nn.Module:
    return resnext50_32x4d(num_classes, in_channels=input_shape[0], head=head)


@MODELS.register("small_cnn", inputs="image", side_limit=64)
def _small_cnn(*, num_classes: int, input_shape: tuple[int, ...], head: str) -> nn.Module:
    return SmallCNN(num_classes, in_channels=input_shape[0], head=head)


@MODELS.register("mlp", inputs="vector")
def _mlp(*, num_classes: int, input_shape: tuple[int, ...], head: str) -> nn.Module:
    return MLP(num_classes, in_features=input_shape[0], head=head)


def build_model(
    arch: str,
    *,
    num_classes: int,
    input_shape: tuple[int, ...] = (3, 32, 32),
    head: str = "linear",
    pretrained: bool = False,
) -> nn.Module:
    """Build a network by name for inputs of ``input_shape`` (C, H, W) or (D,).

    Parameters
    ----------
    arch : str
        A name registered in :data:`tailmix.registry.MODELS`; built in: ``"resnet32"``,
        ``"resnet18"``, ``"resnet50"``, ``"resnext50_32x4d"``, ``"small_cnn"`` (images) and
        ``"mlp"`` (feature vectors). Or a backbone of an optional package,
        ``"torchvision:<name>"`` or ``"timm:<name>"`` (see :func:`build_external`).
    num_classes : int
        Number of outputs.
    input_shape : tuple of int
        Shape of one input: ``(C, H, W)`` for an image, ``(D,)`` for a feature vector.
    head : {"linear", "cosine"}
        The classifier head.
    pretrained : bool, default False
        Load pretrained weights; only for ``torchvision:`` and ``timm:`` backbones.

    Returns
    -------
    nn.Module

    Raises
    ------
    ParameterError
        For an unknown ``arch`` or ``head``, a network registered for the other kind of
        input (its ``inputs`` metadata) than ``input_shape`` describes, ``pretrained`` for a
        built-in network, or a backbone whose package is not installed.
    """
    if not isinstance(pretrained, bool):
        raise ParameterError("model.pretrained", "true or false", pretrained)
    if is_external(arch):
        check_choice("head", head, HEADS)
        return build_external(arch, num_classes=num_classes, input_shape=input_shape,
                              head=head, pretrained=pretrained)
    factory = MODELS.get(arch, "arch")
    check_choice("head", head, HEADS)
    if pretrained:
        raise ParameterError("model.pretrained", f"false for the built-in {arch!r} "
                             "(pretrained weights come from torchvision: or timm: backbones)",
                             pretrained)
    inputs = MODELS.meta(arch).get("inputs")
    if inputs in _INPUT_NDIM and len(input_shape) != _INPUT_NDIM[inputs]:
        if inputs == "vector":
            raise ParameterError("arch", f"an image model for image inputs (not {arch!r})", arch)
        vector_models = [name for name in MODELS if MODELS.meta(name).get("inputs") == "vector"]
        wanted = " or ".join(repr(name) for name in vector_models) or "a feature-vector model"
        raise ParameterError("arch", f"{wanted} for feature-vector inputs", arch)
    return factory(num_classes=num_classes, input_shape=input_shape, head=head)


__all__ = ["ARCHS", "HEADS", "BottleneckResNet", "CosineHead", "MLP", "ResNet", "SmallCNN",
           "Split", "adapt", "build_external", "build_model", "is_external", "preprocessing",
           "resnet18", "resnet32", "resnet50", "resnext50_32x4d"]
