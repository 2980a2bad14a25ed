"""Held-out validation (selection, early stopping, tau), and the training subset's identity."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import tailmix
from tailmix._validation import ParameterError
from tailmix.data import from_arrays, prepare_dataset
from tailmix.data.profiles import class_counts, numpy_shuffle_indices, subset_digest
from tailmix.pipeline.build import load_data
from tailmix.pipeline.callbacks import Evaluator
from tailmix.pipeline.config import resolve


def config(**over) -> dict:
    cfg = {"dataset": {"name": "digits", "profile": "exp", "ratio": 10, "n_max": 100,
                       "validation": {"per_class": 10}},
           "model": {"arch": "small_cnn"}, "strategy": "MAMix-DRW",
           "train": {"epochs": 6, "batch_size": 64, "lr": 0.05, "warmup_epochs": 0,
                     "device": "cpu"},
           "eval": {"every": 1}, "log": {"progress": False}}
    for key, value in over.items():
        cfg[key].update(value)
    return cfg


def test_validation_is_carved_before_the_cut_and_balanced():
    data = load_data(config())
    assert np.bincount(data.val_labels.numpy(), minlength=10).tolist() == [10] * 10
    assert data.class_counts == class_counts("exp", num_classes=10, n_max=100, ratio=10)
    # No image is in both: validation comes out of the pool, the profile cuts the rest.
    from tailmix.data import load_source

    raw = load_source("digits")
    train = {raw.train_x[i].tobytes() for i in data.source_indices}
    val = {x.tobytes() for x in data.val_inputs.numpy()}
    assert not train & val
    # Following the profile: round(share * n_c) of each class, at least one.
    share = load_data(config(dataset={"validation": {"share": 0.1}}))
    expect = [max(1, round(0.1 * n)) for n in share.class_counts]
    assert np.bincount(share.val_labels.numpy(), minlength=10).tolist() == expect
    # With the source's own counts ('original'), a share of each class's images.
    original = load_data(config(dataset={"profile": "original", "n_max": None,
                                         "validation": {"share": 0.2}}))
    pool = np.bincount(original.val_labels.numpy(), minlength=10) + np.array(
        original.class_counts)
    assert np.bincount(original.val_labels.numpy(), minlength=10).tolist() == \
        [max(1, round(0.2 * n)) for n in pool]


def test_validation_errors_name_the_key():
    with pytest.raises(ParameterError, match="'dataset.validation'"):
        resolve(config(dataset={"validation": {"per_class": 5, "share": 0.1}}))
    with pytest.raises(ParameterError, match="'dataset.validation.share'"):
        resolve(config(dataset={"validation": {"share": 1.5}}))
    with pytest.raises(ParameterError, match="'eval.patience'.*dataset.validation"):
        resolve(config(dataset={"validation": None}, eval={"patience": 3}))
    with pytest.raises(ParameterError, match="'dataset.profile'.*after the validation"):
        load_data(config(dataset={"n_max": 128, "validation": {"per_class": 20}}))
    with pytest.raises(ParameterError, match="'dataset.validation.per_class'"):
        load_data(config(dataset={"validation": {"per_class": 200}}))


@pytest.mark.slow
def test_a_run_selects_on_validation_and_reads_the_test_set_once(tmp_path, monkeypatch):
    calls = []
    evaluate = Evaluator.evaluate

    def counted(self, model, **kw):
        calls.append(kw)
        return evaluate(self, model, **kw)

    monkeypatch.setattr(Evaluator, "evaluate", counted)
    m = tailmix.train(config(), tmp_path / "run", log=lambda _: None)
    # the final network and the selected one, once each, at the end (one network, read
    # once, when the last epoch is the one selected)
    assert len(calls) == 1 + (m["selected"]["epoch"] != m["final"]["epoch"])
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text()
               .splitlines()]
    assert all("top1" not in h and "val_balanced_accuracy" in h for h in history)
    best = max(history, key=lambda h: (h["val_balanced_accuracy"], -h["epoch"]))
    assert m["selected"]["epoch"] == best["epoch"]
    assert m["validation"]["selected"]["balanced_accuracy"] == \
        pytest.approx(best["val_balanced_accuracy"])
    assert m["final"]["epoch"] == 6 and "best" not in m
    assert m["final"]["posthoc_la"]["tau"] in Evaluator.TAUS
    assert m["validation_images"] == 100
    report = (tmp_path / "run" / "metrics.json").read_text()
    assert json.loads(report)["selected"]["top1"] == m["selected"]["top1"]
    from tailmix.tools.report import build_report

    _, md = build_report([tmp_path / "run"], tmp_path / "report")
    assert "epoch chosen on the validation set" in md.read_text()


@pytest.mark.slow
def test_resumed_run_keeps_its_selection(tmp_path):
    first = tailmix.train(config(), tmp_path / "a", log=lambda _: None)
    from tailmix.pipeline.build import build_run

    run = build_run(config(), tmp_path / "b", log=lambda _: None)
    run.trainer.epochs = 3  # as if stopped after three epochs
    run.fit()
    resumed = tailmix.train(config(), tmp_path / "b", resume=True, log=lambda _: None)
    assert resumed["selected"] == first["selected"]
    assert resumed["final"]["top1"] == first["final"]["top1"]


@pytest.mark.slow
def test_early_stopping_after_patience(tmp_path):
    # An lr too small to change anything: no evaluation after the first improves.
    m = tailmix.train(config(train={"lr": 1e-9, "epochs": 10}, eval={"patience": 2}),
                      tmp_path / "run", log=lambda _: None)
    history = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(history) < 10 and m["final"]["epoch"] == len(history)
    assert m["selected"]["epoch"] <= len(history) - 2


def test_subset_hash_identifies_the_training_images():
    a, b = load_data(config()), load_data(config())
    assert a.subset_sha256 == b.subset_sha256
    expect = hashlib.sha256(np.sort(a.source_indices).astype("<i8").tobytes()).hexdigest()
    assert a.subset_sha256 == expect
    other = load_data(config(dataset={"data_seed": 1}))
    assert other.subset_sha256 != a.subset_sha256
    assert subset_digest([3, 1, 2]) == subset_digest(np.array([1, 2, 3]))


def _ldam_rule(labels: np.ndarray, num_classes: int, imb_factor: float, seed: int):
    """The LDAM-DRW code's subset, written from its description: counts
    int(img_max * imb_factor ** (c / (C - 1))), NumPy's global generator seeded once, then
    each class's indices shuffled in place and the first n_c kept."""
    img_max = len(labels) / num_classes
    counts = [int(img_max * (imb_factor ** (c / (num_classes - 1.0))))
              for c in range(num_classes)]
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        chosen = []
        for the_class, n in zip(np.unique(labels), counts, strict=True):
            idx = np.where(labels == the_class)[0]
            np.random.shuffle(idx)
            chosen.extend(idx[:n].tolist())
    finally:
        np.random.set_state(state)
    return counts, sorted(chosen)


@pytest.mark.parametrize("num_classes, per_class, ratio, seed", [
    (10, 500, 100, 0), (10, 500, 10, 3), (100, 50, 50, 0), (10, 300, 200, 7),
])
def test_ldam_drw_profile_matches_the_rule(num_classes, per_class, ratio, seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    x = np.zeros((len(labels), 1, 2, 2), np.uint8)
    raw = from_arrays(x, labels, x[:num_classes], np.arange(num_classes))
    data = prepare_dataset(raw, profile="ldam_drw", ratio=ratio, data_seed=seed)
    counts, chosen = _ldam_rule(labels, num_classes, 1 / ratio, seed)
    assert data.class_counts == counts
    assert data.source_indices.tolist() == chosen
    assert numpy_shuffle_indices(labels, counts, seed=seed).tolist() == chosen


def test_data_without_a_test_set_trains_and_selects_on_validation(tmp_path):
    """``from_arrays`` without test arrays: no test set, so nothing is evaluated but the
    validation split (the seam the scikit-learn estimator builds its run through); a source
    that finds no test images is still refused."""
    from tailmix.pipeline.build import build_run

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype("float32")
    y = (x[:, 0] + 0.3 * rng.normal(size=240) > 0.6).astype(np.int64)
    with pytest.raises(ParameterError) as info:
        from_arrays(x, y, x[:5])
    assert info.value.name == "test_y"
    cfg = {"dataset": {"name": "arrays", "profile": "original"}, "model": {"arch": "mlp"},
           "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "device": "cpu"},
           "log": {"progress": False}}
    run = build_run(cfg, None, data=from_arrays(x, y), log=lambda _: None)
    assert not run.data.has_test
    assert not any(isinstance(c, Evaluator) for c in run.trainer.callbacks)
    result = run.fit()
    assert "final" not in result and len(run.trainer.state.history) == 3
    assert run.trainer.state.selected_state is None
    cfg["dataset"]["validation"] = {"per_class": 15}
    cfg["eval"] = {"every": 1}
    run = build_run(cfg, tmp_path / "run", data=from_arrays(x, y), log=lambda _: None)
    result = run.fit()
    assert "final" not in result and result["selected"]["epoch"] in (1, 2, 3)
    chosen = result["selected"]["epoch"]
    assert result["validation"]["selected"]["balanced_accuracy"] == max(
        h["val_balanced_accuracy"] for h in run.trainer.state.history)
    assert run.trainer.state.selected_state is not None
    assert run.trainer.state.best["epoch"] == chosen
    with pytest.raises(ParameterError, match="test set of at least one"):
        prepare_dataset(from_arrays(x, y, x[:0], y[:0]), profile="original")
