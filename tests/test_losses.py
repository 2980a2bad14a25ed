import math
import os

import pytest
import torch
import torch.nn.functional as F

from tailmix._validation import ParameterError
from tailmix.losses import (
    LDAM,
    LOSSES,
    BalancedSoftmax,
    CrossEntropy,
    Focal,
    LogitAdjusted,
    build_loss,
    posthoc_adjust,
)

DEVICE = torch.device(os.environ.get("TAILMIX_TEST_DEVICE", "cpu"))
CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _neg_log_softmax(row, k):
    """-log softmax(row)[k], written out with math."""
    return -(row[k] - math.log(sum(math.exp(v) for v in row)))


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64, device=DEVICE)


# --- hand-computed values -------------------------------------------------------------------


def test_cross_entropy_hand_values():
    logits = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]
    target = [[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]
    row0 = 0.25 * _neg_log_softmax(logits[0], 0) + 0.75 * _neg_log_softmax(logits[0], 1)
    row1 = _neg_log_softmax(logits[1], 2)
    got = CrossEntropy()(_t(logits), _t(target))
    assert got.item() == pytest.approx((row0 + row1) / 2, abs=1e-12)


def test_cross_entropy_weighted_hand_value():
    logits = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]
    weights = [2.0, 0.5, 1.0]
    target = [[1.0, 0.0, 0.0], [0.0, 0.4, 0.6]]
    numerator = 2.0 * _neg_log_softmax(logits[0], 0) + (
        0.5 * 0.4 * _neg_log_softmax(logits[1], 1) + 1.0 * 0.6 * _neg_log_softmax(logits[1], 2)
    )
    denominator = 2.0 + 0.5 * 0.4 + 1.0 * 0.6
    got = CrossEntropy()(_t(logits), _t(target), _t(weights))
    assert got.item() == pytest.approx(numerator / denominator, abs=1e-12)
    # normalised by the rows instead (the weights scale the loss)
    got = CrossEntropy()(_t(logits), _t(target), _t(weights), normalise="rows")
    assert got.item() == pytest.approx(numerator / 2, abs=1e-12)
    split = CrossEntropy().class_terms(_t(logits), _t(target), _t(weights), normalise="rows")
    assert split.tolist() == pytest.approx(
        [2.0 * _neg_log_softmax(logits[0], 0) / 2,
         0.5 * 0.4 * _neg_log_softmax(logits[1], 1) / 2,
         1.0 * 0.6 * _neg_log_softmax(logits[1], 2) / 2], abs=1e-12)
    with pytest.raises(ParameterError, match="normalise"):
        CrossEntropy()(_t(logits), _t(target), _t(weights), normalise="batch")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rows_normalised_blend_of_weights_is_the_blend_of_the_losses(name):
    """With the loss divided by its rows, the loss under blended class weights
    ``(1 - a) * 1 + a * v`` is exactly ``(1 - a) * plain + a * re-weighted`` (GLMC's
    cumulative blend of its two losses), over random batches, targets and weights."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        b, c = int(torch.randint(2, 9, (1,), generator=gen)), 10
        logits = torch.randn(b, c, generator=gen, dtype=torch.float64)
        target = torch.rand(b, c, generator=gen, dtype=torch.float64)
        target /= target.sum(1, keepdim=True)
        v = torch.rand(c, generator=gen, dtype=torch.float64) * 3
        a = float(torch.rand((), generator=gen))
        loss = build_loss(name, class_counts=CIFAR10_LT_100)
        blended = loss(logits, target, (1 - a) + a * v, normalise="rows")
        apart = (1 - a) * loss(logits, target, torch.ones(c, dtype=torch.float64),
                               normalise="rows") + a * loss(logits, target, v, normalise="rows")
        assert blended.item() == pytest.approx(apart.item(), rel=1e-12)


def test_focal_hand_value():
    logits = [0.3, -0.2, 1.1]
    norm = sum(math.exp(v) for v in logits)
    p = [math.exp(v) / norm for v in logits]
    gamma = 2.0
    expected = 0.6 * (1 - p[0]) ** gamma * -math.log(p[0]) + 0.4 * (1 - p[2]) ** gamma * -math.log(
        p[2]
    )
    got = Focal(gamma=gamma)(_t([logits]), _t([[0.6, 0.0, 0.4]]))
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_focal_gamma_zero_is_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    target = torch.softmax(torch.randn(16, 5, generator=gen, dtype=torch.float64), dim=1)
    assert torch.allclose(Focal(gamma=0.0)(logits, target), CrossEntropy()(logits, target))


def test_ldam_hand_value():
    # counts (100, 1): margins 0.5 * (1/100) ** 0.25 and 0.5
    d0, d1 = 0.5 / math.sqrt(10.0), 0.5
    s = 30.0
    loss = LDAM(class_counts=[100, 1], max_margin=0.5, s=s).to(DEVICE)
    # one-hot: margin subtracted from the true logit only
    z = [0.2, -0.1]
    expected = _neg_log_softmax([s * (0.2 - d0), s * -0.1], 0)
    assert loss(_t([z]), _t([[1.0, 0.0]])).item() == pytest.approx(expected, rel=1e-6)
    # soft target: each logit lowered by its target share of the margin
    shifted = [s * (0.2 - 0.5 * d0), s * (-0.1 - 0.5 * d1)]
    expected = 0.5 * _neg_log_softmax(shifted, 0) + 0.5 * _neg_log_softmax(shifted, 1)
    assert loss(_t([z]), _t([[0.5, 0.5]])).item() == pytest.approx(expected, rel=1e-6)


def test_logit_adjusted_hand_value():
    z = [0.4, 0.1]
    # counts (3, 1): prior (0.75, 0.25), tau = 2
    adjusted = [0.4 + 2 * math.log(0.75), 0.1 + 2 * math.log(0.25)]
    expected = _neg_log_softmax(adjusted, 1)
    got = LogitAdjusted(class_counts=[3, 1], tau=2.0).to(DEVICE)(_t([z]), _t([[0.0, 1.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_balanced_softmax_hand_value():
    z = [0.4, 0.1, -0.3]
    adjusted = [0.4 + math.log(6), 0.1 + math.log(3), -0.3 + math.log(1)]
    expected = 0.5 * _neg_log_softmax(adjusted, 1) + 0.5 * _neg_log_softmax(adjusted, 2)
    got = BalancedSoftmax(class_counts=[6, 3, 1]).to(DEVICE)(_t([z]), _t([[0.0, 0.5, 0.5]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_balanced_softmax_is_logit_adjustment_with_tau_one():
    gen = torch.Generator().manual_seed(1)
    counts = [40, 13, 7, 2]
    logits = torch.randn(32, 4, generator=gen)
    target = torch.softmax(torch.randn(32, 4, generator=gen), dim=1)
    bs = BalancedSoftmax(class_counts=counts)(logits, target)
    la = LogitAdjusted(class_counts=counts, tau=1.0)(logits, target)
    assert torch.allclose(bs, la, atol=1e-5)


# --- soft form == hard PyTorch form on one-hot targets ------------------------------------


def _hard_reference(name, loss, logits, labels, weights):
    """The usual hard-label form of each loss, via F.cross_entropy where one exists."""
    if name == "ce":
        return F.cross_entropy(logits, labels, weight=weights)
    if name == "focal":
        ce = F.cross_entropy(logits, labels, reduction="none")
        per_example = (1 - torch.exp(-ce)) ** loss.gamma * ce
        v = torch.ones(logits.shape[1], dtype=logits.dtype) if weights is None else weights
        return (v[labels] * per_example).sum() / v[labels].sum()
    if name == "ldam":
        margin = F.one_hot(labels, logits.shape[1]) * loss.margins.to(logits.dtype)
        return F.cross_entropy(loss.s * (logits - margin), labels, weight=weights)
    if name == "la":
        return F.cross_entropy(logits + loss.tau * loss.log_prior, labels, weight=weights)
    if name == "bs":
        return F.cross_entropy(logits + loss.log_counts, labels, weight=weights)
    if name == "las":  # MiSLAS's form: (1 - eps_y) nll_y + eps_y mean_k nll_k
        eps = loss.eps.to(logits.dtype)[labels]
        nll = F.cross_entropy(logits, labels, reduction="none")
        per_example = (1 - eps) * nll + eps * -F.log_softmax(logits, dim=1).mean(dim=1)
        v = torch.ones(logits.shape[1], dtype=logits.dtype) if weights is None else weights
        return (v[labels] * per_example).sum() / v[labels].sum()
    raise AssertionError(name)


PARAMS = {"ce": {}, "focal": {"gamma": 1.5}, "ldam": {"s": 10.0}, "la": {"tau": 0.7}, "bs": {},
          "las": {"eps_head": 0.4, "eps_tail": 0.05, "shape": "convex"}}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("weighted", [False, True])
def test_soft_equals_hard_on_one_hot(name, weighted):
    gen = torch.Generator().manual_seed(7)
    counts = CIFAR10_LT_100
    loss = build_loss(name, class_counts=counts, **PARAMS[name])
    for _ in range(10):
        logits = torch.randn(64, 10, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, 10, (64,), generator=gen)
        weights = torch.rand(10, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
        one_hot = F.one_hot(labels, 10).double()
        expected = _hard_reference(name, loss, logits, labels, weights)
        assert torch.allclose(loss(logits, one_hot, weights), expected, rtol=1e-6, atol=1e-6)
        # integer labels are read as one-hot
        assert torch.allclose(loss(logits, labels, weights), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "focal", "la", "bs"])
def test_mixed_target_is_mix_of_hard_losses(name):
    """Without margins, a two-class soft target gives w * l(y_i) + (1 - w) * l(y_j)."""
    gen = torch.Generator().manual_seed(3)
    loss = build_loss(name, class_counts=[9, 5, 3, 1], **PARAMS[name])
    for _ in range(20):
        logits = torch.randn(1, 4, generator=gen, dtype=torch.float64)
        i, j = torch.randint(0, 4, (2,), generator=gen).tolist()
        w = torch.rand((), generator=gen, dtype=torch.float64)
        onehot_i, onehot_j = F.one_hot(torch.tensor([i, j]), 4).double()
        mixed = loss(logits, (w * onehot_i + (1 - w) * onehot_j)[None])
        parts = w * loss(logits, onehot_i[None]) + (1 - w) * loss(logits, onehot_j[None])
        assert torch.allclose(mixed, parts, atol=1e-10)


def test_uniform_weights_change_nothing():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(8, 3, generator=gen)
    target = torch.softmax(torch.randn(8, 3, generator=gen), dim=1)
    for name in LOSSES:
        loss = build_loss(name, class_counts=[5, 3, 1])
        assert torch.allclose(loss(logits, target), loss(logits, target, torch.ones(3)))


# --- LDAM margins, buffers, heads ------------------------------------------------------------


def test_ldam_margins_cifar10_lt():
    margins = LDAM(class_counts=CIFAR10_LT_100).margins
    assert margins.max().item() == pytest.approx(0.5)
    assert margins.argmax().item() == 9  # the class with 50 images
    assert margins[0].item() == pytest.approx(0.15811388300841897, rel=1e-6)  # 0.5 * 0.01**0.25
    assert margins[4].item() == pytest.approx(0.26382902758929516, rel=1e-6)  # n = 645
    assert margins[8].item() == pytest.approx(0.44049702771594634, rel=1e-6)  # n = 83
    assert torch.all(margins[1:] > margins[:-1])


def test_ldam_max_margin_scales_margins():
    assert torch.allclose(
        LDAM(class_counts=[10, 5], max_margin=1.0).margins,
        2 * LDAM(class_counts=[10, 5], max_margin=0.5).margins,
    )


def test_requires_cosine_head():
    assert LOSSES["ldam"].requires_cosine_head is True
    assert all(not LOSSES[name].requires_cosine_head for name in LOSSES if name != "ldam")


def test_logit_scale_is_the_factor_before_the_softmax():
    """LDAM's loss on a cosine z with no margin is cross-entropy on s * z: its logit scale
    is s; every other loss reads its logits as they come (scale 1)."""
    z = torch.rand(6, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ldam = LDAM(class_counts=[30, 20, 10], s=17.0)
    ldam.margins.zero_()
    assert ldam.logit_scale == 17.0
    torch.testing.assert_close(ldam(z, y), F.cross_entropy(ldam.logit_scale * z, y))
    others = [build_loss(name, class_counts=[30, 20, 10]) for name in LOSSES if name != "ldam"]
    assert others and all(loss.logit_scale == 1.0 for loss in others)


@pytest.mark.parametrize(
    "loss, buffer",
    [
        (LDAM(class_counts=[3, 2, 1]), "margins"),
        (LogitAdjusted(class_counts=[3, 2, 1]), "log_prior"),
        (BalancedSoftmax(class_counts=[3, 2, 1]), "log_counts"),
    ],
)
def test_buffers_move_with_to(loss, buffer):
    assert buffer in loss.state_dict()
    assert getattr(loss.to(torch.float64), buffer).dtype == torch.float64
    assert getattr(loss.to("meta"), buffer).device.type == "meta"


def test_losses_run_on_device_and_backpropagate():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 3, generator=gen).to(DEVICE).requires_grad_()
    target = torch.softmax(torch.randn(6, 3, generator=gen), dim=1).to(DEVICE)
    for name in LOSSES:
        params = {"gamma": 0.5} if name == "focal" else {}  # (1 - p) ** 0.5 near p = 1
        loss = build_loss(name, class_counts=[5, 3, 1], **params)
        value = loss.to(DEVICE)(logits, target, torch.tensor([1.0, 2.0, 3.0]))
        (grad,) = torch.autograd.grad(value, logits)
        assert value.device == logits.device and torch.isfinite(grad).all()


def test_low_precision_logits_give_float32_loss():
    logits = torch.randn(4, 3).to(torch.bfloat16)
    assert CrossEntropy()(logits, torch.tensor([0, 1, 2, 0])).dtype == torch.float32


# --- post-hoc adjustment -------------------------------------------------------------------


def test_posthoc_adjust_values():
    logits = torch.tensor([[1.0, 1.0, 1.0]])
    got = posthoc_adjust(logits, [6, 3, 1], tau=0.5)
    expected = [1 - 0.5 * math.log(0.6), 1 - 0.5 * math.log(0.3), 1 - 0.5 * math.log(0.1)]
    assert got[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(posthoc_adjust(logits, [6, 3, 1], tau=0.0), logits)


def test_posthoc_adjust_undoes_training_adjustment():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(5, 3, generator=gen)
    counts = [6, 3, 1]
    trained = logits + 1.3 * LogitAdjusted(class_counts=counts).log_prior
    assert torch.allclose(posthoc_adjust(trained, counts, tau=1.3), logits, atol=1e-6)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, parameter",
    [
        (lambda: Focal(gamma=-0.1), "gamma"),
        (lambda: LogitAdjusted(class_counts=[2, 1], tau=-1.0), "tau"),
        (lambda: LDAM(class_counts=[2, 1], s=0.0), "s"),
        (lambda: LDAM(class_counts=[2, 1], max_margin=0.0), "max_margin"),
        (lambda: LDAM(class_counts=[2, 0]), "class_counts"),
        (lambda: BalancedSoftmax(class_counts=[2, -1]), "class_counts"),
        (lambda: LogitAdjusted(class_counts=[]), "class_counts"),
        (lambda: build_loss("ldam", class_counts=None), "class_counts"),
        (lambda: build_loss("hinge", class_counts=[1, 2]), "name"),
        (lambda: build_loss("focal", class_counts=[1, 2], tau=1.0), "tau"),
        (lambda: build_loss("ce", class_counts=None, gamma=2.0), "gamma"),
        (lambda: posthoc_adjust(torch.zeros(1, 2), [1, 2], tau=-0.5), "tau"),
        (lambda: posthoc_adjust(torch.zeros(1, 3), [1, 2]), "logits"),
        (lambda: CrossEntropy()(torch.zeros(2, 3), torch.zeros(2, 4)), "target"),
        (lambda: CrossEntropy()(torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(4)),
         "class_weights"),
    ],
)
def test_errors_name_the_parameter(build, parameter):
    with pytest.raises(ParameterError) as info:
        build()
    assert info.value.name == parameter
    assert repr(parameter) in str(info.value)


def test_build_loss_passes_parameters():
    assert build_loss("focal", class_counts=None, gamma=3.0).gamma == 3.0
    loss = build_loss("ldam", class_counts=[4, 1], max_margin=0.3, s=16.0)
    assert loss.s == 16.0 and loss.margins.max().item() == pytest.approx(0.3)
    assert build_loss("la", class_counts=[4, 1], tau=0.25).tau == 0.25


# ------------------------------------------------------------ label-aware smoothing (MiSLAS)

@pytest.mark.parametrize("shape, middle", [("concave", 0.1 + 0.2 * math.sin(math.pi / 4)),
                                           ("linear", 0.2),
                                           ("convex", 0.3 - 0.2 * math.cos(math.pi / 4))])
def test_label_aware_smoothing_runs_from_tail_to_head_by_its_shape(shape, middle):
    """Counts 100, 55, 10: x = 1, 0.5, 0; eps from eps_tail (0.1) to eps_head (0.3)."""
    loss = build_loss("las", class_counts=[100, 55, 10], eps_head=0.3, eps_tail=0.1,
                      shape=shape)
    torch.testing.assert_close(loss.eps, torch.tensor([0.3, middle, 0.1]), rtol=0, atol=1e-7)


def test_label_aware_smoothing_is_torchs_label_smoothing_when_classes_are_equal():
    """Equal class sizes give every class ``eps_head``: the loss is cross-entropy with
    ``label_smoothing=eps_head``, over many random batches."""
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        c = int(torch.randint(2, 12, (1,), generator=g))
        eps = float(torch.rand(1, generator=g))
        loss = build_loss("las", class_counts=[7] * c, eps_head=eps, eps_tail=0.0)
        z = torch.randn(16, c, generator=g, dtype=torch.float64) * 3
        y = torch.randint(0, c, (16,), generator=g)
        torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y, label_smoothing=eps))


def test_label_aware_smoothing_by_hand():
    """Logits (2, 0, 0), label 0, eps 0.3 for class 0: 0.7 * nll_0 + 0.3 * mean(nll)."""
    loss = build_loss("las", class_counts=[9, 1, 1], eps_head=0.3, eps_tail=0.0)
    log_z = math.log(math.exp(2) + 2)
    expected = 0.7 * (log_z - 2) + 0.3 * ((log_z - 2) + 2 * log_z) / 3
    got = loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the tail classes have eps 0: plain cross-entropy on them
    got = loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([1]))
    assert got.item() == pytest.approx(log_z, rel=1e-6)
