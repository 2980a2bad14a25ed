"""Numeric hardening: non-finite losses stop training, NaN never passes silently, reports
survive runs that diverged and never overwrite what they did not write, and tests that
would catch a mixer, loss or head that quietly does nothing."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.data.sources import from_arrays
from tailmix.losses import Focal
from tailmix.metrics import compute_metrics
from tailmix.mixing import Mixer, sample_beta
from tailmix.models.heads import CosineHead
from tailmix.pipeline.engine import Trainer, TrainingError
from tailmix.pipeline.steps import StepOutput
from tailmix.tools.report import build_report

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- the trainer


class _WholeSet:
    """A sampler: every example once per epoch, in order."""

    def __init__(self, n: int):
        self.n = n

    def epoch_plan(self, epoch, seed, generator):
        return torch.arange(self.n), None


class _Step:
    """Cross-entropy of a linear model; ``poison`` maps (epoch, first index of the batch) to
    a value added to that batch's loss (NaN or inf: a non-finite loss with finite gradients)."""

    def __init__(self, x, y, poison=None):
        self.x, self.y, self.poison = x, y, dict(poison or {})

    def __call__(self, model, batch):
        logits = model(self.x[batch.index])
        y = self.y[batch.index]
        loss = F.cross_entropy(logits, y)
        extra = self.poison.get((batch.epoch, int(batch.index[0])))
        if extra is not None:
            loss = loss + extra
        return StepOutput(loss, logits, F.one_hot(y, 3).float())


class _Recorder:
    """A callback that copies the weights after every step and counts epoch ends."""

    def __init__(self):
        self.after_step, self.epochs_ended, self.closed = [], [], False

    def on_fit_start(self, state): ...
    def on_epoch_start(self, state, epoch): ...
    def on_fit_end(self, state): ...

    def on_step_end(self, state, step, steps, loss_sum, seen, lr):
        self.after_step.append({k: v.clone() for k, v in state.model.state_dict().items()})

    def on_epoch_end(self, state, row):
        self.epochs_ended.append(row["epoch"])

    def close(self):
        self.closed = True


def _trainer(x, y, *, poison=None, scaler=None, lr=0.1, epochs=2):
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], 3)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    calls = []
    original = opt.step

    def counted_step(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    opt.step = counted_step
    recorder = _Recorder()
    trainer = Trainer(model=model, optimizer=opt, lr_schedule=lambda epoch, progress: lr,
                      sampler=_WholeSet(len(y)), step=_Step(x, y, poison), epochs=epochs,
                      batch_size=8, seed=0, device=CPU, scaler=scaler, callbacks=[recorder])
    return trainer, recorder, calls


def _data(n=32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.arange(n) % 3


def test_nan_inputs_stop_the_epoch_before_the_optimiser_step():
    x, y = _data()
    x[16:24] = float("nan")  # the third batch of 8 (step 3 of 4)
    trainer, recorder, calls = _trainer(x, y)
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    message = str(err.value)
    assert "epoch 1" in message and "step 3 of 4" in message
    for cause in ("learning rate", "alpha", "fp16", "NaN"):
        assert cause in message
    assert len(calls) == 2  # the optimiser never stepped on the NaN loss
    weights = trainer.model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    # exactly the weights after the last good step
    assert all(torch.equal(weights[k], recorder.after_step[-1][k]) for k in weights)
    assert recorder.epochs_ended == [] and recorder.closed
    assert trainer.state.epoch == 0 and trainer.state.history == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_with_finite_gradients_is_caught_in_a_later_epoch(bad):
    x, y = _data()
    # epoch 2 (0-based 1), second batch (indices 8..15): the loss is non-finite, its
    # gradients are not - an optimiser step would still run without the check
    trainer, recorder, calls = _trainer(x, y, poison={(1, 8): bad})
    with pytest.raises(TrainingError, match=r"epoch 2, step 2 of 4"):
        trainer.fit()
    assert len(calls) == 4 + 1
    assert recorder.epochs_ended == [1]  # a checkpoint callback saw epoch 1 only
    weights = trainer.model.state_dict()
    assert all(torch.equal(weights[k], recorder.after_step[-1][k]) for k in weights)
    assert [row["epoch"] for row in trainer.state.history] == [1]
    assert math.isfinite(trainer.state.history[0]["train_loss"])


def test_training_error_is_a_runtime_error_exported_by_the_engine():
    import tailmix.pipeline.engine

    assert issubclass(TrainingError, RuntimeError)
    assert "TrainingError" in tailmix.pipeline.engine.__all__


def test_fp16_loss_scaling_overflow_is_not_an_error():
    # A loss scale so large that the scaled loss and gradients overflow: the scaler skips
    # those steps and lowers the scale; the loss itself is finite, so training goes on.
    x, y = _data()
    scaler = torch.amp.GradScaler("cpu", init_scale=3.0e38)
    trainer, recorder, calls = _trainer(10 * x, y, scaler=scaler)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    assert scaler.get_scale() < 1.0e38  # steps were skipped
    assert recorder.epochs_ended == [1, 2]
    weights = trainer.model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert any(not torch.equal(weights[k], before[k]) for k in weights)  # and some applied


def test_fp16_non_finite_loss_is_an_error_and_leaves_the_scaler_usable():
    x, y = _data()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer, recorder, calls = _trainer(x, y, scaler=scaler, poison={(0, 16): float("nan")})
    with pytest.raises(TrainingError, match=r"epoch 1, step 3 of 4"):
        trainer.fit()
    assert len(calls) == 2
    trainer.step.poison.clear()
    trainer.train_epoch(1)  # the scaler is not left half-way through a step
    assert len(calls) == 6


def test_a_finite_run_is_unchanged_by_the_check():
    x, y = _data()
    trainer, recorder, calls = _trainer(x, y)
    trainer.fit()
    assert len(calls) == 8 and recorder.epochs_ended == [1, 2]


_DDP_WORKER = """
import gc, json, os, sys
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tailmix.pipeline.engine import Trainer, TrainingError
from tailmix.pipeline.steps import StepOutput

dist.init_process_group("gloo")
rank = dist.get_rank()
calls = []


class Plan:
    def epoch_plan(self, epoch, seed, generator):
        return torch.arange(64), None


def step(model, batch):
    g = torch.Generator().manual_seed(int(batch.index[0]))
    x, y = torch.randn(len(batch.index), 4, generator=g), batch.index % 3
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    calls.append(batch.epoch)
    if rank == 1 and calls.count(1) == 2:  # rank 1 alone: epoch 2, step 2
        loss = loss + float("nan")
    return StepOutput(loss, logits, F.one_hot(y, 3).float())


torch.manual_seed(0)
model = nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
trainer = Trainer(model=model, optimizer=opt, lr_schedule=lambda e, p: 0.1, sampler=Plan(),
                  step=step, epochs=3, batch_size=16, seed=0, device=torch.device("cpu"),
                  rank=rank, world_size=dist.get_world_size())
try:
    trainer.fit()
    result = "finished"
except TrainingError as e:
    result = str(e)
record = {"result": result, "epoch": trainer.state.epoch,
          "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters())}
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump(record, f)
# Leave together, holding nothing of the group: a process that tears gloo down while its
# peer is still closing may be aborted at exit.
del trainer, opt, model
dist.barrier()
gc.collect()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_every_process_stops_at_the_step_where_one_loss_is_not_finite(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), str(worker),
           str(tmp_path)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in records:  # both stop at once, without a hang, with finite weights
        assert "epoch 2, step 2 of 4" in record["result"]
        assert record["epoch"] == 1 and record["finite"]
    assert "another process" in records[0]["result"]
    assert "the training loss is nan" in records[1]["result"]


# ----------------------------------------------------------------------------- the command


def _cli(argv, capsys):
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_cli_huge_learning_rate_stops_with_one_error_line(tmp_path, capsys):
    run = tmp_path / "run"
    rc, err = _cli(["train", "-c", "digits", "--epochs", "10", "--lr", "1e30", "-o", str(run),
                    "--no-progress"], capsys)
    assert rc == 1
    assert err.startswith("tailmix: error: ") and "Traceback" not in err
    assert "epoch 1, step" in err and "learning rate" in err
    assert not (run / "metrics.json").exists()
    assert not (run / "checkpoints" / "last.pt").exists()  # nothing good to keep yet
    history = run / "history.jsonl"
    assert not history.exists() or history.read_text().strip() == ""


def test_cli_divergence_in_epoch_2_keeps_the_checkpoint_of_epoch_1(tmp_path, capsys,
                                                                    monkeypatch):
    run = tmp_path / "run"
    saved = {}
    original = Trainer.train_epoch

    def spy(self, epoch):
        if epoch == 1:  # epoch 1's checkpoint as it was written
            saved["last"] = (run / "checkpoints" / "last.pt").read_bytes()
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    # epoch 1 at lr 0.05, epoch 2 at 0.05 * 1e30
    rc, err = _cli(["train", "-c", "digits", "--epochs", "2", "--set", "train.warmup_epochs=0",
                    "--set", "train.milestones=[0.5]", "--set", "train.lr_factors=[1.0e30]",
                    "-o", str(run), "--no-progress"], capsys)
    assert rc == 1 and "epoch 2, step" in err and "Traceback" not in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == saved["last"]
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (run / "metrics.json").exists()
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert math.isfinite(rows[0]["train_loss"])


def test_cli_mixup_alpha_near_zero_is_refused_before_training(tmp_path, capsys):
    run = tmp_path / "run"
    rc, err = _cli(["train", "-c", "digits", "--epochs", "10", "--strategy", "Mixup",
                    "--set", "mixer.alpha=1.0e-300", "-o", str(run), "--no-progress"], capsys)
    assert rc == 2 and "'mixer.alpha'" in err and "0.001" in err
    assert not run.exists()


# ----------------------------------------------------------------------------- Beta and lam


@pytest.mark.parametrize("alpha", [1e-3, 1e-10, 1e-37, 1e-39, 1e-45, 1e-300, 5e-324])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_beta_sampler_never_returns_nan(alpha, dtype):
    lam = sample_beta(alpha, (20_000,), generator=torch.Generator().manual_seed(0),
                      dtype=dtype)
    assert not lam.isnan().any()
    assert ((lam >= 0) & (lam <= 1)).all()
    if alpha <= 1e-10:  # the limit: all mass at 0 and 1, half each
        ends = (lam == 0) | (lam == 1)
        assert ends.all()
        assert 0.45 < (lam == 1).float().mean() < 0.55


@pytest.mark.parametrize("alpha", [0.0, -1.0, 1e-300, 1e-10, 9.99e-4])
def test_mixer_refuses_an_alpha_that_would_not_mix(alpha):
    with pytest.raises(ParameterError) as err:
        Mixer(alpha=alpha)
    assert err.value.name == "alpha"


def test_mixer_accepts_the_smallest_sound_alpha():
    assert Mixer(alpha=1e-3).alpha == 1e-3
    assert Mixer.preset("mixup", alpha=0.2).alpha == 0.2


# ----------------------------------------------------------------------------- from_arrays


@pytest.mark.parametrize("key", ["train_x", "test_x"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])  # 1e300 overflows float32
def test_from_arrays_rejects_non_finite_features(key, bad):
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.normal(size=(20, 3)), "test_x": rng.normal(size=(10, 3))}
    arrays[key][4, 1] = bad
    arrays[key][7, 0] = bad
    with pytest.raises(ParameterError) as err:
        from_arrays(arrays["train_x"], np.arange(20) % 2, arrays["test_x"], np.arange(10) % 2)
    assert err.value.name == key
    text = str(err.value)
    assert "2 non-finite values" in text and "row 4" in text


def test_from_arrays_still_takes_finite_features_and_images():
    raw = from_arrays(np.ones((4, 3)), [0, 1, 0, 1], np.zeros((2, 3)), [0, 1])
    assert raw.train_x.dtype == np.float32
    images = np.zeros((4, 1, 2, 2), np.uint8)
    assert from_arrays(images, [0, 1, 0, 1], images, [0, 1, 1, 0]).train_x.shape == (4, 1, 2, 2)


# ----------------------------------------------------------------------------- margins


def test_margin_report_of_non_finite_logits_is_strict_json():
    from tailmix.margins import margin_report

    logits = torch.tensor([[2.0, 0.0], [float("nan"), 1.0], [0.0, float("inf")], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    report = margin_report(logits, labels, logits, labels, [2, 2])
    json.dumps(report, allow_nan=False)  # raises on NaN or inf
    train = report["train"]
    assert train["count"] == [2, 2]
    assert train["mean"] == [None, None]  # a NaN margin in class 0, an inf one in class 1
    assert train["min"][1] == 3.0 and train["slope"] is None


# ----------------------------------------------------------------------------- reports


def _write_run(folder: Path, *, strategy="ERM", margins=None, seed=0) -> Path:
    """A small run folder in the training loop's formats; ``margins`` is written verbatim
    (a dict as JSON, a str as is) or left out when None."""
    counts = [40, 20, 10, 5]
    gen = torch.Generator().manual_seed(seed)
    test_y = torch.arange(4).repeat_interleave(5)
    logits = torch.randn(20, 4, generator=gen) + 3 * F.one_hot(test_y, 4)
    folder.mkdir(parents=True)
    config = {"dataset": {"name": "synthetic", "ratio": 8}, "strategy": strategy,
              "train": {"epochs": 2, "seed": seed}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"final": compute_metrics(logits, test_y, counts), "class_counts": counts,
               "strategy": strategy, "dataset": "synthetic", "epochs": 2}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    rows = [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": 50.0 + e}
            for e in (1, 2)]
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if margins is not None:
        text = margins if isinstance(margins, str) else json.dumps(margins)
        (folder / "margins.json").write_text(text)
    return folder


_DIVERGED = {  # what the end-of-run analysis writes for a network whose logits are NaN
    "class_counts": [40, 20, 10, 5],
    **{split: {"mean": [None] * 4, "median": [None] * 4, "p10": [None] * 4,
               "min": [None] * 4, "count": [5] * 4, "slope": None, "intercept": None,
               "n_used": 0} for split in ("train", "test")},
}

_BROKEN_MARGINS = {
    "diverged": _DIVERGED,
    "empty": {},
    "null": "null",
    "list": [1, 2],
    "not json": "{not json",
    "split not a dict": {"class_counts": [40, 20, 10, 5], "train": [1, 2]},
    "no means": {"class_counts": [40, 20, 10, 5], "train": {"mean": []}},
    "zero counts": {"class_counts": [0, 0, 0, 0],
                    "train": {"mean": [1.0] * 4, "slope": 0.1, "intercept": 0.0}},
    "text counts": {"class_counts": ["a", "b", "c", "d"], "train": {"mean": [1.0] * 4}},
    "counts a dict": {"class_counts": {"a": 1}, "train": {"mean": [1.0]}},
    "means a dict": {"class_counts": [40, 20, 10, 5], "train": {"mean": {"a": 1}}},
    "overflowing fit": {"class_counts": [40, 20, 10, 5],
                        "train": {"mean": [1.0, 2.0, 3.0, 4.0], "slope": 1e308,
                                  "intercept": 1e308}},
    "non-finite": '{"class_counts": [40, 20, 10, 5], "train": {"mean": [NaN, Infinity, '
                  '-Infinity, NaN], "slope": NaN}}',
}


def test_report_of_a_run_without_margins(tmp_path):
    run = _write_run(tmp_path / "run")
    html_path, md_path = build_report([run])
    assert "margins.json is missing" in html_path.read_text()
    other = _write_run(tmp_path / "other", strategy="DRW")
    html_path, _ = build_report([run, other], tmp_path / "cmp")
    assert "No run has a margins.json" in html_path.read_text()


@pytest.mark.parametrize("case", sorted(_BROKEN_MARGINS))
def test_report_survives_unusable_margins(tmp_path, case):
    run = _write_run(tmp_path / "run", margins=_BROKEN_MARGINS[case])
    html_path, md_path = build_report([run])
    assert "Margins against class size" in html_path.read_text()


def test_a_comparison_survives_every_kind_of_unusable_margins(tmp_path):
    """One comparison of a run with good margins beside one run of each broken kind."""
    good = _write_run(tmp_path / "good", strategy="DRW", seed=1, margins={
        "class_counts": [40, 20, 10, 5],
        "train": {"mean": [4.0, 3.0, 2.0, 1.0], "slope": -0.6, "intercept": 3.5},
    })
    broken = [_write_run(tmp_path / f"run{i}", seed=2 + i, margins=_BROKEN_MARGINS[case])
              for i, case in enumerate(sorted(_BROKEN_MARGINS))]
    html_path, md_path = build_report([good, *broken], tmp_path / "cmp", per_run=False)
    assert "Comparison" in html_path.read_text()
    rows = [line for line in md_path.read_text().splitlines() if line.startswith("| ")]
    for i in range(len(broken)):  # each broken run is still a row of the comparison
        assert any(line.startswith(f"| ERM (run{i}) | ") for line in rows), i
    good_row = next(line for line in rows if line.startswith("| DRW | "))
    assert "-0.600" in good_row  # the good run's slope survives its neighbours


def test_report_of_a_diverged_run_says_so(tmp_path):
    run = _write_run(tmp_path / "run", margins=_DIVERGED)
    page = build_report([run])[0].read_text()
    assert "no finite margins" in page


# -- where a report may be written


def _foreign_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "holiday.jpg").write_bytes(b"not ours")
    return path


def test_report_refuses_a_folder_that_is_no_run_by_default(tmp_path):
    folder = _foreign_folder(tmp_path / "photos")
    with pytest.raises(ParameterError) as err:
        build_report([folder])  # the default: the run folder itself
    assert err.value.name == "-o/--out"
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]


def test_report_refuses_a_foreign_folder_unless_named(tmp_path):
    run = _write_run(tmp_path / "run")
    folder = _foreign_folder(tmp_path / "photos")
    with pytest.raises(ParameterError) as err:
        build_report([run], folder)
    assert err.value.name == "-o/--out" and "photos" in str(err.value)
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]
    html_path, _ = build_report([run], folder, explicit=True)
    assert html_path == folder / "report.html" and html_path.is_file()
    assert (folder / "holiday.jpg").read_bytes() == b"not ours"


def test_report_never_overwrites_a_file_it_did_not_write(tmp_path):
    run = _write_run(tmp_path / "run")
    (run / "report.md").write_text("my own notes\n")
    with pytest.raises(ParameterError) as err:
        build_report([run])
    assert err.value.name == "-o/--out" and "report.md" in str(err.value)
    assert "--force" in str(err.value)
    assert (run / "report.md").read_text() == "my own notes\n"
    assert not (run / "report.html").exists()
    # named with -o: still refused, the user's file is kept
    with pytest.raises(ParameterError) as err:
        build_report([run], run, explicit=True)
    assert "report.md" in str(err.value) and "pass --force" in str(err.value)
    assert (run / "report.md").read_text() == "my own notes\n"
    # named and forced: the user asked for it
    html_path, md_path = build_report([run], run, explicit=True, force=True)
    assert md_path.read_text().startswith("# tailmix run report")


def test_report_force_needs_a_named_place(tmp_path):
    run = _bare_run(tmp_path / "run")
    for out, explicit in ((None, False), (tmp_path / "page.html", False)):
        with pytest.raises(ParameterError) as err:
            build_report([run], out, explicit=explicit, force=True)
        assert err.value.name == "force"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_report_rewrites_its_own_files(tmp_path):
    a, b = _write_run(tmp_path / "a"), _write_run(tmp_path / "b", strategy="DRW")
    first = build_report([a, b])
    folder = first[0].parent
    assert folder == tmp_path / "report-a-vs-b"
    marker = json.loads((folder / ".tailmix-report").read_text())
    assert {"report.html", "report.md", "report_files"} <= set(marker["files"])
    (folder / "notes.txt").write_text("kept")  # a folder the report wrote stays usable
    assert build_report([a, b]) == first
    assert (folder / "notes.txt").read_text() == "kept"
    # the single-run default: the run folder, again and again
    assert build_report([a]) == build_report([a])


def test_report_recognises_a_report_written_before_markers(tmp_path):
    run = _write_run(tmp_path / "run")
    html_path, md_path = build_report([run])
    (run / ".tailmix-report").unlink()  # as a version without markers left it
    assert build_report([run]) == (html_path, md_path)


def test_report_into_a_new_or_empty_folder(tmp_path):
    run = _write_run(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    assert build_report([run], tmp_path / "empty")[0].is_file()
    assert build_report([run], tmp_path / "new" / "deeper")[0].is_file()


def test_report_out_that_is_a_file(tmp_path):
    run = _write_run(tmp_path / "run")
    (tmp_path / "taken").write_text("a file")
    for explicit in (False, True):
        with pytest.raises(ParameterError) as err:
            build_report([run], tmp_path / "taken", explicit=explicit)
        assert err.value.name == "-o/--out"
    assert (tmp_path / "taken").read_text() == "a file"


# -- the report command: -o X.html writes X.html alone, --force writes over a named file


def _bare_run(path: Path) -> Path:
    """A run folder holding only its config: a report of it draws no figure (fast)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"strategy": "ERM"}))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<folder>"
            for p in sorted(folder.rglob("*"))}


def _report(argv, capsys):
    rc = main(["report", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_report_to_an_html_path_writes_that_page_alone(tmp_path, capsys):
    run = _bare_run(tmp_path / "run")
    h = tmp_path / "h"
    h.mkdir()
    (h / "page.md").write_bytes(b"# my notes\n\nabout the page\n")
    before = _files(h)
    rc, out, err = _report([run, "-o", h / "page.html"], capsys)
    assert (rc, err) == (0, "")
    assert out == f"report written to {h / 'page.html'}\n"
    assert (h / "page.html").read_text().startswith("<!DOCTYPE html>")
    assert _files(h) == {**before, "page.html": (h / "page.html").read_bytes()}
    # again, without --force: the page is its own, rewritten; still nothing else
    (h / "page.html").write_text((h / "page.html").read_text() + "<!-- old -->")
    rc, out, err = _report([run, "-o", h / "page.html"], capsys)
    assert (rc, err) == (0, "")
    assert "<!-- old -->" not in (h / "page.html").read_text()
    assert sorted(p.name for p in h.iterdir()) == ["page.html", "page.md"]
    assert (h / "page.md").read_bytes() == b"# my notes\n\nabout the page\n"
    assert not (run / "report.html").exists()
    # an .htm path is written as named
    assert _report([run, "-o", h / "other.htm"], capsys)[0] == 0
    assert sorted(p.name for p in h.iterdir()) == ["other.htm", "page.html", "page.md"]


def test_report_refuses_to_write_over_a_users_page_without_force(tmp_path, capsys):
    run = _bare_run(tmp_path / "run")
    page = tmp_path / "h" / "page.html"
    page.parent.mkdir()
    page.write_text("<html>my own page</html>\n")
    rc, out, err = _report([run, "-o", page], capsys)
    assert rc == 2 and out == ""
    assert err.startswith("tailmix: error: ") and err.count("\n") == 1
    assert str(page) in err and "--force" in err
    assert page.read_text() == "<html>my own page</html>\n"
    assert sorted(p.name for p in page.parent.iterdir()) == ["page.html"]
    rc, out, err = _report([run, "-o", page, "--force"], capsys)
    assert (rc, err) == (0, "")
    assert "<title>tailmix run report" in page.read_text()
    assert sorted(p.name for p in page.parent.iterdir()) == ["page.html"]


def test_report_into_a_named_folder_keeps_the_users_files(tmp_path, capsys):
    run = _bare_run(tmp_path / "run")
    folder = _foreign_folder(tmp_path / "photos")
    (folder / "report.md").write_text("my notes\n")
    rc, out, err = _report([run, "-o", folder], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert str(folder / "report.md") in err and "--force" in err
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg", "report.md"]
    rc, out, err = _report([run, "-o", folder, "--force"], capsys)
    assert (rc, err) == (0, "")
    assert out == (f"report written to {folder / 'report.html'}\n"
                   f"summary: {folder / 'report.md'}\n")
    assert (folder / "report.md").read_text().startswith("# tailmix run report")
    assert (folder / "holiday.jpg").read_bytes() == b"not ours"


def test_report_force_without_out_is_refused(tmp_path, capsys):
    run = _bare_run(tmp_path / "run")
    rc, out, err = _report([run, "--force"], capsys)
    assert rc == 2 and err.startswith("tailmix: error: The '--force' parameter")
    assert err.count("\n") == 1 and "-o/--out" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_report_never_goes_among_a_runs_own_files(tmp_path, capsys):
    run = _bare_run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    before = _files(run)
    for out in (run / "checkpoints", run / "checkpoints" / "last.html", run / "config.yaml",
                run / "metrics.json"):
        rc, _, err = _report([run, "-o", out, "--force"], capsys)
        assert rc == 2 and err.startswith("tailmix: error: The '-o/--out' parameter")
        assert err.count("\n") == 1
    assert _files(run) == before
    # a run folder of its own is no run's checkpoints, whatever its parents are called
    inner = _bare_run(run / "checkpoints" / "exp")
    assert _report([inner], capsys)[0] == 0 and (inner / "report.html").is_file()


# ----------------------------------------------------------------------------- mixing happens


def _identifiable_batch(batch=64, classes=10):
    """Inputs that are the rows of the identity: a mixed row names its partner and lam."""
    return torch.eye(batch), torch.arange(batch) % classes


def _partners_and_lam(x_mix):
    """For each row i of a mix of identity rows: its partner j and the partner's share."""
    batch = x_mix.shape[0]
    others = x_mix.clone()
    others[torch.arange(batch), torch.arange(batch)] = -1.0
    partner = others.argmax(dim=1)
    lam = x_mix[torch.arange(batch), partner]
    fixed = lam <= 0  # no other column set: the row was its own partner (or lam is 0)
    partner = torch.where(fixed, torch.arange(batch), partner)
    return partner, torch.where(fixed, torch.zeros(()), lam)


@pytest.mark.parametrize("lam_per", ["batch", "example"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_mixes_with_a_random_partner_and_exact_soft_targets(lam_per, seed):
    x, y = _identifiable_batch()
    mixer = Mixer.preset("mixup", alpha=1.0, lam_per=lam_per, num_classes=10)
    x_mix, target = mixer(x, y, generator=torch.Generator().manual_seed(seed))
    partner, lam = _partners_and_lam(x_mix)
    moved = partner != torch.arange(64)
    # a permutation, not the identity: fixed points only by chance (Poisson(1) of them)
    assert moved.sum() >= 58
    assert len(set(partner.tolist())) == 64
    # mixing happened: most rows differ from the input, lam strictly inside (0, 1)
    assert (x_mix != x).any(dim=1).float().mean() >= 0.9
    assert ((lam[moved] > 0) & (lam[moved] < 1)).all()
    if lam_per == "batch":
        assert torch.allclose(lam[moved], lam[moved][0].expand(int(moved.sum())))
    else:
        assert lam[moved].unique().numel() > 50
    # x_mix = (1 - lam) x_i + lam x_j, exactly what the rows say
    expected_x = (1 - lam)[:, None] * x + lam[:, None] * x[partner]
    torch.testing.assert_close(x_mix, expected_x, rtol=0, atol=1e-6)
    # soft targets: lam-weighted one-hots of anchor and partner (the "soft" rule)
    expected = (1 - lam)[:, None] * F.one_hot(y, 10) + lam[:, None] * F.one_hot(y[partner], 10)
    torch.testing.assert_close(target, expected.float(), rtol=0, atol=1e-6)
    assert torch.allclose(target.sum(dim=1), torch.ones(64))


def test_mixup_partners_change_with_the_seed():
    x, y = _identifiable_batch()
    mixer = Mixer.preset("mixup", num_classes=10)
    partners = [_partners_and_lam(mixer(x, y, generator=torch.Generator().manual_seed(s))[0])[0]
                for s in range(3)]
    assert not torch.equal(partners[0], partners[1])
    assert not torch.equal(partners[1], partners[2])


# ----------------------------------------------------------------------------- losses, heads


_Z = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0]])
_T = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])


def test_focal_with_gamma_zero_is_cross_entropy():
    by_hand = F.cross_entropy(_Z, _T)  # probabilities as targets
    torch.testing.assert_close(Focal(gamma=0.0)(_Z, _T), by_hand)
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(Focal(gamma=0.0)(_Z, y), F.cross_entropy(_Z, y))
    written_out = -(_T * torch.log_softmax(_Z, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(Focal(gamma=0.0)(_Z, _T), written_out)


def test_focal_with_gamma_two_matches_the_formula_by_hand():
    total = 0.0
    for z, t in zip(_Z.tolist(), _T.tolist(), strict=True):
        denominator = sum(math.exp(v) for v in z)
        for zk, tk in zip(z, t, strict=True):
            p = math.exp(zk) / denominator
            total += tk * (1.0 - p) ** 2 * -math.log(p)
    expected = total / 3
    got = Focal(gamma=2.0)(_Z, _T)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() < F.cross_entropy(_Z, _T).item()  # focusing lowers the loss


def test_cosine_head_returns_the_cosines():
    head = CosineHead(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]]))
    features = torch.tensor([[3.0, 4.0, 0.0], [-1.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    got = head(features)
    expected = []
    for f in features.tolist():
        nf = math.sqrt(sum(v * v for v in f))
        row = []
        for w in head.weight.tolist():
            nw = math.sqrt(sum(v * v for v in w))
            row.append(sum(a * b for a, b in zip(f, w, strict=True)) / (nf * nw))
        expected.append(row)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=0, atol=1e-6)
    assert got.abs().min() > 0.1  # not zeros
    # scale-free: the lengths of features and weights do not matter
    torch.testing.assert_close(head(10 * features), got, rtol=0, atol=1e-6)
