"""Run folders under stress: one owner at a time, resumes that match, whole finished runs,
user mistakes as one ``tailmix: error:`` line, and the compare / report / bench commands."""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import digits_config, train_interrupted

import tailmix.pipeline.engine
from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.io import atomic_write_text
from tailmix.pipeline import callbacks as cb
from tailmix.pipeline.build import build_run, resolve_device, restore, train
from tailmix.tools.bench import load_suite, run_suite


def quiet(_: str) -> None:
    pass


def tiny(epochs: int = 1, **train_kw) -> dict:
    cfg = digits_config(epochs=epochs, **{"warmup_epochs": 0, **train_kw})
    cfg["eval"]["every"] = 1
    return cfg


def config_file(tmp_path: Path, cfg: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def error_line(capsys) -> str:
    """The command's stderr, which must be one ``tailmix: error:`` line."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("tailmix: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch digits run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(), out, log=quiet)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))
    return lock


# --------------------------------------------------------------------------- 1. one owner


def test_a_live_lock_refuses_a_second_trainer(tmp_path):
    out = tmp_path / "run"
    lock = write_lock(out, os.getppid())
    with pytest.raises(ParameterError, match=rf"'--out'.*pid {os.getppid()}"):
        train(tiny(), out, log=quiet)
    assert not (out / "metrics.json").exists() and not (out / "config.yaml").exists()
    assert lock.is_file()  # someone else's lock stays


def test_a_stale_lock_is_taken_over_and_released(tmp_path):
    out = tmp_path / "run"
    pid = dead_pid()
    write_lock(out, pid)
    lines: list[str] = []
    train(tiny(), out, log=lines.append)
    assert (out / "metrics.json").is_file()
    assert any("lock" in s and str(pid) in s for s in lines), lines
    assert not (out / ".lock").exists()


def test_the_lock_is_held_while_training_and_released_on_interrupt(tmp_path, monkeypatch,
                                                                   capsys):
    out = tmp_path / "run"
    seen = []
    original = tailmix.pipeline.engine.Trainer.train_epoch

    def epoch(self, e):
        holder = json.loads((out / ".lock").read_text())
        seen.append(holder["pid"])
        # A second trainer (here: this live process again) is refused with one line.
        cfg = config_file(tmp_path, tiny())
        assert main(["train", "-c", str(cfg), "--out", str(out)]) == 2
        err = error_line(capsys)
        assert "--out" in err and f"pid {os.getpid()}" in err
        return original(self, e)

    monkeypatch.setattr(tailmix.pipeline.engine.Trainer, "train_epoch", epoch)
    train(tiny(), out, log=quiet)
    assert seen == [os.getpid()]
    assert not (out / ".lock").exists()
    monkeypatch.setattr(tailmix.pipeline.engine.Trainer, "train_epoch", original)
    train_interrupted(tiny(2), tmp_path / "cut", at_epoch=1, monkeypatch=monkeypatch,
                      log=quiet)
    assert not (tmp_path / "cut" / ".lock").exists()


def test_lock_folder_is_one_owners_and_released_by_it_alone(tmp_path):
    from tailmix.io import lock_folder

    lock = lock_folder(tmp_path / "run")
    held = json.loads(lock.path.read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    with pytest.raises(ParameterError, match=rf"'--out'.*pid {os.getpid()}"):
        lock_folder(tmp_path / "run")
    lock.release()
    assert not lock.path.exists()
    again = lock_folder(tmp_path / "run")
    lock.release()  # an old claim never removes a newer one
    assert again.path.is_file()
    again.release()
    # Another host's process cannot be checked from here: it is taken to be alive.
    write_lock(tmp_path / "far", dead_pid(), host="elsewhere.example")
    with pytest.raises(ParameterError, match="elsewhere.example"):
        lock_folder(tmp_path / "far")
    # A lock file written by hand with a bare pid.
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / ".lock").write_text(str(dead_pid()))
    lines: list[str] = []
    lock_folder(tmp_path / "bare", log=lines.append).release()
    assert len(lines) == 1 and "no longer running" in lines[0]


@pytest.mark.slow
def test_two_processes_cannot_share_a_run_folder(tmp_path):
    """A real second process: it waits in its first epoch while this one tries."""
    out, flag = tmp_path / "run", tmp_path / "go"
    script = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import digits_config
import tailmix.pipeline.engine
from tailmix.pipeline.build import train
original = tailmix.pipeline.engine.Trainer.train_epoch
def epoch(self, e):
    open({str(flag)!r}, "w").close()
    time.sleep(4)
    return original(self, e)
tailmix.pipeline.engine.Trainer.train_epoch = epoch
train(digits_config(epochs=1, warmup_epochs=0), {str(out)!r}, log=lambda s: None)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if flag.exists() or proc.poll() is not None:
                break
            import time

            time.sleep(0.1)
        assert flag.exists(), "the first process did not start training"
        with pytest.raises(ParameterError, match=rf"'--out'.*pid {proc.pid}"):
            train(tiny(), out, log=quiet)
    finally:
        assert proc.wait(timeout=120) == 0
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()


# --------------------------------------------------------------------------- 2. resume


def test_resume_refuses_flags_that_would_change_the_run(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    for extra, flag in ((["--epochs", "5"], "--epochs"), (["--strategy", "DRW"], "--strategy"),
                        (["--set", "train.lr=1"], "--set"), (["-c", "digits"], "--config"),
                        (["--seed", "3"], "--seed"), (["--out", str(tmp_path / "x")], "--out")):
        assert main(["train", "--resume", str(run), *extra]) == 2, extra
        err = error_line(capsys)
        assert flag in err and "--resume" in err
    # Flags that cannot change the run are honoured: the device is the one asked for.
    if not torch.cuda.is_available():
        assert main(["train", "--resume", str(run), "--device", "cuda"]) == 2
        assert "train.device" in error_line(capsys)
    assert main(["train", "--resume", str(run), "--device", "cpu", "--no-progress"]) == 0


def test_resume_refuses_a_run_whose_files_disagree(tmp_path, monkeypatch, capsys):
    base = tmp_path / "base"
    train_interrupted(tiny(2), base, at_epoch=1, monkeypatch=monkeypatch, log=quiet)
    cases = [
        ("strategy", lambda c: c.update(strategy="DRW")),
        ("train.seed", lambda c: c["train"].update(seed=7)),
        ("train.epochs", lambda c: c["train"].update(epochs=3)),
        ("model.arch", lambda c: c["model"].update(arch="resnet32")),
        ("dataset.profile", lambda c: c["dataset"].update(profile="step")),
    ]
    for i, (key, edit) in enumerate(cases):
        run = copy_run(base, tmp_path / f"r{i}")
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        edit(cfg)
        (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert main(["train", "--resume", str(run)]) == 2, key
        err = error_line(capsys)
        assert key in err and "checkpoint" in err, err
        assert not (run / "metrics.json").exists()
    # A history that does not reach the checkpoint's epoch.
    run = copy_run(base, tmp_path / "nohist")
    (run / "history.jsonl").write_text("")
    assert main(["train", "--resume", str(run)]) == 2
    assert "history" in error_line(capsys)
    # The library refuses a different run too (a longer one continues: see test_streaming).
    for key, edit in cases[:2] + cases[3:4]:
        cfg = tiny(2)
        edit(cfg)
        with pytest.raises(ParameterError, match=key):
            train(cfg, copy_run(base, tmp_path / f"lib-{key}"), resume=True, log=quiet)
    # The untouched run resumes.
    assert main(["train", "--resume", str(copy_run(base, tmp_path / "ok"))]) == 0


# --------------------------------------------------------------------------- 3. whole runs


def test_metrics_json_is_written_last(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def killed(self, state):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cb.Margins, "on_fit_end", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(), out, log=quiet)
    assert not (out / "metrics.json").exists()  # not taken for a finished run
    train(tiny(), out, force=True, log=quiet)  # the unfinished run is moved aside
    assert (tmp_path / "run.old-1" / "checkpoints" / "last.pt").is_file()
    assert (out / "margins.json").stat().st_mtime_ns <= (out / "metrics.json").stat().st_mtime_ns
    # Training afresh into a finished folder: the old run is kept aside, whole.
    with monkeypatch.context() as m:
        m.setattr(cb.Margins, "on_fit_end", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(), out, force=True, log=quiet)
    assert not (out / "metrics.json").exists()
    assert (tmp_path / "run.old-2" / "metrics.json").is_file()


def test_history_holds_strict_json(tmp_path):
    state = cb.TrainState(model=torch.nn.Linear(2, 2), epochs=2, snapshot=lambda: {"epoch": 1})
    state.history = [{"epoch": 1, "train_loss": float("nan"), "lr": float("inf")}]
    ck = cb.Checkpointer(tmp_path, config={}, classes=["a", "b"], class_counts=[2, 1])
    ck.on_epoch_end(state, state.history[0])

    def refuse(token):
        raise ValueError(token)

    rows = [json.loads(x, parse_constant=refuse)
            for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert rows == [{"epoch": 1, "train_loss": None, "lr": None}]


def test_resume_removes_a_killed_writes_temporaries(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train_interrupted(tiny(2), out, at_epoch=1, monkeypatch=monkeypatch, log=quiet)
    leftovers = [out / ".history.jsonl.k2j4h1x9.tmp", out / "checkpoints" / ".last.pt.a1b2c3d4.tmp"]
    for f in leftovers:
        f.write_bytes(b"half")
    keep = out / "notes.tmp"
    keep.write_text("mine")
    lines: list[str] = []
    train(tiny(2), out, resume=True, log=lines.append)
    assert not any(f.exists() for f in leftovers) and keep.is_file()
    assert any("temporar" in s for s in lines)


def _suite(tmp_path: Path, name: str = "tiny", lr: float = 0.05, grid=None) -> Path:
    spec = {
        "name": name,
        "overrides": {
            "dataset": {"name": "digits", "profile": "exp", "ratio": 20, "n_max": 120},
            "model": {"arch": "small_cnn"},
            "train": {"epochs": 1, "batch_size": 64, "lr": lr, "warmup_epochs": 0,
                      "precision": "fp32"},
            "eval": {"every": 1, "many_threshold": 60},
            "log": {"progress": False},
        },
        "grid": grid or [{"strategies": ["ERM"], "seeds": [0]}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_bench_refuses_a_stale_cell_or_retrains_it(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    run_suite(load_suite(_suite(tmp_path)), results, log=quiet)
    cell = results / "tiny" / "runs" / "digits-r20" / "ERM-s0"
    first = json.loads((cell / "metrics.json").read_text())
    # The suite changed since: the finished cell no longer matches it.
    path = _suite(tmp_path, lr=0.01)
    for train_missing in (True, False):  # --table-only: no table of runs of two configs
        with pytest.raises(ParameterError, match=r"digits-r20/ERM-s0.*train\.lr"):
            run_suite(load_suite(path), results, log=quiet, train_missing=train_missing)
    assert main(["bench", str(path), "--out", str(results)]) == 2
    err = error_line(capsys)
    assert "digits-r20/ERM-s0" in err and "train.lr" in err and "--retrain-stale" in err
    assert main(["bench", str(path), "--out", str(results), "--retrain-stale"]) == 0
    out = capsys.readouterr().out
    assert "stale" in out
    cfg = yaml.safe_load((cell / "config.yaml").read_text())
    assert cfg["train"]["lr"] == 0.01
    assert json.loads((cell / "metrics.json").read_text())["wall_time_s"] != first["wall_time_s"]
    # A setting of the machine (device, data root) does not make a cell stale.
    suite = load_suite(path, data_root=str(tmp_path / "elsewhere"))
    monkeypatch.setattr("tailmix.pipeline.build.train", lambda *a, **k: pytest.fail("retrained"))
    run_suite(suite, results, log=quiet)


def test_a_share_recorded_by_an_older_run_is_the_epoch_it_resolves_to(tmp_path):
    """Older config.yaml files hold DRW's start and M2m's warm-up as shares of the run; the
    resolved composition holds epochs. The same epoch is not a difference, another is."""
    from tailmix.pipeline.config import resolve
    from tailmix.tools.bench import config_difference

    for strategy, part, key, share, epoch in (("DRW", "weights", "start_epoch", 0.8, 8),
                                              ("M2m", "generative", "warmup_epochs", 0.8, 8)):
        # No lr steps: DRW's share is not moved before one (see test_short_runs.py).
        cfg = digits_config(epochs=10, milestones=[], lr_factors=[])
        cfg["strategy"] = strategy
        saved = resolve(cfg).to_dict()
        assert saved["composition"][part][key] == epoch
        for recorded, differs in ((share, False), (0.3, True), (epoch, False), (epoch + 1, True)):
            saved["composition"][part][key] = recorded
            (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
            found = config_difference(tmp_path, cfg)
            assert (found is not None) == differs, (strategy, recorded, found)
            if differs:
                assert found == (f"composition.{part}.{key}", recorded, epoch)


# --------------------------------------------------------------------------- 4. errors


def _checkpoints(finished: Path, tmp_path: Path) -> dict[str, Path]:
    good = finished / "checkpoints" / "last.pt"
    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 2], "empty": b""}
    paths = {}
    for name, blob in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(blob)
    ckpt = torch.load(good, weights_only=True)
    paths["state_dict"] = tmp_path / "state_dict.pt"
    torch.save(ckpt["model"], paths["state_dict"])
    paths["unsafe"] = tmp_path / "unsafe.pt"
    import argparse

    torch.save({**ckpt, "extra": argparse.Namespace(a=1)}, paths["unsafe"])
    other = dict(ckpt, config=json.loads(json.dumps(ckpt["config"])))
    other["config"]["model"]["arch"] = "resnet32"  # a small_cnn's weights
    paths["other_arch"] = tmp_path / "other_arch.pt"
    torch.save(other, paths["other_arch"])
    return paths


def test_bad_checkpoints_are_one_error_line(finished, tmp_path, capsys):
    paths = _checkpoints(finished, tmp_path)
    expect = {"truncated": "truncated", "empty": "empty", "state_dict": "state dict",
              "unsafe": "argparse.Namespace", "other_arch": "resnet32"}
    for name, path in paths.items():
        assert main(["eval", str(path), "--device", "cpu"]) == 2, name
        err = error_line(capsys)
        assert str(path) in err and expect[name] in err, err
        assert "weights_only" not in err, err
        with pytest.raises(ParameterError):
            restore(path, device="cpu")
    # A user's network for a checkpoint of a built-in one.
    with pytest.raises(ParameterError, match="built-in 'small_cnn'"):
        restore(finished / "checkpoints" / "last.pt", device="cpu",
                model=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    # The same files in place of a run's last checkpoint: resume says what is wrong.
    for name in ("truncated", "state_dict", "unsafe"):
        run = copy_run(finished, tmp_path / f"run-{name}")
        shutil.copy(paths[name], run / "checkpoints" / "last.pt")
        assert main(["train", "--resume", str(run)]) == 2, name
        err = error_line(capsys)
        assert "last.pt" in err and "weights_only" not in err, err
        assert not (run / ".lock").exists()


def test_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    cfg = config_file(tmp_path, tiny())
    for argv in (["train", "-c", str(cfg), "--out", str(target)],
                 ["compare", "-c", str(cfg), "--strategies", "ERM", "--out", str(target)],
                 ["bench", str(_suite(tmp_path)), "--out", str(target)]):
        assert main(argv) == 2, argv
        assert "--out" in error_line(capsys)
    for out in (target, target / "run"):
        with pytest.raises(ParameterError, match="--out"):
            build_run(tiny(), out, log=quiet)
    assert main(["train", "-c", str(cfg), "--out", str(target / "run")]) == 2
    assert "--out" in error_line(capsys)
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_disk_or_read_only_folder_is_one_error_line(tmp_path, monkeypatch, capsys,
                                                          code):
    out = tmp_path / "run"
    cfg = config_file(tmp_path, tiny())

    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["train", "-c", str(cfg), "--out", str(out)]) == 1
    err = error_line(capsys)
    assert str(out / "config.yaml") in err and os.strerror(code) in err, err
    assert not (out / ".lock").exists()
    assert not list(out.glob(".*.tmp"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="a read-only folder needs a POSIX user who is not root")
def test_a_read_only_folder_really(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        cfg = config_file(tmp_path, tiny())
        assert main(["train", "-c", str(cfg), "--out", str(folder / "run")]) == 1
        assert str(folder) in error_line(capsys)
    finally:
        folder.chmod(0o700)


def test_devices_that_are_not_there(tmp_path, capsys):
    cfg = config_file(tmp_path, tiny())
    names = ["cuda:abc", "cuda:1:2"]
    if not (torch.backends.mps.is_available()):
        names.append("mps")
    if not torch.cuda.is_available():
        names.append("cuda:0")
    for name in names:
        with pytest.raises(ParameterError, match="train.device"):
            resolve_device(name)
        assert main(["train", "-c", str(cfg), "--device", name,
                     "--out", str(tmp_path / "x")]) == 2, name
        assert "train.device" in error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_a_training_error_is_one_error_line(tmp_path, monkeypatch, capsys):
    class TrainingError(RuntimeError):
        pass

    engine = tailmix.pipeline.engine
    monkeypatch.setattr(engine, "TrainingError", getattr(engine, "TrainingError", TrainingError),
                        raising=False)

    def diverge(self, epoch):
        raise tailmix.pipeline.engine.TrainingError("the loss is NaN at epoch 1 (lower train.lr)")

    monkeypatch.setattr(tailmix.pipeline.engine.Trainer, "train_epoch", diverge)
    out = tmp_path / "run"
    assert main(["train", "-c", str(config_file(tmp_path, tiny())), "--out", str(out)]) == 1
    assert "loss is NaN" in error_line(capsys)
    assert not (out / ".lock").exists()


# --------------------------------------------------------------------------- 5. suite names


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs/olute", "..", ".", "a\\b",
                                  "x/../../y"])
def test_a_suite_name_cannot_leave_out(tmp_path, name, capsys):
    path = _suite(tmp_path, name=name)
    with pytest.raises(ParameterError, match="suite.name"):
        load_suite(path)
    assert main(["bench", str(path), "--out", str(tmp_path / "results")]) == 2
    assert "suite.name" in error_line(capsys)
    assert not (tmp_path / "results").exists()


def test_a_grid_tag_cannot_leave_out(tmp_path):
    path = _suite(tmp_path, grid=[{"strategies": ["ERM"], "tag": "../../x"}])
    with pytest.raises(ParameterError, match=r"grid\[0\]\.tag"):
        load_suite(path)


# --------------------------------------------------------------------------- 6. commands


@pytest.mark.slow
def test_compare_and_report_commands(tmp_path, capsys):
    cfg = config_file(tmp_path, tiny())
    out = tmp_path / "cmp"
    argv = ["compare", "-c", str(cfg), "--strategies", "ERM", "DRW", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ERM" in text and "DRW" in text
    assert (out / "report" / "report.html").is_file()
    assert all((out / s / "metrics.json").is_file() for s in ("ERM", "DRW"))
    assert main(argv[:4] + ["ERM", "--out", str(out)]) == 0  # finished: reused
    assert "ERM: finished run found" in capsys.readouterr().out
    # A changed setting: the finished runs no longer match; --force retrains them.
    changed = config_file(tmp_path, tiny(lr=0.01), "changed.yaml")
    assert main(["compare", "-c", str(changed), "--strategies", "ERM", "--out", str(out)]) == 2
    assert "train.lr" in error_line(capsys)
    assert main(["report", str(out / "ERM"), str(out / "DRW"), "--out",
                 str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()


@pytest.mark.slow
def test_bench_command_writes_tables_and_skips_finished_cells(tmp_path, capsys):
    path = _suite(tmp_path, grid=[{"strategies": ["ERM", "DRW"], "seeds": [0]}])
    results = tmp_path / "results"
    assert main(["bench", str(path), "--out", str(results)]) == 0
    first = capsys.readouterr().out
    assert first.count(": training\n") == 2
    folder = results / "tiny"
    rows = list(csv.DictReader((folder / "table.csv").open()))
    assert [r["strategy"] for r in rows] == ["ERM", "DRW"]
    assert all(math.isfinite(float(r["top1"])) for r in rows)
    assert "| digits | 20 | ERM |" in (folder / "table.md").read_text()
    assert main(["bench", str(path), "--out", str(results)]) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 2
    # An interrupted cell (no metrics.json) is resumed, not skipped.
    (folder / "runs" / "digits-r20" / "DRW-s0" / "metrics.json").unlink()
    assert main(["bench", str(path), "--out", str(results)]) == 0
    text = capsys.readouterr().out
    assert "DRW-s0: resuming" in text and text.count("finished, skipped") == 1


def test_atomic_write_names_the_file_on_a_full_disk(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "a.txt", "x")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []
