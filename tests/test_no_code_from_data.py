"""Nothing read from a checkpoint or a run folder decides what is imported: a saved config
that names plugins is refused until the user imports them (``--plugins``)."""

from __future__ import annotations

import sys
import uuid

import pytest
import torch
import yaml
from conftest import DEVICE

from tailmix import train
from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.pipeline.build import restore

PLUGIN = """
from pathlib import Path
Path({marker!r}).write_text("imported")
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    train({"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
           "train": {"epochs": 2, "batch_size": 64, "device": DEVICE},
           "log": {"progress": False}}, out, log=lambda _: None)
    return out


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A module in an importable folder that leaves a marker file when imported."""
    name = f"plug_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{name}.py").write_text(PLUGIN.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def _plant_in_checkpoint(run_dir, tmp_path, name):
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"]["plugins"] = [name]
    path = tmp_path / "planted.pt"
    torch.save(ckpt, path)
    return path


def test_a_checkpoint_naming_a_plugin_imports_nothing(run_dir, tmp_path, planted, capsys):
    name, marker = planted
    path = _plant_in_checkpoint(run_dir, tmp_path, name)
    import shutil

    folder = tmp_path / "folder"
    shutil.copytree(run_dir, folder)
    shutil.copy(path, folder / "checkpoints" / "last.pt")
    (folder / "margins.json").unlink()  # margins then recomputes from the checkpoint
    for argv in (["eval", str(path)], ["eval", str(folder)], ["margins", str(folder)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("tailmix: error: ") and "'plugins'" in err
        assert f"--plugins {name}" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ParameterError) as info:
        restore(path)
    assert info.value.name == "plugins"
    assert not marker.exists()
    # The user names the module: it is imported, and the checkpoint evaluates.
    assert main(["eval", str(path), "--plugins", name]) == 0
    assert marker.read_text() == "imported"


def test_a_run_folder_naming_a_plugin_does_not_resume_into_it(run_dir, tmp_path, planted,
                                                              capsys):
    name, marker = planted
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "metrics.json").unlink()  # an interrupted run
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["plugins"] = [name]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--resume", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "'plugins'" in err and "config.yaml" in err and f"--plugins {name}" in err
    assert not marker.exists()
