"""How much of the partner a mixed example takes: the share draws and the pasted box.

:func:`sample_beta` draws ``Beta(alpha, alpha)`` (or ``Beta(alpha, beta)``) shares from a
generator, with no global random state and no data-dependent loop; :func:`paste_boxes` is
CutMix's box, whose clipped area is the share a pasted example really takes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tailmix._validation import ParameterError, check_number

__all__ = ["MIN_ALPHA", "check_alpha", "paste_boxes", "sample_beta"]

#: The smallest Beta shape a :class:`Mixer` takes. ``Beta(alpha, alpha)`` puts about
#: ``1e-6 ** alpha`` of its mass within ``1e-6`` of 0 or 1: at ``alpha = 1e-3`` that is 98.6%,
#: so nearly every "mixed" example is one of its two sources. Below it a value is a slip
#: (``1e-300`` for ``1e-3``) rather than a setting, and samplers stop being trustworthy: on
#: the CPU, torch's ``Beta`` returns exactly 0.5 for 24% of draws at ``alpha = 1e-3``, 87%
#: at ``1e-4`` and all at ``1e-10`` (the Gamma draws underflow), where the true limit puts
#: all the mass at 0 and 1.
MIN_ALPHA = 1e-3

# Gamma proposals drawn per sample; all of them are rejected with probability < 0.05 ** 12.
_GAMMA_PROPOSALS = 12


def sample_beta(
    alpha: float,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    beta: float | None = None,
) -> Tensor:
    """Draw ``Beta(alpha, alpha)`` samples from ``generator`` (no global random state), or
    ``Beta(alpha, beta)`` samples with a second shape ``beta``.

    Each Beta sample is ``G1 / (G1 + G2)`` with ``G1, G2 ~ Gamma(alpha)``, drawn by the
    Marsaglia-Tsang method (a fixed number of proposals per sample, the first accepted one
    kept, so there is no data-dependent loop), boosted by ``U ** (1 / alpha)`` for
    ``alpha < 1`` and combined in log space so tiny ``alpha`` cannot give ``0 / 0``. When
    ``alpha`` is so small that both boosts overflow (``log U / alpha = -inf``: below about
    ``1e-38`` in float32, ``1e-308`` in float64) the larger ``U`` decides, as it does in the
    limit, so the result is 0 or 1, never NaN, for every ``alpha > 0``.

    Parameters
    ----------
    alpha : float
        The shape, ``> 0``; ``alpha = 1`` is ``Uniform(0, 1)``.
    beta : float, optional
        The second shape, ``> 0`` (None: ``alpha``, the symmetric Beta of Mixup). With two
        shapes the sample is ``G1 / (G1 + G2)``, ``G1 ~ Gamma(alpha)``, ``G2 ~ Gamma(beta)``,
        drawn as above; shapes below about ``1e-30`` (whose boosts both overflow) give 0.5.
    shape : tuple of int
        Shape of the result.
    generator : torch.Generator
        Source of randomness; its device is used when ``device`` is not given.
    device, dtype
        Where and in which float type to return the samples.

    Returns
    -------
    Tensor
        Samples in ``[0, 1]``.
    """
    alpha = check_number("alpha", alpha, low=0.0, low_open=True)
    device = torch.device(device) if device is not None else generator.device
    if beta is not None and beta != alpha:
        beta = check_number("beta", beta, low=0.0, low_open=True)
        work = torch.float64 if dtype == torch.float64 else torch.float32
        logs = []
        for a in (alpha, beta):
            base, log_u = _log_gamma_sample(a, shape, generator, device, work)
            logs.append(base if log_u is None else base + log_u / a)
        logit = logs[0] - logs[1]
        return torch.sigmoid(torch.where(torch.isnan(logit), 0.0, logit)).to(dtype)
    if alpha == 1.0:
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    base1, log_u1 = _log_gamma_sample(alpha, shape, generator, device, work)
    base2, log_u2 = _log_gamma_sample(alpha, shape, generator, device, work)
    if log_u1 is None or log_u2 is None:
        return torch.sigmoid(base1 - base2).to(dtype)
    # log G = base + log U / alpha. When both boosts overflow to -inf, inf - inf is NaN;
    # then the U terms, combined before dividing, decide (lam 0 or 1), the bases on a tie.
    logit = (base1 + log_u1 / alpha) - (base2 + log_u2 / alpha)
    log_u = log_u1 - log_u2
    limit = torch.where(log_u == 0, base1 - base2, log_u / alpha)
    return torch.sigmoid(torch.where(torch.isnan(logit), limit, logit)).to(dtype)


def _log_gamma_sample(
    alpha: float,
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None]:
    """``log`` of ``Gamma(alpha, 1)`` samples (Marsaglia and Tsang, 2000).

    For ``alpha >= 1``: ``(log G, None)``. For ``alpha < 1`` the sample is boosted,
    ``G = G' * U ** (1 / alpha)`` with ``G' ~ Gamma(alpha + 1)``: ``(log G', log U)``, for
    the caller to combine (``log G' + log U / alpha``).
    """
    boosted = alpha < 1.0
    a = alpha + 1.0 if boosted else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    kw = dict(generator=generator, device=device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    z = torch.randn((_GAMMA_PROPOSALS, *shape), **kw)
    u = torch.rand((_GAMMA_PROPOSALS, *shape), **kw)
    v = (1.0 + c * z) ** 3
    log_v = torch.log(v.clamp_min(tiny))
    accepted = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
    first = accepted.to(torch.uint8).argmax(dim=0, keepdim=True)
    log_g = math.log(d) + log_v.gather(0, first).squeeze(0)
    log_g = torch.where(accepted.any(dim=0), log_g, math.log(d))  # never in practice
    if not boosted:
        return log_g, None
    return log_g, torch.log(torch.rand(shape, **kw).clamp_min(tiny))


def check_alpha(alpha: Any, *, name: str = "alpha") -> float:
    """A Mixer's Beta shape (``alpha``, or the second shape ``beta``): a finite number, at
    least :data:`MIN_ALPHA`."""
    expected = (f"a number >= {MIN_ALPHA:g} (below it Beta(alpha, alpha) puts over 98% of "
                "lam within 1e-6 of 0 or 1: almost nothing would be mixed)")
    try:
        alpha = check_number(name, alpha, low=MIN_ALPHA)
    except ParameterError:
        raise ParameterError(name, expected, alpha) from None
    return alpha


def paste_boxes(
    x: Tensor, x_partner: Tensor, lam: Tensor, shared: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """CutMix: paste a box of area about ``lam`` from the partner; return the true shares.

    The box of side ``sqrt(lam)`` times the image's is centred on a uniform pixel (one for the
    batch when ``shared``) and clipped to the image; the returned ``lam`` is the clipped box's
    area share.
    """
    batch, _, height, width = x.shape
    device = x.device
    centres = 1 if shared else batch
    cy = torch.randint(0, height, (centres,), generator=generator, device=device)
    cx = torch.randint(0, width, (centres,), generator=generator, device=device)
    side = lam.float().sqrt()
    box_h = torch.round(side * height).long()
    box_w = torch.round(side * width).long()
    top = cy - box_h // 2
    left = cx - box_w // 2
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top.unsqueeze(1)) & (rows < (top + box_h).unsqueeze(1))  # (B, H)
    in_cols = (cols >= left.unsqueeze(1)) & (cols < (left + box_w).unsqueeze(1))  # (B, W)
    box = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)  # (B, H, W)
    x_mix = torch.where(box.unsqueeze(1), x_partner, x)
    area = in_rows.sum(1) * in_cols.sum(1)
    return x_mix, area.to(lam.dtype) / (height * width)
