"""Gradient accumulation: ``train.accumulate: k`` micro-batches make the update of one batch
k times larger, with class weights, SAM and ImbSAM (two processes: tests/test_distributed.py);
what differs with batch-norm and mixing is stated in the Trainer's notes."""

import numpy as np
import pytest
import torch
from torch import nn

from tailmix._validation import ParameterError
from tailmix.data import from_arrays
from tailmix.pipeline.build import build_run, train


def _data():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(4, 12))
    counts = [120, 60, 30, 14]  # 224 examples: 7 batches of 32, 28 of 8

    def sample(sizes):
        y = np.repeat(np.arange(4), sizes)
        return (centres[y] + rng.normal(size=(len(y), 12))).astype(np.float32), y

    x, y = sample(counts)
    tx, ty = sample([30] * 4)
    return from_arrays(x, y, tx, ty, name="blobs")


def _config(strategy: str, batch_size: int, accumulate: int, **sections) -> dict:
    return {"dataset": {"name": "arrays", "profile": "original"}, "model": {"arch": "mlp"},
            "strategy": strategy,
            "train": {"epochs": 2, "batch_size": batch_size, "accumulate": accumulate,
                      "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "warmup_epochs": 0,
                      "milestones": [], "lr_factors": [], "precision": "fp32",
                      "device": "cpu"},
            "eval": {"every": 2, "margins": False},
            "log": {"progress": False, "checkpoint_best": False}, **sections}


def _net(batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm1d(32)] if batchnorm else []
    return nn.Sequential(nn.Linear(12, 32), *norm, nn.ReLU(), nn.Linear(32, 4))


def _weights(cfg: dict, tmp_path, name: str, *, batchnorm: bool = False) -> dict:
    run = build_run(cfg, tmp_path / name, data=_data(), model=_net(batchnorm),
                    log=lambda _: None)
    run.fit()
    return {k: v.clone() for k, v in run.trainer.model.state_dict().items()}


def _gap(a: dict, b: dict) -> float:
    """The largest difference of the float tensors (batch-norm's step counters aside)."""
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())


# Tolerance: the same float32 sums in another order (four micro-batch sums against one),
# carried through 14 momentum steps; 1e-5 is about 100 times the gaps measured.
TOL = 1e-5


@pytest.mark.parametrize("sections", [{}, {"sam": {"rho": 0.05}},
                                      {"sam": {"rho": 0.05, "tail_below": 40}}],
                         ids=["plain", "sam", "imbsam"])
def test_four_micro_batches_step_like_one_batch_with_class_weights(tmp_path, sections):
    """Class-balanced weights from the start: each micro-batch's loss is a weighted mean
    with its own normaliser, so the micro-batches are weighted by their normalisers."""
    big = _weights(_config("CB", 32, 1, **sections), tmp_path, "big")
    small = _weights(_config("CB", 8, 4, **sections), tmp_path, "small")
    assert _gap(big, small) < TOL, _gap(big, small)
    alone = _weights(_config("CB", 8, 1, **sections), tmp_path, "alone")
    assert _gap(big, alone) > 1e-3  # a batch of 8 alone steps elsewhere


def test_weighting_by_size_alone_would_miss_the_class_weights(tmp_path, monkeypatch):
    """The check above can fail: with every micro-batch weighted by its size (the
    normaliser of unweighted losses), the class-weighted update is not the big batch's."""
    from tailmix.pipeline import steps

    big = _weights(_config("CB", 32, 1), tmp_path, "big")
    forward = steps.MixStep.forward

    def sized(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out.norm = None
        return out

    monkeypatch.setattr(steps.MixStep, "forward", sized)
    small = _weights(_config("CB", 8, 4), tmp_path, "small")
    assert _gap(big, small) > 100 * TOL


def test_a_ragged_update_and_a_ragged_epoch(tmp_path):
    """224 examples in micro-batches of 16, three an update: 14 micro-batches make four
    updates of three and one of two, as batches of 48 make four of 48 and one of 32."""
    big = _weights(_config("ERM", 48, 1), tmp_path, "big")
    small = _weights(_config("ERM", 16, 3), tmp_path, "small")
    assert _gap(big, small) < TOL, _gap(big, small)


def test_batchnorm_normalises_each_micro_batch_so_the_runs_differ(tmp_path):
    big = _weights(_config("ERM", 32, 1), tmp_path, "big", batchnorm=True)
    small = _weights(_config("ERM", 8, 4), tmp_path, "small", batchnorm=True)
    assert _gap(big, small) > 100 * TOL, _gap(big, small)  # 0.28 measured


def test_mixing_runs_accumulate_and_learn(tmp_path):
    cfg = _config("MAMix-DRW", 16, 4)
    cfg["train"].update(epochs=12, lr=0.05)
    cfg["eval"]["every"] = 12
    result = train(cfg, tmp_path / "run", data=_data(), model=_net())
    assert result["final"]["balanced_accuracy"] > 90


def test_accumulate_is_checked(tmp_path):
    with pytest.raises(ParameterError, match="train.accumulate"):
        train(_config("ERM", 8, 0), tmp_path / "zero", data=_data(), model=_net())
    with pytest.raises(ParameterError, match="train.accumulate"):
        train(_config("ERM", 8, 1.5), tmp_path / "share", data=_data(), model=_net())


def test_weights_normalised_by_rows_accumulate_like_one_batch(tmp_path):
    """``weights.normalise: rows`` (the weights scale the loss): each micro-batch's
    normaliser is its number of rows, and the update is still the big batch's."""
    rows = {"weights": {"normalise": "rows"}}
    big = _weights(_config("CB", 32, 1, **rows), tmp_path, "big")
    small = _weights(_config("CB", 8, 4, **rows), tmp_path, "small")
    assert _gap(big, small) < TOL, _gap(big, small)
    by_mass = _weights(_config("CB", 32, 1), tmp_path, "mass")
    assert _gap(big, by_mass) > 1e-3  # the knob changes the training
