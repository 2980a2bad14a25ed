"""Every ordinary mistake on the command line is one ``tailmix: error:`` line and a
non-zero exit, before any work; ``--debug`` (or ``TAILMIX_DEBUG=1``) shows the traceback;
an interrupt is one line fitting the command, and exit 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tailmix._validation import ParameterError
from tailmix.cli import main


def _one_error(capsys, *parts: str, code: int = 2, argv: list[str]) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("tailmix: error: ") and len(err.strip().splitlines()) == 1, err
    for part in parts:
        assert part in err, err
    return err


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    long = tmp_path / ("x" * 300)
    _one_error(capsys, "File name too long", "255 bytes", argv=["train", "--out", str(long)])
    assert not os.path.exists(long)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    _one_error(capsys, "'--out'", "symbolic links", argv=[
        "train", "--epochs", "1", "--out", str(tmp_path / "a" / "run")])
    if Path("/proc/self").is_dir():  # a file system that allows no folders
        _one_error(capsys, "'--out'", "/proc/tailmix-run", argv=[
            "train", "--epochs", "1", "--out", "/proc/tailmix-run"])
    _one_error(capsys, "'--out'", "symbolic links", argv=[
        "compare", "--strategies", "ERM", "--out", str(tmp_path / "a"), "--epochs", "1"])
    (tmp_path / "file").write_text("mine")
    _one_error(capsys, "'--out'", "an existing file", argv=[
        "compare", "--strategies", "ERM", "--out", str(tmp_path / "file"), "--epochs", "1"])


def test_json_naming_a_folder_is_refused_before_the_work(tmp_path, capsys):
    _one_error(capsys, "'--json'", "a folder", argv=[
        "neighbours", "--strategy", "SMOTE", "--json", str(tmp_path)])


@pytest.mark.parametrize("source, says", [
    ("def broken(:\n", "a module Python can read"),
    ("raise RuntimeError('not today')\n", "RuntimeError: not today"),
    ("import a_module_nobody_has_9\n", "an importable module name"),
])
def test_a_plugin_that_fails_to_import_is_one_line(source, says, tmp_path, monkeypatch,
                                                   capsys):
    name = f"plug_{abs(hash(source)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, name, raising=False)
    err = _one_error(capsys, "'--plugins[0]'", says, argv=[
        "train", "--plugins", name, "--out", str(tmp_path / "run")])
    assert f"{name}.py" in err or "importable" in says
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sets, key", [
    (["strategy=SMOTE", "mixer.alpha=0.5"], "'mixer.alpha'"),  # SMOTE draws its share uniformly
    (["strategy=Mixup-DRW", "mixer.k=3"], "'mixer.k'"),  # random partners: no neighbours
    (["crt.lr=0.3"], "'crt.lr'"),  # no cRT stage
    (["augment.policy=autoaugment", "augment.magnitude=5"], "'augment.magnitude'"),
    (["consistency.dim=64"], "'consistency.dim'"),
])
def test_a_setting_the_run_would_ignore_is_refused(sets, key, capsys):
    argv = ["check", "digits"]
    for s in sets:
        argv += ["--set", s]
    _one_error(capsys, key, "left out unless", argv=argv)


def test_the_settings_a_run_uses_pass(capsys):
    for sets in (["strategy=Mixup-DRW", "mixer.alpha=0.3"], ["strategy=SMOTE", "mixer.k=3"],
                 ["crt.epochs=2", "crt.lr=0.3"], ["augment.policy=randaugment",
                                                  "augment.magnitude=5"]):
        argv = ["check", "digits"]
        for s in sets:
            argv += ["--set", s]
        assert main(argv) == 0, capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    argv = ["neighbours", "--strategy", "SMOTE", "--json", str(tmp_path)]
    with pytest.raises(ParameterError, match="'--json'"):
        main([*argv[:2], "--debug", *argv[2:]])
    monkeypatch.setenv("TAILMIX_DEBUG", "1")
    with pytest.raises(ParameterError, match="'--json'"):
        main(argv)
    monkeypatch.setenv("TAILMIX_DEBUG", "0")
    assert main(argv) == 2


def _interrupted(argv: list[str], cwd: Path, after: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TAILMIX_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "tailmix", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "1", "--no-progress", "--out", "run"],
    ["strategies"],
])
def test_an_early_interrupt_is_one_line_and_exit_130(argv, tmp_path):
    code, err = _interrupted(argv, tmp_path, after=0.4)  # while the command imports
    assert code == 130, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("tailmix: interrupted"), err
    assert "--resume" not in err  # nothing to resume yet (train says so once it has parsed)
