"""``predict`` and ``export`` write over no input, no run file and no file they did not
write, unless the user passes ``--force``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEVICE

from tailmix import train
from tailmix.cli import main
from tailmix.data import load_source


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    train({"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
           "train": {"epochs": 1, "batch_size": 64, "device": DEVICE},
           "log": {"progress": False, "checkpoint_best": True}}, out, log=lambda _: None)
    return out


@pytest.fixture
def images(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, load_source("digits").test_x[:5])
    return path


def _refused(argv, capsys, *, what):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tailmix: error: ") and "'--out'" in err and what in err
    assert "--force" in err and len(err.strip().splitlines()) == 1


def test_predict_writes_over_no_input_and_no_run_file(run_dir, images, capsys):
    before = images.read_bytes()
    _refused(["predict", str(run_dir), str(images), "--out", str(images)], capsys,
             what="one of this command's inputs")
    assert images.read_bytes() == before
    metrics = (run_dir / "metrics.json").read_bytes()
    _refused(["predict", str(run_dir), str(images), "--out", str(run_dir / "metrics.json")],
             capsys, what="a run folder's own file")
    assert (run_dir / "metrics.json").read_bytes() == metrics


def test_predict_writes_over_its_own_table_and_other_files_only_when_forced(
        run_dir, images, tmp_path, capsys):
    table = tmp_path / "p.csv"
    for _ in range(2):  # its own earlier table: written again
        assert main(["predict", str(run_dir), str(images), "--out", str(table)]) == 0
    assert table.read_text().startswith("input,prediction,probability")
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\n1,2\n")
    _refused(["predict", str(run_dir), str(images), "--out", str(notes)], capsys,
             what="a file this command did not write")
    assert notes.read_text() == "my,own\n1,2\n"
    assert main(["predict", str(run_dir), str(images), "--out", str(notes), "--force"]) == 0
    assert notes.read_text().startswith("input,prediction,probability")


def test_export_writes_over_no_checkpoint_and_no_file_it_did_not_write(run_dir, tmp_path,
                                                                      capsys):
    best = run_dir / "checkpoints" / "best.pt"
    before = best.read_bytes()
    _refused(["export", str(run_dir), "--format", "torchscript", "--out", str(best)], capsys,
             what="a run folder's own file")
    assert best.read_bytes() == before
    mine = tmp_path / "model.pt"
    mine.write_bytes(b"mine")
    _refused(["export", str(run_dir), "--format", "torchscript", "--out", str(mine)], capsys,
             what="a file this command did not write")
    assert mine.read_bytes() == b"mine"
    again = tmp_path / "net.pt"
    for _ in range(2):  # an earlier export (its class names beside it): written again
        assert main(["export", str(run_dir), "--format", "torchscript", "--out",
                     str(again)]) == 0
