"""Networks from outside tailmix, brought into its model contract.

Every tailmix model returns logits from ``model(x)``, the penultimate features from
``model.features(x)``, both from ``model(x, return_features=True)``, and keeps its classifier
as ``model.head``. :func:`adapt` gives that shape to any module returning logits, by cutting it
at its classifier (the last :class:`torch.nn.Linear` with ``num_classes`` outputs) and checking
on a probe batch that nothing changed; :func:`build_external` does the same for the backbones
a config names as ``"torchvision:<name>"`` or ``"timm:<name>"``, importing the package only
then, and :func:`preprocessing` reads the input size and normalisation those backbones expect.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> model = adapt(net, num_classes=3, input_shape=(4,), log=lambda line: None)
>>> model.feature_dim, tuple(model.features(torch.zeros(5, 4)).shape)
(8, (5, 8))
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from torch import nn

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.models.heads import HEADS, CosineHead

__all__ = ["Split", "adapt", "build_external", "is_external", "preprocessing"]

#: Config prefixes of the backbones :func:`build_external` builds, with the extra to install.
SOURCES = {"torchvision": "torchvision", "timm": "timm"}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATIONS = ("bilinear", "bicubic")
_PROBE_BATCH = 2
_EXPECTED = ("an nn.Module returning (B, num_classes) logits whose last nn.Linear is the "
             "classifier, or one with a features(x) method and a head attribute")


class Split(nn.Module):
    """A network cut in two at its classifier: ``body`` gives the features, ``head`` the logits.

    Built by :func:`adapt`, which checks that ``head(body(x))`` is what the uncut network
    returned.

    Parameters
    ----------
    body : nn.Module
        Maps inputs to features of shape ``(B, feature_dim)`` (the network with its
        classifier replaced by :class:`torch.nn.Identity`).
    head : nn.Module
        Maps features to logits.
    feature_dim : int
        Width of the features.
    """

    def __init__(self, body: nn.Module, head: nn.Module, *, feature_dim: int):
        super().__init__()
        self.body = body
        self.head = head
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features, ``(B, feature_dim)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits ``(B, num_classes)``, or ``(logits, features)`` with ``return_features``."""
        f = self.body(x)
        logits = self.head(f)
        return (logits, f) if return_features else logits


# --------------------------------------------------------------------------- probing


@contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; every submodule's own training flag restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def _probe_batch(module: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed random batch of two inputs on the module's device and in its float dtype,
    drawn from a private generator so that the global random stream is left alone."""
    tensors = list(itertools.chain(module.parameters(), module.buffers()))
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((_PROBE_BATCH, *input_shape), generator=generator)
    return x.to(device=device, dtype=dtype)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _call(fn: Callable[[], Any], what: str) -> tuple[Any, str | None]:
    """``(fn(), None)``, or ``(None, a description of the exception)``."""
    try:
        return fn(), None
    except Exception as error:  # any failure of user code is reported
        return None, f"{what} raised {type(error).__name__}: {error}"


def _logits_problem(out: Any, num_classes: int, what: str) -> str | None:
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (_PROBE_BATCH, num_classes):
        return None
    return (f"{what} on a batch of {_PROBE_BATCH} inputs returned {_describe(out)}, "
            f"not ({_PROBE_BATCH}, {num_classes}) logits")


def _same(a: torch.Tensor, b: Any) -> bool:
    """Equal up to float rounding (the same operations on the same inputs)."""
    return (isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True))


def _largest_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().nan_to_num(float("inf")).max())


# --------------------------------------------------------------------------- cutting


def _label(name: str) -> str:
    return repr(name) if name else "the module itself"


def _linear_text(layer: nn.Linear) -> str:
    return f"Linear {layer.in_features} -> {layer.out_features}"


def _find_classifier(
    module: nn.Module, num_classes: int, preferred: nn.Module | None
) -> tuple[str, nn.Linear] | None:
    """``(qualified name, layer)`` of ``preferred`` when it is a Linear with ``num_classes``
    outputs inside ``module``, else of the last such Linear in ``named_modules()`` order."""
    found = None
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear) and layer.out_features == num_classes:
            if layer is preferred:
                return name, layer
            found = (name, layer)
    return found


def _linear_summary(module: nn.Module, num_classes: int) -> str:
    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not layers:
        return f"{type(module).__name__} with no nn.Linear layer"
    shown = ", ".join(f"{_label(n)} ({_linear_text(m)})" for n, m in layers[-3:])
    more = f"{len(layers) - 3} more and " if len(layers) > 3 else ""
    return (f"{type(module).__name__} with no nn.Linear of {num_classes} outputs "
            f"(its Linear layers: {more}{shown})")


def _put(module: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (a qualified name, not empty) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)


def _split(
    module: nn.Module,
    x: torch.Tensor,
    *,
    num_classes: int,
    head: str,
    log: Callable[[str], Any],
    param: str,
    preferred: nn.Module | None = None,
    note: str = "",
    expected: str = "",
) -> Split:
    """Cut ``module`` at its classifier, check the cut on ``x`` and wrap it in a :class:`Split`
    (``note``: why the module's own ``features``/``head`` were not used, for messages;
    ``expected``: what an error says ``param`` must be)."""
    prefix = f"{note}; " if note else ""
    expected = expected or _EXPECTED
    with _evaluating(module):
        reference, problem = _call(lambda: module(x), type(module).__name__)
    if problem is None:
        problem = _logits_problem(reference, num_classes, type(module).__name__)
    if problem is not None:
        raise ParameterError(param, expected, prefix + problem)
    found = _find_classifier(module, num_classes, preferred)
    if found is None:
        raise ParameterError(param, expected, prefix + _linear_summary(module, num_classes))
    name, linear = found
    if name:
        _put(module, name, nn.Identity())
        body = module
    else:  # the whole module is the classifier: the features are its inputs
        body = nn.Identity()
    split = Split(body, linear, feature_dim=linear.in_features)
    with _evaluating(split):
        features, problem = _call(lambda: split.body(x), f"{type(module).__name__} without it")
        if problem is None:
            wanted = (_PROBE_BATCH, linear.in_features)
            if not isinstance(features, torch.Tensor) or tuple(features.shape) != wanted:
                problem = (f"the input of {_label(name)} ({_linear_text(linear)}) is "
                           f"{_describe(features)}, not {wanted} features")
            else:
                logits = split.head(features)
                if not _same(reference, logits):
                    problem = (f"{_label(name)} ({_linear_text(linear)}) is not the last step: "
                               f"the logits without it differ by up to "
                               f"{_largest_gap(reference, logits):.3g}")
    if problem is not None:
        if name:
            _put(module, name, linear)
        raise ParameterError(param, expected, prefix + problem)
    line = f"model: using {_label(name)} ({_linear_text(linear)}) as the classifier head"
    if head == "cosine":
        split.head = CosineHead(linear.in_features, num_classes)
        line += ", replaced by a new CosineHead of the same input"
    line += "; features are its input"
    if note:
        log(f"model: not using its own features() and head: {note}")
    log(line)
    return split


def _contract_problem(module: nn.Module, x: torch.Tensor, num_classes: int) -> str | None:
    """Why ``module``'s own ``features``/``head`` do not follow the contract (None if they do)."""
    name = type(module).__name__
    with _evaluating(module):
        out, problem = _call(lambda: module(x), name)
        if problem is not None:
            return problem
        features, problem = _call(lambda: module.features(x), f"{name}.features")
        if problem is not None:
            return problem
        if not isinstance(features, torch.Tensor) or features.ndim != 2 \
                or features.shape[0] != _PROBE_BATCH:
            return f"{name}.features(x) returned {_describe(features)}, not (B, D) features"
        logits, problem = _call(lambda: module.head(features), f"{name}.head")
    if problem is not None:
        return problem
    problem = _logits_problem(out, num_classes, name)
    if problem is not None:
        return problem
    if not _same(out, logits):
        return f"{name}.head(features(x)) is {_describe(logits)} unlike its output"
    if getattr(module, "feature_dim", None) is None:
        module.feature_dim = int(features.shape[1])
    return None


def _keep_own_head(module: nn.Module, *, head: str, log: Callable[[str], Any]) -> nn.Module:
    own = module.head
    line = f"model: using its own features() and head ({type(own).__name__})"
    if head == "cosine" and not isinstance(own, CosineHead):
        if not isinstance(own, nn.Linear):
            raise ParameterError(
                "model.head", f"'linear' for a model whose own head is a {type(own).__name__} "
                "(only an nn.Linear head is replaced by a CosineHead)", head)
        module.head = CosineHead(own.in_features, own.out_features)
        line = (f"model: using its own features(); its head ({_linear_text(own)}) replaced by a "
                "new CosineHead of the same input")
    log(line)
    return module


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    expected = "a tuple of positive ints, (C, H, W) or (D,)"
    if not isinstance(input_shape, (tuple, list)) or not input_shape or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape):
        raise ParameterError("input_shape", expected, input_shape)
    return tuple(input_shape)


def adapt(
    module: nn.Module,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    head: str = "linear",
    log: Callable[[str], Any] = print,
    param: str = "model",
) -> nn.Module:
    """Give a network that returns logits tailmix's model contract.

    A module with a callable ``features`` and a ``head`` attribute whose
    ``head(features(x))`` is its output is returned as it is (with a ``feature_dim``
    attribute added when missing). Any other module is cut at the last :class:`torch.nn.Linear`
    with ``num_classes`` outputs (in ``named_modules()`` order): that layer is replaced *in
    place* by :class:`torch.nn.Identity`, so the module now returns its input, the features,
    and becomes the ``body`` of a :class:`Split` whose ``head`` is the layer. Both ways are
    checked on a probe batch of two random inputs (eval mode, no autograd, the training
    flags restored after): the logits must have ``num_classes`` columns and be those of the
    module as given.

    Parameters
    ----------
    module : nn.Module
        The network, on any device; ``module(x)`` must return logits ``(B, num_classes)``.
    num_classes : int
        Number of classes.
    input_shape : tuple of int
        Shape of one input, ``(C, H, W)`` or ``(D,)``, for the probe batch.
    head : {"linear", "cosine"}, default "linear"
        ``"cosine"`` replaces the classifier, once checked, by a new
        :class:`~tailmix.models.heads.CosineHead` of the same input width (a module's own
        ``nn.Linear`` head too; a head of another kind is then an error).
    log : callable, default print
        Receives one line saying which layer became the head.
    param : str, default "model"
        The parameter named in errors.

    Returns
    -------
    nn.Module
        ``module`` itself, or a :class:`Split` around it (the same one each time the same
        module is adapted again).

    Raises
    ------
    ParameterError
        Naming ``param``, when the module's output is not ``(B, num_classes)`` logits, when it
        has no ``nn.Linear`` of ``num_classes`` outputs, or when cutting there changes the
        logits (the layer is then put back). The module is left as it was.
    """
    if not isinstance(module, nn.Module):
        raise ParameterError(param, _EXPECTED, f"a {type(module).__name__}")
    num_classes = check_number("num_classes", num_classes, low=1, integer=True)
    check_choice("head", head, HEADS)
    input_shape = _check_input_shape(input_shape)
    previous = module.__dict__.get("_tailmix_split")
    if previous is not None:  # cut by an earlier call (a resumed run, a restore)
        return previous
    x = _probe_batch(module, input_shape)
    note = ""
    if callable(getattr(module, "features", None)) and hasattr(module, "head"):
        problem = _contract_problem(module, x, num_classes)
        if problem is None:
            return _keep_own_head(module, head=head, log=log)
        note = problem
    split = _split(module, x, num_classes=num_classes, head=head, log=log, param=param,
                   note=note)
    # Remembered outside the module's registered children: adapting it again (to resume
    # or restore) gives the same network.
    module.__dict__["_tailmix_split"] = split
    return split


# --------------------------------------------------------------------------- torchvision, timm


def is_external(arch: Any) -> bool:
    """Whether ``arch`` names a torchvision or timm backbone (``"torchvision:resnet50"``,
    ``"timm:convnext_tiny"``)."""
    return isinstance(arch, str) and arch.startswith(tuple(f"{s}:" for s in SOURCES))


def _parse(arch: Any) -> tuple[str, str]:
    if not is_external(arch) or not arch.partition(":")[2]:
        raise ParameterError("model.arch", "'torchvision:<name>' or 'timm:<name>'", arch)
    source, _, name = arch.partition(":")
    return source, name


def _import(source: str, arch: str) -> ModuleType:
    """The package behind ``source`` (``torchvision.models`` for torchvision)."""
    try:
        if source == "torchvision":
            return importlib.import_module("torchvision.models")
        package = importlib.import_module("timm")
        importlib.import_module("timm.data")
        return package
    except Exception as error:  # a broken install fails like a missing one
        raise ParameterError(
            "model.arch",
            f"the optional package for {arch!r}: pip install 'tailmix[{SOURCES[source]}]'",
            f"{type(error).__name__}: {error}",
        ) from error


def _check_pretrained(pretrained: Any) -> bool:
    if not isinstance(pretrained, bool):
        raise ParameterError("model.pretrained", "true or false", pretrained)
    return pretrained


def _torchvision_name(models: ModuleType, name: str, arch: str) -> str:
    key = name.lower()
    if key not in models.list_models(module=models):
        raise ParameterError(
            "model.arch", "'torchvision:<name>' with a classification model's <name> from "
            "torchvision.models.list_models(module=torchvision.models)", arch)
    return key


def _timm_name(timm: ModuleType, name: str, arch: str) -> str:
    # A name with a source of its own ("hf-hub:org/model") is left for timm to resolve.
    if ":" not in name and not timm.is_model(name):
        raise ParameterError(
            "model.arch", "'timm:<name>' with <name> from timm.list_models() "
            "(timm.list_models(pretrained=True) for those with weights)", arch)
    return name


def _drop_auxiliary_heads(model: nn.Module) -> None:
    """Inception v3 and GoogLeNet return auxiliary logits too while training; drop those
    classifiers (as torchvision itself does for pretrained GoogLeNet)."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attr in ("AuxLogits", "aux1", "aux2"):
            if isinstance(getattr(model, attr, None), nn.Module):
                setattr(model, attr, None)


def _torchvision_model(
    name: str, arch: str, *, num_classes: int, input_shape: tuple[int, ...], pretrained: bool
) -> tuple[nn.Module, nn.Module]:
    models = _import("torchvision", arch)
    key = _torchvision_name(models, name, arch)
    if input_shape[0] != 3:
        raise ParameterError("model.arch", "an architecture for the data's images "
                             "(torchvision backbones take 3-channel images)",
                             f"{arch} for {input_shape[0]}-channel images")
    weights = models.get_model_weights(key).DEFAULT
    model = models.get_model(key, weights="DEFAULT" if pretrained else None)
    _drop_auxiliary_heads(model)
    outputs = len(weights.meta["categories"])
    found = _find_classifier(model, outputs, None)
    if found is None:
        raise ParameterError("model.arch", "a torchvision model whose classifier is an "
                             "nn.Linear", f"{arch} ({_linear_summary(model, outputs)})")
    name_in_model, old = found
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    _put(model, name_in_model, new)
    return model, new


def _timm_model(
    name: str, arch: str, *, num_classes: int, input_shape: tuple[int, ...], pretrained: bool
) -> tuple[nn.Module, nn.Module | None]:
    timm = _import("timm", arch)
    name = _timm_name(timm, name, arch)
    extra = {} if input_shape[0] == 3 else {"in_chans": input_shape[0]}
    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **extra)
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    return model, classifier if isinstance(classifier, nn.Module) else None


def build_external(
    arch: str,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    head: str = "linear",
    pretrained: bool = False,
    log: Callable[[str], Any] = print,
) -> nn.Module:
    """Build a torchvision or timm backbone with a ``num_classes``-way classifier, in the
    tailmix model contract (see :func:`adapt`).

    ``"torchvision:<name>"`` builds ``torchvision.models.get_model(name, weights=...)``
    (the default weights when ``pretrained``) and replaces its classifier, the last
    ``nn.Linear`` with as many outputs as the weights have categories, by a new
    ``nn.Linear`` of ``num_classes`` outputs; Inception v3's and GoogLeNet's auxiliary
    classifiers are dropped. ``"timm:<name>"`` builds ``timm.create_model(name,
    pretrained=..., num_classes=num_classes)`` (``in_chans`` too for other than 3 channels)
    and cuts it at ``model.get_classifier()``. Either package is imported only here.

    Parameters
    ----------
    arch : str
        ``"torchvision:<name>"`` or ``"timm:<name>"``.
    num_classes : int
        Number of classes.
    input_shape : tuple of int
        Shape of one image, ``(C, H, W)``; the model is checked on two random ones, so it
        must be a size the backbone accepts (see :func:`preprocessing`).
    head : {"linear", "cosine"}, default "linear"
        The classifier head.
    pretrained : bool, default False
        Load the package's default pretrained weights (downloaded, or from its cache).
    log : callable, default print
        Receives the line saying which layer became the head.

    Returns
    -------
    Split

    Raises
    ------
    ParameterError
        Naming ``model.arch``: the package is not importable (with the ``pip install`` that
        fixes it), the name is not one of its classification models, the input is not an
        image (or, for torchvision, not of 3 channels), or the network cannot be cut at its
        classifier.
    """
    source, name = _parse(arch)
    num_classes = check_number("num_classes", num_classes, low=1, integer=True)
    check_choice("head", head, HEADS)
    pretrained = _check_pretrained(pretrained)
    input_shape = _check_input_shape(input_shape)
    if len(input_shape) != 3:
        raise ParameterError("model.arch", "a model for feature-vector inputs (torchvision: "
                             "and timm: backbones take (C, H, W) images)", arch)
    build = _torchvision_model if source == "torchvision" else _timm_model
    model, classifier = build(name, arch, num_classes=num_classes, input_shape=input_shape,
                              pretrained=pretrained)
    x = _probe_batch(model, input_shape)
    expected = (f"a {source} classification model that maps {input_shape} images to "
                f"(B, num_classes) logits through a final nn.Linear")
    return _split(model, x, num_classes=num_classes, head=head, log=log, param="model.arch",
                  preferred=classifier, expected=expected)


def _interpolation(value: Any) -> str:
    text = str(getattr(value, "value", value)).lower()
    return text if text in _INTERPOLATIONS else "bilinear"


def preprocessing(arch: str, *, pretrained: bool = False) -> dict[str, Any] | None:
    """The input size and normalisation an external backbone expects; None for other archs.

    torchvision: with ``pretrained``, the default weights' evaluation transform (its crop,
    resize, mean, std and interpolation); without, the ImageNet defaults (224 crop of a 256
    resize, bilinear, ImageNet mean and std). timm: the model's pretrained configuration
    (``input_size``, ``mean``, ``std``, ``interpolation``, and ``resize = round(H /
    crop_pct)``), read from timm's registry without building the model when it is registered
    there, from a built one otherwise; the same with or without ``pretrained``, as timm
    defines one per architecture (or tag, ``"timm:resnet50.a1_in1k"``).

    Parameters
    ----------
    arch : str
        A model name; only ``"torchvision:<name>"`` and ``"timm:<name>"`` give a result.
    pretrained : bool, default False
        Whether the backbone will load pretrained weights.

    Returns
    -------
    dict or None
        ``{"input_size": (C, H, W), "mean": (3 floats), "std": (3 floats), "resize": int or
        None, "interpolation": "bilinear" or "bicubic"}`` (other interpolations read as
        bilinear), or None when ``arch`` is not external.

    Raises
    ------
    ParameterError
        Naming ``model.arch``, as :func:`build_external` for a missing package or an unknown
        name.
    """
    if not is_external(arch):
        return None
    source, name = _parse(arch)
    pretrained = _check_pretrained(pretrained)
    if source == "torchvision":
        models = _import("torchvision", arch)
        key = _torchvision_name(models, name, arch)
        if not pretrained:
            return {"input_size": (3, 224, 224), "mean": _IMAGENET_MEAN, "std": _IMAGENET_STD,
                    "resize": 256, "interpolation": "bilinear"}
        transform = models.get_model_weights(key).DEFAULT.transforms()
        crop = int(transform.crop_size[0])
        resize = getattr(transform, "resize_size", None)
        return {
            "input_size": (3, crop, crop),
            "mean": tuple(float(v) for v in transform.mean),
            "std": tuple(float(v) for v in transform.std),
            "resize": int(resize[0]) if resize else None,
            "interpolation": _interpolation(transform.interpolation),
        }
    timm = _import("timm", arch)
    name = _timm_name(timm, name, arch)
    try:
        cfg = timm.get_pretrained_cfg(name) if ":" not in name else None
    except RuntimeError as error:  # a tag the architecture does not have
        raise ParameterError("model.arch", "'timm:<name>' with <name> from "
                             "timm.list_models(pretrained=True)", arch) from error
    if cfg is not None:
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        data = timm.data.resolve_data_config({}, pretrained_cfg=cfg)
    else:
        data = timm.data.resolve_model_data_config(timm.create_model(name, pretrained=False))
    size = tuple(int(v) for v in data["input_size"])
    crop_pct = data.get("crop_pct")
    return {
        "input_size": size,
        "mean": tuple(float(v) for v in data["mean"]),
        "std": tuple(float(v) for v in data["std"]),
        "resize": round(size[1] / crop_pct) if crop_pct else None,
        "interpolation": _interpolation(data.get("interpolation")),
    }
