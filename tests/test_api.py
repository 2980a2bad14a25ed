"""The open engine: specs resolve without data, the trainer takes objects, steps and
callbacks are pluggable, registries and plugins reach the config, and the recorded numbers
do not move."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tailmix._validation import ParameterError
from tailmix.cli import main
from tailmix.pipeline.config import resolve

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def _regression():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import regression
    finally:
        sys.path.pop(0)
    return regression


def test_recorded_digits_numbers_are_unchanged():
    """Every catalogue strategy (and knob settings) on digits: per-epoch losses and final
    metrics equal the record, value for value on a machine of the record's fingerprint (CPU
    capability, torch build, threads), within the cross-machine tolerance elsewhere."""
    regression = _regression()
    record = json.loads(regression.RECORD.read_text())
    assert set(record["cases"]) == set(regression.CASES)
    diffs, how = regression.check_digits(record, regression.digits())
    assert diffs == [], f"compared {how}:\n" + "\n".join(diffs[:20])


def test_the_cross_machine_comparison_still_catches_a_change_of_algorithm():
    """What a machine of another fingerprint compares (lr schedules, first epochs within the
    tolerance) passes the record against itself and fails two deliberate changes: MAMix's q
    from -0.25 to -0.5, and the logit-adjusted loss's tau from 1 to 0.5."""
    regression = _regression()
    record = json.loads(regression.RECORD.read_text())
    elsewhere = {**record, "fingerprint": {**record["fingerprint"], "cpu_capability": "other"}}
    assert regression.check_digits(elsewhere, record["cases"])[0] == []
    for name, change in (("MAMix-DRW", {"mixer": {"q": -0.5}}), ("LA", {"loss": {"tau": 0.5}})):
        cfg = regression.case_config(name)
        cfg.update(change)
        got = {**record["cases"], name: regression.run_config(cfg, name)}
        diffs, how = regression.check_digits(elsewhere, got)
        assert diffs and all(d.startswith(f"/first_epoch/{name}/") for d in diffs), (
            f"{name} with {change}, compared {how}: {diffs}")


def test_spec_resolves_shares_and_validates_components_without_data():
    spec = resolve({"dataset": {"name": "cifar10", "root": str(ROOT)}, "strategy": "MAMix-DRW",
                    "train": {"epochs": 50}})
    assert spec.milestones == (40, 45) and spec.composition.weights["start_epoch"] == 40
    assert spec.composition.mixer == {"preset": "mamix"}
    with pytest.raises(ParameterError, match="'mixer.alpha'"):
        resolve({"strategy": "Mixup", "mixer": {"alpha": -1}})
    with pytest.raises(ParameterError, match="'loss.gama'"):
        resolve({"strategy": "Focal", "loss": {"gama": 2}})
    with pytest.raises(ParameterError, match="'generative.warmup_epochs'"):
        resolve({"strategy": "M2m", "train": {"epochs": 4}, "generative": {"warmup_epochs": 9}})
    # The profile is checked against the source's known size: CIFAR-10 has 5000 a class.
    with pytest.raises(ParameterError, match="'dataset.n_max'"):
        resolve({"dataset": {"name": "cifar10", "root": str(ROOT), "n_max": 6000}})


def test_a_mixer_setting_for_a_strategy_without_a_mixer_names_the_strategy():
    with pytest.raises(ParameterError, match="strategy 'ERM' has no mixer") as err:
        resolve({"strategy": "ERM", "mixer": {"q": -0.5}})
    assert err.value.name == "mixer"
    # Naming a preset composes one.
    assert resolve({"strategy": "ERM", "mixer": {"preset": "mamix", "q": -0.5}}
                   ).composition.mixer == {"preset": "mamix", "q": -0.5}


def test_train_with_no_config_runs_the_dataset_default(tmp_path, capsys):
    out = tmp_path / "run"
    # A short run of the 60-epoch config: its warm-up and milestones would not fit in it.
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--no-progress",
                 "--set", "train.warmup_epochs=0", "--set", "train.milestones=[]",
                 "--set", "train.lr_factors=[]", "--out", str(out)]) == 0
    record = (out / "config.yaml").read_text()
    assert "arch: small_cnn" in record and "n_max: 120" in record
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_check_validates_a_config_by_name_and_refuses_a_bad_one(tmp_path, capsys):
    assert main(["check", "digits"]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: MAMix-DRW\nmixer: {rule: mamixx}\n")
    assert main(["check", str(bad)]) == 2
    assert "tailmix: error:" in capsys.readouterr().err


def test_check_applies_set_before_validating(tmp_path, capsys):
    assert main(["check", "digits", "--set", "strategy=Remix-DRW", "--set", "train.epochs=70"]) == 0
    assert "valid (Remix-DRW on digits, 70 epochs)" in capsys.readouterr().out
    assert main(["check", "digits", "--set", "sam.rho=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tailmix: error:") and "'sam.rho'" in err and "-1" in err
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nbase_config: digits\ngrid:\n  - strategies: [ERM]\n"
                     "    seeds: [0]\n")
    assert main(["check", str(suite), "--set", "train.lr=0.1"]) == 2
    assert "'--set'" in capsys.readouterr().err


def test_plugins_must_import(tmp_path):
    with pytest.raises(ParameterError, match=r"'plugins\[0\]'"):
        resolve({"plugins": ["no_such_tailmix_plugin"]})


def test_trainer_takes_objects_and_any_step(device):
    """A user's own step (here: a plain loss on one-hot targets, counting its calls) runs
    in the trainer with no config at all, and the network learns."""
    from tailmix.pipeline.engine import Trainer
    from tailmix.pipeline.steps import StepOutput
    from tailmix.samplers import build_sampler

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] > 0).long()
    dev = torch.device(device)
    x, y = x.to(dev), y.to(dev)
    model = nn.Linear(8, 2).to(dev)

    class PlainStep:
        calls = 0

        def __call__(self, net, batch):
            PlainStep.calls += 1
            logits = net(x[batch.index])
            target = nn.functional.one_hot(y[batch.index], 2).float()
            return StepOutput(nn.functional.cross_entropy(logits, target), logits, target)

    trainer = Trainer(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                      lr_schedule=lambda epoch, progress: 0.5,
                      sampler=build_sampler("instance", labels=y.cpu()), step=PlainStep(),
                      epochs=3, batch_size=32, seed=0, device=dev)
    rows = [trainer.train_epoch(e) for e in range(3)]
    assert PlainStep.calls == 3 * 8
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["train_acc"] > 90


def test_seed_streams_keep_their_historic_values():
    from tailmix.seeding import derive_seed

    assert derive_seed(3, "batch", epoch=2) == (3 * 1_000_003 + 2 * 7_919 + 104_729)
    assert derive_seed(3, "batch", epoch=2, rank=2) == (3 * 1_000_003 + 2 * 7_919
                                                        + 1_002 * 104_729)
    assert derive_seed(5, "init") == 5 and derive_seed(5, "data") == 5
    assert derive_seed(0, "order", epoch=1) != derive_seed(0, "order", epoch=2)


def test_compare_checks_every_run_before_the_first_trains(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "digits", "--epochs", "10", "--no-progress",
                 "--strategies", "ERM", "MAMix-DRW", "--set", "mixer.rule=mamixx",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tailmix: error:" in err and "ERM: mixer" in err
    assert not out.exists()
