"""How a step's loss becomes gradients: plainly, or sharpness-aware (SAM, ImbSAM).

The trainer hands every step's :class:`~tailmix.pipeline.steps.StepOutput` to a *gradient rule*,
``rule.backward(out, model, optimizer, scaler, epoch) -> losses``, which leaves the
gradients to apply in ``.grad`` and returns the loss values whose finiteness the trainer
checks before the optimiser step. :class:`Plain` is one backward pass. :class:`SAM`
(Foret et al., 2021) takes the step on the gradient at the worst nearby weights::

    e = rho * g / ||g||,   g = grad L(w)        (the ascent to the worst point nearby)
    grad used = grad L(w + e)                     (the same mixed batch, a second pass)

With ``tail`` classes (ImbSAM, Zhou et al., 2023) only the tail classes' share of the loss
is made sharpness-aware; the head classes' share keeps its plain gradient::

    L = L_head + L_tail    (the loss split by target class, see SoftTargetLoss.class_terms)
    e = rho * grad L_tail(w) / ||grad L_tail(w)||
    grad used = grad L_head(w) + grad L_tail(w + e)

Both passes see the same inputs and targets (the step's ``recompute``), so a mixed batch
is mixed once. The second pass does not move the batch-norm running statistics (their
momentum is set to 0 for it): the perturbed weights are not the model's. With several
processes (SAM only) the ascent direction is the gradient averaged over them, as the step's
is, and the second pass is synchronised as usual. ImbSAM's split pass (two backward passes
of one forward) runs in a single process: DDP synchronises one backward per forward.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_number
from tailmix.pipeline.sections import Assembly, Section, Sections, section
from tailmix.schedules import resolve_epoch, resolve_start

__all__ = ["SAM", "Plain", "SamSection"]


class Plain:
    """One backward pass of the step's loss (through the loss scaler)."""

    def backward(self, out: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, epoch: int, weight: Tensor | None = None,
                 defer: bool = False) -> Tensor:
        """Backward ``out.loss`` (times ``weight``, a micro-batch's share under gradient
        accumulation), adding to the gradients there are (``defer`` changes nothing)."""
        scaler.scale(out.loss if weight is None else out.loss * weight).backward()
        return out.loss.detach()

    def finish(self, model: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, epoch: int) -> None:
        """Nothing to do once the update's micro-batches are in."""
        return None

    def __repr__(self) -> str:
        return "Plain()"


class SAM:
    """Sharpness-aware gradients, from epoch ``start_epoch`` on (plain ones before).

    Parameters
    ----------
    rho : float
        Radius of the weight perturbation (the L2 norm of ``e``), ``> 0``.
    start_epoch : int, default 0
        First 0-based epoch with sharpness-aware steps.
    end_epoch : int, optional
        First 0-based epoch with plain steps again (a later stage, such as cRT); None: to
        the end.
    tail : BoolTensor, optional
        ``(C,)`` the classes whose loss share is made sharpness-aware (ImbSAM); None: the
        whole loss (SAM). Needs a step whose output carries ``class_terms``.

    Examples
    --------
    >>> import torch
    >>> SAM(rho=0.05, tail=torch.tensor([False, True]))
    SAM(rho=0.05, start_epoch=0, tail=[1])
    """

    def __init__(self, *, rho: float, start_epoch: int = 0, end_epoch: int | None = None,
                 tail: Tensor | None = None):
        self.rho = check_number("sam.rho", rho, low=0.0, low_open=True)
        self.start_epoch = check_number("sam.start", start_epoch, low=0, integer=True)
        self.end_epoch = end_epoch
        if tail is not None:
            tail = torch.as_tensor(tail, dtype=torch.bool)
            if tail.ndim != 1 or not bool(tail.any()):
                raise ParameterError("sam.tail_below", "a count under which at least one "
                                     "class falls", tail.tolist())
        self.tail = tail
        self._plain = Plain()
        # The update's micro-batches so far: (recompute, weight, tail), and the head
        # classes' gradients kept aside (ImbSAM).
        self._pending: list[tuple[Any, Tensor | None, Tensor | None]] = []
        self._head: list[Tensor | None] | None = None

    def _active(self, epoch: int) -> bool:
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def backward(self, out: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, epoch: int, weight: Tensor | None = None,
                 defer: bool = False) -> Tensor:
        """Both passes, leaving the gradient at ``w + e`` in ``.grad``; returns the two
        losses. With ``defer`` (gradient accumulation: ``weight`` is the micro-batch's
        share of the update), only the first pass, the gradient at ``w`` added to those of
        the update's earlier micro-batches; :meth:`finish` then takes the second pass over
        all of them."""
        if not self._active(epoch):
            return self._plain.backward(out, model, optimizer, scaler, epoch, weight)
        recompute = getattr(out, "recompute", None)
        if recompute is None:
            raise ParameterError("sam", "a step that can recompute its loss on the same "
                                 "batch (StepOutput.recompute)", type(out).__name__)
        tail = None
        if self.tail is None:
            scaler.scale(out.loss if weight is None else out.loss * weight).backward()
        else:
            tail = self._tail(out)
            head = self._head_then_tail(out, tail, _params(optimizer), scaler, weight)
            self._head = head if self._head is None else [
                h if a is None else (a if h is None else a.add_(h))
                for a, h in zip(self._head, head, strict=True)]
        self._pending.append((recompute, weight, tail))
        first = out.loss.detach().float().reshape(1)
        if defer:
            return first
        return torch.cat([first, self.finish(model, optimizer, scaler, epoch)])

    def finish(self, model: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, epoch: int) -> Tensor | None:
        """The second pass, once the update's micro-batches are in: move to ``w + e``,
        take every micro-batch's gradient there (the batch-norm statistics kept; with
        several processes, synchronised on the last one only), and come back to ``w``."""
        if not self._pending:
            return None
        pending, head_grads = self._pending, self._head
        self._pending, self._head = [], None
        params = _params(optimizer)
        saved = [p.detach().clone() for p in params]
        self._ascend(params)
        optimizer.zero_grad(set_to_none=True)
        seconds = []
        for i, (recompute, weight, tail) in enumerate(pending):
            local = i < len(pending) - 1 and hasattr(model, "no_sync")
            with model.no_sync() if local else contextlib.nullcontext():
                with _frozen_batchnorm_statistics(model):
                    again = recompute()
                second = again.loss if tail is None else (again.class_terms * tail).sum()
                scaler.scale(second if weight is None else second * weight).backward()
            seconds.append(second.detach().float())
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)  # back to w exactly
            if head_grads is not None:
                for p, h in zip(params, head_grads, strict=True):
                    if h is not None:
                        p.grad = h if p.grad is None else p.grad.add_(h)
        return torch.stack(seconds)

    def _tail(self, out: Any) -> Tensor:
        terms = getattr(out, "class_terms", None)
        if terms is None:
            raise ParameterError("sam.tail_below", "a step whose loss is split by class "
                                 "(StepOutput.class_terms)", None)
        return self.tail.to(terms.device, terms.dtype)

    def _head_then_tail(self, out: Any, tail: Tensor, params: list[Tensor],
                        scaler: torch.amp.GradScaler, weight: Tensor | None
                        ) -> list[Tensor | None]:
        """Backward the head share (returned), then the tail share (added to ``.grad``,
        which holds the tail shares of the update's earlier micro-batches)."""
        terms = out.class_terms if weight is None else out.class_terms * weight
        before = [p.grad for p in params]
        for p in params:
            p.grad = None
        scaler.scale((terms * (1 - tail)).sum()).backward(retain_graph=True)
        head = [None if p.grad is None else p.grad.clone() for p in params]
        for p, g in zip(params, before, strict=True):
            p.grad = g
        scaler.scale((terms * tail).sum()).backward()
        return head

    @torch.no_grad()
    def _ascend(self, params: list[Tensor]) -> None:
        """Move the weights to ``w + e``. A non-finite gradient (an fp16
        overflow) gives ``e = 0``: the scaler then skips the step as usual. The gradients
        may be loss-scaled: the direction does not depend on the scale."""
        grads = [p.grad for p in params]
        present = [g for g in grads if g is not None]
        if not present:
            return
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.float()) for g in present]))
        scale = torch.where(torch.isfinite(norm), self.rho / (norm + 1e-12), 0.0)
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                e = torch.nan_to_num(g.float() * scale, nan=0.0, posinf=0.0, neginf=0.0)
                p.add_(e.to(p.dtype))

    def __repr__(self) -> str:
        tail = None if self.tail is None else torch.nonzero(self.tail).flatten().tolist()
        return f"SAM(rho={self.rho:g}, start_epoch={self.start_epoch}, tail={tail})"


def _params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


@contextlib.contextmanager
def _frozen_batchnorm_statistics(model: nn.Module):
    """Batch-norm layers normalise with the batch as usual but keep their running
    statistics (momentum 0) inside the block."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.training]
    saved = [(m.momentum, m.num_batches_tracked.clone()
              if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@section("sam")
@dataclass
class SamSection(Section):
    """The ``sam`` config section: the run's gradient rule.

    ``rho`` (null: one plain backward pass) is SAM's radius, from epoch ``start`` (an epoch
    or a share of the run); ``tail_below`` (null: every class) makes only the classes with
    fewer training examples sharpness-aware (ImbSAM).
    """

    rho: float | None = None
    start: float = 0
    tail_below: float | None = None

    ACTS_ONLY = {"start": ("sam.rho", lambda s: s.rho is not None),
                 "tail_below": ("sam.rho", lambda s: s.rho is not None)}

    def check(self, run: Sections) -> None:
        if self.rho is not None:
            check_number("sam.rho", self.rho, low=0, low_open=True)
        elif self.tail_below is not None or self.start != 0:
            key = "sam.tail_below" if self.tail_below is not None else "sam.start"
            raise ParameterError("sam.rho", f"a radius > 0 when {key} is set (null turns SAM "
                                 "off)", None)
        epochs = run.train.epochs
        resolve_start("sam.start", self.start, epochs)
        if self.tail_below is not None:
            check_number("sam.tail_below", self.tail_below, low=0, low_open=True)

    def resolve(self, epochs: int, notes: list[str]) -> None:
        self.start_epoch = resolve_epoch("sam.start", self.start, epochs)
        self.end_epoch = epochs  # plain steps again after it (a cRT stage fits the head alone)

    def contribute(self, run: Assembly) -> None:
        """:class:`SAM` as the run's gradient rule when ``rho`` is set; with ``tail_below``
        the step splits its loss by class (ImbSAM)."""
        if self.rho is None:
            return
        tail = None
        if self.tail_below is not None:
            if run.world_size > 1:
                raise ParameterError("sam.tail_below", "null with several processes (ImbSAM "
                                     "takes two backward passes of one forward pass, which "
                                     "DDP does not synchronise)", self.tail_below)
            tail = torch.tensor(run.counts) < self.tail_below
            if not bool(tail.any()):
                raise ParameterError("sam.tail_below", f"a class size above the smallest "
                                     f"class ({min(run.counts)} examples), so that some class "
                                     "is a tail class", self.tail_below)
            if run.step_args.get("consistency") is not None:
                raise ParameterError("sam.tail_below", "null with consistency.weight (ImbSAM "
                                     "splits the loss by class; the two-view term has no "
                                     "class)", self.tail_below)
            run.step_args["split_classes"] = True
        run.gradient = SAM(rho=self.rho, start_epoch=self.start_epoch,
                           end_epoch=self.end_epoch, tail=tail)
