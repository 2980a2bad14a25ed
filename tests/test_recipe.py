"""A named strategy's own settings: defaults under the run's config."""

from __future__ import annotations

import math

import pytest

from tailmix.config import resolve_config
from tailmix.registry import STRATEGIES
from tailmix.strategies import Strategy, register_strategy


@pytest.fixture
def recipe():
    """A strategy with settings of its own, registered for the test only."""
    name = "test-recipe"
    register_strategy(Strategy(
        name, "MAMix-DRW with class-balanced partners, Mixup or CutMix, AutoAugment",
        mixer={"preset": "mamix", "partner": "balanced", "input_mode": "either"},
        weights={"name": "drw", "start_epoch": 0.8},
        settings={"augment": {"policy": "autoaugment", "cutout": 16}}))
    yield name
    STRATEGIES._items.pop(name)
    STRATEGIES._meta.pop(name, None)


def test_a_strategys_settings_are_defaults_under_the_config(recipe):
    base = resolve_config({"strategy": recipe})
    assert base["augment"]["policy"] == "autoaugment" and base["augment"]["cutout"] == 16
    mine = resolve_config({"strategy": recipe, "augment": {"cutout": 0}})
    assert mine["augment"] == {**base["augment"], "cutout": 0}
    assert resolve_config({"strategy": "MAMix-DRW"})["augment"]["policy"] is None


def test_a_strategy_with_settings_trains_end_to_end(recipe):
    from conftest import digits_config

    from tailmix.build import build_run

    cfg = digits_config(epochs=3)
    cfg["strategy"] = recipe
    cfg["augment"] = {"cutout": 2}  # digits are 8 x 8
    run = build_run(cfg, None, log=lambda _: None)
    step = run.trainer.step
    assert step.mixer.pool is not None and step.mixer.input_mode == "either"
    assert type(run.data.augment.policy).__name__ == "AutoAugment"
    rows = [run.trainer.train_epoch(e) for e in range(2)]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
