"""Classification losses on soft targets, with optional per-class weights.

Every loss is called as ``loss(logits, target, class_weights=None)`` where ``logits`` has
shape ``(B, C)`` and ``target`` is a soft target of shape ``(B, C)`` whose rows sum to 1 (a
``(B,)`` integer label tensor is accepted too and read as one-hot). Each loss defines a
per-class term ``l_ik(z)``; the loss of example ``i`` is ``sum_k v_k y_ik l_ik`` and the batch
reduction is the weighted mean

    sum_i sum_k v_k y_ik l_ik / sum_i sum_k v_k y_ik,

with ``v`` the class weights (all ones when ``class_weights`` is ``None``, which makes it the
plain mean over the batch). On one-hot targets every loss therefore equals its hard-target
form, e.g. ``F.cross_entropy(z, y, weight=v)``. So any mixer works with any loss and any
class-weight schedule.

A loss is a :class:`SoftTargetLoss` subclass registered in :data:`tailmix.registry.LOSSES`
(re-exported here); registering one is all a new loss needs to be found by
:func:`build_loss` and by a config's ``loss: {name: ...}``::

    @LOSSES.register("my_loss")
    class MyLoss(SoftTargetLoss):
        def __init__(self, *, class_counts, strength=1.0): ...
        def _per_class_loss(self, logits, target): ...

Its keyword-only constructor arguments are its parameters; it receives ``class_counts``
when it names them.

>>> import torch
>>> loss = build_loss("ce", class_counts=None)
>>> round(loss(torch.zeros(1, 4), torch.tensor([2])).item(), 4)  # log(4)
1.3863
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailmix._validation import (
    ParameterError,
    check_choice,
    check_keywords,
    check_number,
    keywords,
)
from tailmix.registry import LOSSES
from tailmix.weights import NORMALISERS, ClassCounts, check_class_counts

__all__ = [
    "LOSSES",
    "BalancedSoftmax",
    "CrossEntropy",
    "Focal",
    "LDAM",
    "LabelAwareSmoothing",
    "LogitAdjusted",
    "SoftTargetLoss",
    "build_loss",
    "posthoc_adjust",
]


def _log_prior(counts: Tensor) -> Tensor:
    return (counts / counts.sum()).log()


class SoftTargetLoss(nn.Module):
    """Base class: checks the inputs, then reduces the per-class terms of ``_per_class_loss``.

    Subclasses implement ``_per_class_loss(logits, target) -> (B, C)`` only.
    """

    #: Whether the loss expects a cosine (normalised) classifier head; such a loss scales
    #: the cosines itself and says by how much in :attr:`logit_scale`.
    requires_cosine_head: bool = False

    @property
    def logit_scale(self) -> float:
        """The factor the loss multiplies the model's outputs by before its softmax (1 here):
        ``softmax(logit_scale * outputs)`` are the probabilities it trains."""
        return 1.0

    def forward(
        self, logits: Tensor, target: Tensor, class_weights: Tensor | None = None, *,
        normalise: str = "mass",
    ) -> Tensor:
        """Weighted mean loss over the batch.

        Parameters
        ----------
        logits : Tensor
            Shape ``(B, C)``.
        target : Tensor
            Soft target of shape ``(B, C)`` with rows summing to 1, or integer labels ``(B,)``;
            with ``normalise="sources"`` also its parts by source, ``(S, B, C)``, summing
            over ``S`` to the soft target (:meth:`tailmix.mixing.Mixer.forward`'s ``parts``).
        class_weights : Tensor, optional
            Shape ``(C,)``; ``None`` means no weighting (plain mean).
        normalise : {"mass", "rows", "sources"}, default "mass"
            With ``class_weights``, what the terms ``v_k y_ik l_ik`` are divided by: their
            class-weighted target mass ``sum_i sum_k v_k y_ik`` (a weighted mean), or the
            number of rows (the weights scale the loss), or, source by source, the source's
            own class-weighted mass, each source's weighted mean then counted by its share
            of the target mass: ``sum_s (m_s / B) * T_s / N_s`` (CMO's and the reference
            Mixup code's ``lam * ce_w(y_a) + (1 - lam) * ce_w(y_b)``).

        Returns
        -------
        Tensor
            A scalar, in the promoted floating dtype of ``logits`` (at least ``float32``).
        """
        terms, total = self._weighted_terms(logits, target, class_weights, normalise)
        return terms.sum() / total

    def class_terms(
        self, logits: Tensor, target: Tensor, class_weights: Tensor | None = None, *,
        normalise: str = "mass",
    ) -> Tensor:
        """The loss split by target class: ``(C,)`` shares that sum to :meth:`forward`'s
        value (up to rounding). Column ``k`` holds the terms ``v_k y_ik l_ik`` of every
        example, so a soft target's mass on class ``k`` counts toward ``k``."""
        terms, total = self._weighted_terms(logits, target, class_weights, normalise)
        return terms.sum(0) / total

    def _weighted_terms(self, logits: Tensor, target: Tensor, class_weights: Tensor | None,
                        normalise: str = "mass") -> tuple[Tensor, Tensor | int]:
        """Checks; then the ``(B, C)`` terms ``v_k y_ik l_ik`` and their normaliser."""
        check_choice("normalise", normalise, NORMALISERS)
        if logits.ndim != 2:
            raise ParameterError("logits", "a tensor of shape (B, C)", tuple(logits.shape))
        dtype = torch.promote_types(logits.dtype, torch.float32)
        num_classes = logits.shape[1]
        if normalise == "sources" and target.ndim == 3:
            return self._terms_by_source(logits.to(dtype), target.to(dtype), class_weights)
        if target.ndim == 1 and not target.is_floating_point():
            target = F.one_hot(target, num_classes)
        if target.shape != logits.shape:
            raise ParameterError(
                "target", f"a tensor of shape {tuple(logits.shape)}", tuple(target.shape)
            )
        z, y = logits.to(dtype), target.to(dtype)
        per_class = self._per_class_loss(z, y)
        if class_weights is None:
            return y * per_class, z.shape[0]
        if class_weights.shape != (num_classes,):
            raise ParameterError(
                "class_weights", f"a tensor of shape ({num_classes},)", tuple(class_weights.shape)
            )
        weighted_target = y * class_weights.to(device=z.device, dtype=dtype)
        total = z.shape[0] if normalise == "rows" else weighted_target.sum()
        return weighted_target * per_class, total  # one source: "sources" is "mass"

    def _terms_by_source(self, z: Tensor, parts: Tensor, class_weights: Tensor | None
                         ) -> tuple[Tensor, int]:
        """``normalise="sources"``: the terms, each source's scaled by ``m_s / (B N_s)``."""
        if parts.shape[1:] != z.shape:
            raise ParameterError("target", f"parts of shape (S, {z.shape[0]}, {z.shape[1]})",
                                 tuple(parts.shape))
        y = parts.sum(0)
        per_class = self._per_class_loss(z, y)  # on the whole target (LDAM's margins)
        if class_weights is None:
            return y * per_class, z.shape[0]
        if class_weights.shape != (z.shape[1],):
            raise ParameterError(
                "class_weights", f"a tensor of shape ({z.shape[1]},)", tuple(class_weights.shape)
            )
        weighted = parts * class_weights.to(device=z.device, dtype=z.dtype)
        mass, norm = parts.sum((1, 2)), weighted.sum((1, 2))
        scale = torch.where(norm > 0, mass / norm.clamp_min(torch.finfo(z.dtype).tiny), 0.0)
        terms = (weighted * scale.view(-1, 1, 1)).sum(0) * per_class
        return terms, z.shape[0]

    def _per_class_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError


@LOSSES.register("ce")
class CrossEntropy(SoftTargetLoss):
    """Soft-target cross-entropy: ``l_ik = -log softmax(z_i)_k``."""

    def _per_class_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return -F.log_softmax(logits, dim=1)


@LOSSES.register("focal")
class Focal(SoftTargetLoss):
    """Focal loss: ``l_ik = (1 - p_ik) ** gamma * (-log p_ik)``, ``p_i = softmax(z_i)``.

    Parameters
    ----------
    gamma : float
        Focusing parameter, ``>= 0``; ``gamma = 0`` is cross-entropy.
    """

    def __init__(self, *, gamma: float = 1.0):
        super().__init__()
        self.gamma = check_number("gamma", gamma, low=0.0)

    def _per_class_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1)
        if self.gamma == 0:
            return -log_p
        return (-torch.expm1(log_p)).pow(self.gamma) * -log_p

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


@LOSSES.register("ldam")
class LDAM(SoftTargetLoss):
    """Label-distribution-aware margin loss.

    Class ``c`` gets the margin ``delta_c = C0 / n_c ** 0.25`` with ``C0`` chosen so that the
    largest margin (that of the rarest class) is ``max_margin``. Each logit is lowered by the
    target's share of its margin, ``z - y * delta`` (for a one-hot target: the margin is
    subtracted from the true-class logit), scaled by ``s``, and fed to soft cross-entropy.

    Parameters
    ----------
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive.
    max_margin : float
        Largest margin, ``> 0``.
    s : float
        Logit scale, ``> 0``; meant for a cosine classifier whose logits lie in ``[-1, 1]``.
        The probabilities the loss trains are ``softmax(s * logits)``: read the model's
        outputs at :attr:`logit_scale` outside training too (a tailmix run gives its
        :class:`~tailmix.models.heads.CosineHead` this scale for evaluation and prediction).

    Attributes
    ----------
    margins : Tensor
        Buffer of shape ``(C,)`` holding ``delta_c``.
    """

    requires_cosine_head = True

    def __init__(self, *, class_counts: ClassCounts, max_margin: float = 0.5, s: float = 30.0):
        super().__init__()
        self.max_margin = check_number("max_margin", max_margin, low=0.0, low_open=True)
        self.s = check_number("s", s, low=0.0, low_open=True)
        counts = check_class_counts(class_counts)
        margins = max_margin * (counts.min() / counts) ** 0.25
        self.register_buffer("margins", margins.to(torch.float32))

    @property
    def logit_scale(self) -> float:
        """``s``: the loss reads cosines at this temperature."""
        return self.s

    def _per_class_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        shifted = logits - target * self.margins.to(logits.dtype)
        return -F.log_softmax(self.s * shifted, dim=1)

    def extra_repr(self) -> str:
        return f"max_margin={self.max_margin}, s={self.s}"


@LOSSES.register("la")
class LogitAdjusted(SoftTargetLoss):
    """Logit-adjusted cross-entropy: ``tau * log(prior)`` is added to the logits in training.

    At evaluation the raw logits are used as they are.

    Parameters
    ----------
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive; the prior is ``n_c / sum(n)``.
    tau : float
        Adjustment strength, ``>= 0``.

    Attributes
    ----------
    log_prior : Tensor
        Buffer of shape ``(C,)``.
    """

    def __init__(self, *, class_counts: ClassCounts, tau: float = 1.0):
        super().__init__()
        self.tau = check_number("tau", tau, low=0.0)
        counts = check_class_counts(class_counts)
        self.register_buffer("log_prior", _log_prior(counts).to(torch.float32))

    def _per_class_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return -F.log_softmax(logits + self.tau * self.log_prior.to(logits.dtype), dim=1)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


@LOSSES.register("bs")
class BalancedSoftmax(SoftTargetLoss):
    """Balanced softmax: ``log n_c`` is added to the logits in training.

    Parameters
    ----------
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive.

    Attributes
    ----------
    log_counts : Tensor
        Buffer of shape ``(C,)``.
    """

    def __init__(self, *, class_counts: ClassCounts):
        super().__init__()
        counts = check_class_counts(class_counts)
        self.register_buffer("log_counts", counts.log().to(torch.float32))

    def _per_class_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return -F.log_softmax(logits + self.log_counts.to(logits.dtype), dim=1)


#: How label-aware smoothing's ``eps`` moves from the smallest class to the largest.
SMOOTHING_SHAPES = ("concave", "linear", "convex")


@LOSSES.register("las")
class LabelAwareSmoothing(SoftTargetLoss):
    """Label-aware smoothing (Zhong et al., "Improving Calibration for Long-Tailed
    Recognition", CVPR 2021): cross-entropy against a target smoothed toward uniform by a
    class's own ``eps``, more for large classes (over-confident) than for small ones:
    ``l_ik = (1 - eps_k) (-log p_ik) + eps_k mean_j(-log p_ij)``.

    With ``x_k = (n_k - n_min) / (n_max - n_min)`` (1 for every class when all are the same
    size), ``eps_k`` runs from ``eps_tail`` (the smallest class) to ``eps_head`` (the
    largest): ``concave`` ``eps_tail + (eps_head - eps_tail) sin(pi x / 2)``, ``linear``
    ``eps_tail + (eps_head - eps_tail) x``, ``convex``
    ``eps_head - (eps_head - eps_tail) cos(pi x / 2)``. The paper's CIFAR-10-LT (ratio 100)
    setting is the default: ``eps_head`` 0.3, ``eps_tail`` 0, concave.

    Parameters
    ----------
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive.
    eps_head, eps_tail : float
        Smoothing of the largest and the smallest class, each in [0, 1].
    shape : {"concave", "linear", "convex"}

    Attributes
    ----------
    eps : Tensor
        Buffer of shape ``(C,)``: each class's smoothing.
    """

    def __init__(self, *, class_counts: ClassCounts, eps_head: float = 0.3,
                 eps_tail: float = 0.0, shape: str = "concave"):
        super().__init__()
        self.eps_head = check_number("eps_head", eps_head, low=0.0, high=1.0)
        self.eps_tail = check_number("eps_tail", eps_tail, low=0.0, high=1.0)
        self.shape = check_choice("shape", shape, SMOOTHING_SHAPES)
        counts = check_class_counts(class_counts).double()
        span = counts.max() - counts.min()
        x = (counts - counts.min()) / span if span > 0 else torch.ones_like(counts)
        rise = {"concave": torch.sin(math.pi * x / 2), "linear": x,
                "convex": 1 - torch.cos(math.pi * x / 2)}[self.shape]
        eps = self.eps_tail + (self.eps_head - self.eps_tail) * rise
        self.register_buffer("eps", eps.to(torch.float32))

    def _per_class_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        nll = -F.log_softmax(logits, dim=1)
        eps = self.eps.to(logits.dtype)
        return (1 - eps) * nll + eps * nll.mean(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return f"eps_head={self.eps_head}, eps_tail={self.eps_tail}, shape={self.shape!r}"


def build_loss(name: str, *, class_counts: ClassCounts | None, **params: Any) -> SoftTargetLoss:
    """Build a loss by name.

    Parameters
    ----------
    name : str
        A name registered in :data:`tailmix.registry.LOSSES`; built in: ``"ce"``
        (cross-entropy), ``"focal"``, ``"ldam"``, ``"la"`` (logit-adjusted), ``"bs"``
        (balanced softmax), ``"las"`` (label-aware smoothing).
    class_counts : sequence of numbers, ndarray or Tensor, or None
        Training examples per class, passed to a loss whose constructor takes a
        ``class_counts`` keyword (``"ldam"``, ``"la"``, ``"bs"``, ``"las"``); ignored (may
        be ``None``) for the others.
    **params
        The loss's own keyword-only arguments (``gamma``; ``max_margin``, ``s``; ``tau``;
        ``eps_head``, ``eps_tail``, ``shape``).

    Returns
    -------
    SoftTargetLoss

    Raises
    ------
    ParameterError
        On an unknown name, an argument the loss does not take, or an invalid value.
    """
    loss_class = LOSSES.get(name, "name")
    check_keywords(params, loss_class, what=f"the {name!r} loss", reserved=("class_counts",),
                   keyword_only=True, named_only=True)
    if "class_counts" in (keywords(loss_class, keyword_only=True, named_only=True) or ()):
        return loss_class(class_counts=class_counts, **params)
    return loss_class(**params)


def posthoc_adjust(logits: Tensor, class_counts: ClassCounts, tau: float = 1.0) -> Tensor:
    """Evaluation-time logit adjustment: ``logits - tau * log(prior)``.

    Parameters
    ----------
    logits : Tensor
        Shape ``(..., C)``.
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive.
    tau : float
        Adjustment strength, ``>= 0``.

    Returns
    -------
    Tensor
        Adjusted logits, same shape, device and (floating) dtype as ``logits``.

    Examples
    --------
    >>> import torch
    >>> posthoc_adjust(torch.zeros(1, 2), [3, 1]).argmax(dim=1).tolist()  # favours the rare class
    [1]
    """
    tau = check_number("tau", tau, low=0.0)
    counts = check_class_counts(class_counts)
    if logits.shape[-1] != counts.numel():
        raise ParameterError(
            "logits", f"a tensor whose last dimension is {counts.numel()}", tuple(logits.shape)
        )
    dtype = logits.dtype if logits.is_floating_point() else torch.get_default_dtype()
    return logits - tau * _log_prior(counts).to(device=logits.device, dtype=dtype)
