"""Label rules: how much of a mixed example's label belongs to its anchor.

A mixed example takes ``(1 - lam)`` of the anchor's input and ``lam`` of the partner's (``lam``
is the partner's share). Its target is ``w * onehot(y_anchor) + (1 - w) * onehot(y_partner)``,
and a label rule decides ``w`` from ``lam`` and the two classes' training counts:

- ``"hard"``: ``w = 1`` (the anchor keeps its label, as in SMOTE);
- ``"soft"``: ``w = 1 - lam`` (Mixup);
- ``"remix"`` (``K``, ``tau``): with ``r = n_anchor / n_partner``, ``w = 0`` when
  ``r >= K`` and ``1 - lam < tau``, ``w = 1`` when ``r <= 1 / K`` and ``lam < tau``, otherwise
  ``1 - lam``;
- ``"mamix"`` (``q``): with ``m = n_anchor**q / (n_anchor**q + n_partner**q)``, ``w`` is the
  piecewise-linear function through ``(0, 1)``, ``(m, 0.5)`` and ``(1, 0)``.

A rule is a function registered in :data:`tailmix.registry.LABEL_RULES` (re-exported
here), called as ``rule(lam, n_anchor, n_partner, **params)`` with the three already
floating tensors of one dtype on one device, broadcastable to each other; it returns ``w``
of their broadcast shape. Its metadata: ``defaults`` (every parameter with its default),
``check`` (called with the complete parameters, raising :class:`ParameterError` on a bad
value) and ``needs_counts`` (whether it reads the class counts)::

    @LABEL_RULES.register("anchor_heavy", defaults={"share": 0.75}, check=None,
                          needs_counts=False)
    def anchor_heavy(lam, n_anchor, n_partner, *, share):
        shape = torch.broadcast_shapes(lam.shape, n_anchor.shape, n_partner.shape)
        return torch.full(shape, share, dtype=lam.dtype, device=lam.device)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import reduce
from typing import Any

import torch
from torch import Tensor

from tailmix._validation import ParameterError, check_number
from tailmix.registry import LABEL_RULES

__all__ = ["LABEL_RULES", "RULE_DEFAULTS", "label_weight", "resolve_rule_params"]


def _no_parameters(params: Mapping[str, Any]) -> None:
    """The check of a rule without parameters: nothing to check."""


def _check_remix(params: Mapping[str, Any]) -> None:
    check_number("K", params["K"], low=1.0)
    check_number("tau", params["tau"], low=0.0, high=1.0, low_open=True, high_open=True)


def _check_mamix(params: Mapping[str, Any]) -> None:
    check_number("q", params["q"])


# The rules, in order from the plainest to the most imbalance-aware. Each is called by
# _label_weight with lam, n_anchor and n_partner already floating tensors of one dtype on one
# device (broadcastable to each other) and must return w with their broadcast shape.


@LABEL_RULES.register("hard", defaults={}, check=_no_parameters, needs_counts=False)
def _hard(lam: Tensor, n_anchor: Tensor, n_partner: Tensor) -> Tensor:
    shape = torch.broadcast_shapes(lam.shape, n_anchor.shape, n_partner.shape)
    return torch.ones(shape, dtype=lam.dtype, device=lam.device)


@LABEL_RULES.register("soft", defaults={}, check=_no_parameters, needs_counts=False)
def _soft(lam: Tensor, n_anchor: Tensor, n_partner: Tensor) -> Tensor:
    shape = torch.broadcast_shapes(lam.shape, n_anchor.shape, n_partner.shape)
    return (1.0 - lam).expand(shape).clone()


@LABEL_RULES.register("remix", defaults={"K": 3.0, "tau": 0.5}, check=_check_remix,
                      needs_counts=True)
def _remix(lam: Tensor, n_anchor: Tensor, n_partner: Tensor, *, K: float, tau: float) -> Tensor:
    shape = torch.broadcast_shapes(lam.shape, n_anchor.shape, n_partner.shape)
    soft = (1.0 - lam).expand(shape)
    # r >= K and r <= 1/K written without the division, so exact ratios compare exactly.
    to_partner = (n_anchor >= K * n_partner) & (1.0 - lam < tau)
    to_anchor = (K * n_anchor <= n_partner) & (lam < tau)
    return torch.where(to_partner, 0.0, torch.where(to_anchor, 1.0, soft))


@LABEL_RULES.register("mamix", defaults={"q": -0.25}, check=_check_mamix, needs_counts=True)
def _mamix(lam: Tensor, n_anchor: Tensor, n_partner: Tensor, *, q: float) -> Tensor:
    # m = n_a**q / (n_a**q + n_p**q), computed in log space so large counts or large |q|
    # cannot overflow; equal counts give exactly m = 0.5.
    m = torch.sigmoid(q * (torch.log(n_anchor) - torch.log(n_partner)))
    tiny = torch.finfo(lam.dtype).tiny
    below = 1.0 - 0.5 * lam / m.clamp_min(tiny)
    above = 0.5 * (1.0 - lam) / (1.0 - m).clamp_min(tiny)
    return torch.where(lam <= m, below, above).clamp(0.0, 1.0)


class _RuleDefaults(Mapping):
    """Read-only view ``rule -> {parameter: default}`` of the registered rules' metadata."""

    def __getitem__(self, rule: str) -> dict[str, float]:
        if rule not in LABEL_RULES:
            raise KeyError(rule)
        return dict(LABEL_RULES.meta(rule).get("defaults") or {})

    def __iter__(self) -> Iterator[str]:
        return iter(LABEL_RULES)

    def __len__(self) -> int:
        return len(LABEL_RULES)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Each registered rule's parameters and their default values (a read-only view of the
#: ``defaults`` metadata in :data:`tailmix.registry.LABEL_RULES`).
RULE_DEFAULTS: Mapping[str, dict[str, float]] = _RuleDefaults()


def resolve_rule_params(rule: str, params: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Check a rule's name and parameters and fill in the defaults.

    Parameters
    ----------
    rule : str
        A rule registered in :data:`tailmix.registry.LABEL_RULES` (re-exported here).
    params : mapping, optional
        Parameters given for the rule; those left out take their defaults.

    Returns
    -------
    dict
        Every parameter of the rule, as floats.

    Raises
    ------
    ParameterError
        For an unknown rule, a parameter the rule does not take, or a value the rule's
        ``check`` refuses (built in: ``K < 1``, ``tau`` outside ``(0, 1)`` or a non-finite
        ``q``).

    Examples
    --------
    >>> resolve_rule_params("remix", {"K": 2})
    {'K': 2.0, 'tau': 0.5}
    """
    LABEL_RULES.get(rule, "rule")
    meta = LABEL_RULES.meta(rule)
    params = dict(params or {})
    defaults = meta.get("defaults") or {}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        allowed = ", ".join(repr(p) for p in defaults) or "none"
        raise ParameterError(
            f"{rule} rule's parameters", f"among the rule's parameters ({allowed})", unknown
        )
    resolved = {**defaults, **params}
    check = meta.get("check")
    if check is not None:
        check(resolved)
    return {name: float(value) for name, value in resolved.items()}


def _result_dtype(*values: Any) -> torch.dtype:
    floating = [v.dtype for v in values if isinstance(v, Tensor) and v.is_floating_point()]
    return reduce(torch.promote_types, floating) if floating else torch.get_default_dtype()


def _prepare(
    lam: Tensor | float, n_anchor: Tensor, n_partner: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``lam``, ``n_anchor`` and ``n_partner`` as tensors of their promoted floating dtype
    (at least the default dtype) on the counts' device."""
    n_anchor = torch.as_tensor(n_anchor)
    dtype = _result_dtype(lam, n_anchor, n_partner)
    device = n_anchor.device
    n_anchor = n_anchor.to(dtype)
    n_partner = torch.as_tensor(n_partner, device=device).to(dtype)
    lam = torch.as_tensor(lam, device=device).to(dtype)
    return lam, n_anchor, n_partner


def _label_weight(
    rule: str, lam: Tensor | float, n_anchor: Tensor, n_partner: Tensor, params: Mapping
) -> Tensor:
    """Compute ``w`` without any checks (the hot-path version of :func:`label_weight`).

    ``params`` must be complete (see :func:`resolve_rule_params`). No host synchronisation.
    """
    return LABEL_RULES.get(rule, "rule")(*_prepare(lam, n_anchor, n_partner), **params)


def label_weight(
    rule: str,
    lam: Tensor | float,
    n_anchor: Tensor,
    n_partner: Tensor,
    *,
    validate: bool = True,
    **params: float,
) -> Tensor:
    """The anchor's share ``w`` of a mixed example's label.

    Parameters
    ----------
    rule : str
        The label rule: ``"hard"``, ``"soft"``, ``"remix"``, ``"mamix"`` or another one
        registered in :data:`tailmix.registry.LABEL_RULES`.
    lam : float or Tensor
        The partner's share of the input, in ``[0, 1]``.
    n_anchor, n_partner : Tensor
        Training counts of the anchor's and the partner's classes (any integer or float
        dtype); they broadcast with ``lam``.
    validate : bool, default True
        Check tensor values (``lam`` in ``[0, 1]``, counts positive). The check waits for the
        device; pass False on a hot path once the inputs are known to be valid. Python
        floats and the rule's parameters are always checked.
    **params : float
        The rule's parameters: ``K`` (default 3) and ``tau`` (default 0.5) for ``"remix"``,
        ``q`` (default -0.25) for ``"mamix"`` (a registered rule's ``defaults`` metadata).

    Returns
    -------
    Tensor
        ``w`` in ``[0, 1]``, a floating tensor on the counts' device with the broadcast shape.

    Raises
    ------
    ParameterError
        For an unknown rule or parameter, a parameter out of range, ``lam`` outside ``[0, 1]``
        or a count that is not positive.

    Examples
    --------
    >>> import torch
    >>> n_a, n_p = torch.tensor(5000), torch.tensor(50)
    >>> label_weight("mamix", torch.tensor([0.25, 0.5, 0.75]), n_a, n_p).round(decimals=3)
    tensor([0.4940, 0.3290, 0.1650])
    >>> label_weight("soft", 0.25, n_a, n_p)
    tensor(0.7500)
    """
    params = resolve_rule_params(rule, params)
    if not isinstance(lam, Tensor):
        check_number("lam", lam, low=0.0, high=1.0)
    elif validate:
        if lam.is_complex() or bool(((lam < 0) | (lam > 1) | torch.isnan(lam)).any()):
            raise ParameterError("lam", "a tensor with values in [0, 1]", lam)
    for name, counts in (("n_anchor", n_anchor), ("n_partner", n_partner)):
        if isinstance(counts, Tensor):
            if validate and bool((~(counts > 0)).any()):
                raise ParameterError(name, "a tensor of positive class counts", counts)
        else:
            check_number(name, counts, low=0.0, low_open=True)
    return _label_weight(rule, lam, n_anchor, n_partner, params)
