"""The benchmark scripts whose figures the results cite."""

import json
import sys
from pathlib import Path

import pytest
from conftest import digits_config

from tailmix import train

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def test_posthoc_sweep_at_tau_0_is_the_final_top1_and_follows_the_formula(tmp_path):
    """tau 0 gives back the run's own final accuracy; tau 1 is metrics.json's post-hoc
    logit adjustment (the same formula, the same checkpoint)."""
    from posthoc_sweep import sweep

    cfg = digits_config(epochs=3)
    cfg["eval"]["posthoc_tau"] = 1.0
    train(cfg, tmp_path)
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    top1 = sweep(tmp_path, (0.0, 1.0), data_root=None)
    assert top1[0.0] == pytest.approx(final["top1"], abs=0.011)
    assert top1[1.0] == pytest.approx(final["posthoc_la"]["top1"], abs=0.011)


def test_posthoc_sweep_of_tau_norm_is_the_runs_own_tau_norm_evaluation(tmp_path):
    """The ``norm`` rule at tau 0 is the run as it is; at the run's ``eval.tau_norm`` it is
    the tau-normalised figure metrics.json holds; the classifier is left as it was."""
    from posthoc_sweep import sweep

    cfg = digits_config(epochs=3)
    cfg["eval"]["tau_norm"] = 1.0
    train(cfg, tmp_path)
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    # tau 0 again after tau 1: the last value kept for key 0.0 is read after the rows were
    # normalised and put back
    top1 = sweep(tmp_path, (0.0, 1.0, 0.0), data_root=None, rule="norm")
    assert top1[0.0] == pytest.approx(final["top1"], abs=0.011)
    assert top1[1.0] == pytest.approx(final["tau_norm"]["top1"], abs=0.011)
