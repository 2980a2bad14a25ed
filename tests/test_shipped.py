import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tailmix._validation import ParameterError
from tailmix.pipeline.shipped import config_names, config_path

ROOT = Path(__file__).parents[1]


def test_every_shipped_config_resolves_and_loads():
    names = config_names()
    assert names == sorted(names) and "digits" in names and len(names) >= 6
    for name in names:
        path = config_path(name)
        assert path.is_file() and path.name == f"{name}.yaml"
        assert config_path(f"{name}.yaml") == path
        assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)


def test_repository_configs_folder_is_the_shipped_one():
    on_disk = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert on_disk == config_names()


def test_unknown_name_lists_the_shipped_configs():
    with pytest.raises(ParameterError) as err:
        config_path("no_such_config")
    assert err.value.name == "config"
    message = str(err.value)
    assert "no_such_config" in message
    for name in config_names():
        assert name in message
    with pytest.raises(ParameterError):
        config_path("configs/no_such_config.yaml")  # a path, not a bare name


def test_existing_path_is_returned_unchanged(tmp_path, monkeypatch):
    own = tmp_path / "digits.yaml"  # shadows the shipped name: the file wins
    own.write_text("strategy: ERM\n")
    assert config_path(own) == own
    assert config_path(str(own)) == own
    monkeypatch.chdir(tmp_path)
    assert config_path("digits.yaml") == Path("digits.yaml")


@pytest.mark.slow
def test_built_wheel_holds_every_config(tmp_path):
    # Asked of the installed distributions, not with importlib.util.find_spec: looking up
    # "pip" through the import system tells setuptools' distutils shim that pip is running,
    # and it stands aside for the rest of the process, after which torch.compile's C++
    # build fails on the standard library's distutils (a later test in the same process).
    for needed, why in (("setuptools", "the offline wheel build needs it"), ("pip", "")):
        try:
            importlib.metadata.version(needed)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{needed} is not installed" + (f": {why}" if why else ""))
    # Build from a copy so the checkout gets no build/ folder and no stale files leak in.
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src" / "tailmix",
        project / "src" / "tailmix",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    out = tmp_path / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--no-index", "-q", "-w", str(out), str(project)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        tail = done.stderr.strip()[-800:]
        offline = ("No matching distribution", "Could not find a version", "No module named")
        if any(text in tail for text in offline):
            pytest.skip(f"pip wheel cannot build offline here: {tail}")
        pytest.fail(f"pip wheel failed: {tail}")
    wheels = list(out.glob("tailmix-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as whl:
        listed = set(whl.namelist())
    expected = {f"tailmix/configs/{name}.yaml" for name in config_names()}
    assert expected and expected <= listed
