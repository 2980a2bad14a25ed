"""Callbacks: what happens around training - evaluation, checkpoints, progress, TensorBoard,
the final metrics and margins. The trainer calls them in order with its :class:`TrainState`;
none of them sees the trainer.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailmix._validation import ParameterError
from tailmix.io import atomic_write_text, dumps_json, load_torch, save_torch, write_json, write_yaml
from tailmix.metrics import ADJUSTED_KEYS, SUMMARY_KEYS
from tailmix.pipeline.steps import predict

__all__ = ["Callback", "Checkpointer", "Evaluator", "Margins", "Progress", "Results",
           "TensorBoard", "TrainState", "read_history"]

CHECKPOINT_VERSION = 1


@dataclass
class TrainState:
    """What the trainer shares with its callbacks.

    Attributes
    ----------
    model : nn.Module
        The bare network (not compiled or wrapped).
    epochs : int
        Length of the run.
    epoch : int
        Epochs finished so far.
    history : list of dict
        One row per finished epoch (``history.jsonl``).
    best : dict or None
        The best evaluated epoch so far (top-1 on the test set: optimistic).
    improved : bool
        Whether the epoch just finished set a new best.
    stop : bool
        Set by a callback to end training after this epoch (early stopping).
    snapshot : callable
        Returns the trainer's resumable state (model, optimiser, scaler, epoch, best).
    result : dict
        Filled at the end: ``final`` metrics and the run's facts (``metrics.json``).
    final_logits : list of (inputs, Tensor)
        Filled at the end: logits of the network the run ends with, each beside the inputs
        they came from (:meth:`logits_of`), so that a set passes through that network once
        (:class:`Evaluator` leaves the test set's, :class:`Margins` reads them).
    selected_state : dict or None
        Filled at the end of a run with a validation set: the weights of the epoch it
        selected (a state dict on the CPU).
    wall_start : float
        ``time.perf_counter()`` when this process started fitting.
    averages : dict
        Averaged weights kept beside the network (:mod:`tailmix.averaging`), by name
        (``ema``, ``swa``): evaluated beside it, saved with it.
    """

    model: nn.Module
    epochs: int
    snapshot: Callable[[], dict[str, Any]]
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    improved: bool = False
    stop: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    final_logits: list[tuple[Any, Tensor]] = field(default_factory=list)
    selected_state: dict[str, Tensor] | None = None
    wall_start: float = field(default_factory=time.perf_counter)
    averages: dict[str, Any] = field(default_factory=dict)

    @property
    def train_time_s(self) -> float:
        return sum(h.get("epoch_time_s", 0.0) for h in self.history)

    def logits_of(self, inputs: Any) -> Tensor | None:
        """The final network's logits on ``inputs`` (the same object) when a callback left
        them in :attr:`final_logits`, else None."""
        return next((z for x, z in self.final_logits if x is inputs), None)


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState, step: int, steps: int, loss_sum: Tensor,
                    seen: int, lr: float) -> None: ...

    def on_epoch_start(self, state: TrainState, epoch: int) -> None: ...

    def on_update(self, state: TrainState) -> None:
        """After every optimiser update (once per ``train.accumulate`` batches)."""

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None: ...

    def on_fit_end(self, state: TrainState) -> None: ...

    def close(self) -> None:
        """Release resources; called after the run, also when it was interrupted."""


class Evaluator(Callback):
    """Evaluation every ``every`` epochs and at the end; model selection.

    Without a validation set, the test set is evaluated every ``every`` epochs and the best
    of those epochs is reported as ``best``, labelled as chosen on the test set. With one,
    only the validation set is evaluated during training: the epoch with the best validation
    balanced accuracy is kept (in memory) and selected, training stops early after
    ``patience`` evaluations without improvement, and the test set is read once at the end:
    for the final network (``final``) and the selected one (``selected``), each with the
    post-hoc logit adjustment at the tau that is best on the validation set.

    Each set passes through a network once: the end of the run reuses the logits of the
    last epoch's evaluation when the weights have not changed since, the selected network
    is the final one when it was selected at the last epoch (and its validation figures are
    those of its epoch), and the final network's test logits are left in
    :attr:`TrainState.final_logits` for the callbacks after this one (margins).

    Parameters
    ----------
    inputs, labels : Tensor or None
        The test set (raw inputs and labels); None for data without one (then a validation
        set is needed, and nothing is reported on a test set).
    augment : nn.Module
        Normalisation (called with ``train=False``).
    class_counts : list of int
        Training counts (many/medium/few groups, post-hoc adjustment).
    every : int
        Evaluate after every ``every``-th epoch (and the last).
    batch_size, device, amp, channels_last
        How to run the network.
    many_threshold, few_threshold : int
        Shot-group thresholds.
    posthoc_tau : float
        Strength of the post-hoc logit adjustment reported at the end (without validation).
    tau_norm : float, optional
        Also report the final metrics with the classifier tau-normalised at this tau
        (:func:`tau_normalised`).
    validation : (inputs, labels), optional
        A held-out validation set.
    patience : int, optional
        Validation evaluations without improvement before training stops.
    best_path : Path, optional
        Where the selected epoch's checkpoint is saved (read back when a run resumes).
    """

    #: The taus tried for the post-hoc adjustment on the validation set.
    TAUS = tuple(round(0.25 * k, 2) for k in range(9))

    def __init__(self, *, inputs: Tensor, labels: Tensor, augment: nn.Module,
                 class_counts: list[int], every: int, batch_size: int, device: torch.device,
                 amp: torch.dtype | None = None, channels_last: bool = False,
                 many_threshold: int = 100, few_threshold: int = 20,
                 posthoc_tau: float = 1.0, validation: tuple[Any, Tensor] | None = None,
                 patience: int | None = None, best_path: Path | None = None,
                 tau_norm: float | None = None):
        self.inputs, self.labels, self.augment = inputs, labels, augment
        self.tau_norm = tau_norm
        self.class_counts, self.every = class_counts, every
        self.run = dict(batch_size=batch_size, device=device, amp=amp,
                        channels_last=channels_last)
        self.thresholds = dict(many_threshold=many_threshold, few_threshold=few_threshold)
        self.posthoc_tau = posthoc_tau
        self.validation, self.patience, self.best_path = validation, patience, best_path
        self.best_state: dict[str, Tensor] | None = None
        self.stale = 0
        # The selected epoch's validation metrics and tau (None after a resume).
        self.best_validation: tuple[dict[str, Any], float] | None = None
        # The latest evaluation's logits by set, with the weights they came from; kept from
        # an epoch's end to the next epoch's start (or the end of the run).
        self.kept: dict[str, tuple[list[tuple[Tensor, int]], Tensor]] = {}
        self.handed: list[tuple[Any, Tensor]] | None = None

    def on_fit_start(self, state: TrainState) -> None:
        """A resumed run takes back its selected network and its count of evaluations
        without improvement."""
        if self.validation is None or state.best is None or self.best_state is not None:
            return
        if self.best_path is not None and Path(self.best_path).is_file():
            ckpt = load_torch(self.best_path, name="resume")
            if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
                raise ParameterError("resume", "a tailmix checkpoint holding 'model' (the "
                                     "selected epoch's network)", str(self.best_path))
            self.best_state = ckpt["model"]
        best = state.best["epoch"]
        self.stale = sum(1 for h in state.history
                         if h["epoch"] > best and "val_balanced_accuracy" in h)

    def on_epoch_start(self, state: TrainState, epoch: int) -> None:
        self.kept.clear()  # the weights are about to change

    def logits(self, model: nn.Module, split: str = "test") -> Tensor:
        """The network's logits on the ``test`` or ``validation`` set: those of the latest
        evaluation when the network's weights have not changed since, else a new pass."""
        kept = self.kept.get(split)
        if kept is not None and _same_stamp(kept[0], _weights_stamp(model)):
            return kept[1]
        inputs = self.inputs if split == "test" else self.validation[0]
        logits = predict(model, inputs, self.augment, **self.run)
        self.kept[split] = (_weights_stamp(model), logits)
        return logits

    def _metrics(self, logits: Tensor, labels: Tensor) -> dict[str, Any]:
        from tailmix.metrics import compute_metrics

        return compute_metrics(logits, labels, self.class_counts, **self.thresholds)

    def _adjusted(self, logits: Tensor, labels: Tensor, tau: float) -> dict[str, Any]:
        from tailmix.losses import posthoc_adjust

        counts = torch.tensor(self.class_counts, device=logits.device)
        ma = self._metrics(posthoc_adjust(logits, counts, tau=tau), labels)
        return {**{k: ma[k] for k in ADJUSTED_KEYS}, "tau": tau}

    def evaluate(self, model: nn.Module, *, full: bool = False, tau: float | None = None,
                 logits: Tensor | None = None) -> dict[str, Any]:
        """Test-set metrics (``full``: with the post-hoc adjustment at ``tau``, default
        ``posthoc_tau``). ``logits``: the network's test logits when they are at hand
        (:meth:`logits`), else the network reads the test set."""
        if logits is None:
            logits = self.logits(model)
        m = self._metrics(logits, self.labels)
        m["test_loss"] = float(F.cross_entropy(logits, self.labels))
        if full:
            m["posthoc_la"] = self._adjusted(logits, self.labels,
                                             self.posthoc_tau if tau is None else tau)
            if self.tau_norm is not None:
                with tau_normalised(model, self.tau_norm):
                    normed = predict(model, self.inputs, self.augment, **self.run)
                tn = self._metrics(normed, self.labels)
                m["tau_norm"] = {**{k: tn[k] for k in ADJUSTED_KEYS}, "tau": self.tau_norm}
        return m

    def _validate(self, model: nn.Module) -> tuple[dict[str, Any], float]:
        """Validation metrics and the post-hoc tau that is best on them."""
        labels = self.validation[1]
        logits = self.logits(model, "validation")
        m = self._metrics(logits, labels)
        m["val_loss"] = float(F.cross_entropy(logits, labels))
        scores = [(self._adjusted(logits, labels, t)["balanced_accuracy"], -t)
                  for t in self.TAUS]
        return m, -max(scores)[1]

    def _averaged(self, state: TrainState):
        """Each averaged network with weights (:attr:`TrainState.averages`): ``(name,
        model)`` with the average's weights in ``state.model`` inside the loop body, the
        live weights restored after (and the live logits kept, since they are unchanged)."""
        for name, average in state.averages.items():
            if average.weights is None:
                continue
            kept = dict(self.kept)
            with average.applied(state.model) as model:
                self.kept.clear()
                yield name, model
            stamp = _weights_stamp(state.model)
            self.kept = {split: (stamp, logits) for split, (_, logits) in kept.items()}

    def _row_of_averages(self, state: TrainState, row: dict[str, Any]) -> None:
        """The averaged networks' figures beside the live one's, prefixed by their names:
        on the test set, or on the validation set when there is one."""
        for name, model in self._averaged(state):
            if self.validation is None:
                m = self.evaluate(model)
                row.update({f"{name}_{k}": m[k] for k in SUMMARY_KEYS if k in m})
            else:
                m, _ = self._validate(model)
                row.update({f"{name}_val_top1": m["top1"],
                            f"{name}_val_balanced_accuracy": m["balanced_accuracy"]})

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        state.improved = False
        if row["epoch"] % self.every and row["epoch"] != state.epochs:
            return
        self._row_of_averages(state, row)
        if self.validation is None:
            m = self.evaluate(state.model)
            row.update({k: m[k] for k in SUMMARY_KEYS if k in m})
            if state.best is None or m["top1"] > state.best["top1"]:
                state.best = {"epoch": row["epoch"], "top1": m["top1"],
                              "balanced_accuracy": m["balanced_accuracy"]}
                state.improved = True
            return
        m, tau = self._validate(state.model)
        row.update({"val_top1": m["top1"], "val_balanced_accuracy": m["balanced_accuracy"],
                    "val_loss": m["val_loss"]})
        score = m["balanced_accuracy"]
        if state.best is None or score > state.best["val_balanced_accuracy"]:
            state.best = {"epoch": row["epoch"], "val_top1": m["top1"],
                          "val_balanced_accuracy": score}
            state.improved = True
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in state.model.state_dict().items()}
            self.best_validation = (m, tau)
            self.stale = 0
        else:
            self.stale += 1
            if self.patience is not None and self.stale >= self.patience:
                state.stop = True

    def on_fit_end(self, state: TrainState) -> None:
        model = state.model
        if self.validation is None:
            logits = self.logits(model)
            state.result["final"] = self.evaluate(model, full=True, logits=logits)
            state.result["best"] = {**(state.best or {}), "note": "best evaluated epoch, "
                                    "chosen on the test set: optimistic, report 'final'"}
        elif self.inputs is None:  # no test set: the validation figures alone
            state.result["validation"] = {"final": self._validate(model)[0]}
            if self.best_state is not None:
                state.result["selected"] = {"epoch": state.best["epoch"],
                                            "note": "epoch chosen on the validation set "
                                            "(balanced accuracy); no test set"}
                state.result["validation"]["selected"] = (
                    self.best_validation[0] if self.best_validation is not None else None)
        else:
            val, tau = self._validate(model)
            logits = self.logits(model)
            final = self.evaluate(model, full=True, tau=tau, logits=logits)
            state.result["final"] = {**final, "epoch": state.epoch}
            state.result["validation"] = {"final": val}
            if self.best_state is not None:
                val_sel, selected = self._selected(model, state, val, final)
                state.result["selected"] = {
                    **selected, "epoch": state.best["epoch"],
                    "note": "epoch chosen on the validation set (balanced accuracy); test "
                    "set read once, at the end"}
                state.result["validation"]["selected"] = val_sel
        for name, averaged in self._averaged(state):
            entry: dict[str, Any] = {"note": "averaged weights at the end of the run, "
                                     "beside 'final' (neither is picked on the test set)"}
            if self.validation is not None:
                val_avg, tau_avg = self._validate(averaged)
                entry["validation"] = val_avg
            else:
                tau_avg = None
            if self.inputs is not None:
                entry["final"] = self.evaluate(averaged, full=True, tau=tau_avg)
            state.result[name] = entry
        state.selected_state = self.best_state
        self.kept.clear()
        if self.inputs is not None:
            state.final_logits.append((self.inputs, logits))
            self.handed = state.final_logits

    def _selected(self, model: nn.Module, state: TrainState, val: dict[str, Any],
                  final: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validation and test metrics of the selected network: the final network's when it
        was selected at the last epoch, else those of ``best_state``, loaded for the time."""
        if state.best["epoch"] == state.epoch and _same_weights(model, self.best_state):
            return val, final
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.best_state)
        try:
            val_sel, tau_sel = self.best_validation or self._validate(model)
            selected = self.evaluate(model, full=True, tau=tau_sel)
        finally:
            model.load_state_dict(current)
            self.kept.clear()
        return val_sel, selected

    def close(self) -> None:
        """Let go of the logits handed to the other callbacks."""
        self.kept.clear()
        if self.handed is not None:
            self.handed[:] = [(x, z) for x, z in self.handed if x is not self.inputs]
            self.handed = None


def _weights_stamp(model: nn.Module) -> list[tuple[Tensor, int]]:
    """Each parameter and buffer of ``model`` with its in-place version counter, which an
    optimiser step, ``load_state_dict`` and a batch-norm statistics update all advance: two
    stamps are equal only while the network's weights are the same."""
    return [(t, t._version) for t in (*model.parameters(), *model.buffers())]


def _same_stamp(a: list[tuple[Tensor, int]], b: list[tuple[Tensor, int]]) -> bool:
    return len(a) == len(b) and all(x is y and u == v
                                    for (x, u), (y, v) in zip(a, b, strict=True))


def _same_weights(model: nn.Module, state: dict[str, Tensor]) -> bool:
    """Whether ``model``'s weights equal those of the state dict ``state``, exactly."""
    own = model.state_dict()
    return own.keys() == state.keys() and all(
        torch.equal(v.detach().cpu(), state[k].cpu()) for k, v in own.items())


def classifier_weight(model: nn.Module) -> Tensor:
    """The ``(C, D)`` weight of ``model.head`` (a linear or cosine classifier)."""
    weight = getattr(getattr(model, "head", None), "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ParameterError("model.head", "a classifier with a (classes, features) weight "
                             "(tau-normalisation and MaxNorm scale its rows)",
                             type(getattr(model, "head", None)).__name__)
    return weight


@contextlib.contextmanager
def tau_normalised(model: nn.Module, tau: float):
    """Inside the block the classifier's rows are ``w_c / ||w_c|| ** tau`` (Kang et al.,
    2020: tau 0 leaves them, tau 1 gives every class a unit-norm row); restored after."""
    weight = classifier_weight(model)
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.div_(weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau))
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)


class MaxNorm(Callback):
    """Keep every class's classifier row within an L2 norm of ``threshold`` after each
    optimiser step (the projection of the weight-balancing recipe, Alshammari et al., 2022:
    rows longer than ``threshold`` are scaled back onto it, shorter ones stay)."""

    def __init__(self, model: nn.Module, threshold: float):
        self.weight = classifier_weight(model)
        self.threshold = float(threshold)

    @torch.no_grad()
    def on_update(self, state: TrainState) -> None:
        w = self.weight
        norms = w.norm(dim=1, keepdim=True)
        w.mul_((self.threshold / norms.clamp_min(1e-12)).clamp(max=1.0))


class Checkpointer(Callback):
    """Writes ``config.yaml`` at the start, then after every epoch ``history.jsonl`` and
    ``checkpoints/last.pt`` (and ``best.pt`` when the epoch set a new best).

    A checkpoint holds the trainer's state, the resolved config (and its digest,
    ``config_sha256``, which a resumed run must match), the class names and counts, and
    ``inputs``: what the network reads (:func:`tailmix.pipeline.build.input_record`), so that it
    can predict without the training data."""

    def __init__(self, out: Path, *, config: dict[str, Any], classes: list[str],
                 class_counts: list[int], keep_best: bool = True,
                 inputs: dict[str, Any] | None = None, config_sha256: str | None = None):
        self.out, self.config, self.keep_best = Path(out), config, keep_best
        self.extra = {"config": config, "classes": classes, "class_counts": class_counts,
                      **({"inputs": inputs} if inputs else {}),
                      **({"config_sha256": config_sha256} if config_sha256 else {})}

    def checkpoint(self, state: TrainState) -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, **state.snapshot(), **self.extra}

    def on_fit_start(self, state: TrainState) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_yaml(self.out / "config.yaml", self.config)

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        if state.improved and self.keep_best:
            save_torch(self.out / "checkpoints" / "best.pt", self.checkpoint(state))
        text = "".join(dumps_json(h) + "\n" for h in state.history)
        atomic_write_text(self.out / "history.jsonl", text)
        save_torch(self.out / "checkpoints" / "last.pt", self.checkpoint(state))


def read_history(out: Path, upto_epoch: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``out/history.jsonl`` up to epoch ``upto_epoch`` (a resumed run's past;
    None: every row).

    Raises
    ------
    ParameterError
        Naming ``resume``, for a line that is not a JSON row with an integer ``epoch``.
    """
    path = Path(out) / "history.jsonl"
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise ParameterError("resume", "a history.jsonl of one JSON row per epoch, each "
                                 "with its 'epoch'", f"{path}, line {i}: {line[:60]!r}")
        rows.append(row)
    return rows if upto_epoch is None else [h for h in rows if h["epoch"] <= upto_epoch]


class Results(Callback):
    """Writes ``metrics.json``: the final metrics (from :class:`Evaluator`) and the run's
    facts (strategy, dataset, seed, ...) given here.

    ``metrics.json`` marks a finished run (``compare`` and ``bench`` skip a folder holding
    one), so it is removed when fitting starts and written by the last callback of the run,
    after every other result file."""

    def __init__(self, out: Path | None, facts: dict[str, Any]):
        self.out, self.facts = out, facts

    def on_fit_start(self, state: TrainState) -> None:
        if self.out is not None:
            (Path(self.out) / "metrics.json").unlink(missing_ok=True)

    def on_fit_end(self, state: TrainState) -> None:
        state.result = {**state.result, **self.facts, "train_time_s": state.train_time_s,
                        "wall_time_s": time.perf_counter() - state.wall_start}
        if self.out is not None:
            write_json(Path(self.out) / "metrics.json", state.result)


class Margins(Callback):
    """Writes ``margins.json``: per-class margins on the real training set and the test
    set (DESIGN section 5) at the end of the run. The test set's logits are those the final
    evaluation left in :attr:`TrainState.final_logits` when there are some (the test set
    passes through the network once)."""

    def __init__(self, out: Path, *, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                 augment: nn.Module, class_counts: list[int], batch_size: int,
                 device: torch.device, amp: torch.dtype | None = None,
                 channels_last: bool = False):
        self.out, self.train, self.test = Path(out), train, test
        self.augment, self.class_counts = augment, class_counts
        self.run = dict(batch_size=batch_size, device=device, amp=amp,
                        channels_last=channels_last)

    def on_fit_end(self, state: TrainState) -> None:
        from tailmix.margins import margin_report

        tr = predict(state.model, self.train[0], self.augment, **self.run)
        te = state.logits_of(self.test[0])  # the final evaluation's, when it ran before
        if te is None:
            te = predict(state.model, self.test[0], self.augment, **self.run)
        report = margin_report(tr, self.train[1], te, self.test[1], self.class_counts)
        write_json(self.out / "margins.json", report)


class Progress(Callback):
    """Training progress: a live bar (the epochs, and the steps of the current one) on a
    terminal, and one log line an epoch (:func:`tailmix.pipeline.progress.epoch_line`) when there is
    no bar (``bar=False``, or standard error is not a terminal) or standard output is not a
    terminal.

    Parameters
    ----------
    label : str
        The run's name in the bar and the lines.
    bar : bool, default True
        Whether to draw a bar at all (``log.progress``).
    log : callable, default print
        Receives the epoch lines.
    """

    def __init__(self, *, label: str, bar: bool = True, log: Callable[[str], None] = print):
        self.label, self.show_bar, self.log = label, bool(bar), log
        self.bar, self.lines = None, True

    def on_fit_start(self, state: TrainState) -> None:
        import sys

        from rich.console import Console

        from tailmix.pipeline.progress import EpochProgress

        console = Console(stderr=True)
        if self.show_bar and console.is_terminal:
            self.bar = EpochProgress(total_epochs=state.epochs, start_epoch=state.epoch,
                                     label=self.label, console=console)
            self.bar.__enter__()
        self.lines = self.bar is None or not sys.stdout.isatty()

    def on_step_end(self, state, step, steps, loss_sum, seen, lr) -> None:
        if self.bar is not None:
            self.bar.step(step, steps, loss_sum, seen, lr)

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        from tailmix.pipeline.progress import epoch_line

        if self.bar is not None:
            self.bar.epoch_done(row)
        if self.lines:
            self.log(epoch_line(row, total_epochs=state.epochs, label=self.label,
                                elapsed_s=time.perf_counter() - state.wall_start))

    def on_fit_end(self, state: TrainState) -> None:
        self.close()  # before the result files are written

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class TensorBoard(Callback):
    """Every numeric value of each epoch's row as a TensorBoard scalar."""

    def __init__(self, out: Path, *, log: Callable[[str], None] = print):
        self.out, self.log, self.writer = Path(out), log, None

    def on_fit_start(self, state: TrainState) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("tensorboard is not installed; install tailmix[tensorboard] to log to it")
            return
        self.writer = SummaryWriter(str(self.out / "tensorboard"))

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(k, v, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
