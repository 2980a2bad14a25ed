"""Averaged weights: an exponential moving average (EMA) and stochastic weight averaging
(SWA), kept beside the network a run trains and evaluated beside it.

An average holds every entry of the network's state dict: the floating ones averaged
(parameters and batch-norm statistics alike), the integer ones (batch-norm's step counters)
copied from the network::

    EMA, after every optimiser update t = 1, 2, ...:
        avg <- d_t * avg + (1 - d_t) * w,   d_t = min(decay, (1 + t) / (10 + t))
    SWA, after every epoch e >= start (the n-th such epoch):
        avg <- avg + (w - avg) / n          (the plain mean of those epochs' weights)

The EMA's decay is warmed up (``d_t`` above, as TensorFlow's moving averages do with their
step count), so that a short run's average is not mostly its initial weights. SWA averages
the batch-norm statistics with the weights instead of re-estimating them on the training
data for the averaged weights (Izmailov et al., UAI 2018, do the latter); from ``start`` on
the lr is ``swa.lr`` when set (their constant SWA lr), else the run's own schedule.

In a run, the ``ema`` and ``swa`` config sections add one :class:`Averaged` callback each.
Every evaluation then reports the averaged network beside the live one (``ema_top1``,
``swa_balanced_accuracy``, ... in ``history.jsonl``; ``metrics.json``'s ``ema`` and ``swa``
entries at the end); nothing picks between them. Checkpoints hold the averages (a resumed
run continues them exactly), and ``tailmix predict``, ``export`` and ``evaluate`` read them
with ``--weights ema`` or ``swa``. In a loop of your own: ``ema = EMA(0.999)``, then
``ema.update(model)`` after each ``optimizer.step()``, and ``ema.apply_to(model)`` to
evaluate (``with ema.applied(model): ...`` puts the live weights back after).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_number
from tailmix.pipeline.callbacks import Callback, TrainState
from tailmix.pipeline.sections import Assembly, Section, Sections, section
from tailmix.schedules import resolve_epoch, resolve_start

__all__ = ["EMA", "SWA", "Averaged", "EmaSection", "SwaSection", "WeightAverage"]


class WeightAverage:
    """An average of a network's state dict (see the module's text).

    Attributes
    ----------
    weights : dict of str to Tensor, or None
        The averaged state dict, on the network's device (None before the first update).
    count : int
        Updates taken so far.
    """

    name = "average"

    def __init__(self) -> None:
        self.weights: dict[str, Tensor] | None = None
        self.count = 0

    def _rate(self) -> float:
        """The weight of the network in the update about to be taken (``count`` already
        counts it)."""
        raise NotImplementedError

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Take one update from ``model``'s current weights (half-precision ones averaged in
        float32, where an update of rate 1e-3 does not round away)."""
        state = {k: v for k, v in model.state_dict().items() if torch.is_tensor(v)}
        self.count += 1
        if self.weights is None:
            self.weights = {k: v.detach().clone().float() if v.is_floating_point()
                            and v.element_size() < 4 else v.detach().clone()
                            for k, v in state.items()}
            return
        if self.weights.keys() != state.keys():
            raise ParameterError("model", "the network this average was started on (the "
                                 "same state dict keys)", sorted(state.keys() ^ self.weights))
        rate = self._rate()
        floats = [k for k, v in state.items() if v.is_floating_point()]
        ours = [self.weights[k] for k in floats]
        torch._foreach_lerp_(ours, [state[k].detach().to(ours[i].dtype)
                                    for i, k in enumerate(floats)], rate)
        for k, v in state.items():
            if not v.is_floating_point():
                self.weights[k].copy_(v)

    def apply_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (in place)."""
        if self.weights is None:
            raise ParameterError(self.name, "an average with at least one update", None)
        # Every tensor entry, in the model's own dtypes (loading copies and casts); entries
        # that are not tensors (a module's extra state) are not averaged.
        result = model.load_state_dict(self.weights, strict=False)
        own = model.state_dict()
        missing = [k for k in result.missing_keys if torch.is_tensor(own[k])]
        if missing or result.unexpected_keys:
            raise ParameterError("model", "the network this average was taken of",
                                 sorted(missing + list(result.unexpected_keys)))

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with the averaged weights inside the block, its own weights after
        (restored exactly)."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.apply_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(live)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights, self.count = state["weights"], int(state["count"])


class EMA(WeightAverage):
    """Exponential moving average of the weights, ``decay`` in ``(0, 1)`` per update, warmed
    up over the first updates (see the module's text).

    >>> import torch
    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> ema = EMA(0.9)
    >>> for value in (0.0, 1.0, 1.0):
    ...     _ = net.weight.data.fill_(value)
    ...     ema.update(net)
    >>> round(float(ema.weights["weight"]), 4)   # d_2 = 3/12, d_3 = 4/13
    0.9231
    """

    name = "ema"

    def __init__(self, decay: float):
        super().__init__()
        self.decay = check_number("ema.decay", decay, low=0, high=1, low_open=True,
                                  high_open=True)

    def _rate(self) -> float:
        return 1.0 - min(self.decay, (1.0 + self.count) / (10.0 + self.count))

    def __repr__(self) -> str:
        return f"EMA(decay={self.decay:g}, count={self.count})"


class SWA(WeightAverage):
    """The plain mean of the weights at every update (a run takes one an epoch from its
    ``start`` epoch).

    >>> import torch
    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> swa = SWA()
    >>> for value in (1.0, 2.0, 6.0):
    ...     _ = net.weight.data.fill_(value)
    ...     swa.update(net)
    >>> float(swa.weights["weight"])
    3.0
    """

    name = "swa"

    def _rate(self) -> float:
        return 1.0 / self.count

    def __repr__(self) -> str:
        return f"SWA(count={self.count})"


class Averaged(Callback):
    """Keeps an average of the run's network: an :class:`EMA` after every optimiser update,
    an :class:`SWA` after every epoch from ``from_epoch`` (0-based) on. The trainer saves
    and restores :attr:`average` with its checkpoints; the evaluator evaluates it."""

    def __init__(self, average: WeightAverage, *, from_epoch: int = 0):
        self.average, self.from_epoch = average, from_epoch

    def on_update(self, state: TrainState) -> None:
        if isinstance(self.average, EMA):
            self.average.update(state.model)

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        if isinstance(self.average, SWA) and row["epoch"] - 1 >= self.from_epoch:
            self.average.update(state.model)


class _SwaLr:
    """The run's lr schedule until ``start``, then the constant ``lr``."""

    def __init__(self, schedule: Any, start: int, lr: float):
        self.schedule, self.start, self.lr = schedule, start, lr

    def __call__(self, epoch: int, progress: float) -> float:
        return self.lr if epoch >= self.start else self.schedule(epoch, progress)


def _refuse_with_crt(key: str, run: Sections) -> None:
    crt = getattr(run, "crt", None)
    if crt is not None and crt.epochs:
        raise ParameterError(key, "null with crt.epochs > 0 (the average would mix the "
                             "main run's network with the re-trained classifier's)", "set")


@section("ema")
@dataclass
class EmaSection(Section):
    """The ``ema`` config section: ``decay`` (null: none) of an exponential moving average
    of the weights, updated after every optimiser update and evaluated beside them."""

    decay: float | None = None

    def check(self, run: Sections) -> None:
        if self.decay is not None:
            check_number("ema.decay", self.decay, low=0, high=1, low_open=True,
                         high_open=True)
            _refuse_with_crt("ema.decay", run)

    def contribute(self, run: Assembly) -> None:
        if self.decay is not None:
            run.callbacks.append(Averaged(EMA(self.decay)))


@section("swa")
@dataclass
class SwaSection(Section):
    """The ``swa`` config section: stochastic weight averaging from epoch ``start`` (an
    epoch, or a share of the run such as 0.75; null: none), the weights averaged at the end
    of every epoch from it, at the constant ``lr`` from it (null: the run's schedule)."""

    start: float | None = None
    lr: float | None = None

    ACTS_ONLY = {"lr": ("swa.start", lambda s: s.start is not None)}

    def check(self, run: Sections) -> None:
        if self.start is None:
            return
        epochs = run.train.epochs
        resolve_start("swa.start", self.start, epochs)
        if self.lr is not None:
            check_number("swa.lr", self.lr, low=0, low_open=True)
        _refuse_with_crt("swa.start", run)

    def resolve(self, epochs: int, notes: list[str]) -> None:
        self.start_epoch = None if self.start is None else resolve_epoch("swa.start",
                                                                         self.start, epochs)

    def contribute(self, run: Assembly) -> None:
        if self.start is None:
            return
        start = self.start_epoch
        run.callbacks.append(Averaged(SWA(), from_epoch=start))
        if self.lr is not None:
            lr = self.lr
            run.stages.insert(0, lambda sampler, step, schedule, epochs: (
                sampler, step, _SwaLr(schedule, start, lr), epochs))
