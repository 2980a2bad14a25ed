"""Specification -> objects: data, network, optimiser, lr schedule, sampler, mixer, loss,
class weights, a strategy's step and callbacks, handed to :class:`tailmix.pipeline.engine.Trainer`.

:func:`train` is the whole path for a config (resolve -> build -> fit); ``tailmix train``,
``compare``, ``bench``, ``eval``, ``margins`` and ``neighbours`` all go through here.
Users with their own loop take the parts instead (README, "Use tailmix in your own
training loop"). Slightly over 600 lines because :func:`restore` stays beside the build it
inverts: a config's way to its trainer and a checkpoint's way back to its network read
together.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailmix import distributed as dist_utils
from tailmix._validation import ParameterError
from tailmix.data import LongTailData, RawDataset
from tailmix.pipeline import callbacks as cb
from tailmix.pipeline.checkpoints import (  # noqa: F401 (re-exported: checkpoints were read here)
    RUN_IDENTITY,
    changed_error,
    check_resumable,
    checkpoint_changes,
    checkpoint_network,
    config_changes,
    config_digest,
    load_checkpoint,
    weights_mismatch,
)
from tailmix.pipeline.components import (
    make_generative,
    make_loss,
    make_mixer,
    make_sampler,
    make_weights,
)
from tailmix.pipeline.config import (
    RunSpec,
    refuse_saved_plugins,
    resolve,
)
from tailmix.pipeline.engine import Trainer
from tailmix.pipeline.evaluation import environment, input_record, run_callbacks  # noqa: F401
from tailmix.pipeline.hardware import choose_speed
from tailmix.pipeline.sections import Assembly
from tailmix.pipeline.steps import eval_batch_size

__all__ = ["Run", "build_run", "check_resumable", "evaluate_checkpoint",
           "load_checkpoint", "load_data", "make_mixer", "resolve_device", "restore", "train"]

# --------------------------------------------------------------------------- devices


def resolve_device(name: str) -> torch.device:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises
    ------
    ParameterError
        Naming ``train.device``, for a malformed name (``cuda:abc``) or a device this
        machine does not have (``cuda`` without a GPU, ``cuda:3`` with two, ``mps`` off
        Apple silicon).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_utils.local_rank())
        return torch.device("cpu")
    spelled = "'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index) or 'mps'"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ParameterError("train.device", spelled, name) from None
    here = "a device that exists here ('cpu' or 'auto')"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("train.device", here, name)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ParameterError("train.device", f"{here}: this machine has {count} GPU(s), "
                                 f"cuda:0 to cuda:{count - 1}", name)
        if dev.index is None and dist_utils.world_size() > 1:
            dev = torch.device("cuda", dist_utils.local_rank())
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ParameterError("train.device", here, name)
    elif dev.type != "cpu":
        raise ParameterError("train.device", spelled, name)
    return dev


def check_distributed(train_cfg: dict[str, Any], device: torch.device, world_size: int) -> None:
    """Reject settings a run of ``world_size`` processes cannot honour: the global batch
    must split evenly; SyncBatchNorm needs an accelerator."""
    if world_size <= 1:
        return
    bs = train_cfg["batch_size"]
    if bs % world_size:
        raise ParameterError("train.batch_size", f"a multiple of the number of processes "
                             f"({world_size}): it is the global batch", bs)
    if train_cfg["sync_batchnorm"] and device.type == "cpu":
        raise ParameterError("train.sync_batchnorm", "false on a CPU device (SyncBatchNorm "
                             "synchronises accelerator tensors only)", True)


def load_data(spec: RunSpec | dict[str, Any], raw: RawDataset | None = None, *,
              log: Callable[[str], None] = print) -> LongTailData:
    """The spec's dataset (:meth:`tailmix.data.section.DatasetSection.load`), adapted by
    every section (the augment section's policy and cutout); ``raw`` supplies in-memory
    data for the ``arrays`` source (see :func:`tailmix.data.from_arrays`)."""
    spec = resolve(spec)
    data = spec.dataset.load(raw, model=spec.model, log=log)
    for part in spec.sections:
        part.adapt(data)
    return data


def make_model(spec: RunSpec, data: LongTailData, model: nn.Module | None = None, *,
               log: Callable[[str], None] = print) -> nn.Module:
    """The spec's network for ``data``, initialised from the seed (the ``init`` stream); a
    user's ``model`` is adapted instead (:func:`tailmix.models.adapt`: it keeps its own
    weights; its last linear layer becomes the head unless it has ``features`` and
    ``head``)."""
    from tailmix import seeding
    from tailmix.models import adapt, build_model

    torch.manual_seed(seeding.derive_seed(spec.seed, "init"))
    head = spec.composition.head
    if model is not None:
        return adapt(model, num_classes=data.num_classes, input_shape=data.input_shape,
                     head=head, log=log)
    return build_model(spec.model.arch, num_classes=data.num_classes,
                       input_shape=data.input_shape, head=head,
                       pretrained=spec.model.pretrained)


def check_streaming(spec: RunSpec, data: LongTailData, mixer: Any, generative: Any) -> None:
    """Refuse the settings that need every training image in memory when images stream."""
    if not data.streaming:
        return
    if mixer is not None and mixer.uses_neighbours and mixer.space == "input":
        raise ParameterError("mixer.space", "'feature' when images stream from files (a "
                             "pixel-space neighbour search needs every image in memory; or "
                             "set dataset.in_memory: true for a dataset that fits)", "input")
    if generative is not None and generative.needs_memory:
        raise ParameterError("dataset.in_memory", f"true for {type(generative).__name__} (it "
                             "reads the whole training set at once)", spec.dataset.in_memory)
    if mixer is not None and mixer.pool is not None:
        raise ParameterError("dataset.in_memory", "true for partners drawn from the whole "
                             "training set (mixer.partner: balanced reads any image at any "
                             "step; or a partner from the batch)", spec.dataset.in_memory)


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything built for one run: the trainer and what it was built from."""

    spec: RunSpec
    trainer: Trainer
    data: LongTailData
    out: Path | None
    device: torch.device
    amp: torch.dtype | None
    is_main: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    resuming: bool = False
    allow_changes: bool = False

    def resume(self, *, allow_changes: bool | None = None) -> None:
        """Continue from ``out/checkpoints/last.pt`` and the history written before it.

        The checkpoint, ``config.yaml`` and ``history.jsonl`` must agree with each other
        and with this run (:func:`check_resumable`): any setting of this run that differs
        from the checkpoint's is refused, unless ``allow_changes`` (None: as
        :func:`build_run` was told; a finished run trained further, a cRT stage added, a
        learning rate changed); the change is then logged and
        recorded in the history, on the row of the checkpoint's epoch
        (``config_changes``). Temporary files a killed write left in the folder are
        removed.
        """
        path = None if self.out is None else self.out / "checkpoints" / "last.pt"
        if path is None or not path.is_file():
            raise ParameterError("resume", "a run folder with checkpoints/last.pt",
                                 str(self.out))
        if self.is_main:
            from tailmix.io import remove_stale_temporaries

            removed = remove_stale_temporaries(self.out)
            if removed:
                self.log(f"{self.out}: removed {len(removed)} temporary file(s) of a write "
                         "that was interrupted")
        ckpt = load_checkpoint(path, name="resume", map_location=self.device)
        history = cb.read_history(self.out)
        changes = check_resumable(self.spec, ckpt, self.out, path=path, history=history,
                                  class_counts=self.data.class_counts,
                                  model_class=self.extra.get("model_class"),
                                  allow_changes=self.allow_changes if allow_changes is None
                                  else allow_changes)
        mismatch = weights_mismatch(self.trainer.model, ckpt["model"])
        if mismatch:
            raise ParameterError("resume", "a checkpoint of this run's network "
                                 f"({self.spec.model.arch})", f"{path}: {mismatch}")
        epoch = int(ckpt["epoch"])
        history = [h for h in history if h["epoch"] <= epoch]
        if changes:
            shown = ", ".join(f"{k} {was!r} -> {now!r}" for k, (was, now) in changes.items())
            self.log(f"resumed after epoch {epoch} with a changed config: {shown} (recorded "
                     "in history.jsonl)")
            if history:
                row = history[-1]
                row["config_changes"] = {**row.get("config_changes", {}),
                                         **{k: list(v) for k, v in changes.items()}}
        try:
            self.trainer.load_state_dict(ckpt, history)
        except (KeyError, TypeError, ValueError) as e:  # the optimiser's or a step's state
            raise ParameterError("resume", "a checkpoint of this run's optimiser and "
                                 "strategy", f"{path}: {type(e).__name__}: {e}") from e

    def fit(self, *, resume: bool | None = None) -> dict[str, Any]:
        """Train (``resume``: from the run folder's last checkpoint, see :meth:`resume`;
        None: as :func:`build_run` was told) and return the final metrics.

        While it trains, this process owns the run folder: ``out/.lock`` (rank 0's pid and
        host) keeps another process from training into it, and is removed at the end, also
        when training fails or is interrupted.
        """
        lock = self._lock()
        try:
            if self.resuming if resume is None else resume:
                self.resume()
            return self.trainer.fit()
        finally:
            if lock is not None:
                lock.release()

    def _lock(self) -> Any:
        """Rank 0 takes the run folder's lock; every process learns whether it could."""
        from tailmix.io import lock_folder

        if self.out is None:
            return None
        lock, error = None, None
        if self.is_main:
            try:
                lock = lock_folder(self.out, name="--out", log=self.log)
            except ParameterError as e:
                error = e
        try:
            _agree(error, self.out)
        except ParameterError:
            if lock is not None:
                lock.release()
            raise
        return lock


def build_run(config: dict[str, Any] | RunSpec, out_dir: str | Path | None = None, *,
              data: RawDataset | None = None, model: nn.Module | None = None,
              resume: bool = False, allow_changes: bool = False, force: bool = False,
              log: Callable[[str], None] = print) -> Run:
    """Build every object of a run from a config (or a resolved spec); nothing trains.
    ``model``: a user's network to train instead of ``model.arch`` (see :func:`make_model`).

    ``out_dir`` is checked before the data loads: a new run (not ``resume``) writes only
    into a new or empty folder; one holding a run's results or files training did not
    write is refused, or with ``force`` moved aside (:func:`tailmix.io.claim_run_folder`).
    A run to ``resume`` must have its checkpoint's config, or with ``allow_changes`` go on
    with the changes recorded (:meth:`Run.resume`).

    The path: the data, the components and the network (:func:`_assemble`), then every
    config section's contribution (:meth:`tailmix.pipeline.sections.Section.contribute`), then the
    trainer (:func:`_trainer`).
    """
    spec = resolve(config)
    rank, world_size = dist_utils.rank(), dist_utils.world_size()
    device = resolve_device(spec.train.device)
    check_distributed(spec.train, device, world_size)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:  # before the data loads
        _claim_out(spec, out, resume=resume, allow_changes=allow_changes, force=force,
                   log=log)
    for note in spec.notes:  # what resolving chose that the config did not say
        log(note)
    lt = load_data(spec, data, log=log)
    log(f"{lt.describe()}, profile {spec.dataset.profile}")
    run, parts = _assemble(spec, lt, model, device=device, out=out, rank=rank,
                           world_size=world_size, log=log)
    for part in spec.sections:  # step arguments, gradient rule, callbacks, stages
        part.contribute(run)
    trainer = _trainer(run, parts)
    extra = {"generative": parts.generative, "model_class": parts.model_class}
    return Run(spec, trainer, run.data, out, device, parts.amp, rank == 0, extra, log,
               resume, allow_changes)


def _claim_out(spec: RunSpec, out: Path, *, resume: bool, allow_changes: bool, force: bool,
               log: Callable[[str], None]) -> None:
    """Check (and make) the run folder: rank 0 checks, every process learns the outcome."""
    error = None
    if dist_utils.rank() == 0:
        try:
            check_out(out)
            if not resume:
                from tailmix.io import claim_run_folder

                claim_run_folder(out, force=force, log=log)
            elif not allow_changes:
                _check_unchanged(spec, out)
        except ParameterError as e:
            error = e
    _agree(error, out)


@dataclass
class _Parts:
    """What the builder keeps beside the :class:`~tailmix.pipeline.sections.Assembly`."""

    generative: Any
    sampler: Any
    real: Any  # which training examples are real (None: all)
    speed: Any
    amp: torch.dtype | None
    scaler: Any
    model_class: str | None


def _assemble(spec: RunSpec, lt: LongTailData, model: nn.Module | None, *,
              device: torch.device, out: Path | None, rank: int, world_size: int,
              log: Callable[[str], None]) -> tuple[Assembly, _Parts]:
    """The components on the data's class counts, the network on its device with its
    optimiser, and the step's arguments: the run the sections contribute to (before a
    generative oversampler's costly transform, so that their errors come first)."""
    t, counts, comp = spec.train, lt.class_counts, spec.composition
    mixer = None if comp.mixer is None else make_mixer(comp.mixer, counts=counts)
    loss, weights = make_loss(comp.loss, counts=counts), make_weights(comp.weights,
                                                                      counts=counts, spec=spec)
    generative = None if comp.generative is None else make_generative(comp.generative,
                                                                      counts=counts)
    check_streaming(spec, lt, mixer, generative)
    net = make_model(spec, lt, model, log=log)
    _check_head(spec, net)
    from tailmix.models.heads import set_logit_scale

    set_logit_scale(net, getattr(loss, "logit_scale", 1.0))
    arch = "custom" if model is not None else spec.model.arch
    speed = choose_speed(t.precision, t.channels_last, device, arch=arch,
                         is_image=lt.is_image)
    log(f"speed: {speed.reason}")
    amp, channels_last = speed.amp, speed.channels_last
    net = _place(net, t, device, channels_last, world_size)
    lt = lt.to(device)
    if lt.streaming and device.type == "cuda":
        lt.train_inputs.pin_memory = lt.test_inputs.pin_memory = True
    loss = loss.to(device)
    mixer = None if mixer is None else mixer.to(device)
    optimizer = t.optimizer(net, backbone_lr=spec.model.backbone_lr)
    # fp16 needs loss scaling to keep small gradients from flushing to zero.
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    run = Assembly(spec=spec, data=lt, network=net, optimizer=optimizer, device=device,
                   counts=counts, rank=rank, world_size=world_size, out=out, log=log,
                   step_args=dict(
                       inputs=lt.train_inputs, labels=lt.train_labels, augment=lt.augment,
                       loss=loss, weights=weights, mixer=mixer, num_classes=lt.num_classes,
                       device=device, amp=amp, channels_last=channels_last,
                       eval_batch_size=eval_batch_size(spec.eval.batch_size, device)))
    model_class = None if model is None else type(model).__qualname__
    return run, _Parts(generative, None, None, speed, amp, scaler, model_class)


def _trainer(run: Assembly, parts: _Parts) -> Trainer:
    """The trainer of an assembled run: the training data a generative oversampler
    enlarges, the anchor sampler, the strategy's step and planner, the run's own callbacks
    after the sections', the stages after the main run applied in order, and one
    :class:`~tailmix.pipeline.stages.Stages` callback for a frozen start or a re-training stage."""
    spec, net, t = run.spec, run.network, run.spec.train
    if parts.generative is not None:  # DeepSMOTE enlarges the training set
        run.data, parts.real = parts.generative.transform(run.data, device=run.device,
                                                          log=run.log)
        run.step_args.update(inputs=run.data.train_inputs, labels=run.data.train_labels)
    # Over an enlarged training set the sampler counts the labels it is given.
    parts.sampler = make_sampler(spec.composition.sampler,
                                 counts=run.counts if parts.real is None else None, spec=spec,
                                 labels=run.data.train_labels.cpu(), rank=run.rank,
                                 world_size=run.world_size)
    sampler, step = _strategy_step(run, parts.generative, parts.sampler)
    step_args = run.step_args
    callbacks = run_callbacks(spec, run.data, run.out if run.rank == 0 else None,
                           real=parts.real, device=run.device, amp=parts.amp,
                           channels_last=step_args["channels_last"],
                           speed=parts.speed.record(), rank=run.rank,
                           world_size=run.world_size, log=run.log,
                           model_class=parts.model_class)
    callbacks = run.callbacks + callbacks
    lr, epochs = t.lr_schedule(), spec.epochs
    for stage in run.stages:  # e.g. classifier re-training after the main run
        sampler, step, lr, epochs = stage(sampler, step, lr, epochs)
    staged = bool(run.frozen_until) or run.retrain_from is not None
    if staged:
        from tailmix.pipeline.stages import Stages

        callbacks.insert(0, Stages(model=net, optimizer=run.optimizer, seed=spec.seed,
                                   unfreeze_epoch=run.frozen_until,
                                   crt_epoch=run.retrain_from,
                                   reset_head=run.retrain_reset_head,
                                   batchnorm_stats=run.retrain_batchnorm_stats))
    train_model = _wrap(net, t, run.device, run.world_size, find_unused=staged)
    return Trainer(model=net, optimizer=run.optimizer, lr_schedule=lr, sampler=sampler,
                   step=step, epochs=epochs, batch_size=t.batch_size, seed=spec.seed,
                   device=run.device, train_model=train_model, scaler=parts.scaler,
                   callbacks=callbacks, rank=run.rank, world_size=run.world_size,
                   gradient=run.gradient, accumulate=t.accumulate)


def _check_head(spec: RunSpec, net: nn.Module) -> None:
    """``model.max_norm`` and ``eval.tau_norm`` scale the classifier's rows: they need a
    linear head with a (classes, features) weight, checked before training."""
    from tailmix.models.heads import CosineHead

    for key, value in (("model.max_norm", spec.model.max_norm),
                       ("eval.tau_norm", spec.eval.tau_norm)):
        if value is None:
            continue
        try:
            cb.classifier_weight(net)
        except ParameterError:
            raise ParameterError(key, "null for a network without a linear classifier head "
                                 "(it scales the head's rows)", value) from None
        if isinstance(getattr(net, "head", None), CosineHead):
            raise ParameterError(key, "null with a cosine head (it normalises its rows "
                                 "itself, so scaling them changes nothing)", value)


def _check_unchanged(spec: RunSpec, out: Path) -> None:
    """Before the data loads: refuse to resume with settings other than the checkpoint's
    (:func:`check_resumable` checks the rest once the run is built)."""
    path = out / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ParameterError("resume", "a run folder with checkpoints/last.pt", str(out))
    ckpt = load_checkpoint(path, name="resume")
    if isinstance(ckpt["config"], dict):
        changes = checkpoint_changes(ckpt, spec.config)
        if changes:
            raise changed_error(changes, out)


def _agree(error: ParameterError | None, out: Path) -> None:
    """Raise ``error`` (rank 0's refusal of the run folder, or None) on every process: the
    others must not go on to wait for it in a collective."""
    if dist_utils.world_size() > 1:
        failed = dist_utils.all_reduce_sum(torch.tensor([float(error is not None)]))
        if error is None and failed.item():
            raise ParameterError("--out", "a run folder that rank 0 can take",
                                 f"{out} (refused on rank 0)")
    if error is not None:
        raise error


def check_out(out: Path, *, name: str = "--out") -> None:
    """Refuse a run folder that is an existing file, that cannot be made (a name too long,
    a link loop, a file system that allows none there), or that another live process is
    training into (its ``.lock``). The folder is made here, before the data loads."""
    from tailmix.io import check_unlocked, os_error_text

    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ParameterError(name, "a folder (the run folder to write into)",
                                     f"{out}: {folder} is an existing file")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParameterError(name, "a folder that can be made here",
                             f"{out}: {os_error_text(e)}") from e
    check_unlocked(out, name=name)


def _place(model: nn.Module, t: dict[str, Any], device: torch.device, channels_last: bool,
           world_size: int) -> nn.Module:
    """The network on its device (SyncBatchNorm across processes, channels-last images)."""
    if world_size > 1 and t.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _wrap(model: nn.Module, t: dict[str, Any], device: torch.device,
          world_size: int, find_unused: bool = False) -> nn.Module:
    """What the step calls: the network under DDP across processes and ``torch.compile``
    (``find_unused``: parameters are frozen for some epochs)."""
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused)
    if t.compile is not False:
        mode = None if t.compile in (True, "default") else t.compile
        model = torch.compile(model, mode=mode)
    return model


def _strategy_step(run: Assembly, generative: Any, sampler: Any) -> tuple[Any, Any]:
    """The epoch planner and the step: the generative oversampler's (M2m's phased sampler
    and translating step), anchors resampled for a mixer that asks for them, else the
    default step."""
    from tailmix.pipeline.steps import MixStep
    from tailmix.samplers import Resampled

    if generative is not None:
        sampler = generative.plan(sampler, run)
    mixer, data = run.step_args["mixer"], run.data
    if mixer is not None and mixer.sampler_mode is not None:
        sampler = Resampled(sampler, mode=mixer.sampler_mode, labels=data.train_labels,
                            num_classes=data.num_classes, anchor_weights=mixer.anchor_weights
                            if mixer.m_neighbors is not None else None,
                            quota=mixer.anchor_quota)
    step = None if generative is None else generative.step(run.step_args, run)
    return sampler, step if step is not None else MixStep(**run.step_args)


def train(config: dict[str, Any] | RunSpec, out_dir: str | Path | None = None, *,
          data: RawDataset | None = None, model: nn.Module | None = None,
          resume: bool = False, force: bool = False, allow_changes: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` and return the final metrics (``metrics.json``).

    A new run writes only into a new or empty folder (``force``: what the folder holds is
    moved aside first, see :func:`build_run`). ``resume``: go on from the folder's last
    checkpoint; a config that differs from the checkpoint's in any setting is refused
    unless ``allow_changes`` (see :meth:`Run.resume`).

    ``data``: in-memory arrays wrapped by :func:`tailmix.data.from_arrays`, for a config
    whose ``dataset.name`` is ``arrays`` (pass the same data again to resume).
    ``model``: any ``nn.Module`` returning logits, trained in place of ``model.arch`` (see
    :func:`make_model`; pass the same module again to resume).
    """
    return build_run(config, out_dir, data=data, model=model, resume=resume,
                     allow_changes=allow_changes, force=force, log=log).fit()


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Restored:
    """A checkpoint brought back to life: its spec, data, network and device."""

    spec: RunSpec
    data: LongTailData
    model: nn.Module
    device: torch.device
    amp: torch.dtype | None
    epoch: int
    channels_last: bool = False

    @property
    def cfg(self) -> dict[str, Any]:
        return self.spec.config

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's logits for ``inputs``, computed as the run's evaluation computed
        them (its precision and memory format)."""
        from tailmix.pipeline.steps import eval_batch_size, predict

        return predict(self.model, inputs, self.data.augment, device=self.device, amp=self.amp,
                       batch_size=eval_batch_size(self.spec.eval.batch_size, self.device),
                       channels_last=self.channels_last)


def restore(path: str | Path, *, data_root: str | None = None,
            device: str = "auto", model: nn.Module | None = None,
            weights: str = "model") -> Restored:
    """Load a checkpoint safely (``weights_only=True``) with the data it was trained on
    (``data_root`` overrides the stored dataset root). A run of a user's own network needs
    that network again as ``model`` (its weights are replaced by the checkpoint's).

    Raises
    ------
    ParameterError
        Naming ``checkpoint``, for a file that is not a readable tailmix checkpoint
        (:func:`load_checkpoint`) or whose weights are not those of its network; naming
        ``model`` for a user's network that is missing or another one.
    """
    path = Path(path)
    from tailmix.pipeline.checkpoints import with_weights

    ckpt = with_weights(load_checkpoint(path), weights)  # "ema", "swa": an average's weights
    custom = ckpt["config"].get("model_class")
    if custom is not None and model is None:  # before the data loads
        raise ParameterError("model", f"the {custom} module this checkpoint was trained with "
                             "(restore(path, model=...))", None)
    cfg = {k: copy.deepcopy(v) for k, v in ckpt["config"].items()
           if k not in ("composition", "class_counts", "model_class")}
    refuse_saved_plugins(cfg, f"the checkpoint {path}")
    if data_root is not None:
        cfg.setdefault("dataset", {})["root"] = data_root
    cfg.setdefault("train", {})["device"] = device
    spec = resolve(cfg)
    dev = resolve_device(device)
    data = load_data(spec).to(dev)
    model = checkpoint_network(ckpt, num_classes=data.num_classes,
                               input_shape=data.input_shape, counts=data.class_counts,
                               model=model, composition=spec.composition.to_dict(),
                               hint=" (restore(path, model=...))", where=path)
    model = model.to(dev)
    arch = "custom" if custom else spec.model.arch
    speed = choose_speed(spec.train.precision, spec.train.channels_last, dev, arch=arch,
                         is_image=data.is_image)
    amp, channels_last = speed.amp, speed.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Restored(spec, data, model, dev, amp, int(ckpt["epoch"]), channels_last)


def evaluate_checkpoint(path: str | Path, *, data_root: str | None = None,
                        device: str = "auto", weights: str = "model") -> dict[str, Any]:
    """Re-evaluate a checkpoint (its network's weights, or an average's: ``weights``) on its
    dataset's test set (the root may be overridden)."""
    from tailmix.metrics import compute_metrics

    r = restore(path, data_root=data_root, device=device, weights=weights)
    m = compute_metrics(r.logits(r.data.test_inputs), r.data.test_labels, r.data.class_counts,
                        many_threshold=r.spec.eval.many_threshold,
                        few_threshold=r.spec.eval.few_threshold)
    m["epoch"] = r.epoch
    return m
