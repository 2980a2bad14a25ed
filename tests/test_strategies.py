"""Every named strategy trains through the one loop; mixing pays off on long-tailed digits."""

import json
import statistics

import pytest
from conftest import digits_config

from tailmix.engine import Trainer, train
from tailmix.strategies import STRATEGIES, compose


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_trains_two_epochs_and_writes_metrics(tmp_path, name):
    cfg = digits_config(epochs=2)
    cfg["strategy"] = name
    if name == "DeepSMOTE":
        cfg["generative"] = {"ae_epochs": 2}  # the autoencoder is tested on its own
    if name == "M2m":
        cfg["generative"] = {"warmup_epochs": 1}  # one epoch of ERM, then translation
    result = train(cfg, tmp_path / name)
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["strategy"] == name
    assert 0 <= result["final"]["top1"] <= 100
    hist = (tmp_path / name / "history.jsonl").read_text().splitlines()
    assert len(hist) == 2
    assert all(json.loads(h)["train_loss"] > 0 for h in hist)


def test_overrides_compose_with_the_strategy():
    cfg = digits_config()
    cfg["strategy"] = "MAMix-DRW"
    cfg["mixer"] = {"q": -0.5, "input_mode": "cutmix"}
    cfg["loss"] = {"name": "focal", "gamma": 2.0}
    comp = compose(cfg | {"model": {"arch": "small_cnn", "head": None}})
    assert comp["mixer"] == {"preset": "mamix", "q": -0.5, "input_mode": "cutmix"}
    assert comp["loss"] == {"name": "focal", "gamma": 2.0}
    assert comp["weights"]["name"] == "drw"
    from tailmix.config import resolve_config

    trainer = Trainer(resolve_config(cfg), None)
    mixer = trainer.parts.mixer
    assert mixer.rule == "mamix" and mixer.rule_params["q"] == -0.5
    assert mixer.input_mode == "cutmix"


def test_mixer_can_be_switched_off_and_spelled_from_knobs():
    cfg = digits_config()
    cfg["strategy"] = "Mixup-DRW"
    cfg["mixer"] = {"preset": "none"}
    assert compose(cfg | {"model": {"arch": "small_cnn", "head": None}})["mixer"] is None
    cfg["mixer"] = {"partner": "random", "lam": "uniform", "rule": "remix"}
    trainer = Trainer(cfg, None)
    assert trainer.parts.mixer.rule == "remix"


@pytest.mark.slow
def test_mamix_drw_beats_erm_on_long_tailed_digits():
    """Averaged over three seeds, MAMix-DRW reaches a higher balanced accuracy than ERM."""
    scores = {}
    for strategy in ("ERM", "MAMix-DRW"):
        accs = []
        for seed in range(3):
            cfg = digits_config(epochs=60, seed=seed, lr=0.05, warmup_epochs=2,
                                weight_decay=5e-4, milestones=[0.8, 0.9],
                                lr_factors=[0.1, 0.01])
            cfg["strategy"] = strategy
            cfg["eval"] = {"every": 60, "margins": False, "many_threshold": 60}
            accs.append(train(cfg, None)["final"]["balanced_accuracy"])
        scores[strategy] = statistics.mean(accs)
    assert scores["MAMix-DRW"] > scores["ERM"] + 0.5, scores
