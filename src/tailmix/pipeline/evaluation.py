"""The ``eval`` and ``log`` config sections: what a run measures, and what it records.

:class:`EvalSection` configures the run's :class:`~tailmix.pipeline.callbacks.Evaluator` (how often,
the many/few-shot thresholds, post-hoc adjustments, early stopping on a validation set) and
its margin figures; :class:`LogSection` the progress display, TensorBoard and the best
checkpoint. :func:`run_callbacks` makes the callbacks of a run from them: evaluation,
progress, checkpoints, margins and the results file, in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.data import LongTailData
from tailmix.pipeline import callbacks as cb
from tailmix.pipeline.checkpoints import config_digest
from tailmix.pipeline.config import RunSpec
from tailmix.pipeline.hardware import cpu_capability
from tailmix.pipeline.sections import Section, Sections, section
from tailmix.pipeline.steps import eval_batch_size

__all__ = ["EvalSection", "LogSection", "environment", "input_record", "run_callbacks"]


@section("eval")
@dataclass
class EvalSection(Section):
    """The ``eval`` config section (see the README's configuration reference)."""

    every: int = 10
    batch_size: int | str = "auto"
    many_threshold: int = 100
    few_threshold: int = 20
    margins: bool = True
    posthoc_tau: float = 1.0
    patience: int | None = None
    tau_norm: float | None = None

    # How many test images go through the network at once: memory, not the result (the
    # network is in eval mode), so another machine's choice leaves a run the same run.
    MACHINE = ("batch_size",)

    def check(self, run: Sections) -> None:
        if self.tau_norm is not None:
            check_number("eval.tau_norm", self.tau_norm, low=0)
        check_number("eval.every", self.every, low=1, integer=True)
        if isinstance(self.batch_size, str):
            check_choice("eval.batch_size", self.batch_size, ("auto",))
        else:
            check_number("eval.batch_size", self.batch_size, low=1, integer=True)
        check_number("eval.few_threshold", self.few_threshold, low=0, integer=True)
        check_number("eval.many_threshold", self.many_threshold, low=self.few_threshold,
                     integer=True)
        check_number("eval.posthoc_tau", self.posthoc_tau, low=0)
        if self.patience is not None:
            check_number("eval.patience", self.patience, low=1, integer=True)
            if run.dataset.validation is None:
                raise ParameterError("eval.patience", "null without dataset.validation (early "
                                     "stopping on the test set would select on it)",
                                     self.patience)


@section("log")
@dataclass
class LogSection(Section):
    """The ``log`` config section: a progress bar (else one line an epoch), TensorBoard
    event files, and ``checkpoints/best.pt`` (kept whenever a validation set selects)."""

    progress: bool = True
    tensorboard: bool = False
    checkpoint_best: bool = True

    MACHINE = ("progress", "tensorboard")


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
    """:class:`~tailmix.pipeline.callbacks.Margins` of a streamed run, taken at its end without the
    training files met unusable while training (``dataset.bad_images: skip``)."""

    def __init__(self, out: Path, data: LongTailData, **margins: Any):
        self.out, self.data, self.margins = out, data, margins

    def on_fit_end(self, state: cb.TrainState) -> None:
        train = self.data.usable_training_set()
        cb.Margins(self.out, train=train, **self.margins).on_fit_end(state)


def run_callbacks(spec: RunSpec, lt: LongTailData, out: Path | None, *, real: Any,
               device: torch.device, amp: Any, channels_last: bool,
               speed: dict[str, Any] | None = None, rank: int,
               world_size: int, log: Callable[[str], None],
               model_class: str | None = None) -> list[cb.Callback]:
    """The callbacks of a run, in order: the evaluator (none for data without a test or a
    validation set), the progress display, checkpoints and TensorBoard, the margins, the
    count of files skipped while streaming, and the results file last."""
    e = spec.eval
    run = dict(device=device, amp=amp, channels_last=channels_last,
               batch_size=eval_batch_size(e.batch_size, device))
    calls: list[cb.Callback] = []
    if lt.has_test or lt.val_labels is not None:
        calls.append(cb.Evaluator(
            inputs=lt.test_inputs if lt.has_test else None,
            labels=lt.test_labels if lt.has_test else None, augment=lt.augment,
            class_counts=lt.class_counts, every=e.every,
            many_threshold=e.many_threshold, few_threshold=e.few_threshold,
            posthoc_tau=e.posthoc_tau, patience=e.patience, tau_norm=e.tau_norm,
            best_path=None if out is None else out / "checkpoints" / "best.pt",
            validation=None if lt.val_labels is None else (lt.val_inputs, lt.val_labels),
            **run))
    if rank == 0:  # a bar, or one log line an epoch where there is none
        calls.append(cb.Progress(label=spec.config.get("name") or spec.strategy,
                                 bar=spec.log.progress, log=log))
    if out is not None:
        record = {**spec.to_dict(), "class_counts": lt.class_counts}
        if model_class is not None:  # a user's network: restoring it needs the module
            record["model_class"] = model_class
        calls.append(cb.Checkpointer(out, config=record, config_sha256=config_digest(record),
                                     classes=lt.classes,
                                     class_counts=lt.class_counts,
                                     keep_best=spec.log.checkpoint_best
                                     or lt.val_labels is not None,
                                     inputs=input_record(lt)))
        if spec.log.tensorboard:
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
    if out is not None and e.margins and lt.has_test:
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
