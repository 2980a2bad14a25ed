"""A named strategy's own settings: defaults under the run's config; the cRT stage added to
a finished run."""

from __future__ import annotations

import math

import pytest

from tailmix._validation import ParameterError
from tailmix.pipeline.config import resolve_config
from tailmix.pipeline.engine import TIMINGS
from tailmix.pipeline.strategies import Strategy, register_strategy
from tailmix.registry import STRATEGIES


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

    from tailmix.pipeline.build import build_run

    # No lr steps, so DRW stays at epoch 2 and the two epochs trained are unweighted.
    cfg = digits_config(epochs=3, milestones=[], lr_factors=[])
    cfg["strategy"] = recipe
    cfg["augment"] = {"cutout": 2}  # digits are 8 x 8
    run = build_run(cfg, None, log=lambda _: None)
    step = run.trainer.step
    assert step.mixer.pool is not None and step.mixer.input_mode == "either"
    assert type(run.data.augment.policy).__name__ == "AutoAugment"
    rows = [run.trainer.train_epoch(e) for e in range(2)]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[1]["train_loss"] < rows[0]["train_loss"]


def test_crt_after_a_finished_run_is_the_run_trained_with_crt_from_the_start(tmp_path):
    """cRT starts after the main epochs, which it leaves as they are: a finished run
    resumed with ``crt`` added (same strategy, seed and epochs) ends where the run trained
    with ``crt`` from the start ends, to the last digit."""
    import shutil

    from conftest import digits_config

    from tailmix import train
    from tailmix.pipeline.callbacks import read_history

    plain = digits_config(epochs=4)  # evaluated every 2 epochs: at 4 with or without cRT
    plain["strategy"] = "MAMix-DRW"
    with_crt = {**plain, "crt": {"epochs": 2, "lr": 0.1}}
    train(plain, tmp_path / "plain", log=lambda _: None)
    whole = train(with_crt, tmp_path / "whole", log=lambda _: None)
    shutil.copytree(tmp_path / "plain", tmp_path / "after")  # as README says: a copy
    with pytest.raises(ParameterError, match=r"crt\.epochs: 0 in the checkpoint, 2 now"):
        train(with_crt, tmp_path / "after", resume=True, log=lambda _: None)  # asked for
    after = train(with_crt, tmp_path / "after", resume=True, allow_changes=True,
                  log=lambda _: None)
    assert after["final"] == whole["final"] and after["best"] == whole["best"]

    def rows(name):  # the history without its timings
        return [{k: v for k, v in row.items() if k not in TIMINGS}
                for row in read_history(tmp_path / name)]

    # The change is recorded on the row of the epoch it was resumed after.
    after_rows = rows("after")
    assert after_rows[3].pop("config_changes") == {"crt.epochs": [0, 2], "crt.lr": [None, 0.1]}
    assert after_rows == rows("whole") and len(after_rows) == 6
    assert after_rows[:4] == rows("plain")


# name -> (the suite block it was measured by, that block's strategy, the settings the name
# sets in place of the block's overrides)
_NAMED = {
    "MAMix-DRW-AA": ("autoaug", "MAMix-DRW", {"augment": ("policy", "cutout")}),
    "MAMix-DRW-AA-SimSiam": ("consistency", "MAMix-DRW-AA", {"consistency": ("weight",)}),
}


@pytest.mark.parametrize("name", list(_NAMED))
def test_a_named_recipe_is_its_measured_200_epoch_composition(tmp_path, name):
    """The name resolves to the config of the two suite cells it was measured by (a named
    strategy with overrides), the strategy's name aside."""
    from pathlib import Path

    from tailmix.tools.bench import load_suite

    tag, measured_as, settings = _NAMED[name]
    suite = load_suite(Path(__file__).resolve().parents[1] / "benchmarks" / "suites"
                       / "cifar10_lt_cpu200.yaml", data_root=str(tmp_path))
    measured = [c for c in suite.cells if c.tag == tag]
    assert [c.seed for c in measured] == [0, 1]
    assert {c.strategy for c in measured} == {measured_as}
    for cell in measured:
        tagged = resolve_config(suite.config(cell))
        named = suite.config(cell)
        named["strategy"] = name
        for section, keys in settings.items():
            for key in keys:
                del named[section][key]
        named = resolve_config(named)
        assert all(named[section] == tagged[section] for section in settings)
        assert {**named, "strategy": measured_as} == tagged


@pytest.mark.parametrize(("name", "spelled_as"), [
    ("MAMix-DRW-AA", {"strategy": "MAMix-DRW", "augment": {"policy": "autoaugment"}}),
    ("MAMix-DRW-AA-SimSiam", {"strategy": "MAMix-DRW-AA", "consistency": {"weight": 1.0}}),
])
def test_a_named_recipe_trains_as_its_overrides_do(tmp_path, name, spelled_as):
    """The same run, to the last digit, whether the recipe is named or spelled out."""
    from conftest import digits_config

    from tailmix import train
    from tailmix.pipeline.callbacks import read_history

    named = digits_config(epochs=2)
    named["strategy"] = name
    named["augment"] = {"cutout": 2}  # digits are 8 x 8
    spelled = {**named, **spelled_as}
    spelled["augment"] = {**spelled.get("augment", {}), "cutout": 2}
    a = train(spelled, tmp_path / "spelled", log=lambda _: None)
    b = train(named, tmp_path / "named", log=lambda _: None)
    assert a["final"] == b["final"]

    def rows(name):
        return [{k: v for k, v in row.items() if k not in TIMINGS}
                for row in read_history(tmp_path / name)]

    assert rows("spelled") == rows("named") and len(rows("named")) == 2


def test_a_cutout_hole_as_large_as_the_images_is_refused_before_training(tmp_path):
    """The recipe's 16 x 16 hole would blank 8 x 8 digits at every step: a clean error
    naming the parameter, before any epoch is trained."""
    from conftest import digits_config

    from tailmix import train
    from tailmix._validation import ParameterError

    cfg = digits_config(epochs=2)
    cfg["strategy"] = "MAMix-DRW-AA"
    with pytest.raises(ParameterError, match=r"augment\.cutout.*smaller than the 8 x 8 "
                                             r"images.*Got 16"):
        train(cfg, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "history.jsonl").exists()
    cfg["augment"] = {"cutout": 7}
    train(cfg, tmp_path / "ok", log=lambda _: None)
