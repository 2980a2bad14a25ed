"""A new run writes into no folder holding a run or a user's files unless asked (then the
old contents are moved aside, whole), and a resumed run goes on only with the config its
checkpoint was trained with, unless the user asks for the change, which is recorded."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import digits_config

from tailmix import train
from tailmix._validation import ParameterError
from tailmix.cli import main

QUIET = {"log": lambda _: None}


def _one_error(capsys, *parts: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("tailmix: error: ") and len(err.strip().splitlines()) == 1, err
    for part in parts:
        assert part in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch digits run (small network)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(digits_config(epochs=2), out, **QUIET)
    return out


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_into_a_finished_run_is_refused_and_loses_nothing(finished, capsys):
    before = _snapshot(finished)
    assert main(["train", "--strategy", "DRW", "--out", str(finished), "--epochs", "1"]) == 2
    _one_error(capsys, "'--out'", "a finished run (metrics.json)", "--force")
    with pytest.raises(ParameterError, match="a finished run"):
        train(digits_config(epochs=2), finished, **QUIET)  # the same config: refused too
    assert _snapshot(finished) == before


def test_a_users_own_folder_and_config_are_never_rewritten(tmp_path, capsys):
    user = tmp_path / "userdir"
    user.mkdir()
    mine = "# my settings, with my comments\ntrain:\n  epochs: 1\n"
    (user / "config.yaml").write_text(mine)
    (user / "notes.txt").write_text("keep me")
    assert main(["train", "-c", str(user / "config.yaml"), "--out", str(user)]) == 2
    _one_error(capsys, "files training did not write (config.yaml, notes.txt)")
    assert (user / "config.yaml").read_text() == mine
    assert sorted(p.name for p in user.iterdir()) == ["config.yaml", "notes.txt"]


def test_force_moves_the_old_contents_aside_whole(tmp_path, capsys):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "config.yaml").write_text("# mine\nmodel:\n  arch: small_cnn\n")
    assert main(["train", "-c", str(user / "config.yaml"), "--out", str(user), "--epochs",
                 "1", "--no-progress", "--force"]) == 0
    assert "moved to" in capsys.readouterr().out
    assert (tmp_path / "userdir.old-1" / "config.yaml").read_text().startswith("# mine")
    assert (user / "metrics.json").is_file()
    assert "class_counts" in yaml.safe_load((user / "config.yaml").read_text())


def test_an_unfinished_run_is_named_with_resume(tmp_path, monkeypatch):
    from conftest import train_interrupted

    out = tmp_path / "run"
    train_interrupted(digits_config(epochs=2), out, at_epoch=1, monkeypatch=monkeypatch)
    with pytest.raises(ParameterError, match=r"an unfinished run \(`tailmix train --resume`"):
        train(digits_config(epochs=2), out, **QUIET)


def test_a_folder_holding_only_an_unstarted_runs_config_is_trained_into(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({"train": {"epochs": 1},
                                                     "class_counts": [3, 1]}))
    assert train(digits_config(epochs=1, warmup_epochs=0), out, **QUIET)["epochs"] == 1


@pytest.fixture
def interrupted_run(tmp_path, monkeypatch):
    from conftest import train_interrupted

    out = tmp_path / "run"
    train_interrupted(digits_config(epochs=3), out, at_epoch=1, monkeypatch=monkeypatch)
    return out


def test_a_hand_edited_config_is_refused_on_resume_naming_the_keys(interrupted_run, capsys):
    run = interrupted_run
    text = (run / "config.yaml").read_text()
    assert "  lr: 0.05\n" in text
    (run / "config.yaml").write_text(text.replace("  lr: 0.05\n", "  lr: 5.0\n"))
    before = _snapshot(run)
    assert main(["train", "--resume", str(run)]) == 2
    _one_error(capsys, "train.lr: 0.05 in the checkpoint, 5.0 now", "--allow-changes")
    assert _snapshot(run) == before
    assert main(["train", "--resume", str(run), "--allow-changes", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["config_changes"] == {"train.lr": [0.05, 5.0]}
    assert "config_changes" not in rows[1]
    # A suite does not take it for a run of either config.
    from tailmix.tools.bench import config_difference

    now = yaml.safe_load((run / "config.yaml").read_text())
    assert now["train"]["lr"] == 5.0
    key, was, _ = config_difference(run, {k: v for k, v in now.items()
                                          if k not in ("composition", "class_counts")})
    assert (key, was) == ("train.lr", 0.05)


def test_resume_may_change_the_device_and_data_root_only(interrupted_run):
    cfg = digits_config(epochs=3)
    cfg["dataset"]["root"] = "elsewhere"  # unused by digits; where the data is, not what
    cfg["log"]["tensorboard"] = False
    assert train(cfg, interrupted_run, resume=True, **QUIET)["epochs"] == 3
    for key, value in (("batch_size", 32), ("seed", 1), ("epochs", 4)):
        other = digits_config(**{"epochs": 3, key: value})
        with pytest.raises(ParameterError, match=f"train.{key}"):
            train(other, interrupted_run, resume=True, **QUIET)


def test_the_checkpoint_records_the_digest_of_its_config(finished):
    from tailmix.pipeline.build import config_digest, load_checkpoint

    ckpt = load_checkpoint(finished / "checkpoints" / "last.pt")
    assert ckpt["config_sha256"] == config_digest(ckpt["config"])
    changed = {**ckpt["config"], "train": {**ckpt["config"]["train"], "lr": 0.5}}
    moved = {**ckpt["config"], "train": {**ckpt["config"]["train"], "device": "cuda"}}
    assert config_digest(changed) != ckpt["config_sha256"]
    assert config_digest(moved) == ckpt["config_sha256"]


def test_train_flags_that_do_not_go_together(tmp_path, capsys):
    assert main(["train", "--allow-changes", "--out", str(tmp_path / "a")]) == 2
    _one_error(capsys, "'--allow-changes'", "--resume")
    assert main(["train", "--resume", str(tmp_path / "a"), "--force"]) == 2
    _one_error(capsys, "'--force'")


def test_a_reported_run_is_still_a_run(finished, tmp_path):
    import shutil

    from tailmix.tools.report import build_report

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    build_report([run])  # the report's page, summary, figures and marker, in the run
    with pytest.raises(ParameterError, match=r"a finished run \(metrics.json\)"):
        train(digits_config(epochs=2), run, **QUIET)


def test_a_setting_added_since_the_run_at_its_default_is_no_change():
    """A run interrupted under an earlier version resumes after an upgrade: keys its
    config lacks that now hold their defaults (they act as the run did without them) are
    not changes; the same key set otherwise is one."""
    import copy

    from tailmix.pipeline.checkpoints import config_changes
    from tailmix.pipeline.config import resolve

    now = resolve({"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
                   "train": {"epochs": 2}}).to_dict()
    was = copy.deepcopy(now)
    del was["crt"]["reinit"], was["consistency"]["views"]
    assert config_changes(was, now) == {}
    changed = copy.deepcopy(now)
    changed["crt"]["reinit"] = False
    assert config_changes(was, changed) == {"crt.reinit": (None, False)}
    assert config_changes(now, changed) == {"crt.reinit": (True, False)}
