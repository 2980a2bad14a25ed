"""The one training loop. Every strategy is a composition plugged into it.

``train(config, out_dir)`` builds data, model and components from a config, trains, and
writes the run folder:

- ``config.yaml``: the resolved configuration;
- ``history.jsonl``: one line per epoch (loss, lr, speed; test metrics on evaluated epochs);
- ``metrics.json``: the final epoch's metrics (and the best evaluated epoch, labelled so);
- ``margins.json``: per-class margin statistics (when ``eval.margins``);
- ``checkpoints/last.pt`` and ``checkpoints/best.pt``.

Every file is written atomically; ``train(..., resume=True)`` continues from ``last.pt`` at
the next epoch with the same optimizer state and data order (all per-epoch randomness is
derived from the seed and the epoch number, so nothing else needs saving).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailmix import distributed as dist_utils
from tailmix._validation import ParameterError
from tailmix.config import resolve_config, resolve_epoch
from tailmix.data import LongTailData, RawDataset, load_source, prepare_dataset
from tailmix.io import save_torch, write_json, write_yaml
from tailmix.models import build_model
from tailmix.strategies import compose

CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------- set-up helpers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_utils.local_rank())
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("train.device", "a device that exists here ('cpu' or 'auto')", name)
    if dev.type == "cuda" and dev.index is None and dist_utils.world_size() > 1:
        dev = torch.device("cuda", dist_utils.local_rank())
    return dev


def autocast_dtype(precision: str, device: torch.device, arch: str) -> torch.dtype | None:
    """The autocast dtype for a precision setting; ``auto`` means bf16 for convolutional
    networks (on CUDA when supported, and on CPU where it measured faster) and fp32 else."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if arch in ("resnet32", "resnet18"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        if device.type == "cpu":
            return torch.bfloat16
    return None


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """A seed for one epoch's randomness, so a resumed run draws exactly what it would have."""
    return (seed * 1_000_003 + epoch * 7_919 + salt * 104_729) % (2**63 - 1)


# Salt of the generator a process other than rank 0 crops, flips and mixes its batches with.
_RANK_SALT = 1_000


def check_distributed(train_cfg: dict[str, Any], device: torch.device, world_size: int) -> None:
    """Reject settings a run of ``world_size`` processes cannot honour.

    ``train.batch_size`` is the global batch: each process takes ``batch_size / world_size``
    examples per step, so it must divide evenly; SyncBatchNorm needs an accelerator.
    """
    if world_size <= 1:
        return
    bs = train_cfg["batch_size"]
    if bs % world_size:
        raise ParameterError("train.batch_size", f"a multiple of the number of processes "
                             f"({world_size}): it is the global batch", bs)
    if train_cfg["sync_batchnorm"] and device.type == "cpu":
        raise ParameterError("train.sync_batchnorm", "false on a CPU device (SyncBatchNorm "
                             "synchronises accelerator tensors only)", True)


@dataclass
class Components:
    sampler: Any
    mixer: Any
    loss: nn.Module
    weights: Any
    head: str
    composition: dict[str, Any]


def build_components(cfg: dict[str, Any], data: LongTailData, *, rank: int = 0,
                     world_size: int = 1) -> Components:
    """Build sampler, mixer, loss and weight schedule; every argument error surfaces here."""
    from tailmix.losses import build_loss
    from tailmix.samplers import build_sampler
    from tailmix.weights import build_weight_schedule

    comp = compose(cfg)
    epochs = cfg["train"]["epochs"]
    counts = data.class_counts
    sampler_cfg = dict(comp["sampler"])
    sampler = build_sampler(sampler_cfg.pop("name"), labels=data.train_labels.cpu(),
                            class_counts=counts, rank=rank, world_size=world_size, **sampler_cfg)
    mixer = None
    if comp["mixer"] is not None:
        from tailmix.mixing import BatchMixer

        mixer_cfg = dict(comp["mixer"])
        preset = mixer_cfg.pop("preset", None)
        # Label-rule parameters may be spelled flat in a config (mixer: {q: -0.5}).
        flat = {k: mixer_cfg.pop(k) for k in ("K", "tau", "q") if k in mixer_cfg}
        if flat:
            mixer_cfg["rule_params"] = {**(mixer_cfg.get("rule_params") or {}), **flat}
        mixer = BatchMixer.preset(preset, **mixer_cfg) if preset else BatchMixer(**mixer_cfg)
    loss_cfg = dict(comp["loss"])
    loss = build_loss(loss_cfg.pop("name"), class_counts=counts, **loss_cfg)
    if getattr(loss, "requires_cosine_head", False) and comp["head"] != "cosine":
        raise ParameterError("model.head", f"'cosine' for the {comp['loss']['name']!r} loss "
                             "(it scales cosine logits)", comp["head"])
    w_cfg = dict(comp["weights"])
    if "start_epoch" in w_cfg and w_cfg["start_epoch"] is not None:
        w_cfg["start_epoch"] = resolve_epoch("weights.start_epoch", w_cfg["start_epoch"], epochs)
    weights = build_weight_schedule(w_cfg.pop("name"), class_counts=counts, epochs=epochs,
                                    **w_cfg)
    # Record what was resolved (fractions turned into epochs) in the composition.
    comp["weights"] = {"name": comp["weights"]["name"], **w_cfg}
    return Components(sampler, mixer, loss, weights, comp["head"], comp)


def load_data(cfg: dict[str, Any], raw: RawDataset | None = None) -> LongTailData:
    """The config's dataset, cut to its profile; ``raw`` supplies in-memory data for the
    ``arrays`` source (see :func:`tailmix.data.from_arrays`)."""
    d = cfg["dataset"]
    if raw is None:
        raw = load_source(d["name"], root=d["root"], download=d["download"], **d["options"])
    elif d["name"] != "arrays":
        raise ParameterError("dataset.name", "'arrays' when data is passed in", d["name"])
    return prepare_dataset(
        raw, profile=d["profile"], ratio=d["ratio"], n_max=d["n_max"], counts=d["counts"],
        data_seed=d["data_seed"], class_order=d["class_order"],
        crop_padding=d["crop_padding"], hflip=d["hflip"],
    )


class LRSchedule:
    """Linear warm-up over the first ``warmup_epochs``, then step factors at milestones."""

    def __init__(self, *, base_lr: float, warmup_epochs: float, milestones: list[int],
                 factors: list[float]):
        self.base_lr, self.warmup = base_lr, warmup_epochs
        self.steps = sorted(zip(milestones, factors, strict=True))

    def __call__(self, epoch: int, progress: float) -> float:
        """lr at ``epoch`` (0-based) after the share ``progress`` in [0, 1] of its steps."""
        lr = self.base_lr
        for m, f in self.steps:
            if epoch >= m:
                lr = self.base_lr * f
        if self.warmup > 0 and epoch + progress < self.warmup:
            lr = lr * (epoch + progress) / self.warmup
        return lr


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, augment: nn.Module, *, batch_size: int,
            device: torch.device, amp: torch.dtype | None = None, features: bool = False,
            channels_last: bool = False) -> torch.Tensor:
    """Logits (or features) of ``inputs`` without augmentation, in eval mode, in float32."""
    was_training = model.training
    model.eval()
    outs = []
    for s in range(0, len(inputs), batch_size):
        x = augment(inputs[s:s + batch_size].to(device, non_blocking=True), train=False)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            out = model.features(x) if features else model(x)
        outs.append(out.float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Trains one configuration into one run folder."""

    def __init__(self, config: dict[str, Any], out_dir: str | Path | None, *,
                 data: RawDataset | None = None, log: Callable[[str], None] = print):
        self.cfg = resolve_config(config)
        self.out = Path(out_dir) if out_dir is not None else None
        self.log = log
        t = self.cfg["train"]
        self.rank, self.world_size = dist_utils.rank(), dist_utils.world_size()
        self.is_main = self.rank == 0
        self.device = resolve_device(t["device"])
        check_distributed(t, self.device, self.world_size)
        self.data = load_data(self.cfg, data)
        self.parts = build_components(self.cfg, self.data, rank=self.rank,
                                      world_size=self.world_size)
        self.epochs = t["epochs"]
        self.milestones = [resolve_epoch(f"train.milestones[{i}]", m, self.epochs)
                           for i, m in enumerate(t["milestones"])]
        self.generative = None
        if self.parts.composition.get("generative"):
            from tailmix.generative import build_generative

            self.generative = build_generative(self.parts.composition["generative"],
                                               cfg=self.cfg, data=self.data)
        torch.manual_seed(t["seed"])
        model = build_model(self.cfg["model"]["arch"], num_classes=self.data.num_classes,
                            input_shape=self.data.input_shape, head=self.parts.head)
        self.amp = autocast_dtype(t["precision"], self.device, self.cfg["model"]["arch"])
        cl = t["channels_last"]
        self.channels_last = (self.data.is_image and self.cfg["model"]["arch"].startswith(
            "resnet")) if cl == "auto" else bool(cl)
        if self.world_size > 1 and t["sync_batchnorm"]:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.data = self.data.to(self.device)
        self.parts.loss = self.parts.loss.to(self.device)
        if self.parts.mixer is not None:
            self.parts.mixer = self.parts.mixer.to(self.device)
        self.counts = torch.tensor(self.data.class_counts, dtype=torch.float32,
                                   device=self.device)
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=t["lr"], momentum=t["momentum"],
            weight_decay=t["weight_decay"], nesterov=t["nesterov"],
        )
        self.lr = LRSchedule(base_lr=t["lr"], warmup_epochs=t["warmup_epochs"],
                             milestones=self.milestones, factors=t["lr_factors"])
        self.train_model: nn.Module = model
        if self.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.step_model = self.train_model
        if t["compile"] is not False:
            mode = None if t["compile"] in (True, "default") else t["compile"]
            self.step_model = torch.compile(self.train_model, mode=mode)
        # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 and
        # fp32 do not (the scaler is then a no-op and adds no host synchronisation).
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp == torch.float16)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.tb = None

    # -- persistence ---------------------------------------------------------------------

    def resolved_config(self) -> dict[str, Any]:
        cfg = copy.deepcopy(self.cfg)
        cfg["composition"] = self.parts.composition
        cfg["class_counts"] = self.data.class_counts
        return cfg

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "config": self.resolved_config(),
            "classes": self.data.classes,
            "class_counts": self.data.class_counts,
        }

    def resume(self) -> None:
        path = self.out / "checkpoints" / "last.pt"
        if not path.is_file():
            raise ParameterError("resume", f"a run folder with {path.relative_to(self.out)}",
                                 str(self.out))
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.best = ckpt.get("best")
        hist_path = self.out / "history.jsonl"
        if hist_path.is_file():
            lines = hist_path.read_text(encoding="utf-8").splitlines()
            self.history = [json.loads(x) for x in lines if x.strip()]
            self.history = [h for h in self.history if h["epoch"] <= self.start_epoch]

    def _write_history(self) -> None:
        text = "".join(json.dumps(h) + "\n" for h in self.history)
        from tailmix.io import atomic_write_text

        atomic_write_text(self.out / "history.jsonl", text)

    # -- one epoch -----------------------------------------------------------------------

    def _mix_context(self, epoch: int, gen: torch.Generator):
        from tailmix.mixing import MixContext

        data, aug = self.data, self.data.augment

        def fetch(idx: torch.Tensor) -> torch.Tensor:
            return aug(data.train_inputs[idx].to(self.device, non_blocking=True), gen)

        def features() -> torch.Tensor:
            return predict(self.model, data.train_inputs, aug, device=self.device,
                           batch_size=self.cfg["eval"]["batch_size"], amp=self.amp,
                           features=True, channels_last=self.channels_last)

        return MixContext(inputs=data.train_inputs, labels=data.train_labels,
                          class_counts=self.counts, fetch=fetch, features=features,
                          epoch=epoch, generator=gen)

    def epoch_anchors(
        self, epoch: int, ctx: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's anchors for ``epoch`` and, for an oversampling mixer, which of
        them are synthetic slots (else None).

        Every process builds the same whole-epoch sequence (the sampler's, then the mixer's
        re-draw from it with the same generator state in ``ctx``) and keeps its share
        (:func:`tailmix.distributed.shard`): shares are disjoint and equally long, so every
        process runs the same number of steps. A single process keeps the whole sequence.
        """
        idx = self.parts.sampler.global_indices(epoch, self.cfg["train"]["seed"])
        idx, mask = idx.to(self.device), None
        if self.parts.mixer is not None:
            idx, mask = self.parts.mixer.epoch_indices(idx, ctx)
        where = dict(rank=self.rank, world_size=self.world_size)
        idx = dist_utils.shard(idx, **where)
        return idx, None if mask is None else dist_utils.shard(mask, **where)

    def train_epoch(self, epoch: int, progress=None) -> dict[str, Any]:
        t = self.cfg["train"]
        seed = t["seed"]
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(seed, epoch, 1))
        data, model = self.data, self.step_model
        mixer = self.parts.mixer
        ctx = None
        if mixer is not None:
            ctx = self._mix_context(epoch, gen)
            mixer.start_epoch(ctx)
        idx, mask = self.epoch_anchors(epoch, ctx)
        if self.rank > 0:
            # Anchors are drawn alike everywhere; crops, flips, partners and lam differ
            # between processes (rank 0 keeps the single-process stream).
            gen.manual_seed(epoch_seed(seed, epoch, _RANK_SALT + self.rank))
        class_w = self.parts.weights(epoch)
        if class_w is not None:
            class_w = class_w.to(self.device, torch.float32)
        bs = t["batch_size"] // self.world_size  # the config's batch is the global one
        n = len(idx)
        n_steps = n // bs + (1 if n % bs >= 2 else 0)  # a batch of one breaks BatchNorm
        self.train_model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        start = time.perf_counter()
        for s in range(n_steps):
            b = idx[s * bs:(s + 1) * bs]
            x = data.augment(data.train_inputs[b].to(self.device, non_blocking=True), gen)
            y = data.train_labels[b]
            if mixer is not None:
                x, target = mixer(x, y, b, None if mask is None else mask[s * bs:(s + 1) * bs],
                                  ctx)
            else:
                target = F.one_hot(y, data.num_classes).float()
            if self.generative is not None:
                x, target = self.generative.transform_batch(x, target, y, b, epoch, self)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = self.lr(epoch, (s + 1) / n_steps)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            with _autocast(self.device, self.amp):
                logits = model(x)
            loss = self.parts.loss(logits.float(), target, class_w)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with torch.no_grad():
                loss_sum += loss.detach() * len(b)
                # Accuracy against the (possibly soft) target: the target mass on the
                # predicted class; for one-hot targets this is the ordinary accuracy.
                correct += target.gather(1, logits.detach().argmax(1, keepdim=True)).sum()
            seen += len(b)
            if progress is not None:
                progress(s + 1, n_steps, loss_sum, seen, lr)
        # Replicas leave the epoch identical: evaluation, checkpoints and feature-space
        # neighbour searches then agree on every process.
        dist_utils.broadcast_buffers(self.model)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        stats = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=self.device)])
        stats = dist_utils.all_reduce_sum(stats)
        loss_total, correct_total, seen_total = stats.tolist()
        return {
            "epoch": epoch + 1,
            "lr": lr if n_steps else self.lr(epoch, 1.0),
            "train_loss": loss_total / max(seen_total, 1),
            "train_acc": 100.0 * correct_total / max(seen_total, 1),
            "epoch_time_s": elapsed,
            "images_per_s": seen_total / elapsed if elapsed > 0 else 0.0,
        }

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, *, full: bool = False) -> dict[str, Any]:
        from tailmix.metrics import compute_metrics

        e = self.cfg["eval"]
        logits = predict(self.model, self.data.test_inputs, self.data.augment,
                         batch_size=e["batch_size"], device=self.device, amp=self.amp,
                         channels_last=self.channels_last)
        m = compute_metrics(logits, self.data.test_labels, self.data.class_counts,
                            many_threshold=e["many_threshold"], few_threshold=e["few_threshold"])
        m["test_loss"] = float(F.cross_entropy(logits, self.data.test_labels))
        if full:
            from tailmix.losses import posthoc_adjust

            adj = posthoc_adjust(logits, torch.tensor(self.data.class_counts,
                                 device=logits.device), tau=e["posthoc_tau"])
            ma = compute_metrics(adj, self.data.test_labels, self.data.class_counts,
                                 many_threshold=e["many_threshold"],
                                 few_threshold=e["few_threshold"])
            m["posthoc_la"] = {k: ma[k] for k in ("top1", "balanced_accuracy", "many_shot",
                                                  "medium_shot", "few_shot", "macro_f1")}
            m["posthoc_la"]["tau"] = e["posthoc_tau"]
        return m

    def margins(self) -> dict[str, Any]:
        from tailmix.margins import margin_report

        kw = dict(batch_size=self.cfg["eval"]["batch_size"], device=self.device, amp=self.amp,
                  channels_last=self.channels_last)
        # The real training set only: a generative strategy (DeepSMOTE) may have appended
        # synthetic examples after the real ones.
        n_real = getattr(self.generative, "num_real", None)
        tr = predict(self.model, self.data.train_inputs[:n_real], self.data.augment, **kw)
        te = predict(self.model, self.data.test_inputs, self.data.augment, **kw)
        return margin_report(tr, self.data.train_labels[:n_real], te, self.data.test_labels,
                             self.data.class_counts)

    # -- the run -------------------------------------------------------------------------

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        if resume:
            self.resume()
        if self.generative is not None:
            self.generative.prepare(self)
        if self.out is not None and self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_yaml(self.out / "config.yaml", self.resolved_config())
            self._open_tensorboard()
        e = self.cfg["eval"]
        run_start = time.perf_counter()
        train_time = sum(h.get("epoch_time_s", 0.0) for h in self.history)
        with self._progress() as progress:
            for epoch in range(self.start_epoch, self.epochs):
                row = self.train_epoch(epoch, progress.step if progress else None)
                train_time += row["epoch_time_s"]
                last = epoch + 1 == self.epochs
                if (epoch + 1) % e["every"] == 0 or last:
                    m = self.evaluate()
                    row.update({k: m[k] for k in ("top1", "balanced_accuracy", "many_shot",
                                                  "medium_shot", "few_shot", "test_loss")})
                    if self.best is None or m["top1"] > self.best["top1"]:
                        self.best = {"epoch": epoch + 1, "top1": m["top1"],
                                     "balanced_accuracy": m["balanced_accuracy"]}
                        if self.out is not None and self.is_main and \
                                self.cfg["log"]["checkpoint_best"]:
                            save_torch(self.out / "checkpoints" / "best.pt",
                                       self.checkpoint(epoch + 1))
                self.history.append(row)
                if progress:
                    progress.epoch_done(row)
                if self.tb is not None:
                    for k, v in row.items():
                        if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                            self.tb.add_scalar(k, v, row["epoch"])
                if self.out is not None and self.is_main:
                    self._write_history()
                    save_torch(self.out / "checkpoints" / "last.pt", self.checkpoint(epoch + 1))
        final = self.evaluate(full=True)
        result = {
            "final": final,
            "best": {**(self.best or {}), "note": "best evaluated epoch, chosen on the test "
                     "set: optimistic, report 'final'"},
            "strategy": self.cfg["strategy"],
            "dataset": self.data.name,
            "epochs": self.epochs,
            "seed": self.cfg["train"]["seed"],
            "class_counts": self.data.class_counts,
            "classes": self.data.classes,
            "device": str(self.device),
            "world_size": self.world_size,
            "train_time_s": train_time,
            "wall_time_s": time.perf_counter() - run_start,
        }
        if self.out is not None and self.is_main:
            write_json(self.out / "metrics.json", result)
            if e["margins"]:
                write_json(self.out / "margins.json", self.margins())
        if self.tb is not None:
            self.tb.close()
        # Only rank 0 writes; the others return once the run folder is complete, so a
        # following resume or reuse decision reads the same files on every process.
        dist_utils.barrier()
        return result

    def _open_tensorboard(self) -> None:
        if not self.cfg["log"]["tensorboard"]:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("tensorboard is not installed; install tailmix[tensorboard] to log to it")
            return
        self.tb = SummaryWriter(str(self.out / "tensorboard"))

    @contextlib.contextmanager
    def _progress(self):
        if not (self.cfg["log"]["progress"] and self.is_main):
            yield None
            return
        from tailmix.progress import EpochProgress

        with EpochProgress(total_epochs=self.epochs, start_epoch=self.start_epoch,
                           label=self.cfg.get("name") or self.cfg["strategy"]) as p:
            yield p


def train(config: dict[str, Any], out_dir: str | Path | None = None, *,
          data: RawDataset | None = None, resume: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` and return the final metrics (``metrics.json``).

    ``data``: in-memory arrays wrapped by :func:`tailmix.data.from_arrays`, for a config
    whose ``dataset.name`` is ``arrays`` (pass the same data again to resume).
    """
    return Trainer(config, out_dir, data=data, log=log).fit(resume=resume)


@dataclass
class Restored:
    """A checkpoint brought back to life: its config, data, model and device."""

    cfg: dict[str, Any]
    data: LongTailData
    model: nn.Module
    device: torch.device
    amp: torch.dtype | None
    epoch: int

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return predict(self.model, inputs, self.data.augment, device=self.device, amp=self.amp,
                       batch_size=self.cfg["eval"]["batch_size"])


def restore(path: str | Path, *, data_root: str | None = None,
            device: str = "auto") -> Restored:
    """Load a checkpoint safely (``weights_only=True``) with the data it was trained on
    (``data_root`` overrides the stored dataset root)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("checkpoint", "an existing checkpoint file", str(path))
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = {k: v for k, v in ckpt["config"].items() if k not in ("composition", "class_counts")}
    if data_root is not None:
        cfg["dataset"]["root"] = data_root
    cfg["train"]["device"] = device
    cfg = resolve_config(cfg)
    dev = resolve_device(device)
    data = load_data(cfg).to(dev)
    model = build_model(cfg["model"]["arch"], num_classes=data.num_classes,
                        input_shape=data.input_shape,
                        head=ckpt["config"]["composition"]["head"]).to(dev)
    model.load_state_dict(ckpt["model"])
    amp = autocast_dtype(cfg["train"]["precision"], dev, cfg["model"]["arch"])
    return Restored(cfg, data, model, dev, amp, int(ckpt["epoch"]))


def evaluate_checkpoint(path: str | Path, *, data_root: str | None = None,
                        device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a checkpoint on its dataset's test set (the root may be overridden)."""
    from tailmix.metrics import compute_metrics

    r = restore(path, data_root=data_root, device=device)
    m = compute_metrics(r.logits(r.data.test_inputs), r.data.test_labels, r.data.class_counts,
                        many_threshold=r.cfg["eval"]["many_threshold"],
                        few_threshold=r.cfg["eval"]["few_threshold"])
    m["epoch"] = r.epoch
    return m
