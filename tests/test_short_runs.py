"""Schedules that scale: every shipped config resolves and trains at any length, keeps its
own schedule at its own length, and refuses only values the config wrote that cannot fit."""

import json
from pathlib import Path

import pytest
import torch
from conftest import DEVICE
from torch import nn

from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.pipeline.config import load_config_file, resolve
from tailmix.pipeline.shipped import config_names
from tailmix.registry import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]


def _shipped(name: str, *, epochs: int | None = None, strategy: str | None = None) -> dict:
    cfg = load_config_file(name)
    cfg["dataset"]["root"] = str(ROOT)  # resolve reads no data; a root must only exist
    if epochs is not None:
        cfg["train"]["epochs"] = epochs
    if strategy is not None:
        cfg["strategy"] = strategy
    return cfg


# A shipped config's own generative section with a strategy that cannot take it: the M2m
# config's translation needs a linear head, LDAM's is a cosine head. Not a schedule matter.
_INCOMPATIBLE = {("cifar10_lt_m2m", "LDAM-DRW"): "model.head",
                 # CMO-DRW's loss takes its targets by source, which M2m's slots would change
                 ("cifar10_lt_m2m", "CMO-DRW"): "weights.normalise"}


# Resolving builds every component on the config's class counts: about half a second a
# strategy for the 8,142 classes of iNaturalist, so the large releases take two lengths.
_LARGE = ("imagenet_lt", "places_lt", "inat2018")


@pytest.mark.parametrize("name", config_names())
def test_every_shipped_config_resolves_at_any_length_for_every_strategy(name):
    for epochs in (1, 3) if name in _LARGE else (1, 2, 3, 5):
        for strategy in STRATEGIES.names():
            cfg = _shipped(name, epochs=epochs, strategy=strategy)
            if (name, strategy) in _INCOMPATIBLE:
                with pytest.raises(ParameterError) as err:
                    resolve(cfg)
                assert err.value.name == _INCOMPATIBLE[name, strategy]
                continue
            spec = resolve(cfg)
            t = spec.train
            assert t["warmup_epochs"] == 0  # no warm-up under 10 epochs
            assert all(1 <= m < epochs for m in spec.milestones)
            assert list(spec.milestones) == sorted(set(spec.milestones))
            start = spec.composition.weights.get("start_epoch")
            if start is not None:
                assert 0 <= start < epochs
                drops = [m for m, f in zip(spec.milestones, t["lr_factors"], strict=True)
                         if f <= 0.01]
                if spec.composition.weights["name"] == "drw" and drops:
                    assert start < drops[0], (name, epochs, strategy)
            generative = spec.composition.generative or {}
            if generative.get("name") == "m2m":
                assert generative["warmup_epochs"] == max(1, epochs - 1) or \
                    1 <= generative["warmup_epochs"] < epochs


@pytest.mark.parametrize("name, epochs, warmup, milestones, factors, drw, m2m", [
    ("cifar10_lt", None, 5, (160, 180), [0.01, 0.0001], 160, None),
    ("cifar100_lt", None, 5, (160, 180), [0.01, 0.0001], 160, None),
    ("cifar10_lt_m2m", None, 5, (160, 180), [0.01, 0.0001], None, 160),
    ("digits", None, 2, (48, 54), [0.1, 0.01], 48, None),
    ("tiny_imagenet_lt", None, 5, (250, 280), [0.01, 0.0001], 250, None),
    ("places_lt", None, 0, (10, 20), [0.1, 0.01], 24, None),
    ("imagenet_lt", None, 5, (), [], 72, None),
    ("inat2018", None, 5, (), [], 72, None),
    ("svhn_lt", None, 5, (160, 180), [0.01, 0.0001], 160, None),
    ("cinic10_lt", None, 5, (160, 180), [0.01, 0.0001], 160, None),
    # the CPU suites' 60-epoch protocol keeps DRW with the x0.01 step (12 epochs after it)
    ("cifar10_lt", 60, 2, (48, 54), [0.01, 0.0001], 48, None),
])
def test_a_shipped_schedule_at_its_own_length_is_what_it_was(name, epochs, warmup,
                                                             milestones, factors, drw, m2m):
    strategy = "M2m" if m2m is not None else "DRW"
    spec = resolve(_shipped(name, epochs=epochs, strategy=strategy))
    assert spec.train["warmup_epochs"] == warmup
    assert spec.milestones == milestones and spec.train["lr_factors"] == factors
    assert spec.composition.weights.get("start_epoch") == drw
    assert (spec.composition.generative or {}).get("warmup_epochs") == m2m
    assert spec.notes == ()


def test_shares_that_meet_on_a_short_run_merge_and_drw_starts_before_the_drop():
    spec = resolve(_shipped("digits", epochs=5, strategy="MAMix-DRW"))
    assert spec.milestones == (4,) and spec.train["lr_factors"] == [0.1]
    assert spec.train["milestones"] == [0.8]  # the recorded config holds what ran
    assert any("merged" in n and "train.milestones[1]" in n for n in spec.notes)
    # 15 epochs of the CIFAR schedule: the x0.01 step at epoch 12 leaves 3 epochs, so DRW
    # starts the epoch before it; an epoch number is kept as written.
    spec = resolve(_shipped("cifar10_lt", epochs=15, strategy="DRW"))
    assert spec.milestones == (12, 14) and spec.composition.weights["start_epoch"] == 11
    assert any(n.startswith("weights.start_epoch: epoch 11") for n in spec.notes)
    cfg = _shipped("cifar10_lt", epochs=15, strategy="DRW")
    cfg["weights"] = {"start_epoch": 12}
    assert resolve(cfg).composition.weights["start_epoch"] == 12
    # A 1-epoch run has no epoch to step at; M2m's is all warm-up.
    spec = resolve(_shipped("cifar10_lt_m2m", epochs=1))
    assert spec.milestones == () and spec.composition.generative["warmup_epochs"] == 1


@pytest.mark.parametrize("key, value, epochs, fix", [
    ("train.warmup_epochs", 9, 4, "--set train.warmup_epochs=N"),
    ("train.milestones", [10, 20], 5, "--set train.milestones="),
    ("generative.warmup_epochs", 9, 4, "--set generative.warmup_epochs=N"),
])
def test_a_written_value_that_cannot_fit_is_refused_with_the_key_that_fixes_it(
        key, value, epochs, fix, capsys):
    args = ["check", "digits", "--set", f"train.epochs={epochs}", "--set",
            f"{key}={json.dumps(value)}"]
    if key.startswith("generative"):
        args += ["--set", "strategy=M2m"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tailmix: error:") and len(err.strip().splitlines()) == 1
    assert key.split(".")[0] in err and fix in err


def test_a_suite_of_a_long_config_checks_at_two_epochs(tmp_path, capsys):
    release = tmp_path / "cifar-10-batches-py"  # located by check, never read
    release.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (release / name).touch()
    suite = tmp_path / "short.yaml"
    suite.write_text(f"name: short\nbase_config: cifar10_lt\ndata_root: {tmp_path}\n"
                     "overrides:\n  train: {epochs: 2}\n"
                     "grid:\n  - strategies: [ERM, DRW, MAMix-DRW, M2m, LDAM-DRW]\n")
    assert main(["check", str(suite)]) == 0
    assert "5 runs, all valid" in capsys.readouterr().out


def _train(args: list[str], out: Path) -> dict:
    assert main(["train", *args, "--no-progress", "--device", DEVICE, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("epochs, strategy", [(1, "ERM"), (2, "ERM"), (3, "MAMix-DRW"),
                                              (5, "MAMix-DRW"), (2, "M2m"), (1, "M2m")])
def test_the_default_config_trains_at_any_length(epochs, strategy, tmp_path, capsys):
    extra = ["--set", "generative.steps=2"] if strategy == "M2m" else []
    m = _train(["--epochs", str(epochs), "--strategy", strategy, *extra], tmp_path / "run")
    assert m["epochs"] == epochs and m["strategy"] == strategy
    history = [json.loads(line) for line in
               (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert history[0]["lr"] == pytest.approx(0.05)  # no warm-up on a short run
    out = capsys.readouterr().out
    assert "data: digits, 10 classes" in out and "imbalance ratio 20" in out


# The README's "Your own model" network.
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU())
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.body(x))


def test_an_own_model_learns_in_three_epochs_of_the_digits_config(tmp_path):
    from tailmix import train

    cfg = _shipped("digits", epochs=3)
    cfg["train"]["device"] = DEVICE
    cfg["log"] = {"progress": False}
    torch.manual_seed(0)
    result = train(cfg, tmp_path / "net", model=Net(), log=lambda line: None)
    assert result["final"]["balanced_accuracy"] > 30
