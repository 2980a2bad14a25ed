"""Batched image augmentation policies: AutoAugment, RandAugment, TrivialAugment and Cutout.

Images are float tensors (B, C, H, W) with values in [0, 1] and C = 1 or 3, on any device.
Every op works on the whole batch with a per-example argument and a per-example on/off mask;
a policy draws, for every example, which op to apply and how strongly, then loops over the
15 op kinds (never over examples) and applies kind ``k`` to the examples that chose it. All
randomness comes from the ``generator`` passed to ``forward``, so a seeded generator gives the
same output to the last bit.

The ops follow PIL's semantics (those the published policies were searched with):

- Geometric ops (``ShearX``, ``ShearY``, ``TranslateX``, ``TranslateY``, ``Rotate``) map every
  output pixel centre through a per-example affine map to a source point and take the
  nearest pixel (the one containing the point, as PIL's ``NEAREST`` does); a source point
  outside the image gives ``fill`` (default 128/255, PIL's grey). Shears are about the
  top-left corner, as PIL's ``transform(AFFINE, (1, s, 0, 0, 1, 0))``; rotations are about
  the image centre and counter-clockwise for a positive angle, as ``Image.rotate``; a
  positive translation moves the content right (or down).
- ``Brightness``, ``Color``, ``Contrast`` and ``Sharpness`` blend the image with a degenerate
  image, ``degenerate + factor * (x - degenerate)`` clipped to [0, 1], as ``ImageEnhance``:
  black, the ITU-R 601-2 grey (0.299 R + 0.587 G + 0.114 B), the mean of that grey per
  example, and the image smoothed by ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` with its
  border pixels kept. They work in float, so they can differ from PIL's 8-bit arithmetic by
  about one grey level.
- ``Posterize`` and ``Equalize`` work on the 8-bit values ``round(255 x)`` and return them
  divided by 255. ``Solarize`` inverts the pixels ``>= threshold``; ``AutoContrast`` rescales
  every channel of every example from its min..max to 0..1 (a constant channel is left as
  it is); ``Invert`` is ``1 - x``.

Magnitudes: a policy picks a magnitude bin ``m`` out of ``num_bins`` and uses the fraction
``level = m / (num_bins - 1)`` of each op's range (so the last bin is the full range): shear
``0.3 level``, translation ``150/331 level`` of the image side, rotation ``30 level`` degrees,
enhancement factor ``1 + 0.9 level``, posterize bits ``8 - round(4 level)``, solarize threshold
``1 - level``. The sign of the shear, translation, rotation and enhancement is drawn per example
(50/50). :func:`op_argument` is that mapping, :func:`apply_op` the ops themselves.

>>> import torch
>>> x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
>>> policy = RandAugment(num_ops=2, magnitude=9)
>>> out = policy(x, generator=torch.Generator().manual_seed(1))
>>> out.shape, bool(out.min() >= 0) and bool(out.max() <= 1)
(torch.Size([4, 3, 8, 8]), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_choice, check_number

__all__ = [
    "AUTOAUGMENT_POLICIES", "FILL", "OPS", "RANDOM_OPS", "AutoAugment", "Cutout",
    "RandAugment", "TrivialAugment", "apply_op", "build_policy", "op_argument",
]

#: Default fill of the geometric ops: PIL's grey (128, 128, 128) in [0, 1].
FILL = 128 / 255

#: Every op, in the order the policies index them.
OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
    "Invert",
)
#: The ops RandAugment and TrivialAugment draw from: all but ``Invert``.
RANDOM_OPS = OPS[:14]

MAX_SHEAR = 0.3
MAX_TRANSLATE = 150 / 331  # of the image side
MAX_ROTATE = 30.0  # degrees
MAX_ENHANCE = 0.9  # factor 1 -/+ this
SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                    "Color", "Contrast", "Sharpness"})
WITHOUT_MAGNITUDE = frozenset({"Identity", "AutoContrast", "Equalize", "Invert"})

#: Sub-policies as ((op, probability, magnitude bin of 10), (op, probability, bin)); the bin
#: of an op without a magnitude is ``None``. CIFAR-10: Cubuk et al., "AutoAugment: Learning
#: Augmentation Strategies from Data", CVPR 2019, appendix table of the CIFAR-10 policy.
AUTOAUGMENT_POLICIES: dict[str, tuple[tuple[tuple[str, float, int | None], ...], ...]] = {
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.2, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
}
AUTOAUGMENT_BINS = 10

# On these devices an op is computed on the selected examples only (index_select, op,
# index_copy). Elsewhere it is computed for the whole batch and kept where selected with
# torch.where: more arithmetic, but no host-device synchronisation (selecting examples needs
# their count). Both give the same values.
_SUBSET_DEVICES = frozenset({"cpu"})


# --------------------------------------------------------------------------------------------
# Ops: kernels (x, value, fill) -> x over the whole batch; apply_op adds the mask.
# --------------------------------------------------------------------------------------------

def _per_example(value: Tensor) -> Tensor:
    return value.view(-1, 1, 1, 1)


def _to_uint8(x: Tensor) -> Tensor:
    return (x * 255).round_().clamp_(0, 255).long()


def _from_uint8(q: Tensor, dtype: torch.dtype) -> Tensor:
    return q.to(dtype) / 255


def _grey(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma, (B, 1, H, W); a one-channel image is its own grey."""
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    return (degenerate + _per_example(factor).to(x.dtype) * (x - degenerate)).clamp_(0, 1)


def _sample_affine(x: Tensor, matrix: Tensor, fill: float) -> Tensor:
    """Nearest-neighbour sampling through per-example affine maps.

    ``matrix`` (B, 2, 3) maps an output pixel centre ``(col + 0.5, row + 0.5, 1)`` to its source
    point (x, y) in pixels from the top-left corner; the output takes the source pixel that
    contains the point, or ``fill`` when there is none.
    """
    b, c, h, w = x.shape
    m = matrix.to(device=x.device, dtype=torch.float32)[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    cols = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
    rows = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5)[:, None]
    source = (m[:, :, 0] * cols + m[:, :, 1] * rows + m[:, :, 2]).floor_()  # (B, 2, H, W)
    sx, sy = source[:, 0], source[:, 1]
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    flat = sy.clamp(0, h - 1).long() * w + sx.clamp(0, w - 1).long()  # (B, H, W)
    out = x.reshape(b, c, h * w).gather(2, flat.view(b, 1, h * w).expand(b, c, h * w))
    return out.view(b, c, h, w).masked_fill_(~inside[:, None], fill)


def _matrix(a: Tensor, b_: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    return torch.stack([torch.stack([a, b_, c], 1), torch.stack([d, e, f], 1)], 1)


def _shear_x(x: Tensor, value: Tensor, fill: float) -> Tensor:
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    return _sample_affine(x, _matrix(one, value, zero, zero, one, zero), fill)


def _shear_y(x: Tensor, value: Tensor, fill: float) -> Tensor:
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    return _sample_affine(x, _matrix(one, zero, zero, value, one, zero), fill)


def _translate_x(x: Tensor, value: Tensor, fill: float) -> Tensor:
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    return _sample_affine(x, _matrix(one, zero, -value, zero, one, zero), fill)


def _translate_y(x: Tensor, value: Tensor, fill: float) -> Tensor:
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    return _sample_affine(x, _matrix(one, zero, zero, zero, one, -value), fill)


def _rotate(x: Tensor, value: Tensor, fill: float) -> Tensor:
    # Counter-clockwise on screen (y down) by ``value`` degrees about the centre: the source of
    # output point p is the inverse rotation of p about the centre.
    h, w = x.shape[-2:]
    cx, cy = w / 2, h / 2
    angle = torch.deg2rad(value.to(torch.float32))
    cos, sin = torch.cos(angle), torch.sin(angle)
    return _sample_affine(x, _matrix(cos, -sin, cx - cos * cx + sin * cy,
                                     sin, cos, cy - sin * cx - cos * cy), fill)


def _brightness(x: Tensor, value: Tensor, fill: float) -> Tensor:
    return (x * _per_example(value).to(x.dtype)).clamp_(0, 1)


def _color(x: Tensor, value: Tensor, fill: float) -> Tensor:
    return _blend(x, _grey(x), value)


def _contrast(x: Tensor, value: Tensor, fill: float) -> Tensor:
    return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), value)


def _sharpness(x: Tensor, value: Tensor, fill: float) -> Tensor:
    h, w = x.shape[-2:]
    if h < 3 or w < 3:  # every pixel is a border pixel, kept as it is
        return x.clone()
    window = sum(x[..., i:i + h - 2, j:j + w - 2] for i in range(3) for j in range(3))
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = (window + 4 * x[..., 1:-1, 1:-1]) / 13
    return _blend(x, smooth, value)


def _posterize(x: Tensor, value: Tensor, fill: float) -> Tensor:
    step = torch.pow(2, 8 - _per_example(value).round().long())  # 2 ** dropped bits
    return _from_uint8(_to_uint8(x).div_(step, rounding_mode="floor").mul_(step), x.dtype)


def _solarize(x: Tensor, value: Tensor, fill: float) -> Tensor:
    return torch.where(x >= _per_example(value).to(x.dtype), 1 - x, x)


def _autocontrast(x: Tensor, value: Tensor, fill: float) -> Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    spread = high - low
    varies = spread > 0
    scale = torch.where(varies, 1 / spread.clamp(min=torch.finfo(x.dtype).tiny), 1)
    return ((x - torch.where(varies, low, 0)) * scale).clamp_(0, 1)


def _equalize(x: Tensor, value: Tensor, fill: float) -> Tensor:
    b, c, h, w = x.shape
    q = _to_uint8(x).view(b, c, h * w)
    hist = torch.zeros(b, c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(2, q, torch.ones_like(q))
    bins = torch.arange(256, device=x.device)
    last = torch.where(hist > 0, bins, 0).amax(dim=2, keepdim=True)  # highest value present
    step = (h * w - hist.gather(2, last)) // 255  # (B, C, 1)
    below = hist.cumsum(2) - hist  # pixels below each value
    lut = ((below + step // 2) // step.clamp(min=1)).clamp_(max=255)
    out = torch.where(step > 0, lut.gather(2, q), q)
    return _from_uint8(out.view(b, c, h, w), x.dtype)


def _invert(x: Tensor, value: Tensor, fill: float) -> Tensor:
    return 1 - x


def _identity(x: Tensor, value: Tensor, fill: float) -> Tensor:
    return x


_KERNELS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "Identity": _identity, "ShearX": _shear_x, "ShearY": _shear_y,
    "TranslateX": _translate_x, "TranslateY": _translate_y, "Rotate": _rotate,
    "Brightness": _brightness, "Color": _color, "Contrast": _contrast,
    "Sharpness": _sharpness, "Posterize": _posterize, "Solarize": _solarize,
    "AutoContrast": _autocontrast, "Equalize": _equalize, "Invert": _invert,
}


def _apply_masked(x: Tensor, name: str, value: Tensor, mask: Tensor | None,
                  fill: float) -> Tensor:
    kernel = _KERNELS[name]
    if name == "Identity":
        return x
    if mask is None:
        return kernel(x, value, fill)
    if x.device.type in _SUBSET_DEVICES:
        index = mask.nonzero().squeeze(1)
        if index.numel() == 0:
            return x
        if index.numel() == x.shape[0]:
            return kernel(x, value, fill)
        done = kernel(x.index_select(0, index), value.index_select(0, index), fill)
        return x.index_copy(0, index, done)
    return torch.where(_per_example(mask), kernel(x, value, fill), x)


def _check_images(x: Any, name: str = "x") -> Tensor:
    if (not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point()
            or x.shape[1] not in (1, 3)):
        got = (f"shape {tuple(x.shape)}, {x.dtype}" if isinstance(x, Tensor)
               else type(x).__name__)
        raise ParameterError(name, "a float tensor (B, C, H, W) with C = 1 or 3", got)
    return x


def _check_per_example(name: str, value: Any, batch: int, *, boolean: bool) -> Tensor:
    kind = "a bool" if boolean else "a number"
    expected = f"{kind} tensor of shape ({batch},)"
    if not isinstance(value, Tensor) or tuple(value.shape) != (batch,) or (
            boolean != (value.dtype == torch.bool)):
        got = (f"shape {tuple(value.shape)}, {value.dtype}" if isinstance(value, Tensor)
               else value)
        raise ParameterError(name, expected, got)
    return value


def apply_op(x: Tensor, op: str, value: Tensor | float, mask: Tensor | None = None, *,
             fill: float = FILL) -> Tensor:
    """Apply one op to the examples of a batch selected by ``mask``.

    Parameters
    ----------
    x : Tensor
        Float images (B, C, H, W) in [0, 1], C = 1 or 3.
    op : str
        One of :data:`OPS`.
    value : Tensor or float
        The op's argument per example, (B,) (a float is used for every example): shear
        factor, translation in pixels, rotation in degrees (counter-clockwise), enhancement
        factor, posterize bits in [0, 8], solarize threshold in [0, 1]; ignored by
        ``Identity``, ``AutoContrast``, ``Equalize`` and ``Invert``.
    mask : Tensor, optional
        Bool (B,): the examples to change; the others come back as they are. All when omitted.
    fill : float, default 128/255
        Value of the pixels a geometric op brings in from outside the image.

    Returns
    -------
    Tensor
        A new tensor with the shape, dtype and device of ``x`` (``x`` itself for ``Identity``
        or an empty mask).

    Examples
    --------
    >>> x = torch.tensor([[[[0.0, 0.5], [0.75, 1.0]]]])
    >>> apply_op(x, "Solarize", 0.6)
    tensor([[[[0.0000, 0.5000],
              [0.2500, 0.0000]]]])
    """
    _check_images(x)
    check_choice("op", op, OPS)
    fill = check_number("fill", fill, low=0.0, high=1.0)
    batch = x.shape[0]
    if not isinstance(value, Tensor):
        value = torch.full((batch,), float(check_number("value", value)), device=x.device)
    _check_per_example("value", value, batch, boolean=False)
    if mask is not None:
        _check_per_example("mask", mask, batch, boolean=True)
    return _apply_masked(x, op, value.to(x.device), None if mask is None else mask.to(x.device),
                         fill)


def op_argument(op: str, level: Tensor, sign: Tensor | None = None, *, height: int,
                width: int) -> Tensor:
    """The argument of ``op`` at ``level`` (the fraction of its range, in [0, 1]) per example.

    ``sign`` (B,) of +-1 flips the shear, translation, rotation and the enhancement
    (``1 + sign * 0.9 * level``); positive when omitted. Ops without a magnitude get zeros.

    >>> op_argument("Posterize", torch.tensor([0.0, 0.5, 1.0]), height=32, width=32)
    tensor([8., 6., 4.])
    """
    check_choice("op", op, OPS)
    level = level.float()
    signed = level if sign is None else level * sign
    if op in ("ShearX", "ShearY"):
        return MAX_SHEAR * signed
    if op == "TranslateX":
        return (MAX_TRANSLATE * width) * signed
    if op == "TranslateY":
        return (MAX_TRANSLATE * height) * signed
    if op == "Rotate":
        return MAX_ROTATE * signed
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 1 + MAX_ENHANCE * signed
    if op == "Posterize":
        return 8 - (4 * level).round()
    if op == "Solarize":
        return 1 - level
    return torch.zeros_like(level)


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------

class _Policy(nn.Module):
    """Shared forward: check the images, let the subclass draw its plan, apply it.

    A plan is a list of rounds ``(op, level, sign, apply)``, each (B,): the index in
    :data:`OPS` of the op every example gets, the fraction of the op's range, the sign
    (+-1) and whether the op is applied at all. Rounds are applied one after another.
    """

    def __init__(self, *, fill: float):
        super().__init__()
        self.fill = check_number("fill", fill, low=0.0, high=1.0)

    def _plan(self, batch: int, device: torch.device, generator: torch.Generator | None
              ) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        raise NotImplementedError

    def _op_names(self) -> tuple[str, ...]:
        return RANDOM_OPS

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        h, w = x.shape[-2:]
        for op, level, sign, apply in self._plan(x.shape[0], x.device, generator):
            for k, name in enumerate(self._op_names()):
                if name == "Identity":
                    continue
                value = op_argument(name, level, sign, height=h, width=w)
                x = _apply_masked(x, name, value, apply & (op == k), self.fill)
        return x


def _random_sign(batch: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    draw = torch.rand(batch, device=device, generator=generator)
    return torch.where(draw < 0.5, -1.0, 1.0)


class AutoAugment(_Policy):
    """AutoAugment: per example one of the published sub-policies, each op with its probability.

    Parameters
    ----------
    policy : {"cifar10"}
        The sub-policy table (:data:`AUTOAUGMENT_POLICIES`): 25 pairs of
        (op, probability, magnitude bin of 10).
    fill : float, default 128/255
        Value of the pixels a geometric op brings in from outside the image.

    Notes
    -----
    Bin ``m`` of 10 is the fraction ``m / 9`` of each op's range (bin 9 is the full range);
    signs are drawn per example. Per example, one sub-policy is drawn uniformly, then each
    of its two ops applied with its probability, in order.
    """

    def __init__(self, *, policy: str = "cifar10", fill: float = FILL):
        super().__init__(fill=fill)
        self.policy = check_choice("policy", policy, AUTOAUGMENT_POLICIES)
        table = AUTOAUGMENT_POLICIES[policy]
        ops = [[OPS.index(name) for name, _, _ in sub] for sub in table]
        probs = [[p for _, p, _ in sub] for sub in table]
        levels = [[0.0 if m is None else m / (AUTOAUGMENT_BINS - 1) for _, _, m in sub]
                  for sub in table]
        self.register_buffer("sub_ops", torch.tensor(ops, dtype=torch.long), persistent=False)
        self.register_buffer("sub_probs", torch.tensor(probs, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("sub_levels", torch.tensor(levels, dtype=torch.float32),
                             persistent=False)

    def _op_names(self) -> tuple[str, ...]:
        return OPS

    def _plan(self, batch, device, generator):
        chosen = torch.randint(0, self.sub_ops.shape[0], (batch,), device=device,
                               generator=generator)
        draw = torch.rand(batch, 2, device=device, generator=generator)
        ops, levels = self.sub_ops[chosen], self.sub_levels[chosen]
        apply = draw < self.sub_probs[chosen]
        return [(ops[:, r], levels[:, r], _random_sign(batch, device, generator), apply[:, r])
                for r in range(2)]

    def extra_repr(self) -> str:
        return f"policy={self.policy!r}, fill={self.fill:.4g}"


class RandAugment(_Policy):
    """RandAugment: per example ``num_ops`` ops drawn uniformly from :data:`RANDOM_OPS`.

    Parameters
    ----------
    num_ops : int, default 2
        Ops applied one after another (drawn with replacement, so an op can repeat).
    magnitude : float, default 9
        The magnitude bin, in [0, num_bins - 1]: every op at the fraction
        ``magnitude / (num_bins - 1)`` of its range, with a random sign per example.
    num_bins : int, default 31
        Number of magnitude bins.
    fill : float, default 128/255
        Value of the pixels a geometric op brings in from outside the image.
    """

    def __init__(self, *, num_ops: int = 2, magnitude: float = 9, num_bins: int = 31,
                 fill: float = FILL):
        super().__init__(fill=fill)
        self.num_ops = check_number("num_ops", num_ops, low=0, integer=True)
        self.num_bins = check_number("num_bins", num_bins, low=2, integer=True)
        self.magnitude = check_number("magnitude", magnitude, low=0, high=self.num_bins - 1)

    def _plan(self, batch, device, generator):
        level = torch.full((batch,), self.magnitude / (self.num_bins - 1), device=device)
        apply = torch.ones(batch, dtype=torch.bool, device=device)
        plan = []
        for _ in range(self.num_ops):
            op = torch.randint(0, len(RANDOM_OPS), (batch,), device=device, generator=generator)
            plan.append((op, level, _random_sign(batch, device, generator), apply))
        return plan

    def extra_repr(self) -> str:
        return (f"num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"num_bins={self.num_bins}, fill={self.fill:.4g}")


class TrivialAugment(_Policy):
    """TrivialAugment: per example one op from :data:`RANDOM_OPS` at a uniform magnitude bin.

    Uses the same op ranges as :class:`RandAugment` (not the wider ranges of the paper's
    "TrivialAugment Wide" space).

    Parameters
    ----------
    num_bins : int, default 31
        The magnitude bin is uniform in ``[0, num_bins)``, i.e. the level in
        ``{0, 1/(num_bins - 1), ..., 1}``; the sign is random.
    fill : float, default 128/255
        Value of the pixels a geometric op brings in from outside the image.
    """

    def __init__(self, *, num_bins: int = 31, fill: float = FILL):
        super().__init__(fill=fill)
        self.num_bins = check_number("num_bins", num_bins, low=2, integer=True)

    def _plan(self, batch, device, generator):
        op = torch.randint(0, len(RANDOM_OPS), (batch,), device=device, generator=generator)
        bins = torch.randint(0, self.num_bins, (batch,), device=device, generator=generator)
        level = bins.float() / (self.num_bins - 1)
        apply = torch.ones(batch, dtype=torch.bool, device=device)
        return [(op, level, _random_sign(batch, device, generator), apply)]

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, fill={self.fill:.4g}"


class Cutout(nn.Module):
    """Cutout: per example a ``size`` x ``size`` square, clipped at the borders, set to 0.

    The square's centre is a uniform pixel; its rows are ``centre - size // 2`` to
    ``centre - size // 2 + size - 1`` (likewise the columns). It is zeroed in the [0, 1] image
    space, before normalisation, so the hole is black (``-mean / std`` after normalising);
    the original Cutout code masks after normalisation, which makes the hole the dataset mean.

    Parameters
    ----------
    size : int, default 16
        Side of the square in pixels.
    """

    def __init__(self, *, size: int = 16):
        super().__init__()
        self.size = check_number("size", size, low=1, integer=True)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ParameterError("x", "a tensor (B, C, H, W)", got)
        b, _, h, w = x.shape
        top = torch.randint(0, h, (b, 1), device=x.device, generator=generator) - self.size // 2
        left = torch.randint(0, w, (b, 1), device=x.device, generator=generator) - self.size // 2
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        in_rows = (rows >= top) & (rows < top + self.size)  # (B, H)
        in_cols = (cols >= left) & (cols < left + self.size)  # (B, W)
        hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return x.masked_fill(hole, 0)

    def extra_repr(self) -> str:
        return f"size={self.size}"


_POLICIES: dict[str, type[_Policy]] = {
    "autoaugment": AutoAugment, "randaugment": RandAugment, "trivialaugment": TrivialAugment,
}


def build_policy(name: str | None, **kwargs: Any) -> nn.Module | None:
    """Build a policy by name; ``None`` or ``"none"`` gives ``None`` (no policy).

    >>> build_policy("randaugment", num_ops=1, magnitude=5)
    RandAugment(num_ops=1, magnitude=5, num_bins=31, fill=0.502)
    >>> build_policy("none") is None
    True
    """
    if name is None or name == "none":
        return None
    check_choice("name", name, ["none", *_POLICIES])
    return _POLICIES[name](**kwargs)

