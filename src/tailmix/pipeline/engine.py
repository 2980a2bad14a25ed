"""The training loop. It takes objects - network, optimiser, lr schedule, sampler, a
strategy's step, callbacks - and knows no config keys, strategy names or datasets.

One epoch: the sampler plans the epoch's indices (and synthetic slots) from the seed; every
process keeps its shard; each batch goes through the step (which returns the loss); the
optimiser steps; callbacks see the epoch's row. :mod:`tailmix.pipeline.build` makes the objects from
a config, and :func:`tailmix.train` runs a config end to end.

A non-finite loss stops the run with :class:`TrainingError` before the optimiser step that
would have used it, so the weights stay finite and the callbacks (checkpoints, results) see
nothing of the epoch it happened in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailmix import distributed as dist_utils
from tailmix import seeding
from tailmix._validation import ParameterError, check_number
from tailmix.pipeline.callbacks import Callback, TrainState
from tailmix.pipeline.clock import RunningClock
from tailmix.pipeline.steps import Batch, as_planned
from tailmix.sam import Plain

__all__ = ["TIMINGS", "Trainer", "TrainingError"]

_CAUSES = (
    "Likely causes: a learning rate too high (lower train.lr, or warm up longer); a mixer "
    "or loss parameter at an extreme (a Beta alpha near 0, a huge logit scale or margin); "
    "fp16 overflow (train in bf16 or fp32); or inputs holding NaN or inf values."
)


class TrainingError(RuntimeError):
    """Training cannot go on: a run-time failure, such as a non-finite loss.

    Its message is one line, fit to print as ``tailmix: error: ...``. Raised by
    :meth:`Trainer.train_epoch` before the optimiser step the failure concerns, so the
    network keeps the weights of the last good step and the epoch reaches no callback.
    """


class _Update:
    """The micro-batches of one optimiser update: its number in the epoch, its lr, the
    losses to check, the last batch's position, and the sum of the micro-batches' weights
    so far (None before the first weight)."""

    def __init__(self, number: int, lr: float, unit: float):
        self.number, self.lr, self.last, self.unit = number, lr, number, unit
        self.checked: list[Tensor] = []
        self.total: Tensor | None = None

    def weight(self, out: Any) -> Tensor:
        """A micro-batch's weight: its loss normaliser (``StepOutput.norm``, else its
        number of target rows) in units of a micro-batch's size, the same constant on every
        process, so that the weights of all processes' micro-batches add up."""
        norm = getattr(out, "norm", None)
        if norm is None:
            norm = torch.tensor(float(out.target.shape[0]), device=out.target.device)
        weight = norm.detach().float() / self.unit
        self.total = weight if self.total is None else self.total + weight
        return weight


TIMINGS = ("epoch_time_s", "images_per_s", "stopped_s")
"""The keys of a history row that are timings (the rest are the same for the same seed);
``stopped_s``, the time the process was stopped during the epoch, is in a row only when
there was such time (:class:`~tailmix.pipeline.clock.RunningClock`)."""


class Trainer:
    """Trains a network with a strategy's step.

    Parameters
    ----------
    model : nn.Module
        The bare network, on ``device`` (checkpoints and callbacks use it).
    optimizer : torch.optim.Optimizer
    lr_schedule : callable
        ``(epoch, progress in [0, 1]) -> lr``, applied at each step to every parameter group
        (times the group's ``lr_scale``, when it has one).
    sampler
        ``epoch_plan(epoch, seed, generator) -> (indices, synthetic mask or None)``: the
        whole epoch, the same on every process.
    step : callable
        ``step(model, batch) -> StepOutput``; optionally ``step.start_epoch(epoch, model)``
        and ``step.batches(plan, seed)``, which reads the epoch's planned batches (``plan``:
        each batch's indices and synthetic mask) as ``(position, indices, synthetic mask,
        raw inputs or None)``, leaving out what could not be read (images decoded from
        files: :func:`tailmix.data.files.planned_batches`).
    epochs, batch_size, seed : int
        Length of the run, the global batch size, the training seed.
    device : torch.device
    train_model : nn.Module, optional
        What the step calls (the network wrapped by DDP or ``torch.compile``); default
        ``model``.
    scaler : torch.amp.GradScaler, optional
        Loss scaling (fp16); default a disabled scaler.
    callbacks : sequence of Callback
    rank, world_size : int
        This process and the number of processes.
    gradient : gradient rule, optional
        How a step's loss becomes gradients, ``rule.backward(out, model, optimizer,
        scaler, epoch) -> losses checked`` (:mod:`tailmix.sam`); default one backward pass
        (:class:`tailmix.sam.Plain`). A rule may also have ``finish(model, optimizer,
        scaler, epoch) -> losses checked or None``, called once an update's micro-batches
        are in; with ``accumulate`` above 1 it must have it, and its ``backward`` takes
        ``weight=`` (the micro-batch's share of the update) and ``defer=True`` (leave
        what needs the whole update, SAM's second pass, to ``finish``).
    accumulate : int, default 1
        Micro-batches of ``batch_size`` whose gradients make one optimiser update, as one
        batch ``accumulate`` times larger would (see Notes).

    Notes
    -----
    Every step's loss is checked before the optimiser step: a NaN or inf loss raises
    :class:`TrainingError` naming the epoch and step, the weights stay those of the last good
    step, and the epoch reaches no callback (the checkpoint of the previous epoch is kept,
    no metrics are written). A loss scaler's overflow (fp16: an inf *gradient* with a finite
    loss) is not an error; the scaler skips that step as usual.

    The cost: reading the flag waits for the step's backward pass. On the CPU that is free
    (nothing runs ahead). On an accelerator it is one host-device wait per step, placed
    after the scaler's unscaling: with fp16 loss scaling ``GradScaler.step`` already waits
    there once per step for an optimiser without on-device skipping (the SGD tailmix
    builds), so the check adds no second wait; in fp32 and bf16 it adds one, costing the
    time the host takes to issue the optimiser step and the next batch's first kernels
    while the device idles (well under a millisecond a step; close to nothing when the host
    is the bottleneck, as with small networks, since the device then waits on it anyway).
    With several processes the flag is summed over them (one all-reduce of one number) so
    that all stop at the same step. A check every N steps would save the wait but let the
    optimiser step on a NaN loss, which corrupts the weights and the momentum.

    Gradient accumulation (``accumulate = k``): each update sums the gradients of ``k``
    consecutive micro-batches of the epoch's plan, each micro-batch's loss weighted by its
    share of the update's loss normaliser (``StepOutput.norm``: the class-weighted target
    mass, the batch size without class weights), so the update is the gradient of the loss
    of the ``k`` batches taken as one: the same as a ``k`` times larger batch for a network
    without batch-norm when the batch's randomness does not depend on its size. With
    several processes the shares are of the normaliser summed over all of them (one
    all-reduce of one number an update), so every process takes the same step, that of the
    weighted mean over the whole global batch. What does:
    batch-norm normalises each micro-batch by its own statistics, a Mixup partner is drawn
    within the micro-batch, a two-view term is a mean over the micro-batch. The lr follows
    the updates (the ``k`` micro-batches of an update share its lr), the loss is checked
    for every micro-batch before the update, and with several processes the gradients are
    averaged once, at the last micro-batch.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_schedule: Callable[[int, float], float], sampler: Any,
                 step: Callable[..., Any], epochs: int, batch_size: int, seed: int,
                 device: torch.device, train_model: nn.Module | None = None,
                 scaler: torch.amp.GradScaler | None = None,
                 callbacks: Sequence[Callback] = (), rank: int = 0, world_size: int = 1,
                 gradient: Any = None, accumulate: int = 1):
        self.model, self.optimizer, self.lr_schedule = model, optimizer, lr_schedule
        self.sampler, self.step = sampler, step
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.device, self.rank, self.world_size = device, rank, world_size
        self.train_model = model if train_model is None else train_model
        self.scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
        self.callbacks = list(callbacks)
        self.gradient = Plain() if gradient is None else gradient
        self.accumulate = check_number("train.accumulate", accumulate, low=1, integer=True)
        main = getattr(step, "before", step)  # a staged step: the main run's
        if self.accumulate > 1 and getattr(main, "by_sources", False):
            raise ParameterError("train.accumulate", "1 with weights.normalise 'sources' "
                                 "(each source's normaliser spans the whole batch)",
                                 accumulate)
        if self.accumulate > 1 and not hasattr(self.gradient, "finish"):
            raise ParameterError("train.accumulate", f"1 with the gradient rule "
                                 f"{self.gradient!r} (it has no finish(), so it cannot "
                                 "accumulate)", accumulate)
        self.state = TrainState(model=model, epochs=epochs, snapshot=self.state_dict)
        self.clock = RunningClock()  # epoch times leave out spells the process was stopped
        from tailmix.averaging import WeightAverage

        for cb in self.callbacks:  # averaged weights: evaluated and saved beside the network
            average = getattr(cb, "average", None)
            if isinstance(average, WeightAverage):
                self.state.averages[average.name] = average

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        step = getattr(self.step, "state_dict", dict)()
        return {"epoch": self.state.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "best": self.state.best, **({"step": step} if step else {}),
                **({"averages": {name: a.state_dict() for name, a in
                                 self.state.averages.items()}} if self.state.averages else {})}

    def load_state_dict(self, ckpt: dict[str, Any],
                        history: list[dict[str, Any]] | None = None) -> None:
        """Continue from a checkpoint (and the history rows written before it)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("step") and hasattr(self.step, "load_state_dict"):
            self.step.load_state_dict(ckpt["step"])
        for name, average in self.state.averages.items():
            saved = (ckpt.get("averages") or {}).get(name)
            if saved is None:
                raise ParameterError("resume", f"a checkpoint holding the run's {name} "
                                     "average (it was written without it)", sorted(ckpt))
            average.load_state_dict(saved)
        self.state.epoch, self.state.best = int(ckpt["epoch"]), ckpt.get("best")
        self.state.history = list(history or [])

    # -- one epoch -----------------------------------------------------------------------

    def plan(self, epoch: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """This process's share of the epoch's indices and synthetic mask."""
        idx, mask = self.sampler.epoch_plan(epoch, self.seed, generator)
        idx = idx.to(self.device)
        where = dict(rank=self.rank, world_size=self.world_size)
        return (dist_utils.shard(idx, **where),
                None if mask is None else dist_utils.shard(mask, **where))

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; return its row (loss, accuracy on the targets, lr, speed)."""
        gen = seeding.generator(self.seed, "batch", epoch=epoch, device=self.device)
        if hasattr(self.step, "start_epoch"):
            self.step.start_epoch(epoch, self.model)
        idx, mask = self.plan(epoch, gen)
        if self.rank > 0:  # anchors alike everywhere; crops, partners and lam differ
            gen.manual_seed(seeding.derive_seed(self.seed, "batch", epoch=epoch, rank=self.rank))
        bs = self.batch_size // self.world_size  # the global batch, split across processes
        n = len(idx)
        n_steps = n // bs + (1 if n % bs >= 2 else 0)  # a batch of one breaks BatchNorm
        self.train_model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(self.state, epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen, lr = 0, self.lr_schedule(epoch, 1.0)
        start, stopped = self.clock.reading()
        plan = [(idx[s * bs:(s + 1) * bs], None if mask is None else mask[s * bs:(s + 1) * bs])
                for s in range(n_steps)]
        read = getattr(self.step, "batches", as_planned)  # files: the step reads ahead
        decode = seeding.derive_seed(self.seed, "decode", epoch=epoch, rank=self.rank)
        k = self.accumulate
        n_updates = -(-n_steps // k)
        update: _Update | None = None  # the micro-batches of the update being gathered
        for s, index, synthetic, raw in read(plan, decode):
            batch = Batch(index, synthetic, epoch, gen, raw)
            if update is not None and update.number != s // k:  # its last batch was unread
                self._apply(update, epoch, n_steps)
                update = None
            lr = self.lr_schedule(epoch, (s // k + 1) / n_updates)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            last = (s + 1) % k == 0 or s + 1 == n_steps
            local = not last and hasattr(self.train_model, "no_sync")
            with self.train_model.no_sync() if local else contextlib.nullcontext():
                out = self.step(self.train_model, batch)
                if update is None:
                    self.optimizer.zero_grad(set_to_none=True)
                    update = _Update(s // k, lr, float(bs))
                if k == 1:
                    checked = self.gradient.backward(out, self.train_model, self.optimizer,
                                                     self.scaler, epoch)
                else:
                    checked = self.gradient.backward(out, self.train_model, self.optimizer,
                                                     self.scaler, epoch, defer=True,
                                                     weight=update.weight(out))
            update.checked.append(checked.flatten())
            update.last = s
            if last:
                self._apply(update, epoch, n_steps)
                update = None
            with torch.no_grad():
                size = len(batch.index)
                loss_sum += out.loss.detach() * size
                # Accuracy against the (possibly soft) target: the target mass on the
                # predicted class; for one-hot targets this is the ordinary accuracy.
                hit = out.target.gather(1, out.logits.detach().argmax(1, keepdim=True)).sum()
                views = out.target.shape[0] // size  # a step may classify several views
                correct += hit / views if views > 1 else hit
            seen += size
            for cb in self.callbacks:
                cb.on_step_end(self.state, s + 1, n_steps, loss_sum, seen, lr)
        if update is not None:  # the epoch's last batch was unread
            self._apply(update, epoch, n_steps)
        # Replicas leave the epoch identical, so evaluation and checkpoints agree.
        dist_utils.broadcast_buffers(self.model)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        end, stopped_end = self.clock.reading()
        elapsed, stopped = end - start, stopped_end - stopped
        stats = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=self.device)])
        loss_total, correct_total, seen_total = dist_utils.all_reduce_sum(stats).tolist()
        return {"epoch": epoch + 1, "lr": lr,
                "train_loss": loss_total / max(seen_total, 1),
                "train_acc": 100.0 * correct_total / max(seen_total, 1),
                "epoch_time_s": elapsed,
                "images_per_s": seen_total / elapsed if elapsed > 0 else 0.0,
                **({"stopped_s": stopped} if stopped else {})}

    def _apply(self, update: _Update, epoch: int, n_steps: int) -> None:
        """The optimiser update of gathered micro-batches: the gradient rule's last pass,
        the micro-batches' gradients as one batch's, the loss check, the step."""
        finish = getattr(self.gradient, "finish", None)
        more = None if finish is None else finish(self.train_model, self.optimizer,
                                                  self.scaler, epoch)
        if more is not None:
            update.checked.append(more.flatten())
        if update.total is not None:  # micro-batches: the gradient of their weighted mean
            total = update.total
            if self.world_size > 1:  # DDP averaged the processes' sums: so are the weights
                total = dist_utils.all_reduce_sum(total) / self.world_size
            with torch.no_grad():
                for group in self.optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.div_(total.to(p.grad.dtype))
        # Unscaling first (a no-op without fp16 loss scaling) lets the check's wait also
        # cover the scaler's own overflow flag, read inside scaler.step.
        self.scaler.unscale_(self.optimizer)
        checked = update.checked[0] if len(update.checked) == 1 else torch.cat(update.checked)
        self._check_loss(checked, epoch, update.last, n_steps, update.lr)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for cb in self.callbacks:
            if hasattr(cb, "on_update"):
                cb.on_update(self.state)

    def _check_loss(self, loss: Tensor, epoch: int, step: int, steps: int, lr: float) -> None:
        """Raise :class:`TrainingError` when ``loss`` (or, with several processes, any
        process's loss) is not finite; ``epoch`` and ``step`` are 0-based."""
        local_bad = ~torch.isfinite(loss.detach()).all()
        bad = local_bad
        if self.world_size > 1:  # every process stops at the same step
            bad = dist_utils.all_reduce_sum(local_bad.to(torch.float32)) > 0
        if not bool(bad):
            return
        self.optimizer.zero_grad(set_to_none=True)  # drop the non-finite gradients
        self.scaler.update()  # close the unscaled step (a no-op without loss scaling)
        if bool(local_bad):
            values = loss.detach().float().flatten()
            what = f"the training loss is {values[~torch.isfinite(values)][0].item()}"
        else:
            what = "another process's training loss is not finite"
        raise TrainingError(
            f"training diverged: {what} at epoch {epoch + 1}, step {step + 1} of {steps} "
            f"(lr {lr:.4g}); the optimiser did not take that step, and checkpoints of "
            f"earlier epochs are kept. {_CAUSES}"
        )

    # -- the run -------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train from the current epoch to the end; return the callbacks' result."""
        state = self.state
        state.wall_start = time.perf_counter()
        try:
            for cb in self.callbacks:
                cb.on_fit_start(state)
            with self.clock:
                for epoch in range(state.epoch, self.epochs):
                    row = self.train_epoch(epoch)
                    state.epoch = epoch + 1
                    state.history.append(row)
                    for cb in self.callbacks:
                        cb.on_epoch_end(state, row)
                    if state.stop:  # early stopping: every process decides alike
                        break
            for cb in self.callbacks:
                cb.on_fit_end(state)
        finally:
            for cb in self.callbacks:
                cb.close()
        # Only rank 0 writes; the others return once the run folder is complete.
        dist_utils.barrier()
        return state.result
