"""The command line: help generated from the registries, one spelling for each thing, only
the flags a command uses, epoch lines without a progress bar, `eval` of a run folder, and a
user's plugins found in the working folder by the installed `tailmix` command."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tailmix.cli import main, make_parser
from tailmix.data.dataset import PREPARE_PROFILES
from tailmix.registry import DATASETS, MODELS, STRATEGIES, load_builtins

README = Path(__file__).resolve().parents[1] / "README.md"
SHORT_RUN = ["--set", "train.milestones=[]", "--set", "train.lr_factors=[]",
             "--set", "train.warmup_epochs=0"]


def _help(command: str, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _option_help(text: str, flag: str) -> str:
    """The help of one option in argparse's output, joined into one line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(flag + " "))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 8):  # the next option, or the end
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def _listed(name: str, text: str) -> bool:
    """``name`` as a whole item of a list (``DRW`` is not found in ``Mixup-DRW``)."""
    return re.search(rf"(?<![\w:-]){re.escape(name)}(?![\w-])", text) is not None


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tailmix: error: "), err
    return err[0]


@pytest.mark.parametrize("command", ["train", "compare", "neighbours"])
def test_help_lists_every_registered_name(command, capsys, monkeypatch):
    load_builtins()
    text = _help(command, capsys, monkeypatch)
    lists = {"--dataset": list(DATASETS), "--profile": list(PREPARE_PROFILES),
             "--arch": [*MODELS, "timm:NAME", "torchvision:NAME"],
             "--strategies" if command == "compare" else "--strategy": list(STRATEGIES)}
    for flag, names in lists.items():
        shown = _option_help(text, flag)
        missing = [n for n in names if not _listed(n, shown)]
        assert not missing, (command, flag, missing, shown)
    # The lists are the registries', so the newer entries are there too.
    for name in ("filelist", "csv", "arrays", "imagenet_lt", "places_lt", "inat2018",
                 "resnet50", "resnext50_32x4d", "ldam_drw", "MAMix-DRW-AA-SimSiam"):
        assert _listed(name, " ".join(text.split())), name


def test_every_argument_of_every_command_has_help():
    parser = make_parser()
    assert all(action.help for action in parser._actions)
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    described = {c.dest: c.help for c in commands._choices_actions}
    assert set(described) == set(commands.choices)
    assert {"train", "compare", "eval", "margins", "neighbours", "predict",
            "export"} <= set(commands.choices)
    for name, sub in commands.choices.items():
        assert described[name], name
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:  # a spelling refused with a message
                continue
            assert action.help and action.help.strip(), (name, action.dest)


def test_compare_takes_strategies_and_refuses_the_single_spelling(capsys, tmp_path):
    args = make_parser().parse_args(["compare", "--strategies", "ERM", "DRW",
                                     "-o", str(tmp_path)])
    assert args.strategies == ["ERM", "DRW"] and not hasattr(args, "strategy")
    with pytest.raises(SystemExit) as done:
        main(["compare", "--strategy", "DRW", "-o", str(tmp_path / "cmp")])
    assert done.value.code == 2
    line = _error_line(capsys)
    assert "The '--strategy' parameter must be --strategies NAME [NAME ...]" in line
    assert "Got '--strategy DRW' instead" in line
    assert not (tmp_path / "cmp").exists()
    # Commas separate names too: each is checked on its own, before anything trains.
    assert main(["compare", "--strategies", "ERM,DRW,Nope", "-o", str(tmp_path / "cmp")]) == 2
    line = _error_line(capsys)
    assert "'Nope: strategy'" in line and "Got 'Nope' instead" in line
    assert not (tmp_path / "cmp" / "ERM").exists()


def test_commands_offer_only_the_flags_they_use(capsys, monkeypatch):
    text = _help("neighbours", capsys, monkeypatch)
    for flag in ("--epochs", "--batch-size", "--lr", "--seed", "--device", "--precision",
                 "--eval-every", "--no-progress"):
        assert flag not in text, flag
    compare = _help("compare", capsys, monkeypatch)
    assert "--strategy " not in compare and "--strategies NAME" in compare
    with pytest.raises(SystemExit) as done:
        main(["neighbours", "-c", "digits", "--strategy", "SMOTE", "--epochs", "3"])
    assert done.value.code == 2
    line = _error_line(capsys)
    assert "unrecognized arguments: --epochs 3" in line
    assert "`tailmix neighbours --help`" in line


def test_no_progress_prints_one_line_an_epoch_and_eval_reads_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "-c", "digits", "--epochs", "3", "--eval-every", "2", *SHORT_RUN,
                 "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if " epoch " in line]
    pattern = (r"ERM: epoch (\d)/3  loss \d+\.\d{4}  train acc \d+\.\d\d  lr [\d.e-]+  "
               r"elapsed \d+\.\ds(  test top-1 (\d+\.\d\d)  bal\. \d+\.\d\d)?")
    found = [re.fullmatch(pattern, line) for line in lines]
    assert all(found), lines
    assert [int(m.group(1)) for m in found] == [1, 2, 3]
    assert [m.group(2) is not None for m in found] == [False, True, True]  # evaluated
    history = [json.loads(r) for r in (out / "history.jsonl").read_text().splitlines()]
    assert [float(m.group(3)) for m in found[1:]] == [round(h["top1"], 2) for h in history[1:]]

    # eval takes the run folder as predict does; --checkpoint picks the file.
    final = json.loads((out / "metrics.json").read_text())
    for argv in ([str(out)], [str(out), "--checkpoint", "best"],
                 [str(out / "checkpoints" / "last.pt")]):
        assert main(["eval", *argv, "--device", "cpu"]) == 0
        shown = json.loads(capsys.readouterr().out)
        epoch = final["best"]["epoch"] if "best" in argv else 3
        assert shown["epoch"] == epoch, argv
        if epoch == 3:
            assert shown["top1"] == final["final"]["top1"]
    assert main(["eval", str(out), "--checkpoint", "first"]) == 2
    assert "The '--checkpoint' parameter must be one of 'last', 'best'" in _error_line(capsys)
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "The 'RUN' parameter must be a run folder" in _error_line(capsys)


def test_progress_without_a_terminal_logs_each_epoch():
    """The bar is asked for, but there is no terminal (as under a test runner or a pipe):
    one line an epoch through the run's log."""
    from tailmix.pipeline.callbacks import Progress, TrainState

    lines: list[str] = []
    progress = Progress(label="DRW", bar=True, log=lines.append)
    state = TrainState(model=None, epochs=2, snapshot=dict)
    progress.on_fit_start(state)
    assert progress.bar is None
    for epoch in (1, 2):
        row = {"epoch": epoch, "lr": 0.1, "train_loss": 1.0 / epoch, "train_acc": 50.0}
        if epoch == 2:
            row.update(val_top1=70.0, val_balanced_accuracy=65.5)
        progress.on_epoch_end(state, row)
    progress.on_fit_end(state)
    assert [line.split("  elapsed")[0] for line in lines] == [
        "DRW: epoch 1/2  loss 1.0000  train acc 50.00  lr 0.1",
        "DRW: epoch 2/2  loss 0.5000  train acc 50.00  lr 0.1"]
    assert lines[1].endswith("val top-1 70.00  bal. 65.50")


# --------------------------------------------------------------------------- plugins


def _readme_extension(folder: Path) -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Extending tailmix\n")
    section = text[start:text.find("\n## ", start + 1)]
    (module,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (config,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    (folder / "my_extensions.py").write_text(module)
    (folder / "my_run.yaml").write_text(config)


def _command(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The installed `tailmix` console command (not `python -m`), in ``cwd``."""
    tailmix = Path(sys.executable).parent / "tailmix"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(tailmix), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_tailmix_command_finds_plugins_in_the_working_folder(tmp_path):
    _readme_extension(tmp_path)
    done = _command(["check", "my_run.yaml"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "my_run.yaml: valid (MAMix-DRW on digits, 3 epochs)" in done.stdout
    # A plugin named with --set, over a config that names none.
    done = _command(["check", "digits", "--set", "plugins=[my_extensions]",
                     "--set", "model.arch=tiny_net"], tmp_path)
    assert done.returncode == 0, done.stderr
    # Without the plugin the name is unknown: the working folder is what made it work.
    done = _command(["check", "digits", "--set", "model.arch=tiny_net"], tmp_path)
    assert done.returncode == 2 and "tiny_net" in done.stderr
    done = _command(["train", "-c", "my_run.yaml", "--epochs", "1", "--out", "run",
                     "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^MAMix-DRW: epoch 1/1  loss ", done.stdout, flags=re.M)
    record = (tmp_path / "run" / "config.yaml").read_text()
    assert "smoothed_ce" in record and "tiny_net" in record
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1
