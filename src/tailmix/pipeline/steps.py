"""Steps: how a strategy turns one batch of dataset indices into a loss.

The trainer plans an epoch (a sampler's indices and synthetic mask), cuts it into
:class:`Batch` es and hands each to the strategy's step; the step returns a
:class:`StepOutput` and the trainer takes the optimiser step. The default,
:class:`MixStep`, is sample -> augment -> mix -> forward -> weighted soft-target loss;
a strategy with more to do subclasses it and overrides :meth:`MixStep.transform`
(M2m, :class:`tailmix.generative.m2m.M2mStep`). Nothing here sees the trainer.

A step may also act once per epoch (:meth:`MixStep.start_epoch`, before the epoch's first
batch: feature-space neighbour searches, the epoch's class weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tailmix._validation import ParameterError, check_choice, keywords

__all__ = ["EVAL_BATCH_SIZES", "Batch", "MixStep", "StepOutput", "autocast",
           "eval_batch_size", "iter_batches", "predict"]

#: What ``eval.batch_size: auto`` is on each kind of device; other accelerators take the
#: ``cuda`` value. ``benchmarks/eval_batch.py`` measures the choice (``benchmarks/README.md``:
#: on a 2-core AVX2 CPU, ResNet-32 evaluates fastest at 128 to 256 images a batch, and at
#: 1024 a quarter slower; the GPU value is not measured yet).
EVAL_BATCH_SIZES = {"cpu": 256, "cuda": 1024}


@dataclass
class Batch:
    """One batch as the trainer plans it.

    Attributes
    ----------
    index : LongTensor
        ``(B,)`` dataset indices, on the training device.
    synthetic : BoolTensor or None
        ``(B,)`` slots an oversampling sampler marked synthetic (to be mixed), or None.
    epoch : int
        0-based epoch.
    generator : torch.Generator
        The epoch's ``batch`` stream on the device (crops, flips, partners, lam).
    raw : Tensor or None
        The batch's raw inputs when they were read ahead (images decoded from files), else
        None (the step indexes its in-memory inputs).
    """

    index: Tensor
    synthetic: Tensor | None
    epoch: int
    generator: torch.Generator
    raw: Tensor | None = None


@dataclass
class StepOutput:
    """What a step returns: the loss to minimise, and the logits and (soft) targets it was
    computed from (for the epoch's running accuracy).

    ``recompute`` (optional) runs the forward pass again on the same inputs and targets
    (a second pass at other weights: SAM); ``class_terms`` (optional) is the loss split by
    target class, ``(C,)`` summing to ``loss`` (ImbSAM); ``norm`` (optional) is the
    loss's normaliser, the class-weighted target mass ``sum_i sum_k v_k y_ik`` (the number
    of target rows without class weights, the default), by which gradient accumulation
    weighs the batch among the update's.
    """

    loss: Tensor
    logits: Tensor
    target: Tensor
    recompute: Callable[[], StepOutput] | None = None
    class_terms: Tensor | None = None
    norm: Tensor | None = None


def _takes(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` accepts the keyword ``name`` (or any keyword)."""
    names = keywords(function)
    return names is None or name in names


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, or nothing for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def eval_batch_size(value: int | str, device: torch.device) -> int:
    """The number of inputs per evaluation pass: ``value`` when it is a number (what a user
    wrote is kept), else ``auto``'s size for ``device`` (:data:`EVAL_BATCH_SIZES`).

    >>> eval_batch_size("auto", torch.device("cpu")), eval_batch_size(300, torch.device("cpu"))
    (256, 300)
    """
    if value != "auto":
        return int(value)
    return EVAL_BATCH_SIZES.get(torch.device(device).type, EVAL_BATCH_SIZES["cuda"])


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, augment: nn.Module, *, batch_size: int,
            device: torch.device, amp: torch.dtype | None = None, features: bool = False,
            channels_last: bool = False) -> Tensor:
    """Logits (or features) of ``inputs`` without augmentation, in eval mode, in float32.

    A cosine head's outputs are multiplied by its scale
    (:func:`tailmix.models.heads.logit_scale`), in float32."""
    from tailmix.models.heads import logit_scale

    was_training = model.training
    model.eval()
    scale = None if features else logit_scale(model)
    outs = []
    for raw in iter_batches(inputs, batch_size):
        x = augment(raw.to(device, non_blocking=True), train=False)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = model.features(x) if features else model(x)
        outs.append(out.float() if scale is None else out.float() * scale.float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def iter_batches(inputs: Any, batch_size: int):
    """Consecutive batches of raw inputs: slices of a tensor, or images decoded ahead by
    worker processes (:class:`tailmix.data.files.ImageFiles`)."""
    if hasattr(inputs, "batches"):
        yield from inputs.batches(batch_size)
        return
    for s in range(0, len(inputs), batch_size):
        yield inputs[s:s + batch_size]


class MixStep:
    """The default step: sample -> augment -> mix -> forward -> weighted soft-target loss.

    Parameters
    ----------
    inputs, labels : Tensor
        The training set on the device: raw inputs (``uint8`` images or float vectors) and
        ``(N,)`` labels.
    augment : nn.Module
        Raw batch (and a generator) -> network inputs (:class:`tailmix.data.BatchAugment`).
    loss : nn.Module
        ``loss(logits, soft_target, class_weights) -> scalar``.
    weights : callable
        ``epoch -> class weights or None`` (:class:`tailmix.weights.WeightSchedule`); its
        ``normalise`` attribute, where it has one, says what the weighted loss divides by
        (``"rows"`` is passed to the loss as ``normalise="rows"``).
    mixer : Mixer, optional
        Mixes each batch; None trains on one-hot targets.
    num_classes : int
        Width of the targets.
    device : torch.device
    amp : torch.dtype, optional
        Autocast dtype of the forward pass.
    channels_last : bool
        Feed images in channels-last memory format.
    eval_batch_size : int
        Batch size of the feature pass of a feature-space neighbour search.
    split_classes : bool
        Also return the loss split by target class (``StepOutput.class_terms``; the loss
        is then their sum), for a gradient rule that treats classes apart (ImbSAM).
    consistency : nn.Module, optional
        A two-view term (:class:`tailmix.consistency.TwoViewTerm`): a second augmentation
        of the batch's anchors, and ``consistency(features(view 1), features(view 2))``
        added to the loss (the views are not mixed; the classifier's input is).
    consistency_views : {"augmented", "mixed"}, default "augmented"
        ``"mixed"``: the two views are the batch mixed twice with the same partners and
        ``lam`` (:meth:`tailmix.mixing.Mixer.pair`: blended and pasted, GLMC's global and
        local views); the classifier trains on both, and the term pulls their features
        together. Needs a mixer.
    """

    def __init__(self, *, inputs: Tensor, labels: Tensor, augment: nn.Module, loss: nn.Module,
                 weights: Callable[[int], Tensor | None], mixer: nn.Module | None = None,
                 num_classes: int, device: torch.device, amp: torch.dtype | None = None,
                 channels_last: bool = False, eval_batch_size: int = 1024,
                 split_classes: bool = False, consistency: nn.Module | None = None,
                 consistency_views: str = "augmented"):
        self.inputs, self.labels, self.augment = inputs, labels, augment
        self.split_classes, self.consistency = split_classes, consistency
        self.consistency_views = check_choice("consistency_views", consistency_views,
                                              ("augmented", "mixed"))
        if consistency is not None and consistency_views == "mixed" and mixer is None:
            raise ParameterError("consistency_views", "'augmented' without a mixer (the "
                                 "mixed views are two mixings of the batch)", "mixed")
        self.loss, self.weights, self.mixer = loss, weights, mixer
        self.num_classes, self.device, self.amp = num_classes, device, amp
        self.channels_last, self.eval_batch_size = channels_last, eval_batch_size
        self.class_weights: Tensor | None = None
        # the weighted loss normalised source by source needs the mixer's targets by source
        # what the weighted loss divides by (WeightSchedule.normalise; "mass" without one)
        normalise = self.normalise = getattr(weights, "normalise", "mass")
        self.by_sources = normalise == "sources"
        if self.by_sources and mixer is not None and \
                type(self).transform is not MixStep.transform:
            raise ParameterError("weights.normalise", "'mass' or 'rows' with a step that "
                                 f"changes mixed batches ({type(self).__name__})", "sources")
        if normalise != "mass" and not _takes(loss.forward, "normalise"):
            raise ParameterError("weights.normalise", f"'mass' with the loss "
                                 f"{type(loss).__name__} (its forward takes no 'normalise' "
                                 "keyword)", normalise)
        if self.by_sources and mixer is not None and not _takes(mixer.forward, "parts"):
            raise ParameterError("weights.normalise", f"'mass' or 'rows' with the mixer "
                                 f"{type(mixer).__name__} (it gives no targets by source: "
                                 "no 'parts' keyword)", "sources")
        if mixer is not None:  # a new run: the mixer searches its neighbours afresh
            mixer.forget_search()

    # -- once per epoch --------------------------------------------------------------------

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        """Set the epoch's class weights, and let the mixer prepare its partners
        (:meth:`tailmix.mixing.Mixer.start_epoch`). ``model`` is the bare network (not
        compiled or wrapped)."""
        w = self.weights(epoch)
        self.class_weights = None if w is None else w.to(self.device, torch.float32)
        if self.mixer is None:
            return

        def features() -> Tensor:
            return predict(model, self.inputs, self.augment, device=self.device,
                           batch_size=self.eval_batch_size, amp=self.amp, features=True,
                           channels_last=self.channels_last)

        self.mixer.start_epoch(epoch, labels=self.labels, inputs=self.inputs,
                               features=features)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the two-view term's weights, and the mixer's
        neighbour table (:meth:`tailmix.mixing.Mixer.table_state`)."""
        state: dict[str, Any] = {}
        if self.consistency is not None:
            state["consistency"] = self.consistency.state_dict()
        if self.mixer is not None:
            state.update(self.mixer.table_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.consistency is not None and "consistency" in state:
            self.consistency.load_state_dict(state["consistency"])
        if self.mixer is not None:
            self.mixer.load_table_state(state, labels=self.labels, inputs=self.inputs)

    # -- once per batch --------------------------------------------------------------------

    def batches(self, plan: list[tuple[Tensor, Tensor | None]], seed: int):
        """The epoch's batches, read ahead when the inputs are files
        (:func:`tailmix.data.files.planned_batches`)."""
        from tailmix.data.files import planned_batches

        return planned_batches(self.inputs, plan, seed)

    def _raw(self, batch: Batch) -> Tensor:
        raw = batch.raw if batch.raw is not None else self.inputs[batch.index]
        return raw.to(self.device, non_blocking=True)

    def sample(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The batch's augmented inputs and labels."""
        return self.augment(self._raw(batch), batch.generator), self.labels[batch.index]

    def _fetch(self, generator: torch.Generator) -> Callable[[Tensor], Tensor]:
        """Dataset indices -> their inputs, augmented as the batch's are."""

        def fetch(idx: Tensor) -> Tensor:
            return self.augment(self.inputs[idx].to(self.device, non_blocking=True),
                                generator)

        return fetch

    def mix(self, x: Tensor, y: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Mixed inputs and soft targets (one-hot targets without a mixer)."""
        if self.mixer is None:
            return x, torch.nn.functional.one_hot(y, self.num_classes).float()
        g = batch.generator
        return self.mixer(x, y, batch.index, batch.synthetic, generator=g,
                          fetch=self._fetch(g), **({"parts": True} if self.by_sources else {}))

    def transform(self, x: Tensor, target: Tensor, y: Tensor, batch: Batch
                  ) -> tuple[Tensor, Tensor]:
        """A hook for strategies that change a mixed batch (identity here)."""
        return x, target

    def forward(self, model: nn.Module, x: Tensor, target: Tensor,
                views: tuple[Tensor, Tensor] | str | None = None) -> StepOutput:
        """Forward pass and the class-weighted soft-target loss, plus the two-view term on
        ``views`` when the step has one: two batches of views, or ``"halves"``, the two
        halves of ``x`` itself (mixed views, one pass for logits and features). ``target``
        may be the targets' parts by source, ``(S, B, C)`` (``weights.normalise:
        sources``)."""
        parts = None
        if target.ndim == 3:
            parts, target = target, target.sum(0)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        features = None
        with autocast(self.device, self.amp):
            if views == "halves":
                logits, features = model(x, return_features=True)
            else:
                logits = model(x)
        terms = None
        # said only when not the default, so a user's loss without the keyword keeps working
        by_rows = self.normalise == "rows"
        how = {"normalise": "rows"} if by_rows and self.class_weights is not None else {}
        given = target
        if parts is not None and self.class_weights is not None:
            how, given = {"normalise": "sources"}, parts
        if self.split_classes:
            terms = self.loss.class_terms(logits.float(), given, self.class_weights, **how)
            loss = terms.sum()
        else:
            loss = self.loss(logits.float(), given, self.class_weights, **how)
        if features is not None:
            loss = loss + self.consistency(*features.float().chunk(2))
        elif views is not None:
            both = torch.cat(views)
            if self.channels_last and both.dim() == 4:
                both = both.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp):
                f1, f2 = model.features(both).float().chunk(2)
            loss = loss + self.consistency(f1, f2)
        norm = None if self.class_weights is None or by_rows or parts is not None else \
            (target.float() * self.class_weights).sum()
        again = target if parts is None else parts
        return StepOutput(loss, logits, target,
                          lambda: self.forward(model, x, again, views), terms, norm)

    def __call__(self, model: nn.Module, batch: Batch) -> StepOutput:
        x, y = self.sample(batch)
        if self.consistency is not None and self.consistency_views == "mixed":
            return self._mixed_views(model, batch, x, y)
        views = None
        if self.consistency is not None:
            views = (x, self.augment(self._raw(batch), batch.generator))
        x, target = self.mix(x, y, batch)
        x, target = self.transform(x, target, y, batch)
        return self.forward(model, x, target, views)


    def _mixed_views(self, model: nn.Module, batch: Batch, x: Tensor, y: Tensor
                     ) -> StepOutput:
        """GLMC's views: a second augmentation of the batch, both mixed with the same
        partners and ``lam``, the classifier on both and the term between them."""
        g = batch.generator
        x2 = self.augment(self._raw(batch), g)
        mixed = self.mixer.pair(x, x2, y, batch.index, batch.synthetic, generator=g,
                                fetch=self._fetch(g),
                                **({"parts": True} if self.by_sources else {}))
        views = [self.transform(xv, tv, y, batch) for xv, tv in mixed]
        return self.forward(model, torch.cat([views[0][0], views[1][0]]),
                            torch.cat([views[0][1], views[1][1]], dim=-2), "halves")


def as_planned(plan: list[tuple[Tensor, Tensor | None]], seed: int):
    """The batches of a step that reads none itself: as planned, ``(position, indices,
    synthetic mask, None)``; the step reads the inputs of the indices."""
    for position, (index, synthetic) in enumerate(plan):
        yield position, index, synthetic, None
