"""The named recipe: a strategy whose own settings sit under the run's config."""

from __future__ import annotations

import math

from tailmix.config import resolve_config


def test_a_strategys_settings_are_defaults_under_the_config():
    base = resolve_config({"strategy": "tailmix-LT"})
    assert base["augment"]["policy"] == "autoaugment" and base["augment"]["cutout"] == 16
    mine = resolve_config({"strategy": "tailmix-LT", "augment": {"cutout": 0}})
    assert mine["augment"] == {**base["augment"], "cutout": 0}
    assert resolve_config({"strategy": "MAMix-DRW"})["augment"]["policy"] is None


def test_the_recipe_trains_end_to_end():
    from conftest import digits_config

    from tailmix.build import build_run

    cfg = digits_config(epochs=3)
    cfg["strategy"] = "tailmix-LT"
    cfg["augment"] = {"cutout": 2}  # digits are 8 x 8
    run = build_run(cfg, None, log=lambda _: None)
    step = run.trainer.step
    assert step.mixer.pool is not None and step.mixer.input_mode == "either"
    assert type(run.data.augment.policy).__name__ == "AutoAugment"
    rows = [run.trainer.train_epoch(e) for e in range(2)]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
