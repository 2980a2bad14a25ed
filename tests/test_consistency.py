"""The two-view consistency term: its value, its stop-gradient, and a run with it."""

from __future__ import annotations

import pytest
import torch

from tailmix._validation import ParameterError
from tailmix.consistency import TwoViewTerm, negative_cosine


def test_negative_cosine_values():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    assert negative_cosine(p, z).item() == pytest.approx(0.0)  # cos 1 and -1
    value = negative_cosine(torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]]))
    assert value.item() == pytest.approx(-24 / 25)


def test_the_target_side_gets_no_gradient():
    p = torch.randn(5, 3, requires_grad=True)
    z = torch.randn(5, 3, requires_grad=True)
    negative_cosine(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_the_term_is_symmetric_and_weighted():
    torch.manual_seed(0)
    term = TwoViewTerm(6, dim=8, weight=1.0)
    f1, f2 = torch.randn(10, 6), torch.randn(10, 6)
    torch.testing.assert_close(term(f1, f2), term(f2, f1))
    half = TwoViewTerm(6, dim=8, weight=0.5)
    half.load_state_dict(term.state_dict())
    torch.testing.assert_close(half(f1, f2), 0.5 * term(f1, f2))
    # identical views: each prediction is compared with its own projection's twin
    assert -1.0 <= term(f1, f1).item() <= 1.0


def _run(tmp_path=None, **consistency):
    from conftest import digits_config

    from tailmix.pipeline.build import build_run

    cfg = digits_config(epochs=3)
    cfg["strategy"] = "Mixup"
    cfg["consistency"] = consistency
    return build_run(cfg, tmp_path, log=lambda _: None)


def test_a_run_trains_the_projector_and_checkpoints_it(tmp_path):
    run = _run(tmp_path / "run", weight=0.5, dim=16)
    trainer = run.trainer
    term = trainer.step.consistency
    assert isinstance(term, TwoViewTerm) and len(trainer.optimizer.param_groups) == 2
    before = {k: v.clone() for k, v in term.state_dict().items()}
    row = trainer.train_epoch(0)
    assert row["train_loss"] == row["train_loss"]  # finite, not NaN
    assert any(not torch.equal(before[k], v) for k, v in term.state_dict().items())
    state = trainer.state_dict()["step"]["consistency"]
    assert all(torch.equal(state[k], v) for k, v in term.state_dict().items())
    # the network alone holds no projector: it predicts and exports without one
    assert not any("projector" in k for k in trainer.model.state_dict())


def test_consistency_settings_are_checked():
    with pytest.raises(ParameterError) as info:
        _run(weight=0)
    assert info.value.name == "consistency.weight"
    from conftest import digits_config

    from tailmix.pipeline.build import build_run

    cfg = digits_config(epochs=3)
    cfg["consistency"] = {"weight": 1.0}
    cfg["sam"] = {"rho": 0.1, "tail_below": 30}
    with pytest.raises(ParameterError, match="sam.tail_below"):
        build_run(cfg, None, log=lambda _: None)
