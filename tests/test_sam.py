"""SAM and ImbSAM as gradient rules: the perturbed step against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tailmix._validation import ParameterError
from tailmix.sam import SAM, Plain


class Quadratic(nn.Module):
    """Per-class loss terms of two weights: class 0 (head) ``0.5 w0^2 + w0 w1``, class 1
    (tail) ``1.5 w1^2``."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))

    def terms(self):
        w0, w1 = self.w
        return torch.stack([0.5 * w0 ** 2 + w0 * w1, 1.5 * w1 ** 2])


def _output(model):
    def make():
        terms = model.terms()
        return SimpleNamespace(loss=terms.sum(), class_terms=terms, recompute=make)
    return make()


def _run(rule, model, epoch=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    opt.zero_grad()
    return rule.backward(_output(model), model, opt, scaler, epoch)


@pytest.mark.parametrize("rho", [0.05, 0.5, 2.0])
def test_sam_takes_the_gradient_at_the_worst_nearby_weights(rho):
    model = Quadratic()
    losses = _run(SAM(rho=rho), model)
    # L = 0.5 w0^2 + w0 w1 + 1.5 w1^2; grad = (w0 + w1, w0 + 3 w1) = (3, 7) at (1, 2)
    g = torch.tensor([3.0, 7.0])
    e = rho * g / math.sqrt(3.0 ** 2 + 7.0 ** 2)
    w0, w1 = torch.tensor([1.0, 2.0]) + e
    expected = torch.stack([w0 + w1, w0 + 3 * w1])
    torch.testing.assert_close(model.w.grad, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.0, 2.0]))  # restored
    first = 0.5 + 2.0 + 6.0
    second = 0.5 * w0 ** 2 + w0 * w1 + 1.5 * w1 ** 2
    torch.testing.assert_close(losses, torch.stack([torch.tensor(first), second]))


def test_imbsam_perturbs_only_the_tail_classes_share():
    model = Quadratic()
    rho = 0.3
    _run(SAM(rho=rho, tail=torch.tensor([False, True])), model)
    # head share at w: grad (w0 + w1, w0) = (3, 1); tail share: grad (0, 3 w1) = (0, 6),
    # so e = (0, rho) and the tail gradient at w + e is (0, 3 (2 + rho)).
    expected = torch.tensor([3.0, 1.0 + 3.0 * (2.0 + rho)])
    torch.testing.assert_close(model.w.grad, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.0, 2.0]))


def test_before_its_start_epoch_sam_is_one_plain_pass():
    a, b = Quadratic(), Quadratic()
    _run(SAM(rho=1.0, start_epoch=3), a, epoch=2)
    _run(Plain(), b)
    torch.testing.assert_close(a.w.grad, b.w.grad)
    assert a.w.grad.tolist() == [3.0, 7.0]


def test_the_second_pass_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))

    def make():
        loss = nn.functional.cross_entropy(net(x), y)
        return SimpleNamespace(loss=loss, recompute=make)

    out = make()  # the step's own forward moves the statistics once
    bn = net[1]
    mean, var, tracked = bn.running_mean.clone(), bn.running_var.clone(), \
        bn.num_batches_tracked.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    SAM(rho=0.1).backward(out, net, opt, torch.amp.GradScaler("cpu", enabled=False), 0)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert torch.equal(bn.num_batches_tracked, tracked) and bn.momentum == 0.1


def test_a_non_finite_gradient_gives_no_perturbation_and_a_non_finite_loss_is_reported():
    model = Quadratic()
    calls = []

    def make():
        calls.append(1)
        terms = model.terms() * float("inf")
        return SimpleNamespace(loss=terms.sum(), recompute=make)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = SAM(rho=1.0).backward(make(), model, opt,
                                   torch.amp.GradScaler("cpu", enabled=False), 0)
    assert not bool(torch.isfinite(losses).all())
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("rho", [0, -0.1, float("nan"), "big"])
def test_rho_must_be_positive(rho):
    with pytest.raises(ParameterError, match="sam.rho"):
        SAM(rho=rho)


def test_imbsam_needs_a_tail_class_and_a_split_loss():
    with pytest.raises(ParameterError, match="sam.tail_below"):
        SAM(rho=0.1, tail=torch.tensor([False, False]))
    model = Quadratic()
    out = SimpleNamespace(loss=model.terms().sum(), recompute=lambda: None)
    with pytest.raises(ParameterError, match="class_terms"):
        SAM(rho=0.1, tail=torch.tensor([False, True])).backward(
            out, model, torch.optim.SGD(model.parameters(), lr=0.1),
            torch.amp.GradScaler("cpu", enabled=False), 0)


# --------------------------------------------------------------------------- in a run


def _sam_run(strategy="MAMix-DRW", **sam):
    from conftest import digits_config

    from tailmix.pipeline.build import build_run

    cfg = digits_config(epochs=4)
    cfg["strategy"] = strategy
    cfg["sam"] = sam
    return build_run(cfg, None, log=lambda _: None)


def test_a_run_with_imbsam_splits_its_loss_and_learns():
    run = _sam_run("Mixup", rho=0.05, tail_below=20, start=1)
    trainer, counts = run.trainer, run.data.class_counts
    assert isinstance(trainer.gradient, SAM) and trainer.gradient.start_epoch == 1
    assert trainer.gradient.tail.tolist() == [c < 20 for c in counts]
    assert trainer.step.split_classes
    rows = [trainer.train_epoch(e) for e in range(4)]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_sam_changes_the_steps_only_from_its_start():
    plain, sam = _sam_run(), _sam_run(rho=0.5, start=1)
    assert isinstance(plain.trainer.gradient, Plain)
    first = [r.trainer.train_epoch(0)["train_loss"] for r in (plain, sam)]
    assert first[0] == first[1]  # epoch 0: both plain, bit for bit
    second = [r.trainer.train_epoch(1)["train_loss"] for r in (plain, sam)]
    assert second[0] != second[1]


@pytest.mark.parametrize("sam, key", [
    ({"rho": 0}, "sam.rho"), ({"rho": float("nan")}, "sam.rho"),
    ({"rho": 0.1, "start": 4}, "sam.start"), ({"rho": 0.1, "start": 1.5}, "sam.start"),
    ({"rho": 0.1, "tail_below": -1}, "sam.tail_below"),
    ({"rho": 0.1, "tail_below": 1}, "sam.tail_below"),  # no class that small
    ({"tail_below": 30}, "sam.rho"), ({"start": 0.5}, "sam.rho"),  # SAM is off
])
def test_bad_sam_settings_name_the_key(sam, key):
    with pytest.raises(ParameterError) as info:
        _sam_run(**sam)
    assert info.value.name == key


def test_sam_under_loss_scaling_gives_the_unscaled_gradient():
    model, reference = Quadratic(), Quadratic()
    _run(SAM(rho=0.5), reference)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt.zero_grad()
    SAM(rho=0.5).backward(_output(model), model, opt, scaler, 0)
    scaler.unscale_(opt)
    torch.testing.assert_close(model.w.grad, reference.w.grad, rtol=1e-6, atol=1e-6)


def test_sam_stops_at_its_end_epoch():
    a, b = Quadratic(), Quadratic()
    _run(SAM(rho=1.0, end_epoch=3), a, epoch=3)
    _run(Plain(), b)
    torch.testing.assert_close(a.w.grad, b.w.grad)


def test_a_crt_stage_after_sam_and_consistency_is_plain():
    from conftest import digits_config

    from tailmix.pipeline.build import build_run

    cfg = digits_config(epochs=3)
    cfg["strategy"] = "Mixup"
    cfg["sam"] = {"rho": 0.05}
    cfg["consistency"] = {"weight": 0.5}
    cfg["crt"] = {"epochs": 1, "lr": 0.1}
    run = build_run(cfg, None, log=lambda _: None)
    assert run.trainer.gradient.end_epoch == 3
    after = run.trainer.step.after
    assert after.consistency is None and not after.split_classes
