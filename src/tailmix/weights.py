"""Per-class weights and the schedules that switch them on during training.

A weight vector ``v`` of shape ``(C,)`` scales the loss of every example by the weights of its
target classes (see :mod:`tailmix.losses`). All weight vectors here are normalised to sum to
``C``, so uniform weights are all ones and re-weighting leaves the loss scale comparable.

A schedule maps a 0-based epoch to a weight vector, or to ``None`` for "no weighting":

>>> schedule = build_weight_schedule("drw", class_counts=[100, 10], epochs=10)
>>> schedule.start_epoch
8
>>> schedule(7) is None
True
>>> schedule(8).sum().item()
2.0

A schedule is a factory registered in :data:`tailmix.registry.WEIGHT_SCHEDULES` (re-exported
here), called with keywords ``class_counts``, ``epochs`` and, when it names them,
``start_epoch`` and ``beta`` (checked by :func:`build_weight_schedule`), plus its own
parameters::

    @WEIGHT_SCHEDULES.register("my_schedule")
    def my_schedule(*, class_counts, epochs, start_epoch=None, strength=1.0):
        weights = inverse_frequency_weights(class_counts, strength)
        return WeightSchedule(name="my_schedule", weights=weights,
                              start_epoch=0 if start_epoch is None else start_epoch)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tailmix._validation import ParameterError, check_choice, check_keywords, check_number, keywords
from tailmix.registry import WEIGHT_SCHEDULES

ClassCounts = Sequence[float] | np.ndarray | Tensor

#: Default DRW start as a fraction of the run (epoch 160 of 200 in the CIFAR-LT protocol).
DRW_START_FRACTION = 0.8

#: Default beta of the class-balanced (effective number) weights.
DEFAULT_BETA = 0.9999

#: Re-weighting needs epochs at a useful lr: a start given as a share of the run that lands
#: on or after a step of the lr to x0.01 or lower, with fewer than this many epochs from
#: that step to the run's end, moves to the epoch before the step (on the CIFAR-LT
#: protocol's 200 epochs, DRW starts with the x0.01 step at epoch 160, 40 epochs from the
#: end; on a 15-epoch run the same shares would leave it 3 epochs at x0.01 and below).
REWEIGHT_EPOCHS_AFTER_DROP = 10

#: A step of the lr to this factor or lower counts as a drop for DRW's start.
DROP_FACTOR = 0.01


def check_class_counts(class_counts: Any, name: str = "class_counts") -> Tensor:
    """Turn per-class example counts into a 1-D ``float64`` CPU tensor of positive values.

    Parameters
    ----------
    class_counts : sequence of numbers, ndarray or Tensor
        ``n_c`` for every class ``c``; all finite and positive.
    name : str
        Parameter name used in error messages.

    Returns
    -------
    Tensor
        Shape ``(C,)``, dtype ``float64``, on the CPU.

    Raises
    ------
    ParameterError
        If the counts are not a non-empty 1-D collection of finite positive numbers.

    Examples
    --------
    >>> check_class_counts([3, 1]).tolist()
    [3.0, 1.0]
    """
    expected = "a non-empty 1-D sequence of positive class counts"
    if class_counts is None or isinstance(class_counts, (str, bytes)):
        raise ParameterError(name, expected, class_counts)
    try:
        if isinstance(class_counts, Tensor):
            counts = class_counts.detach().to("cpu", torch.float64)
        else:
            counts = torch.as_tensor(np.asarray(class_counts, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise ParameterError(name, expected, class_counts) from error
    if counts.ndim != 1 or counts.numel() == 0:
        raise ParameterError(name, expected, class_counts)
    if not bool(torch.isfinite(counts).all()) or not bool((counts > 0).all()):
        raise ParameterError(name, expected, counts.tolist())
    return counts


def _normalise(weights: Tensor) -> Tensor:
    """Scale ``weights`` to sum to their length and return them as ``float32``."""
    return (weights * (weights.numel() / weights.sum())).to(torch.float32)


def class_balanced_weights(class_counts: ClassCounts, beta: float = DEFAULT_BETA) -> Tensor:
    """Class-balanced weights by effective number of examples.

    ``v_c = (1 - beta) / (1 - beta ** n_c)``, then scaled so that ``sum_c v_c = C``.

    Parameters
    ----------
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive.
    beta : float
        In ``[0, 1)``. ``0`` gives uniform weights; values near 1 approach inverse frequency.

    Returns
    -------
    Tensor
        Shape ``(C,)``, ``float32``, on the CPU.

    Examples
    --------
    >>> [round(v, 4) for v in class_balanced_weights([1, 2], beta=0.5).tolist()]
    [1.2, 0.8]
    """
    beta = check_number("beta", beta, low=0.0, high=1.0, high_open=True)
    counts = check_class_counts(class_counts)
    effective_number = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)) / (
        1.0 - beta
    )
    return _normalise(1.0 / effective_number)


def inverse_frequency_weights(class_counts: ClassCounts, power: float = 1.0) -> Tensor:
    """Weights proportional to ``n_c ** -power``, scaled so that ``sum_c v_c = C``.

    Parameters
    ----------
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive.
    power : float
        ``>= 0``. ``1`` is inverse frequency, ``0.5`` its square root, ``0`` uniform.

    Returns
    -------
    Tensor
        Shape ``(C,)``, ``float32``, on the CPU.

    Examples
    --------
    >>> [round(v, 4) for v in inverse_frequency_weights([1, 4], power=0.5).tolist()]
    [1.3333, 0.6667]
    """
    power = check_number("power", power, low=0.0)
    counts = check_class_counts(class_counts)
    return _normalise(counts.pow(-power))


def resolve_start_epoch(given: Any, epochs: int, *, milestones: Sequence[int] = (),
                        lr_factors: Sequence[float] = (),
                        notes: list[str] | None = None) -> int:
    """``weights.start_epoch`` as an epoch of the run.

    An epoch number is kept as given (:func:`build_weight_schedule` checks it). A share of
    the run in (0, 1) becomes the epoch it lands on, moved to the epoch before the lr's
    first step to x0.01 or lower (``milestones`` as epochs with their ``lr_factors``) when
    it would start on or after that step with fewer than
    :data:`REWEIGHT_EPOCHS_AFTER_DROP` epochs left from it; ``notes`` gets a line saying so.

    >>> resolve_start_epoch(0.8, 200, milestones=[160, 180], lr_factors=[0.01, 0.0001])
    160
    >>> resolve_start_epoch(0.8, 15, milestones=[12, 14], lr_factors=[0.01, 0.0001])
    11
    >>> resolve_start_epoch(12, 15, milestones=[12, 14], lr_factors=[0.01, 0.0001])
    12
    """
    from tailmix.schedules import is_share, resolve_epoch

    start = resolve_epoch("weights.start_epoch", given, epochs)
    if not is_share(given):
        return start
    drop = next((m for m, f in zip(milestones, lr_factors, strict=True) if f <= DROP_FACTOR),
                None)
    if drop is None or start < drop or epochs - drop >= REWEIGHT_EPOCHS_AFTER_DROP:
        return start
    if notes is not None:
        notes.append(f"weights.start_epoch: epoch {drop - 1}, the epoch before the lr's step "
                     f"to x{DROP_FACTOR:g} or lower at epoch {drop} ({given} of the "
                     f"{epochs}-epoch run, epoch {start}, would leave re-weighting "
                     f"{epochs - start} epoch(s) at that lr; an epoch number is kept as "
                     "given)")
    return drop - 1


def resolve_params(params: dict[str, Any], *, epochs: int, milestones: Sequence[int],
                   lr_factors: Sequence[float], notes: list[str]) -> None:
    """A config's ``weights`` mapping with ``start_epoch`` as an epoch of the run
    (:func:`resolve_start_epoch`); left out, a schedule's own share where it was registered
    with one (``start_share``: DRW's :data:`DRW_START_FRACTION`)."""
    name = params.get("name")
    own = WEIGHT_SCHEDULES.meta(name).get("start_share") \
        if isinstance(name, str) and name in WEIGHT_SCHEDULES else None
    if params.get("start_epoch") is None and own is not None:
        params["start_epoch"] = own
    if params.get("start_epoch") is not None:
        params["start_epoch"] = resolve_start_epoch(params["start_epoch"], epochs,
                                                    milestones=milestones,
                                                    lr_factors=lr_factors, notes=notes)


NORMALISERS = ("mass", "rows", "sources")
"""What a class-weighted loss divides its terms ``v_k y_ik l_ik`` by: the class-weighted
target mass (``"mass"``: a weighted mean), the number of rows (``"rows"``: the weights
scale the loss), or each source's own class-weighted mass (``"sources"``: the anchors'
labels and the partners' labels each a weighted mean, counted by their shares)."""


class WeightSchedule:
    """Per-epoch class weights: ``None`` (no weighting) before ``start_epoch``, fixed after.

    Build one with :func:`build_weight_schedule`.

    Parameters
    ----------
    name : str
        The schedule's name, for reports.
    weights : Tensor or None
        The weights used from ``start_epoch`` on; ``None`` means the schedule never weights.
    start_epoch : int or None
        First (0-based) epoch with weights; ``None`` when ``weights`` is ``None``.
    """

    def __init__(self, *, name: str, weights: Tensor | None, start_epoch: int | None):
        if (weights is None) != (start_epoch is None):
            raise ParameterError(
                "start_epoch", "None exactly when weights is None", start_epoch
            )
        self.name = name
        self.weights = weights
        self.start_epoch = start_epoch
        self.normalise = "mass"  # what the weighted loss divides by (NORMALISERS)

    def __call__(self, epoch: int) -> Tensor | None:
        """Return the class weights for the 0-based ``epoch``, or ``None`` for uniform.

        The same tensor is returned at every weighted epoch; do not modify it in place.
        """
        epoch = check_number("epoch", epoch, low=0, integer=True)
        if self.weights is None or epoch < self.start_epoch:
            return None
        return self.weights

    def __repr__(self) -> str:
        return f"WeightSchedule(name={self.name!r}, start_epoch={self.start_epoch})"


def _from_start(name: str, weights: Tensor, start_epoch: int | None) -> WeightSchedule:
    """Fixed weights from ``start_epoch`` (default 0: the whole run)."""
    return WeightSchedule(name=name, weights=weights,
                          start_epoch=0 if start_epoch is None else start_epoch)


@WEIGHT_SCHEDULES.register("none")
def _none_schedule(
    *, class_counts: ClassCounts, epochs: int, start_epoch: int | None = None,
    beta: float = DEFAULT_BETA,
) -> WeightSchedule:
    """Never weight (``start_epoch`` and ``beta`` are ignored; the counts are checked)."""
    check_class_counts(class_counts)
    return WeightSchedule(name="none", weights=None, start_epoch=None)


@WEIGHT_SCHEDULES.register("cb")
def _cb_schedule(
    *, class_counts: ClassCounts, epochs: int, start_epoch: int | None = None,
    beta: float = DEFAULT_BETA,
) -> WeightSchedule:
    """Class-balanced weights (:func:`class_balanced_weights`) from ``start_epoch`` (default 0)."""
    return _from_start("cb", class_balanced_weights(check_class_counts(class_counts), beta),
                       start_epoch)


@WEIGHT_SCHEDULES.register("inverse")
def _inverse_schedule(
    *, class_counts: ClassCounts, epochs: int, start_epoch: int | None = None,
    beta: float = DEFAULT_BETA, power: float = 1.0,
) -> WeightSchedule:
    """``n_c ** -power`` weights (:func:`inverse_frequency_weights`) from ``start_epoch``
    (default 0); ``beta`` is ignored."""
    return _from_start("inverse", inverse_frequency_weights(check_class_counts(class_counts),
                                                            power), start_epoch)


@WEIGHT_SCHEDULES.register("sqrt_inverse")
def _sqrt_inverse_schedule(
    *, class_counts: ClassCounts, epochs: int, start_epoch: int | None = None,
    beta: float = DEFAULT_BETA,
) -> WeightSchedule:
    """``n_c ** -0.5`` weights from ``start_epoch`` (default 0); ``beta`` is ignored."""
    return _from_start("sqrt_inverse",
                       inverse_frequency_weights(check_class_counts(class_counts), 0.5),
                       start_epoch)


@WEIGHT_SCHEDULES.register("drw", start_share=DRW_START_FRACTION)
def _drw_schedule(
    *, class_counts: ClassCounts, epochs: int, start_epoch: int | None = None,
    beta: float = DEFAULT_BETA,
) -> WeightSchedule:
    """Deferred re-weighting: no weights before ``start_epoch`` (default
    ``round(DRW_START_FRACTION * epochs)``, at most ``epochs - 1``), class-balanced after."""
    counts = check_class_counts(class_counts)
    if start_epoch is None:
        start_epoch = min(round(DRW_START_FRACTION * epochs), epochs - 1)
    weights = class_balanced_weights(counts, beta)
    return WeightSchedule(name="drw", weights=weights, start_epoch=start_epoch)


class CumulativeSchedule(WeightSchedule):
    """Weights that move from uniform to re-balanced along the run (the cumulative
    learning of BBN, Zhou et al. 2020, as class weights): at epoch ``t`` the weights are
    ``(1 - a) * uniform + a * weights`` with ``a = ((t - start) / (epochs - start)) ** 2``
    (0 before ``start_epoch``), so the loss leans on the instance-balanced view early and on
    the re-balanced one late. With ``normalise="rows"`` the loss is exactly
    ``(1 - a) * plain + a * re-weighted``; with ``"mass"`` (the default) it is divided by
    the blended weights' target mass, the blend of the two weightings."""

    def __init__(self, *, weights: Tensor, start_epoch: int, epochs: int):
        super().__init__(name="cumulative", weights=weights, start_epoch=start_epoch)
        self.epochs = epochs
        self._uniform = _normalise(torch.ones_like(weights))

    def share(self, epoch: int) -> float:
        """``a``: the re-balanced weights' share at the 0-based ``epoch``."""
        if epoch < self.start_epoch:
            return 0.0
        return ((epoch - self.start_epoch) / max(self.epochs - self.start_epoch, 1)) ** 2

    def __call__(self, epoch: int) -> Tensor | None:
        epoch = check_number("epoch", epoch, low=0, integer=True)
        a = self.share(epoch)
        if a == 0.0:
            return None
        return _normalise((1.0 - a) * self._uniform + a * self.weights)


@WEIGHT_SCHEDULES.register("cumulative")
def _cumulative_schedule(
    *, class_counts: ClassCounts, epochs: int, start_epoch: int | None = None,
    beta: float = DEFAULT_BETA, power: float | None = None,
) -> WeightSchedule:
    """Uniform weights moving to class-balanced ones along the run, quadratically from
    ``start_epoch`` (default 0): :class:`CumulativeSchedule`. The class-balanced weights are
    by effective number (``beta``), or ``n_c ** -power`` when ``power`` is given (GLMC,
    Du et al., CVPR 2023, re-weights by ``n ** -1.2`` on CIFAR-LT)."""
    counts = check_class_counts(class_counts)
    if power is not None and beta != DEFAULT_BETA:
        raise ParameterError("beta", f"left out with power (the weights are n ** -power, "
                             f"not effective numbers; default {DEFAULT_BETA})", beta)
    weights = class_balanced_weights(counts, beta) if power is None \
        else inverse_frequency_weights(counts, power)
    return CumulativeSchedule(weights=weights, start_epoch=start_epoch or 0, epochs=epochs)


# Keywords every schedule factory may take, set by build_weight_schedule itself.
_COMMON_KEYWORDS = ("class_counts", "epochs", "start_epoch", "beta", "normalise")


def build_weight_schedule(
    name: str,
    *,
    class_counts: ClassCounts,
    epochs: int,
    start_epoch: int | None = None,
    beta: float = DEFAULT_BETA,
    normalise: str = "mass",
    **params: Any,
) -> WeightSchedule:
    """Build a class-weight schedule by name.

    Parameters
    ----------
    name : str
        A name registered in :data:`tailmix.registry.WEIGHT_SCHEDULES`. Built in:
        ``"none"``: never weight. ``"cb"``: class-balanced weights (effective number, ``beta``).
        ``"inverse"``: ``n_c ** -power`` (``power`` keyword, default 1). ``"sqrt_inverse"``:
        ``n_c ** -0.5``. ``"drw"`` (deferred re-weighting): no weighting before
        ``start_epoch``, class-balanced weights from it on. ``"cumulative"``: uniform
        weights moving quadratically to class-balanced ones from ``start_epoch``.
    class_counts : sequence of numbers, ndarray or Tensor
        Training examples per class, all positive.
    epochs : int
        Length of the run, ``>= 1``.
    start_epoch : int, optional
        First 0-based epoch with weights, in ``[0, epochs - 1]``. Defaults to 0 for ``"cb"``,
        ``"inverse"`` and ``"sqrt_inverse"``, and to ``round(DRW_START_FRACTION * epochs)``
        (at most ``epochs - 1``) for ``"drw"``. Ignored by ``"none"``; an error for a
        registered schedule whose factory takes no ``start_epoch``.
    beta : float
        Effective-number beta of ``"cb"`` and ``"drw"``, in ``[0, 1)``.
    normalise : {"mass", "rows", "sources"}, default "mass"
        What a weighted loss divides by (:data:`NORMALISERS`): ``"mass"``, the batch's
        class-weighted target mass ``sum_i sum_k v_k y_ik`` (a weighted mean: PyTorch's
        ``cross_entropy(weight=...)`` for hard labels), ``"rows"``, the number of rows
        (the weights scale the loss: GLMC's re-weighted loss), or ``"sources"``, a
        weighted mean for the anchors' labels and one for the partners', counted by their
        shares (CMO's ``lam * ce_w(y_a) + (1 - lam) * ce_w(y_b)``).
    **params
        The schedule's own keyword arguments (its factory's other keywords): ``power`` for
        ``"inverse"``; anything else is an error.

    Returns
    -------
    WeightSchedule
        Callable ``epoch -> Tensor | None`` with attributes ``name`` and ``start_epoch``.

    Raises
    ------
    ParameterError
        On an unknown name or parameter, ``beta`` outside ``[0, 1)``, or ``start_epoch``
        outside ``[0, epochs - 1]``.
    """
    factory = WEIGHT_SCHEDULES.get(name, "name")
    epochs = check_number("epochs", epochs, low=1, integer=True)
    beta = check_number("beta", beta, low=0.0, high=1.0, high_open=True)
    check_keywords(params, factory, what=f"the {name!r} schedule", reserved=_COMMON_KEYWORDS)
    takes = keywords(factory)  # None: it takes any
    if start_epoch is not None:
        start_epoch = check_number("start_epoch", start_epoch, low=0, integer=True)
        if start_epoch > epochs - 1:
            expected = f"an epoch in [0, {epochs - 1}] (0-based; the run has epochs={epochs})"
            raise ParameterError("start_epoch", expected, start_epoch)
        if takes is not None and "start_epoch" not in takes:
            raise ParameterError(
                "start_epoch", f"None for the {name!r} schedule (it takes no start epoch)",
                start_epoch,
            )
    normalise = check_choice("normalise", normalise, NORMALISERS)
    common = {"start_epoch": start_epoch, "beta": beta}
    common = {key: value for key, value in common.items() if takes is None or key in takes}
    schedule = factory(class_counts=class_counts, epochs=epochs, **common, **params)
    schedule.normalise = normalise
    return schedule
