"""Classifier re-balancing: tau-normalisation, MaxNorm, the cumulative weight schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tailmix._validation import ParameterError
from tailmix.pipeline.callbacks import MaxNorm, tau_normalised
from tailmix.weights import build_weight_schedule, class_balanced_weights


class Net(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(weight))

    def forward(self, x):
        return self.head(x)


@pytest.mark.parametrize("tau, expected", [
    (1.0, [[0.6, 0.8], [0.0, 1.0]]),
    (0.5, [[3 / math.sqrt(5), 4 / math.sqrt(5)], [0.0, 2 / math.sqrt(2)]]),
    (0.0, [[3.0, 4.0], [0.0, 2.0]]),
])
def test_tau_normalisation_scales_rows_and_restores_them(tau, expected):
    net = Net([[3.0, 4.0], [0.0, 2.0]])
    with tau_normalised(net, tau):
        torch.testing.assert_close(net.head.weight.detach(), torch.tensor(expected))
        out = net(torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([[sum(expected[0]), sum(expected[1])]]))
    assert net.head.weight.tolist() == [[3.0, 4.0], [0.0, 2.0]]


def test_maxnorm_projects_long_rows_only():
    net = Net([[3.0, 4.0], [0.0, 0.5]])
    MaxNorm(net, 1.0).on_update(None)  # after each optimiser update
    torch.testing.assert_close(net.head.weight.detach(), torch.tensor([[0.6, 0.8], [0.0, 0.5]]))


def test_a_model_without_a_classifier_weight_is_named():
    with pytest.raises(ParameterError, match="model.head"):
        MaxNorm(nn.Sequential(nn.Linear(2, 2)), 1.0)


def test_cumulative_weights_move_quadratically_to_class_balanced():
    counts = [100, 10]
    schedule = build_weight_schedule("cumulative", class_counts=counts, epochs=10)
    cb = class_balanced_weights(counts)
    assert schedule(0) is None
    for epoch in (1, 5, 9):
        a = (epoch / 10) ** 2
        blend = (1 - a) * torch.ones(2) + a * cb
        torch.testing.assert_close(schedule(epoch), blend * 2 / blend.sum())
    late = build_weight_schedule("cumulative", class_counts=counts, epochs=10, start_epoch=4)
    assert late(3) is None and late(4) is None
    assert late.share(7) == pytest.approx(0.25)


def test_a_run_with_maxnorm_and_tau_norm_reports_both(tmp_path):
    from conftest import digits_config

    from tailmix.pipeline.build import build_run

    cfg = digits_config(epochs=2)
    cfg["model"] = {"arch": "small_cnn", "max_norm": 0.5}
    cfg["eval"] = {**cfg["eval"], "tau_norm": 1.0, "margins": False}
    cfg["weights"] = {"name": "cumulative"}
    run = build_run(cfg, tmp_path / "run", log=lambda _: None)
    result = run.fit()
    norms = run.trainer.model.head.weight.detach().norm(dim=1)
    assert float(norms.max()) <= 0.5 + 1e-6
    tn = result["final"]["tau_norm"]
    assert tn["tau"] == 1.0 and 0 <= tn["top1"] <= 100


@pytest.mark.parametrize("section, key, value", [
    ("model", "max_norm", 0), ("eval", "tau_norm", -1.0), ("augment", "cutout", -2),
    ("augment", "policy", "autoaug"), ("augment", "bins", 1),
])
def test_bad_settings_name_the_key(section, key, value):
    from conftest import digits_config

    from tailmix.pipeline.config import resolve_config

    cfg = digits_config()
    cfg.setdefault(section, {})[key] = value
    with pytest.raises(ParameterError) as info:
        resolve_config(cfg)
    assert info.value.name == f"{section}.{key}"


@pytest.mark.parametrize("key, value", [("max_norm", 1.0), ("tau_norm", 1.0)])
def test_row_scaling_is_refused_on_a_cosine_head_before_training(key, value):
    from conftest import digits_config

    from tailmix.pipeline.build import build_run

    cfg = digits_config(epochs=2)
    cfg["strategy"] = "LDAM-DRW"
    section = "model" if key == "max_norm" else "eval"
    cfg.setdefault(section, {})[key] = value
    if section == "model":
        cfg["model"]["arch"] = "small_cnn"
    with pytest.raises(ParameterError) as info:
        build_run(cfg, None, log=lambda _: None)
    assert info.value.name == f"{section}.{key}"


def test_crt_and_m2m_are_refused_on_a_cosine_head_before_any_data_is_read(capsys):
    """cRT re-trains the head with plain cross-entropy, which would read LDAM's cosines at
    scale 1 instead of s: refused when the config is resolved, as one error line."""
    from conftest import digits_config

    from tailmix.cli import main
    from tailmix.pipeline.config import resolve

    cfg = digits_config(epochs=2)
    cfg["strategy"] = "LDAM-DRW"
    cfg["crt"] = {"epochs": 2}
    with pytest.raises(ParameterError) as info:
        resolve(cfg)
    assert info.value.name == "crt.epochs" and "cosine head" in info.value.expected
    cfg["strategy"] = "DRW"  # a linear head takes cRT
    assert resolve(cfg).config["crt"]["epochs"] == 2
    # M2m's classifier would read bare cosines too: no translation would pass its threshold.
    m2m = digits_config(epochs=4)
    m2m["strategy"], m2m["model"]["head"] = "M2m", "cosine"
    with pytest.raises(ParameterError) as info:
        resolve(m2m)
    assert info.value.name == "model.head" and "M2m" in info.value.expected
    config = str(Path(__file__).parents[1] / "configs" / "digits.yaml")
    assert main(["check", config, "--set", "strategy=LDAM-DRW", "--set", "crt.epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tailmix: error:") and "crt.epochs" in err and len(err.splitlines()) == 1
