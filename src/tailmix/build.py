"""Specification -> objects: data, network, optimiser, lr schedule, sampler, mixer, loss,
class weights, a strategy's step and callbacks, handed to :class:`tailmix.engine.Trainer`.

:func:`train` is the whole path for a config (resolve -> build -> fit); ``tailmix train``,
``compare``, ``bench``, ``eval``, ``margins`` and ``neighbours`` all go through here.
Users with their own loop take the parts instead (README, "Use tailmix in your own
training loop").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailmix import callbacks as cb
from tailmix import distributed as dist_utils
from tailmix._validation import ParameterError
from tailmix.components import (
    checkpoint_logit_scale,
    make_generative,
    make_loss,
    make_mixer,
    make_sampler,
    make_weights,
)
from tailmix.config import (
    ABSENT,
    MACHINE_KEYS,
    RunSpec,
    flat_config,
    get_path,
    refuse_saved_plugins,
    resolve,
)
from tailmix.data import LongTailData, RawDataset, load_source, prepare_dataset
from tailmix.engine import Trainer
from tailmix.hardware import choose_speed, cpu_capability
from tailmix.steps import eval_batch_size

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
    """The spec's dataset, cut to its profile; ``raw`` supplies in-memory data for the
    ``arrays`` source (see :func:`tailmix.data.from_arrays`).

    A source that lists image files (a :class:`~tailmix.data.files.FileDataset`) is scanned
    for unusable files (``dataset.bad_images``, ``dataset.max_pixels``), then decoded into
    memory or streamed while training (``dataset.in_memory``); a streamed image's size and
    normalisation come from ``dataset.image_size`` and the backbone's own preprocessing where
    it has one. Files left out as unusable are logged in one line and counted in the data's
    ``skipped_images``.
    """
    from tailmix.data.files import (
        FileDataset,
        first_size,
        materialise,
        scan_images,
        skipped_note,
        stream_or_memory,
    )

    spec = resolve(spec)
    d = spec.dataset
    if raw is None:
        raw = load_source(d["name"], root=d["root"], download=d["download"],
                          in_memory=d["in_memory"], bad_images=d["bad_images"],
                          max_pixels=d["max_pixels"], **d["options"])
        if getattr(raw, "skipped", None):  # left out by a reader that decodes
            log(skipped_note(raw.skipped))
    elif d["name"] != "arrays":
        raise ParameterError("dataset.name", "'arrays' when data is passed in", d["name"])
    pre = _preprocessing(spec)
    size = d["image_size"] or (pre["input_size"][1] if pre else None)
    kw: dict[str, Any] = {}
    decoded = None
    if pre is not None:  # a torchvision or timm backbone normalises its own way
        mean, std = pre["mean"], pre["std"]
        if not isinstance(raw, FileDataset) and raw.is_image and raw.train_x.shape[1] == 1:
            # Grey images (a timm backbone built with in_chans=1) take one channel's
            # statistics; three would broadcast every batch to three channels.
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        kw.update(mean=mean, std=std)
    if isinstance(raw, FileDataset):
        bad = {"bad_images": d["bad_images"], "max_pixels": d["max_pixels"]}
        raw = scan_images(raw, **bad, log=log)
        workers = None if d["workers"] == "auto" else d["workers"]
        n = len(raw.train_files) + len(raw.test_files)
        side = size or min(first_size(raw, **bad))
        if not stream_or_memory(d["in_memory"], n, 3 * side * side):
            raw = materialise(raw, side, workers=workers, **bad, log=log)
            decoded = {"image_size": side, "resize": side}
        else:
            kw.update(image_size=size, resize=pre["resize"] if pre else None,
                      workers=workers, **bad)
    if size is not None and raw.is_image and not isinstance(raw, FileDataset):
        raw = _resized(raw, size)
    data = prepare_dataset(
        raw, profile=d["profile"], ratio=d["ratio"], n_max=d["n_max"], counts=d["counts"],
        data_seed=d["data_seed"], class_order=d["class_order"],
        crop_padding=d["crop_padding"], hflip=d["hflip"], validation=d["validation"], **kw,
    )
    data.decoded = decoded
    _add_policy(spec.config["augment"], data)
    return data


def _add_policy(a: dict[str, Any], data: LongTailData) -> None:
    """Put the ``augment`` section's policy and cutout into the data's batch augmentation
    (after crop and flip, before normalisation)."""
    policy = a.get("policy") or "none"
    if policy == "none" and not a.get("cutout"):
        return
    key, value = ("augment.policy", policy) if policy != "none" else \
        ("augment.cutout", a["cutout"])
    if not data.is_image:
        raise ParameterError(key, "none for inputs that are not images", value)
    shape = getattr(data.train_inputs, "shape", None)  # (N, C, H, W) in memory, else None
    channels = shape[1] if shape is not None else 3
    if policy != "none" and channels not in (1, 3):
        raise ParameterError(key, f"none for images of {channels} channels (the policies "
                             "take grey or RGB images)", value)
    if shape is not None and a["cutout"] >= min(shape[-2:]):  # the hole would blank them
        raise ParameterError("augment.cutout", f"a hole smaller than the {shape[-2]} x "
                             f"{shape[-1]} images (0: none)", a["cutout"])
    from tailmix.data.autoaugment import Cutout, build_policy

    knobs = {"autoaugment": {}, "trivialaugment": {"num_bins": a["bins"]},
             "randaugment": {"num_ops": a["num_ops"], "magnitude": a["magnitude"],
                             "num_bins": a["bins"]}}
    aug = data.augment
    aug.policy = build_policy(policy, **knobs.get(policy, {}))
    aug.cutout = int(a["cutout"])
    aug.cutout_op = Cutout(size=aug.cutout) if aug.cutout > 0 else None


def _resized(raw: RawDataset, size: int) -> RawDataset:
    """In-memory images brought to ``size x size`` (``dataset.image_size``): the shorter
    side resized (antialiased bilinear), then the central square."""
    import dataclasses

    import numpy as np
    import torch.nn.functional as F

    def fit(x: Any) -> Any:
        h, w = x.shape[2:]
        if (h, w) == (size, size):
            return x
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        out = []
        for s in range(0, len(x), 1024):
            t = torch.from_numpy(np.ascontiguousarray(x[s:s + 1024])).float()
            t = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True,
                              align_corners=False)
            top, left = (nh - size) // 2, (nw - size) // 2
            t = t[:, :, top:top + size, left:left + size]
            out.append(t.round().clamp(0, 255).to(torch.uint8).numpy())
        return np.concatenate(out) if out else x[:, :, :size, :size]

    return dataclasses.replace(raw, train_x=fit(raw.train_x), test_x=fit(raw.test_x))


def _preprocessing(spec: RunSpec) -> dict[str, Any] | None:
    """A torchvision or timm backbone's input size, resize and normalisation (None for the
    built-in networks, which normalise with the training set's own statistics)."""
    from tailmix.models import is_external, preprocessing

    m = spec.model
    return preprocessing(m["arch"], pretrained=m["pretrained"]) if is_external(m["arch"]) \
        else None


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
    return build_model(spec.model["arch"], num_classes=data.num_classes,
                       input_shape=data.input_shape, head=head,
                       pretrained=spec.model["pretrained"])


def check_streaming(spec: RunSpec, data: LongTailData, mixer: Any, generative: Any) -> None:
    """Refuse the settings that need every training image in memory when images stream."""
    if not data.streaming:
        return
    if mixer is not None and mixer.uses_neighbours and mixer.space == "input":
        raise ParameterError("mixer.space", "'feature' when images stream from files (a "
                             "pixel-space neighbour search needs every image in memory; or "
                             "set dataset.in_memory: true for a dataset that fits)", "input")
    if generative is not None and hasattr(generative, "transform"):
        raise ParameterError("dataset.in_memory", "true for DeepSMOTE (it encodes the whole "
                             "training set at once)", spec.dataset["in_memory"])
    if mixer is not None and mixer.pool is not None:
        raise ParameterError("dataset.in_memory", "true for partners drawn from the whole "
                             "training set (mixer.partner: balanced reads any image at any "
                             "step; or a partner from the batch)", spec.dataset["in_memory"])


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
        mismatch = _weights_mismatch(self.trainer.model, ckpt["model"])
        if mismatch:
            raise ParameterError("resume", "a checkpoint of this run's network "
                                 f"({self.spec.model['arch']})", f"{path}: {mismatch}")
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
    """
    spec = resolve(config)
    t = spec.train
    rank, world_size = dist_utils.rank(), dist_utils.world_size()
    device = resolve_device(t["device"])
    check_distributed(t, device, world_size)
    out = Path(out_dir) if out_dir is not None else None
    is_main = rank == 0
    if out is not None:  # before the data loads; rank 0 checks, every process learns it
        error = None
        if is_main:
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
    for note in spec.notes:  # what resolving chose that the config did not say
        log(note)
    lt = load_data(spec, data, log=log)
    log(f"{lt.describe()}, profile {spec.dataset['profile']}")
    counts, comp = lt.class_counts, spec.composition
    mixer = None if comp.mixer is None else make_mixer(comp.mixer, counts=counts)
    loss, weights = make_loss(comp.loss, counts=counts), make_weights(comp.weights,
                                                                      counts=counts, spec=spec)
    generative = None if comp.generative is None else make_generative(comp.generative,
                                                                      counts=counts)
    check_streaming(spec, lt, mixer, generative)
    net = make_model(spec, lt, model, log=log)
    from tailmix.models.heads import set_logit_scale

    set_logit_scale(net, getattr(loss, "logit_scale", 1.0))
    arch = "custom" if model is not None else spec.model["arch"]
    speed = choose_speed(t["precision"], t["channels_last"], device, arch=arch,
                         is_image=lt.is_image)
    log(f"speed: {speed.reason}")
    amp, channels_last = speed.amp, speed.channels_last
    stages = _stage_epochs(spec, net)
    net = _place(net, t, device, channels_last, world_size)
    lt = lt.to(device)
    if lt.streaming and device.type == "cuda":
        lt.train_inputs.pin_memory = lt.test_inputs.pin_memory = True
    loss = loss.to(device)
    mixer = None if mixer is None else mixer.to(device)
    from tailmix.stages import param_groups

    optimizer = torch.optim.SGD(
        param_groups(net, lr=t["lr"], backbone_lr=spec.model["backbone_lr"]), lr=t["lr"],
        momentum=t["momentum"], weight_decay=t["weight_decay"], nesterov=t["nesterov"])
    lr = _lr_schedule(spec)
    train_model = _wrap(net, t, device, world_size, find_unused=bool(stages))
    # fp16 needs loss scaling to keep small gradients from flushing to zero.
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    real = None
    if generative is not None and hasattr(generative, "transform"):  # DeepSMOTE
        lt, real = generative.transform(lt, device=device, log=log)
    # Over an enlarged training set the sampler counts the labels it is given.
    sampler = make_sampler(comp.sampler, counts=counts if real is None else None, spec=spec,
                           labels=lt.train_labels.cpu(), rank=rank, world_size=world_size)
    step_kw = dict(inputs=lt.train_inputs, labels=lt.train_labels, augment=lt.augment,
                   loss=loss, weights=weights, mixer=mixer, num_classes=lt.num_classes,
                   device=device, amp=amp, channels_last=channels_last,
                   eval_batch_size=eval_batch_size(spec.eval["batch_size"], device))
    gradient = make_gradient(spec.config["sam"], counts=counts, epochs=spec.epochs,
                             world_size=world_size)
    if gradient is not None and gradient.tail is not None:
        step_kw["split_classes"] = True
    term = make_consistency(spec.config["consistency"], net, split=gradient is not None
                            and gradient.tail is not None, world_size=world_size,
                            is_image=lt.is_image)
    if term is not None:
        term = term.to(device)
        optimizer.add_param_group({"params": list(term.parameters()), "lr": t["lr"],
                                   "lr_scale": 1.0})
        step_kw["consistency"] = term
    sampler, step = _strategy_step(spec, generative, sampler, step_kw, model=net, lt=lt,
                                   out=out, rank=rank, world_size=world_size, log=log)
    callbacks = _callbacks(spec, lt, out if is_main else None, real=real, device=device,
                           amp=amp, channels_last=channels_last, speed=speed.record(),
                           rank=rank, world_size=world_size, log=log,
                           model_class=None if model is None else type(model).__qualname__)
    _check_head(spec, net)
    if spec.model["max_norm"] is not None:
        callbacks.insert(0, cb.MaxNorm(net, spec.model["max_norm"]))
    epochs = spec.epochs
    if stages:
        sampler, step, lr, epochs = _crt_stage(spec, sampler, step, lr, step_kw, lt=lt,
                                               rank=rank, world_size=world_size)
        from tailmix.stages import Stages

        callbacks.insert(0, Stages(model=net, optimizer=optimizer, seed=spec.seed,
                                   unfreeze_epoch=stages["unfreeze"], crt_epoch=stages["crt"]))
    trainer = Trainer(model=net, optimizer=optimizer, lr_schedule=lr, sampler=sampler,
                      step=step, epochs=epochs, batch_size=t["batch_size"],
                      seed=spec.seed, device=device, train_model=train_model, scaler=scaler,
                      callbacks=callbacks, rank=rank, world_size=world_size,
                      gradient=gradient)
    extra = {"generative": generative,
             "model_class": None if model is None else type(model).__qualname__}
    return Run(spec, trainer, lt, out, device, amp, is_main, extra, log, resume,
               allow_changes)


def _check_head(spec: RunSpec, net: nn.Module) -> None:
    """``model.max_norm`` and ``eval.tau_norm`` scale the classifier's rows: they need a
    linear head with a (classes, features) weight, checked before training."""
    from tailmix.models.heads import CosineHead

    for key, value in (("model.max_norm", spec.model["max_norm"]),
                       ("eval.tau_norm", spec.eval["tau_norm"])):
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


def make_consistency(c: dict[str, Any], net: nn.Module, *, split: bool = False,
                     world_size: int = 1, is_image: bool = True) -> Any:
    """The ``consistency`` section's two-view term (None when ``consistency.weight`` is
    null), sized to the network's features."""
    if c.get("weight") is None:
        return None
    if not is_image:
        raise ParameterError("consistency.weight", "null for inputs that are not images "
                             "(they are not augmented: the two views would be the same)",
                             c["weight"])
    if world_size > 1:
        raise ParameterError("consistency.weight", "null with several processes (the "
                             "views' feature pass runs outside DDP)", c["weight"])
    if split:
        raise ParameterError("consistency.weight", "null with sam.tail_below (ImbSAM splits "
                             "the loss by class; the two-view term has no class)",
                             c["weight"])
    from tailmix.consistency import TwoViewTerm

    width = cb.classifier_weight(net).shape[1]
    return TwoViewTerm(width, dim=c["dim"], weight=c["weight"])


def _without_run_extras(step_kw: dict[str, Any]) -> dict[str, Any]:
    """A later stage's step arguments: no two-view term, no loss split by class."""
    return {**step_kw, "consistency": None, "split_classes": False}


def make_gradient(sam: dict[str, Any], *, counts: list[int], epochs: int,
                  world_size: int = 1) -> Any:
    """The run's gradient rule from its ``sam`` section: None (one plain backward pass)
    when ``sam.rho`` is null, else :class:`tailmix.sam.SAM`, made sharpness-aware for the
    classes with fewer than ``sam.tail_below`` training examples only when that is set."""
    if sam.get("rho") is None:
        return None
    from tailmix.config import resolve_epoch
    from tailmix.sam import SAM

    tail = None
    if sam.get("tail_below") is not None:
        if world_size > 1:
            raise ParameterError("sam.tail_below", "null with several processes (ImbSAM "
                                 "takes two backward passes of one forward pass, which DDP "
                                 "does not synchronise)", sam["tail_below"])
        tail = torch.tensor(counts) < sam["tail_below"]
        if not bool(tail.any()):
            raise ParameterError("sam.tail_below", f"a class size above the smallest class "
                                 f"({min(counts)} examples), so that some class is a tail "
                                 "class", sam["tail_below"])
    start = resolve_epoch("sam.start", sam.get("start", 0), epochs)
    # Plain steps again after the main run (a cRT stage fits the head alone).
    return SAM(rho=sam["rho"], start_epoch=start, end_epoch=epochs, tail=tail)


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
            raise _changed(changes, out)


def _changed(changes: dict[str, tuple[Any, Any]], out: Path) -> ParameterError:
    shown = "; ".join(f"{k}: {was!r} in the checkpoint, {now!r} now"
                      for k, (was, now) in list(changes.items())[:4])
    more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
    return ParameterError("resume", "the config the run was trained with (to go on with a "
                          "change, recorded in history.jsonl, pass --allow-changes, or "
                          "allow_changes=True in Python; or start a new run)",
                          f"{shown}{more} ({out})")


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


def _lr_schedule(spec: RunSpec):
    """The main run's lr schedule: step decay or cosine, after a linear warm-up."""
    from tailmix.schedules import CosineSchedule, StepSchedule

    t = spec.train
    if t["schedule"] == "cosine":
        return CosineSchedule(base_lr=t["lr"], warmup_epochs=t["warmup_epochs"],
                              epochs=spec.epochs)
    return StepSchedule(base_lr=t["lr"], warmup_epochs=t["warmup_epochs"],
                        milestones=list(spec.milestones), factors=t["lr_factors"])


def _stage_epochs(spec: RunSpec, net: nn.Module) -> dict[str, Any]:
    """The frozen-backbone and cRT epochs ({} when the run has neither); both need a
    network with a ``head``."""
    from tailmix.config import resolve_epoch

    m, c = spec.model, spec.config["crt"]
    unfreeze = resolve_epoch("model.freeze_backbone_epochs", m["freeze_backbone_epochs"],
                             spec.epochs)
    crt = spec.epochs if c["epochs"] > 0 else None
    if not unfreeze and crt is None:
        return {}
    if not isinstance(getattr(net, "head", None), nn.Module):
        raise ParameterError("model", "a network with a head module (model.head) for a frozen "
                             "backbone or cRT", type(net).__name__)
    return {"unfreeze": unfreeze, "crt": crt}


def _crt_stage(spec: RunSpec, sampler: Any, step: Any, lr: Any, step_kw: dict[str, Any], *,
               lt: LongTailData, rank: int, world_size: int):
    """Classifier re-training after the main run: class-balanced anchors, plain
    cross-entropy, no mixing, cosine lr from ``crt.lr``; the run gets ``crt.epochs`` more."""
    from tailmix.losses import build_loss
    from tailmix.samplers import Phased
    from tailmix.schedules import CosineSchedule, Then
    from tailmix.stages import PhasedStep
    from tailmix.steps import MixStep

    c, t = spec.config["crt"], spec.train
    if c["epochs"] == 0:
        return sampler, step, lr, spec.epochs
    switch = spec.epochs
    balanced = make_sampler({"name": "class_balanced"}, counts=lt.class_counts, spec=spec,
                            labels=lt.train_labels.cpu(), rank=rank, world_size=world_size)
    after = MixStep(**{**_without_run_extras(step_kw), "mixer": None, "weights": lambda epoch: None,
                       "loss": build_loss("ce", class_counts=lt.class_counts).to(
                           step_kw["device"])})
    second = CosineSchedule(base_lr=c["lr"] if c["lr"] is not None else t["lr"],
                            warmup_epochs=0, epochs=c["epochs"])
    return (Phased(before=sampler, after=balanced, switch_epoch=switch),
            PhasedStep(step, after, switch_epoch=switch),
            Then(lr, second, switch_epoch=switch), spec.epochs + c["epochs"])


def _place(model: nn.Module, t: dict[str, Any], device: torch.device, channels_last: bool,
           world_size: int) -> nn.Module:
    """The network on its device (SyncBatchNorm across processes, channels-last images)."""
    if world_size > 1 and t["sync_batchnorm"]:
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
    if t["compile"] is not False:
        mode = None if t["compile"] in (True, "default") else t["compile"]
        model = torch.compile(model, mode=mode)
    return model


def _strategy_step(spec: RunSpec, generative: Any, sampler: Any, step_kw: dict[str, Any], *,
                   model: nn.Module, lt: LongTailData, out: Path | None, rank: int,
                   world_size: int, log: Callable[[str], None]):
    """The epoch planner and the step: resampled anchors for an oversampling mixer, M2m's
    phased sampler and translating step, else the default step."""
    from tailmix.generative import M2m, M2mStep
    from tailmix.samplers import Phased, Resampled
    from tailmix.steps import MixStep

    m2m = generative if isinstance(generative, M2m) else None
    if m2m is not None and m2m.resample:
        after = make_sampler({"name": "class_balanced"}, counts=lt.class_counts, spec=spec,
                             labels=lt.train_labels.cpu(), rank=rank, world_size=world_size)
        sampler = Phased(before=sampler, after=after, switch_epoch=m2m.warmup_epochs)
    mixer = step_kw["mixer"]
    if mixer is not None and mixer.anchors != "instance":
        sampler = Resampled(sampler, mode=mixer.anchors, labels=lt.train_labels,
                            num_classes=lt.num_classes)
    if m2m is None:
        return sampler, MixStep(**step_kw)
    from tailmix.generative.m2m import SNAPSHOT_NAME

    path = None if out is None else out / "checkpoints" / SNAPSHOT_NAME
    return sampler, M2mStep(m2m=generative, network=model, seed=spec.seed, rank=rank,
                            snapshot_path=path, save=rank == 0, log=log, **step_kw)


def input_record(data: LongTailData) -> dict[str, Any]:
    """What a trained network reads, saved in its checkpoints: the shape of one input
    (``(C, H, W)`` or ``(D,)``), whether it is an image, the normalisation applied to raw
    inputs (pixels / 255 for images, then ``(x - mean) / std`` per channel or feature), and
    for images decoded from files the evaluation transform (``image_size`` square after the
    shorter side is resized to ``resize``; None: ``image_size / 0.875``), also for images
    decoded from files into memory (None for images that came as arrays)."""
    files = data.test_inputs if data.streaming else None
    decode = ({"image_size": files.size, "resize": files.resize} if files is not None
              else data.decoded or {"image_size": None, "resize": None})
    return {"shape": [int(d) for d in data.input_shape], "image": data.is_image,
            "mean": data.augment.mean.cpu().tolist(), "std": data.augment.std.cpu().tolist(),
            **decode}


class _SkippedImages(cb.Callback):
    """Brings the run's ``skipped_images`` fact up to date at its end, and logs it: image
    files left out as unusable (``dataset.bad_images: skip``), those met while streaming
    included."""

    def __init__(self, facts: dict[str, Any], data: LongTailData,
                 log: Callable[[str], None]):
        self.facts, self.data, self.log = facts, data, log

    def on_fit_end(self, state: cb.TrainState) -> None:
        self.facts["skipped_images"] = n = self.data.skipped_images
        if n:
            self.log(f"data: {n} image files left out as unusable (dataset.bad_images: "
                     "skip), recorded as skipped_images in metrics.json")


class _StreamedMargins(cb.Callback):
    """:class:`~tailmix.callbacks.Margins` of a streamed run, taken at its end without the
    training files met unusable while training (``dataset.bad_images: skip``)."""

    def __init__(self, out: Path, data: LongTailData, **margins: Any):
        self.out, self.data, self.margins = out, data, margins

    def on_fit_end(self, state: cb.TrainState) -> None:
        train = self.data.usable_training_set()
        cb.Margins(self.out, train=train, **self.margins).on_fit_end(state)


def _callbacks(spec: RunSpec, lt: LongTailData, out: Path | None, *, real: Any,
               device: torch.device, amp: Any, channels_last: bool,
               speed: dict[str, Any] | None = None, rank: int,
               world_size: int, log: Callable[[str], None],
               model_class: str | None = None) -> list[cb.Callback]:
    e = spec.eval
    run = dict(device=device, amp=amp, channels_last=channels_last,
               batch_size=eval_batch_size(e["batch_size"], device))
    calls: list[cb.Callback] = [cb.Evaluator(
        inputs=lt.test_inputs, labels=lt.test_labels, augment=lt.augment,
        class_counts=lt.class_counts, every=e["every"],
        many_threshold=e["many_threshold"], few_threshold=e["few_threshold"],
        posthoc_tau=e["posthoc_tau"], patience=e["patience"], tau_norm=e["tau_norm"],
        best_path=None if out is None else out / "checkpoints" / "best.pt",
        validation=None if lt.val_labels is None else (lt.val_inputs, lt.val_labels), **run)]
    if rank == 0:  # a bar, or one log line an epoch where there is none
        calls.append(cb.Progress(label=spec.config.get("name") or spec.strategy,
                                 bar=spec.log["progress"], log=log))
    if out is not None:
        record = {**spec.to_dict(), "class_counts": lt.class_counts}
        if model_class is not None:  # a user's network: restoring it needs the module
            record["model_class"] = model_class
        calls.append(cb.Checkpointer(out, config=record, config_sha256=config_digest(record),
                                     classes=lt.classes,
                                     class_counts=lt.class_counts,
                                     keep_best=spec.log["checkpoint_best"]
                                     or lt.val_labels is not None,
                                     inputs=input_record(lt)))
        if spec.log["tensorboard"]:
            calls.append(cb.TensorBoard(out, log=log))
    facts = {"strategy": spec.strategy, "dataset": lt.name, "epochs": spec.epochs,
             "seed": spec.seed, "class_counts": lt.class_counts, "classes": lt.classes,
             "imbalance_ratio": lt.imbalance_ratio,
             "device": str(device), "world_size": world_size,
             "environment": environment(device), "speed": speed or {},
             "train_subset": {"images": len(lt.source_indices if lt.source_indices is not None
                                            else lt.train_labels),
                              "sha256": lt.subset_sha256},
             "skipped_images": lt.skipped_images,
             **({"validation_images": len(lt.val_labels)} if lt.val_labels is not None
                else {})}
    if out is not None and e["margins"]:
        # The real training set only: DeepSMOTE appends synthetic examples after it. After
        # the evaluator: the test set's logits are those of its final evaluation.
        train = (lt.train_inputs, lt.train_labels) if real is None else (
            lt.train_inputs[real], lt.train_labels[real])
        margins = dict(test=(lt.test_inputs, lt.test_labels), augment=lt.augment,
                       class_counts=lt.class_counts, **run)
        calls.append(_StreamedMargins(out, lt, **margins) if lt.streaming
                     else cb.Margins(out, train=train, **margins))
    if lt.streaming:  # files met unusable while streaming count too
        calls.append(_SkippedImages(facts, lt, log))
    # Last: metrics.json marks a finished run, so it is written after every other file.
    calls.append(cb.Results(out, facts))
    return calls


def environment(device: torch.device) -> dict[str, Any]:
    """What a run's figures depend on beyond its config: the software versions, the number
    of CPU threads (the order of floating-point sums, so the last digits, change with it)
    and the accelerator's name."""
    import platform

    from tailmix._version import __version__

    return {"tailmix": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
            "cpu_capability": cpu_capability(),
            "accelerator": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else None)}


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
        from tailmix.steps import eval_batch_size, predict

        return predict(self.model, inputs, self.data.augment, device=self.device, amp=self.amp,
                       batch_size=eval_batch_size(self.spec.eval["batch_size"], self.device),
                       channels_last=self.channels_last)


#: The keys a checkpoint must hold (besides its network's weights, ``model``).
_CHECKPOINT_KEYS = ("model", "config", "epoch")


def load_checkpoint(path: str | Path, *, name: str = "checkpoint",
                    map_location: Any = "cpu") -> dict[str, Any]:
    """A tailmix checkpoint, loaded safely (``weights_only=True``).

    Raises
    ------
    ParameterError
        Naming ``name`` and the file: missing, empty, truncated or corrupted, holding
        Python objects beyond tensors and plain data (never unpickled), or a torch file that
        is not a tailmix checkpoint (a bare state dict, say).
    """
    from tailmix.io import load_torch

    what = "a tailmix checkpoint (a run's checkpoints/last.pt or best.pt)"
    ckpt = load_torch(path, name=name, what=what, map_location=map_location)
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor)
                                               for v in ckpt.values()):
        raise ParameterError(name, f"{what}, holding the network's weights with the run's "
                             "config and epoch", f"{path}: a bare state dict of "
                             f"{len(ckpt)} tensors")
    if not isinstance(ckpt, dict):
        raise ParameterError(name, what, f"{path}: a torch file holding a "
                             f"{type(ckpt).__name__}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        raise ParameterError(name, f"{what}, holding " + ", ".join(_CHECKPOINT_KEYS),
                             f"{path}: a torch file without " + (", ".join(missing) or
                                                                 "a config mapping"))
    return ckpt


def _weights_mismatch(model: nn.Module, state: Any) -> str | None:
    """Why ``state`` cannot be ``model``'s weights, in words (None: it can)."""
    if not isinstance(state, dict):
        return f"its weights are a {type(state).__name__}, not a state dict"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and isinstance(state[k], torch.Tensor)
              and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return None

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = ([f"{len(missing)} of the network's parameters missing ({few(missing)})"]
             if missing else [])
    parts += [f"{len(unexpected)} parameters the network has not ({few(unexpected)})"] \
        if unexpected else []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape ({k}: {tuple(state[k].shape)} in the "
                     f"file, {tuple(own[k].shape)} in the network)")
    return "weights of another network: " + "; ".join(parts)


def restore(path: str | Path, *, data_root: str | None = None,
            device: str = "auto", model: nn.Module | None = None) -> Restored:
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
    ckpt = load_checkpoint(path)
    custom = ckpt["config"].get("model_class")
    if custom is not None and model is None:
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
    from tailmix.models import adapt, build_model
    from tailmix.models.heads import logit_scale, set_logit_scale

    head = (ckpt["config"].get("composition") or {}).get("head", spec.composition.head)
    if model is not None:
        model = adapt(model, num_classes=data.num_classes, input_shape=data.input_shape,
                      head=head, log=lambda _: None)
    else:  # the weights come from the checkpoint, not a download
        model = build_model(spec.model["arch"], num_classes=data.num_classes,
                            input_shape=data.input_shape, head=head)
    if logit_scale(model) is not None:  # the scale is not in the weights: the loss says it
        saved = {"composition": spec.composition.to_dict(), **ckpt["config"]}
        set_logit_scale(model, checkpoint_logit_scale(saved, counts=data.class_counts))
    mismatch = _weights_mismatch(model, ckpt["model"])
    if mismatch:
        net = custom or spec.model["arch"]
        raise ParameterError("model" if custom else "checkpoint",
                             f"the weights of the {net} network its config names",
                             f"{path}: {mismatch}")
    model = model.to(dev)
    model.load_state_dict(ckpt["model"])
    arch = "custom" if custom else spec.model["arch"]
    speed = choose_speed(spec.train["precision"], spec.train["channels_last"], dev, arch=arch,
                         is_image=data.is_image)
    amp, channels_last = speed.amp, speed.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Restored(spec, data, model, dev, amp, int(ckpt["epoch"]), channels_last)


#: What identifies a run: a resumed run must agree with its checkpoint on each, also when
#: it is allowed other changes (the checkpoint would not be this run's otherwise).
RUN_IDENTITY = ("strategy", "train.seed", "model.arch", "model_class", "dataset.name",
                "dataset.profile", "dataset.ratio", "dataset.n_max", "dataset.counts",
                "dataset.data_seed", "dataset.validation")
# Recorded beside the config, not settings of it.
_RECORD_ONLY = ("composition", "class_counts", "model_class")


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run's config that decide what it computes, flat."""
    flat = flat_config({k: v for k, v in config.items() if k not in _RECORD_ONLY})
    return {k: v for k, v in flat.items() if k not in MACHINE_KEYS}


def config_digest(config: dict[str, Any]) -> str:
    """The SHA-256 of a run config's settings (:func:`_settings`: neither the device nor
    the data's location): what a checkpoint records as ``config_sha256``, and what a
    resumed run must match."""
    import hashlib
    import json

    text = json.dumps(_settings(config), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def config_changes(was: dict[str, Any], now: dict[str, Any], *, older: bool = False
                   ) -> dict[str, tuple[Any, Any]]:
    """``{key: (was, now)}`` for every setting that differs between two run configs (a key
    one of them lacks counts as None there; ``older``: ``was`` was written by an earlier
    version, so the settings it lacks are not compared)."""
    a, b = _settings(was), _settings(now)
    keys = a.keys() if older else a.keys() | b.keys()
    return {k: (a.get(k), b.get(k)) for k in sorted(keys) if a.get(k) != b.get(k)}


def checkpoint_changes(ckpt: dict[str, Any], config: dict[str, Any]
                       ) -> dict[str, tuple[Any, Any]]:
    """The settings of ``config`` that differ from the checkpoint's (none when its recorded
    ``config_sha256`` matches; a checkpoint without one is of an earlier version)."""
    digest = ckpt.get("config_sha256")
    if digest == config_digest(config):
        return {}
    return config_changes(ckpt["config"], config, older=digest is None)


def check_resumable(spec: RunSpec, ckpt: dict[str, Any], out: Path, *, path: Path,
                    history: list[dict[str, Any]], class_counts: list[int] | None = None,
                    model_class: str | None = None, allow_changes: bool = False
                    ) -> dict[str, tuple[Any, Any]]:
    """Refuse to resume ``spec`` from a run folder whose files disagree with it or with
    each other; return the settings this run changes (``{key: (was, now)}``, empty when
    none).

    The checkpoint's config, ``out/config.yaml`` (when there is one) and ``spec`` must
    agree on :data:`RUN_IDENTITY` (strategy, seed, architecture, dataset and its profile).
    Any other setting of ``spec`` that differs from the checkpoint's (its
    ``config_sha256``, :func:`config_digest`) is refused, naming the keys, unless
    ``allow_changes``; :data:`tailmix.config.MACHINE_KEYS` may differ. A run never has fewer
    epochs than its checkpoint. The checkpoint's class counts must be the data's, and
    ``history`` (``history.jsonl``) must hold epochs 1 to the checkpoint's (and at most
    the one after, whose checkpoint was not written yet).

    Raises
    ------
    ParameterError
        Naming ``resume`` and saying what differs, where.
    """
    import yaml

    epoch = ckpt["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ParameterError("resume", "a checkpoint with the number of epochs it finished",
                             f"{path}: epoch {epoch!r}")
    if not isinstance(ckpt["config"], dict):
        raise ParameterError("resume", "a checkpoint holding its run's config",
                             f"{path}: config {type(ckpt['config']).__name__}")
    sources = {"the checkpoint": ckpt["config"]}
    saved = Path(out) / "config.yaml"
    if saved.is_file():
        try:
            sources["config.yaml"] = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ParameterError("resume", "a run folder whose config.yaml is valid YAML",
                                 f"{saved}: {str(e).splitlines()[0]}") from e
        if not isinstance(sources["config.yaml"], dict):
            raise ParameterError("resume", "a run folder whose config.yaml is a mapping",
                                 str(saved))
    sources["this run"] = {**spec.config, "model_class": model_class}
    for key in RUN_IDENTITY:
        # model_class is recorded for a user's network only; any other key a file lacks
        # (written by another version) cannot be compared.
        values = {where: (cfg.get(key) if key == "model_class" else get_path(cfg, key))
                  for where, cfg in sources.items()}
        values = {where: v for where, v in values.items() if v is not ABSENT}
        wanted = next(iter(values.values()))
        if any(value != wanted for value in values.values()):
            said = ", ".join(f"{w} {v!r}" for w, v in values.items())
            raise ParameterError("resume", f"a run folder whose checkpoint, config.yaml and "
                                 f"history agree with the run resumed ({key} differs)",
                                 f"{key}: {said} ({out})")
    if epoch > spec.epochs:
        raise ParameterError("resume", f"a run of at least the checkpoint's {epoch} epochs",
                             f"train.epochs: {spec.epochs} ({path})")
    changes = checkpoint_changes(ckpt, spec.config)
    if changes and not allow_changes:
        raise _changed(changes, out)
    if class_counts is not None and ckpt.get("class_counts", sources["the checkpoint"].get(
            "class_counts")) not in (None, list(class_counts)):
        raise ParameterError("resume", "the data the run was trained on (the checkpoint's "
                             "class counts)", f"class counts {list(class_counts)}, the "
                             f"checkpoint {ckpt.get('class_counts')} ({path})")
    epochs = [h["epoch"] for h in history]
    if epochs[:epoch] != list(range(1, epoch + 1)) or epochs[epoch:] not in ([], [epoch + 1]):
        shown = (f"epochs {epochs[0]} to {epochs[-1]} ({len(epochs)} rows)" if epochs
                 else "no rows")
        raise ParameterError("resume", f"a history.jsonl holding epochs 1 to {epoch}, those "
                             "of the checkpoint", f"{Path(out) / 'history.jsonl'}: {shown}")
    return changes


def evaluate_checkpoint(path: str | Path, *, data_root: str | None = None,
                        device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a checkpoint on its dataset's test set (the root may be overridden)."""
    from tailmix.metrics import compute_metrics

    r = restore(path, data_root=data_root, device=device)
    m = compute_metrics(r.logits(r.data.test_inputs), r.data.test_labels, r.data.class_counts,
                        many_threshold=r.spec.eval["many_threshold"],
                        few_threshold=r.spec.eval["few_threshold"])
    m["epoch"] = r.epoch
    return m
