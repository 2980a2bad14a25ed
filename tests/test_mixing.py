"""The mixing family: label rules, neighbour search, the mixer and its presets, resampled
anchors and the training step that puts them together."""

from __future__ import annotations

import math
import os

import pytest
import torch
from scipy import stats

from tailmix._validation import ParameterError
from tailmix.mixing import (
    LABEL_RULES,
    PRESETS,
    Mixer,
    NeighbourTable,
    knn_indices,
    label_weight,
    neighbour_class_share,
    oversample_label_mass,
    sample_beta,
)
from tailmix.pipeline.steps import Batch, MixStep
from tailmix.samplers import Resampled, build_sampler, resample_anchors
from tailmix.seeding import derive_seed

DEVICE = torch.device(os.environ.get("TAILMIX_TEST_DEVICE", "cpu"))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def t(values, dtype=None) -> torch.Tensor:
    return torch.as_tensor(values, dtype=dtype, device=DEVICE)


# --------------------------------------------------------------------------- label rules


def test_mamix_matches_hand_computed_values():
    n_a, n_p = t(5000.0), t(50.0)
    m = 5000**-0.25 / (5000**-0.25 + 50**-0.25)
    assert round(m, 4) == 0.2403
    w = label_weight("mamix", t([0.25, 0.5, 0.75]), n_a, n_p, q=-0.25)
    assert [round(v, 3) for v in w.tolist()] == [0.494, 0.329, 0.165]
    # the same with the default q, integer counts and Python floats
    for lam, expected in [(0.25, 0.494), (0.5, 0.329), (0.75, 0.165)]:
        assert round(float(label_weight("mamix", lam, t(5000), t(50))), 3) == expected


def test_mamix_gives_exactly_one_half_at_its_midpoint():
    n_a, n_p = (
        t([5000.0, 50.0, 7.0, 123.0], torch.float64),
        t([50.0, 5000.0, 7.0, 4.0], torch.float64),
    )
    m = torch.sigmoid(-0.25 * (torch.log(n_a) - torch.log(n_p)))
    assert torch.equal(label_weight("mamix", m, n_a, n_p), torch.full_like(m, 0.5))
    # and near 0.5 for m written as k_i / (k_i + k_j)
    m2 = n_a**-0.25 / (n_a**-0.25 + n_p**-0.25)
    torch.testing.assert_close(label_weight("mamix", m2, n_a, n_p), torch.full_like(m, 0.5))


def test_mamix_below_and_above_midpoint_by_hand():
    # counts 16 and 1 with q = -0.25: k_a = 1/2, k_p = 1, m = 1/3
    w = label_weight(
        "mamix", t([0.0, 1 / 6, 1 / 3, 2 / 3, 1.0], torch.float64), t(16.0), t(1.0), q=-0.25
    )
    torch.testing.assert_close(w, t([1.0, 0.75, 0.5, 0.25, 0.0], torch.float64))


def test_remix_three_cases():
    lam = t([0.4, 0.6])
    # anchor majority (r = 3 >= K): anchor share 0.4 < tau -> partner's label; 0.6 -> soft
    torch.testing.assert_close(label_weight("remix", lam, t(300), t(100)), t([0.6, 0.0]))
    # anchor minority (r = 1/3 <= 1/K): partner share 0.4 < tau -> anchor's label; else soft
    torch.testing.assert_close(label_weight("remix", lam, t(100), t(300)), t([1.0, 0.4]))
    # ratio in between: plain mixup
    torch.testing.assert_close(label_weight("remix", lam, t(200), t(100)), t([0.6, 0.4]))
    # parameters change the thresholds
    torch.testing.assert_close(
        label_weight("remix", lam, t(200), t(100), K=2.0, tau=0.7), t([0.0, 0.0])
    )


def test_hard_and_soft():
    lam = t([0.0, 0.3, 1.0])
    counts = t([10, 20, 30])
    assert torch.equal(label_weight("hard", lam, counts, counts), torch.ones(3, device=DEVICE))
    torch.testing.assert_close(label_weight("soft", lam, counts, counts), t([1.0, 0.7, 0.0]))


def test_broadcasting_dtype_and_device():
    w = label_weight("mamix", t([[0.1], [0.9]]), t([1, 2, 3]), t(4))
    assert w.shape == (2, 3) and w.dtype == torch.get_default_dtype() and w.device == DEVICE
    w64 = label_weight("remix", 0.5, t([1.0, 2.0], torch.float64), t([5, 6]))
    assert w64.dtype == torch.float64


@pytest.mark.parametrize("rule", LABEL_RULES)
def test_weight_properties_over_random_inputs(rule):
    g = torch.Generator().manual_seed(1)
    lam = torch.rand(20_000, generator=g, dtype=torch.float64)
    n_a = torch.randint(1, 5000, (20_000,), generator=g).double()
    n_p = torch.randint(1, 5000, (20_000,), generator=g).double()
    w = label_weight(rule, lam, n_a, n_p)
    assert bool(((w >= 0) & (w <= 1)).all())
    assert torch.equal(label_weight(rule, 0.0, n_a, n_p), torch.ones_like(w))
    if rule != "hard":
        assert torch.equal(label_weight(rule, 1.0, n_a, n_p), torch.zeros_like(w))
    # at equal counts remix and mamix are mixup
    if rule in ("remix", "mamix"):
        assert torch.equal(label_weight(rule, lam, n_a, n_a), 1.0 - lam)


def test_mamix_is_piecewise_linear_through_its_three_points():
    g = torch.Generator().manual_seed(2)
    n_a = torch.randint(1, 5000, (5000,), generator=g).double()
    n_p = torch.randint(1, 5000, (5000,), generator=g).double()
    q = -0.25
    m = n_a**q / (n_a**q + n_p**q)
    s = torch.rand(5000, generator=g, dtype=torch.float64)
    # on [0, m]: the line from (0, 1) to (m, 0.5); on [m, 1]: from (m, 0.5) to (1, 0)
    torch.testing.assert_close(label_weight("mamix", s * m, n_a, n_p), 1 - 0.5 * s)
    torch.testing.assert_close(label_weight("mamix", m + s * (1 - m), n_a, n_p), 0.5 * (1 - s))
    # minority partners (n_p < n_a) move the 50/50 point below lam = 0.5
    assert bool((m[n_p < n_a] < 0.5).all())


def test_label_weight_errors():
    one = t(1.0)
    with pytest.raises(ParameterError, match="'lam'"):
        label_weight("soft", 1.5, one, one)
    with pytest.raises(ParameterError, match="'lam'"):
        label_weight("soft", -0.01, one, one)
    with pytest.raises(ParameterError, match="'lam'"):
        label_weight("soft", t([0.5, 1.01]), one, one)
    with pytest.raises(ParameterError, match="'lam'"):
        label_weight("soft", t([float("nan")]), one, one)
    with pytest.raises(ParameterError, match="'n_anchor'"):
        label_weight("mamix", 0.5, t([0, 3]), one)
    with pytest.raises(ParameterError, match="'n_partner'"):
        label_weight("mamix", 0.5, one, t(-2.0))
    with pytest.raises(ParameterError, match="'rule'"):
        label_weight("cutout", 0.5, one, one)
    with pytest.raises(ParameterError, match="'K'"):
        label_weight("remix", 0.5, one, one, K=0.5)
    for tau in (0.0, 1.0, 1.5):
        with pytest.raises(ParameterError, match="'tau'"):
            label_weight("remix", 0.5, one, one, tau=tau)
    with pytest.raises(ParameterError, match="parameters"):
        label_weight("soft", 0.5, one, one, q=-0.25)
    with pytest.raises(ParameterError, match="parameters"):
        label_weight("mamix", 0.5, one, one, K=3.0)
    # validate=False skips the tensor-value checks (no device sync) but not the rest
    label_weight("soft", t([1.5]), one, one, validate=False)
    with pytest.raises(ParameterError, match="'q'"):
        label_weight("mamix", 0.5, one, one, q=float("inf"), validate=False)


# --------------------------------------------------------------------------- neighbours


def brute_force_distances(points, labels, within_class):
    d = torch.cdist(points.double(), points.double(), compute_mode="donot_use_mm_for_euclid_dist")
    d.fill_diagonal_(float("inf"))
    if within_class:
        d[labels[:, None] != labels[None, :]] = float("inf")
    return d


@pytest.mark.parametrize("within_class", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_knn_matches_brute_force(within_class, chunk_size):
    g = torch.Generator().manual_seed(3)
    points = torch.randn(120, 6, generator=g).to(DEVICE)
    labels = torch.randint(0, 4, (120,), generator=g).to(DEVICE)
    nb = knn_indices(points, labels, k=5, within_class=within_class, chunk_size=chunk_size)
    assert nb.shape == (120, 5) and nb.dtype == torch.long and nb.device == points.device
    d = brute_force_distances(points.cpu(), labels.cpu(), within_class)
    nb = nb.cpu()
    assert not bool((nb == torch.arange(120)[:, None]).any())
    if within_class:
        assert bool((labels.cpu()[nb] == labels.cpu()[:, None]).all())
    got = d.gather(1, nb)
    expected = d.sort(dim=1).values[:, :5]
    torch.testing.assert_close(got, expected)


def test_knn_tiny_classes_shrink_pad_and_point_to_self():
    points = t([[0.0], [1.0], [3.0], [10.0], [20.0], [21.0], [50.0]])
    labels = t([0, 0, 0, 1, 2, 2, 0])
    nb = knn_indices(points, labels, k=5, within_class=True).cpu()
    # class 0 has 4 points: 3 neighbours each, repeated cyclically to fill 5 columns
    assert nb[0].tolist() == [1, 2, 6, 1, 2]
    assert nb[6].tolist() == [2, 1, 0, 2, 1]
    # class 2 has 2 points: each is the other's only neighbour
    assert nb[4].tolist() == [5] * 5 and nb[5].tolist() == [4] * 5
    # class 1 has a single point: it points to itself
    assert nb[3].tolist() == [3] * 5
    # across classes a point has 6 candidates
    nb_any = knn_indices(points, labels, k=2, within_class=False).cpu()
    assert nb_any[3].tolist() == [2, 1]


def test_knn_on_uint8_images():
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (40, 3, 4, 4), generator=g, dtype=torch.uint8).to(DEVICE)
    labels = (torch.arange(40) % 2).to(DEVICE)
    nb = knn_indices(images, labels, k=3, within_class=True).cpu()
    d = brute_force_distances(images.cpu().reshape(40, -1), labels.cpu(), True)
    torch.testing.assert_close(d.gather(1, nb), d.sort(dim=1).values[:, :3])


def test_knn_errors():
    points, labels = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ParameterError, match="'k'"):
        knn_indices(points, labels, k=0, within_class=True)
    with pytest.raises(ParameterError, match="'chunk_size'"):
        knn_indices(points, labels, k=1, within_class=True, chunk_size=0)
    with pytest.raises(ParameterError, match="'points'"):
        knn_indices(torch.zeros(4), labels, k=1, within_class=True)
    with pytest.raises(ParameterError, match="'labels'"):
        knn_indices(points, labels[:3], k=1, within_class=True)
    with pytest.raises(ParameterError, match="'labels'"):
        knn_indices(points, t([0, 1, -1, 0]).cpu(), k=1, within_class=True)


# --------------------------------------------------------------------------- the mixer


def identity_batch(batch: int, dim: int, seed: int):
    """Rows ``[onehot(i), data_i]``: a mixed row tells which rows it came from, and how much."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(batch, dim, generator=g)
    return torch.cat([torch.eye(batch), data], dim=1).to(DEVICE), data.to(DEVICE)


def decode(x_mix: torch.Tensor, batch: int):
    """Partner index and lam from the identity part of mixed rows (lam = 0 if self-paired)."""
    ident = x_mix[:, :batch].clone()
    ident.fill_diagonal_(-1.0)
    lam, partner = ident.max(dim=1)
    lam = lam.clamp_min(0.0)
    partner = torch.where(lam > 0, partner, torch.arange(batch, device=x_mix.device))
    return partner, lam


@pytest.mark.parametrize("preset", ["mixup", "remix", "mamix"])
@pytest.mark.parametrize("lam_per", ["batch", "example"])
def test_random_partner_mix_is_exact_convex_combination(preset, lam_per):
    batch, num_classes = 64, 5
    x, data = identity_batch(batch, 7, seed=5)
    y = torch.arange(batch, device=DEVICE) % num_classes
    counts = t([1000.0, 300.0, 100.0, 30.0, 10.0])
    mixer = Mixer.preset(preset, class_counts=counts, lam_per=lam_per, alpha=0.4).to(DEVICE)
    x_mix, target = mixer(x, y, generator=gen(6))
    partner, lam = decode(x_mix, batch)
    assert sorted(partner.tolist()) == list(range(batch))  # a permutation of the batch
    if lam_per == "batch":
        moved = partner != torch.arange(batch, device=DEVICE)
        assert torch.allclose(lam[moved], lam[moved][0].expand(int(moved.sum())), atol=1e-6)
    expected_x = (1 - lam)[:, None] * data + lam[:, None] * data[partner]
    torch.testing.assert_close(x_mix[:, batch:], expected_x, atol=1e-5, rtol=1e-5)
    lo, hi = torch.minimum(data, data[partner]), torch.maximum(data, data[partner])
    assert bool(((x_mix[:, batch:] >= lo - 1e-6) & (x_mix[:, batch:] <= hi + 1e-6)).all())
    w = label_weight(mixer.rule, lam.clamp(0, 1), counts[y], counts[y[partner]])
    one_hot = torch.nn.functional.one_hot
    expected = w[:, None] * one_hot(y, num_classes) + (1 - w)[:, None] * one_hot(
        y[partner], num_classes
    )
    torch.testing.assert_close(target, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(target.sum(1), torch.ones(batch, device=DEVICE))


def test_mix_is_reproducible_and_leaves_global_rng_alone():
    x, y = torch.rand(16, 3, 8, 8, device=DEVICE), torch.arange(16, device=DEVICE) % 4
    counts = t([50.0, 20.0, 10.0, 5.0])
    state = torch.get_rng_state()
    a = Mixer.preset("mamix", class_counts=counts, alpha=0.3)(x, y, generator=gen(7))
    b = Mixer.preset("mamix", class_counts=counts, alpha=0.3)(x, y, generator=gen(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the mixer's own generator serves a call that names none; a call's generator wins
    own = Mixer.preset("mamix", class_counts=counts, alpha=0.3, generator=gen(7))
    c = own(x, y)
    assert torch.equal(c[0], a[0]) and torch.equal(c[1], a[1])
    d = own(x, y, generator=gen(7))
    assert torch.equal(d[0], a[0]) and torch.equal(d[1], a[1])
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0, 2.0])
def test_beta_sampler_matches_the_beta_distribution(alpha):
    # float64: in float32 the draws within 6e-8 of 1 all round to 1.0, which a KS test sees
    samples = sample_beta(alpha, (20_000,), generator=gen(8), dtype=torch.float64).cpu().numpy()
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert stats.kstest(samples, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("alpha, beta", [(0.2, 1.0), (0.1, 1.0), (2.0, 5.0), (0.5, 3.0)])
def test_beta_sampler_takes_a_second_shape(alpha, beta):
    """``Beta(alpha, beta)`` (Balanced-MixUp's ``Beta(alpha, 1)`` among them) matches the
    distribution; the second shape equal to the first draws the symmetric samples exactly."""
    samples = sample_beta(alpha, (20_000,), generator=gen(9), dtype=torch.float64,
                          beta=beta).cpu().numpy()
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert stats.kstest(samples, stats.beta(alpha, beta).cdf).pvalue > 1e-3
    same = sample_beta(alpha, (500,), generator=gen(3), beta=alpha)
    assert torch.equal(same, sample_beta(alpha, (500,), generator=gen(3)))


def test_balanced_mixup_is_a_setting_of_the_mixer():
    """Class-balanced partners taking a ``Beta(alpha, 1)`` share of the input: the soft
    targets' partner mass averages ``alpha / (alpha + 1)`` and spreads over the classes
    evenly, whatever the anchors' imbalance."""
    counts = [900, 90, 10]
    labels = long_tailed_labels(counts)
    inputs = torch.zeros(len(labels), 1, device=DEVICE)
    mixer = Mixer(class_counts=counts, partner="balanced", partner_q=0.0, alpha=0.2,
                  beta=1.0, lam_per="example")
    assert "lam=beta(0.2, 1)" in repr(mixer) and mixer.unused(["beta"]) == []
    assert Mixer.preset("smote").unused(["beta"]) == [("beta", "lam: beta")]
    mixer.start_epoch(0, labels=labels, inputs=inputs, features=lambda: inputs)
    x = torch.zeros(4000, 1, device=DEVICE)
    y = torch.zeros(4000, dtype=torch.long, device=DEVICE)  # every anchor of class 0
    _, target = mixer(x, y, generator=gen(4))
    # target = (1 - lam) one_hot(0) + lam one_hot(partner), the partner of each class
    # with probability 1/3: the mass off class 0 averages E[lam] * 2/3.
    assert abs(float(target[:, 1:].sum() / len(y)) - (0.2 / 1.2) * 2 / 3) < 0.02
    assert abs(float(target[:, 1].sum() / target[:, 2].sum()) - 1.0) < 0.15
    with pytest.raises(ParameterError) as info:
        Mixer(beta=0.0)
    assert info.value.name == "beta"


@pytest.mark.parametrize("lam_per", ["batch", "example"])
def test_cutmix_lam_is_the_pasted_area_share(lam_per):
    batch, side = 32, 12
    # image i is filled with the value i, so a pixel tells which image it came from
    x = torch.arange(batch, dtype=torch.float32, device=DEVICE).view(batch, 1, 1, 1)
    x = x.expand(batch, 3, side, side).contiguous()
    y = torch.arange(batch, device=DEVICE)  # one class per image
    counts = torch.full((batch,), 10.0, device=DEVICE)  # equal counts: mamix is soft
    mixer = Mixer.preset("mamix", class_counts=counts, input_mode="cutmix", lam_per=lam_per)
    x_mix, target = mixer(x, y, generator=gen(9))
    own = (x_mix == x).all(dim=1)  # (B, H, W): pixels that stayed the anchor's
    pasted = (~own).flatten(1).float().mean(1)
    source = torch.where(own, -1.0, x_mix[:, 0]).flatten(1).amax(1).long()
    partner = torch.where(source >= 0, source, y)
    rows = torch.arange(batch, device=DEVICE)
    moved = partner != rows
    assert bool(moved.any())
    torch.testing.assert_close(target[rows[moved], partner[moved]], pasted[moved])
    torch.testing.assert_close(target[rows[moved], y[moved]], 1 - pasted[moved])
    torch.testing.assert_close(target.sum(1), torch.ones(batch, device=DEVICE))
    # the pasted region is one axis-aligned box per image (shared when lam is per batch)
    rows_hit, cols_hit = (~own).any(2), (~own).any(1)
    box = rows_hit[:, :, None] & cols_hit[:, None, :]
    assert torch.equal(box, ~own)
    if lam_per == "batch":
        assert bool((box[moved] == box[moved][0]).all())


def test_cutmix_rejects_flat_inputs():
    mixer = Mixer(class_counts=[4.0], input_mode="cutmix")
    with pytest.raises(ParameterError, match="'input_mode'"):
        mixer(torch.rand(4, 5), torch.zeros(4, dtype=torch.long), generator=torch.Generator())


def test_mixer_without_class_counts():
    """Counts only matter to the rules that read them; the targets' width comes from
    ``num_classes`` or the labels."""
    x, y = torch.rand(6, 4, device=DEVICE), t([0, 1, 2, 0, 1, 2])
    _, target = Mixer(rule="soft")(x, y, generator=gen(1))
    assert target.shape == (6, 3)
    torch.testing.assert_close(target.sum(1), torch.ones(6, device=DEVICE))
    _, wide = Mixer(rule="soft", num_classes=5)(x, y, generator=gen(1))
    assert wide.shape == (6, 5) and torch.equal(wide[:, :3], target)
    for rule in ("remix", "mamix"):
        with pytest.raises(ParameterError, match="'class_counts'"):
            Mixer(rule=rule)(x, y, generator=gen(1))


def long_tailed_labels(sizes):
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(DEVICE)


def counts_of(labels, num_classes):
    return torch.bincount(labels, minlength=num_classes).float()


def test_oversample_tops_every_class_up_to_n_max():
    sizes = [40, 17, 6, 1]
    labels = long_tailed_labels(sizes)
    g = gen(0)
    for _ in range(3):
        idx = torch.randperm(len(labels), generator=g, device=DEVICE)
        out, synthetic = resample_anchors(idx, labels, 4, "oversample", g)
        assert out.shape == synthetic.shape == (4 * 40,)
        assert torch.bincount(labels[out], minlength=4).tolist() == [40] * 4
        # every real example exactly once, unmixed; the rest synthetic, of the right class
        assert sorted(out[~synthetic].tolist()) == list(range(len(labels)))
        assert torch.bincount(labels[out[synthetic]], minlength=4).tolist() == [0, 23, 34, 39]


def test_class_balanced_anchors():
    labels = long_tailed_labels([300, 60, 12, 3])
    idx = torch.arange(len(labels), device=DEVICE)[labels != 2]  # a class absent from idx
    out, mask = resample_anchors(idx, labels, 4, "class_balanced", gen(0))
    assert mask is None and out.shape == idx.shape
    assert bool(torch.isin(out, idx).all())
    share = torch.bincount(labels[out], minlength=4).float() / len(out)
    assert share[2] == 0
    torch.testing.assert_close(share[[0, 1, 3]].cpu(), torch.full((3,), 1 / 3), atol=0.06, rtol=0)


@pytest.mark.parametrize("mode", ["oversample", "class_balanced"])
def test_resampled_sampler_redraws_the_base_sequence(mode):
    """``Resampled`` re-draws its base sampler's epoch with the generator it is given (the
    trainer's ``batch`` stream; by default that stream on the labels' device)."""
    labels = long_tailed_labels([30, 8, 2])
    base = build_sampler("instance", labels=labels.cpu(), seed=4)
    planner = Resampled(base, mode=mode, labels=labels, num_classes=3)
    idx, mask = planner.epoch_plan(2, 4, gen(11))
    expected = resample_anchors(base.global_indices(2, 4).to(DEVICE), labels, 3, mode, gen(11))
    assert torch.equal(idx, expected[0])
    assert (mask is None) == (mode == "class_balanced")
    if mask is not None:
        assert torch.equal(mask, expected[1])
        assert len(planner) == len(idx) == 3 * 30
    else:
        assert len(planner) == len(idx) == 40
    default, _ = planner.epoch_plan(2, 4)
    stream = torch.Generator(device=DEVICE).manual_seed(derive_seed(4, "batch", epoch=2))
    assert torch.equal(default, planner.epoch_plan(2, 4, stream)[0])
    assert not torch.equal(default, planner.epoch_plan(3, 4)[0])


class Floats(torch.nn.Module):
    """An augmentation that only converts to float (what a step's ``augment`` is called
    with: a raw batch and a generator, or ``train=False``)."""

    def forward(self, x, generator=None, train=True):
        return x.float()


def mix_step(inputs, labels, mixer, num_classes):
    return MixStep(inputs=inputs, labels=labels, augment=Floats(), loss=None,
                   weights=lambda epoch: None, mixer=mixer, num_classes=num_classes,
                   device=torch.device(DEVICE), eval_batch_size=10_000)


@pytest.mark.parametrize("partner", ["knn_class", "knn_any"])
def test_knn_partners_come_from_the_neighbour_table(partner):
    sizes = [30, 12, 5, 1]
    n = sum(sizes)
    labels = long_tailed_labels(sizes)
    inputs, _ = identity_batch(n, 3, seed=10)
    fetched = []

    def fetch(idx):  # what the mixer reads partners through
        fetched.append(idx)
        return inputs[idx].float()

    mixer = Mixer(
        class_counts=counts_of(labels, 4),
        anchors="oversample",
        partner=partner,
        k=3,
        lam="uniform",
        lam_per="example",
        rule="soft",
        space="input",
    )
    assert mixer.neighbours.within_class == (partner == "knn_class")
    mixer.neighbours.fit(inputs, labels)
    table = knn_indices(inputs, labels, k=3, within_class=partner == "knn_class")
    assert torch.equal(mixer.neighbours.indices, table)
    g = gen(0)
    order, synthetic = resample_anchors(torch.arange(n, device=DEVICE), labels, 4, "oversample", g)
    mixed_slots = 0
    for start in range(0, len(order), 16):
        idx_b, mask_b = order[start : start + 16], synthetic[start : start + 16]
        x_b = inputs[idx_b].float()
        calls = len(fetched)
        x_mix, target = mixer(x_b, labels[idx_b], idx_b, mask_b, generator=g, fetch=fetch)
        assert len(fetched) == calls + 1  # one fetch per batch
        # recover the partner from the identity part of the rows (dataset-sized one-hots)
        ident = x_mix[:, :n]
        lam, other = ident.scatter(1, idx_b[:, None], -1.0).max(1)
        lam = lam.clamp_min(0.0)
        partner_idx = torch.where(lam > 0, other, idx_b)
        # unmixed (real) slots are untouched with one-hot targets
        real = ~mask_b
        assert torch.equal(x_mix[real], x_b[real])
        assert torch.equal(
            target[real], torch.nn.functional.one_hot(labels[idx_b[real]], 4).float()
        )
        # mixed slots take a partner among the anchor's k neighbours
        moved = lam > 0
        mixed_slots += int(moved.sum())
        assert torch.equal(fetched[-1][moved], partner_idx[moved])  # fetched, then mixed
        assert bool((table[idx_b[moved]] == partner_idx[moved, None]).any(1).all())
        if partner == "knn_class":
            assert bool((labels[partner_idx] == labels[idx_b]).all())
        # within classes, the single-example class 3 is copy only
        lonely = (labels[idx_b] == 3) & (partner == "knn_class")
        assert torch.equal(x_mix[lonely], x_b[lonely])
        assert bool((target[lonely, 3] == 1).all())
        torch.testing.assert_close(target.sum(1), torch.ones(len(idx_b), device=DEVICE))
        expected = (1 - lam)[:, None] * x_b[:, n:] + lam[:, None] * inputs[partner_idx, n:]
        torch.testing.assert_close(x_mix[:, n:], expected, atol=1e-5, rtol=1e-5)
    # every synthetic slot is mixed, but those of a class with no neighbour of its own
    copy_only = (labels[order] == 3) & (partner == "knn_class")
    assert mixed_slots == int((synthetic & ~copy_only).sum()) > 0


def test_neighbour_table_partners_and_default_inputs():
    labels = long_tailed_labels([6, 3, 1])
    points = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    table = NeighbourTable(k=2, within_class=True)
    assert not table.fitted and table.inputs is None
    with pytest.raises(ParameterError, match="'neighbours'"):
        table.partners(t([0, 1]))
    raw = points * 2.0
    table.fit(points, labels, inputs=raw)
    assert table.fitted and table.inputs is raw and table.labels is labels
    assert torch.equal(table.indices, knn_indices(points, labels, k=2, within_class=True))
    index = torch.arange(len(labels), device=DEVICE).repeat(50)
    picked = table.partners(index, gen(3))
    assert bool((table.indices[index] == picked[:, None]).any(1).all())
    assert torch.equal(picked, table.partners(index, gen(3)))
    # both of a row's neighbours get drawn; the class of one has only itself
    assert set(picked[index == 0].tolist()) == set(table.indices[0].tolist())
    assert set(picked[index == 9].tolist()) == {9}
    # a mixer reads partners from the table's inputs when no fetch is given
    mixer = Mixer.preset("smote", class_counts=counts_of(labels, 3), k=2, neighbours=table)
    assert mixer.neighbours is table
    x_mix, _ = mixer(raw, labels, torch.arange(len(labels), device=DEVICE), generator=gen(4))
    partner = table.partners(torch.arange(len(labels), device=DEVICE), gen(4))
    moved = partner != torch.arange(len(labels), device=DEVICE)
    assert bool(moved.any())
    lam_free = (x_mix - raw)[moved] / (raw[partner] - raw)[moved]  # every coordinate alike
    torch.testing.assert_close(lam_free, lam_free[:, :1].expand_as(lam_free))


class FeatureProbe(torch.nn.Module):
    """A network whose features are a fresh random projection at every call, counted."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.last = None

    def features(self, x):
        self.calls += 1
        w = torch.randn(x.shape[1], 3, generator=torch.Generator().manual_seed(self.calls))
        self.last = x @ w.to(x.device)
        return self.last

    def forward(self, x):
        return self.features(x)


def test_feature_space_neighbours_refresh_on_schedule():
    labels = long_tailed_labels([20, 10, 4])
    inputs = torch.randn(len(labels), 5, device=DEVICE)
    mixer = Mixer(class_counts=counts_of(labels, 3), partner="knn_class", space="feature",
                  refresh_every=2, k=2)
    step, model = mix_step(inputs, labels, mixer, 3), FeatureProbe()
    for epoch in range(5):
        step.start_epoch(epoch, model)
        # the table always matches the latest features, never the raw inputs
        expected = knn_indices(model.last, labels, k=2, within_class=True)
        assert torch.equal(mixer.neighbours.indices, expected)
    assert model.calls == 3  # epochs 0, 2 and 4
    assert not torch.equal(mixer.neighbours.indices,
                           knn_indices(inputs, labels, k=2, within_class=True))
    step.start_epoch(4, model)  # an epoch is searched once, however often it starts
    assert model.calls == 3


def test_the_mixer_keeps_its_table_in_a_users_loop():
    """Without tailmix's step: ``Mixer.start_epoch`` searches on schedule (features asked
    for only then), and ``table_state`` brings the table back in a new mixer exactly."""
    labels = long_tailed_labels([20, 10, 4])
    inputs = torch.randn(len(labels), 5, device=DEVICE)
    mixer = Mixer(class_counts=counts_of(labels, 3), partner="knn_any", space="feature",
                  refresh_every=3, k=2)
    model, asked = FeatureProbe(), []

    def features():
        asked.append(True)
        return model.features(inputs)

    for epoch in range(4):
        mixer.start_epoch(epoch, labels=labels, inputs=inputs, features=features)
    assert len(asked) == 2  # epochs 0 and 3
    state = mixer.table_state()
    assert state["searched_at"] == 3 and torch.equal(
        state["neighbours"], knn_indices(model.last, labels, k=2, within_class=False))
    again = Mixer(class_counts=counts_of(labels, 3), partner="knn_any", space="feature",
                  refresh_every=3, k=2)
    again.load_table_state(state, labels=labels, inputs=inputs)
    again.start_epoch(4, labels=labels, inputs=inputs, features=features)  # not due: kept
    assert len(asked) == 2 and torch.equal(again.neighbours.indices, state["neighbours"])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    index = torch.arange(len(labels), device=DEVICE)
    assert torch.equal(mixer.neighbours.partners(index, g1), again.neighbours.partners(index, g2))
    assert Mixer.preset("mixup").table_state() == {}
    # The same mixer in a new run searches again at its first epoch.
    asked.clear()
    mixer.forget_search()
    mixer.start_epoch(0, labels=labels, inputs=inputs, features=features)
    assert len(asked) == 1


def test_input_space_neighbours_are_found_once_and_downscaled():
    labels = long_tailed_labels([12, 6])
    g = torch.Generator().manual_seed(11)
    images = torch.randint(0, 256, (18, 3, 8, 8), generator=g, dtype=torch.uint8).to(DEVICE)
    pooled = torch.nn.functional.avg_pool2d(images.float(), 4)
    expected = knn_indices(pooled, labels, k=2, within_class=True)
    assert not torch.equal(expected, knn_indices(images, labels, k=2, within_class=True))
    # on its own, a table downscales before searching
    table = NeighbourTable(k=2, within_class=True, downscale=2).fit(images, labels)
    assert torch.equal(table.indices, expected) and table.inputs is images
    # in a training step, the mixer's table is searched once, at the first epoch
    mixer = Mixer.preset("smote", class_counts=counts_of(labels, 2), downscale=2, k=2)
    step = mix_step(images, labels, mixer, 2)
    step.start_epoch(0, None)
    assert torch.equal(mixer.neighbours.indices, expected)
    assert mixer.neighbours.inputs is images
    mixer.neighbours.indices[:] = 0  # a second epoch must not search again
    step.start_epoch(1, None)
    assert not bool(mixer.neighbours.indices.any())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_the_training_protocol(name):
    sizes = [24, 9, 3]
    labels = long_tailed_labels(sizes)
    g = torch.Generator().manual_seed(12)
    images = torch.randint(0, 256, (len(labels), 3, 8, 8), generator=g, dtype=torch.uint8)
    images = images.to(DEVICE)
    mixer = Mixer.preset(name, class_counts=counts_of(labels, 3)).to(DEVICE)
    step = mix_step(images, labels, mixer, 3)
    planner = build_sampler("instance", labels=labels.cpu())
    if mixer.sampler_mode is not None:
        planner = Resampled(planner, mode=mixer.sampler_mode, labels=labels, num_classes=3,
                            anchor_weights=mixer.anchor_weights if mixer.m_neighbors
                            else None, quota=mixer.anchor_quota)
    for epoch in range(2):
        g = gen(epoch)
        step.start_epoch(epoch, None)
        assert mixer.neighbours is None or mixer.neighbours.fitted
        idx, mask = planner.epoch_plan(epoch, 0, g)
        idx = idx.to(DEVICE)  # as the trainer moves its plan
        assert (mask is not None) == (mixer.sampler_mode == "oversample")
        for start in range(0, len(idx), 10):
            idx_b = idx[start : start + 10]
            mask_b = None if mask is None else mask[start : start + 10]
            batch = Batch(idx_b, mask_b, epoch, g)
            x_b, y_b = step.sample(batch)
            assert torch.equal(x_b, images[idx_b].float()) and torch.equal(y_b, labels[idx_b])
            x_mix, target = step.mix(x_b, y_b, batch)
            assert x_mix.shape == x_b.shape and target.shape == (len(idx_b), 3)
            assert bool(((target >= 0) & (target <= 1)).all())
            torch.testing.assert_close(target.sum(1), torch.ones(len(idx_b), device=DEVICE))
            if PRESETS[name]["partner"] == "knn_class" and PRESETS[name]["rule"] == "hard":
                # hard labels, same-class partners: targets stay one-hot
                assert bool((target.max(1).values == 1).all())


def test_step_without_a_mixer_uses_one_hot_targets():
    labels = long_tailed_labels([5, 3])
    inputs = torch.randn(len(labels), 4, device=DEVICE)
    step = mix_step(inputs, labels, None, 2)
    step.start_epoch(0, None)
    batch = Batch(t([0, 6, 7]), None, 0, gen())
    x, target = step.mix(*step.sample(batch), batch)
    assert torch.equal(x, inputs[[0, 6, 7]])
    assert target.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]


def test_presets_follow_the_design_table():
    smote = Mixer.preset("smote")
    assert (smote.anchors, smote.partner, smote.k, smote.lam, smote.rule) == (
        "oversample",
        "knn_class",
        5,
        "uniform",
        "hard",
    )
    assert (smote.neighbours.k, smote.neighbours.within_class) == (5, True)
    soft = Mixer.preset("soft_smote")
    assert (soft.anchors, soft.partner, soft.lam, soft.rule) == (
        "oversample",
        "knn_any",
        "uniform",
        "soft",
    )
    assert soft.neighbours.within_class is False
    for name in ("mixup", "remix", "mamix"):
        mixer = Mixer.preset(name)
        assert (mixer.anchors, mixer.partner, mixer.lam, mixer.rule) == (
            "instance",
            "random",
            "beta",
            {"mixup": "soft"}.get(name, name),
        )
        assert mixer.neighbours is None and not mixer.uses_neighbours
    assert Mixer.preset("mamix").rule_params == {"q": -0.25}
    assert Mixer.preset("remix", rule_params={"K": 2}).rule_params == {"K": 2.0, "tau": 0.5}
    assert "rule='mamix'" in repr(Mixer.preset("mamix"))


@pytest.mark.parametrize(
    "knobs, name",
    [
        (dict(anchors="all"), "anchors"),
        (dict(partner="nearest"), "partner"),
        (dict(lam="gauss"), "lam"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=-1.0), "alpha"),
        (dict(lam_per="class"), "lam_per"),
        (dict(rule="focal"), "rule"),
        (dict(rule="remix", rule_params={"K": 0.5}), "K"),
        (dict(rule="remix", rule_params={"tau": 1.0}), "tau"),
        (dict(rule="soft", rule_params={"q": 1.0}), "parameters"),
        (dict(rule_params=[("q", 1.0)]), "rule_params"),
        (dict(input_mode="blend"), "input_mode"),
        (dict(k=0), "k"),
        (dict(k=2.5), "k"),
        (dict(space="latent"), "space"),
        (dict(downscale=0), "downscale"),
        (dict(partner="knn_class", downscale=0), "downscale"),
        (dict(refresh_every=0), "refresh_every"),
        (dict(class_counts=[3, 0]), "class_counts"),
        (dict(num_classes=0), "num_classes"),
        (dict(neighbours=torch.zeros(3, 2, dtype=torch.long)), "neighbours"),
    ],
)
def test_every_knob_is_validated(knobs, name):
    with pytest.raises(ParameterError, match=name):
        Mixer(**knobs)


def test_preset_and_call_errors():
    with pytest.raises(ParameterError, match="'preset'"):
        Mixer.preset("cutmix")
    with pytest.raises(ParameterError, match="'gamma'"):  # not a knob of the Mixer
        Mixer.preset("mixup", gamma=0.5)
    x, y = torch.rand(4, 3), torch.zeros(4, dtype=torch.long)
    smote = Mixer.preset("smote", class_counts=[4.0])
    with pytest.raises(ParameterError, match="'index'"):  # kNN partners need the indices
        smote(x, y, generator=torch.Generator())
    with pytest.raises(ParameterError, match="'neighbours'"):  # and a fitted table
        smote(x, y, torch.arange(4), generator=torch.Generator())
    mixer = Mixer(class_counts=[4.0])
    with pytest.raises(ParameterError, match="'y'"):
        mixer(x, y[:3], generator=torch.Generator())
    with pytest.raises(ParameterError, match="'x'"):
        mixer(x.long(), y, generator=torch.Generator())
    with pytest.raises(ParameterError, match="'index'"):
        mixer(x, y, torch.arange(3), generator=torch.Generator())
    with pytest.raises(ParameterError, match="'synthetic'"):
        mixer(x, y, torch.arange(4), torch.ones(4), generator=torch.Generator())


def test_mixer_moves_with_to():
    mixer = Mixer.preset("smote", class_counts=[3, 2])
    labels = torch.tensor([0, 0, 0, 1, 1])
    mixer.neighbours.fit(torch.randn(5, 2), labels)
    assert set(mixer.state_dict()) == {"class_counts"}  # the table is rebuilt, not saved
    moved = mixer.to(torch.float64)
    assert moved.neighbours.indices.dtype == torch.long
    assert moved.neighbours.labels.dtype == torch.long
    mixer.to(DEVICE)
    assert mixer.class_counts.device.type == mixer.neighbours.indices.device.type == \
        torch.device(DEVICE).type
    assert math.isclose(Mixer.preset("mixup").alpha, 1.0)


# --------------------------------------------------------------------------- label balance


def test_neighbour_class_share_by_hand():
    labels = t([0, 0, 0, 1, 2])
    table = t([[1, 3], [0, 4], [1, 0], [3, 0], [3, 3]])  # row 3 points at itself once
    share = neighbour_class_share(table, labels, 4).cpu()
    expected = torch.tensor(
        [[4 / 6, 1 / 6, 1 / 6, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(share[:3], expected)
    assert bool(share[3].isnan().all())  # class 3 has no examples


@pytest.mark.parametrize("seed", range(5))
def test_neighbour_class_share_rows_and_within_class_tables(seed):
    g = torch.Generator().manual_seed(seed)
    n, c = 200, 6
    labels = torch.randint(0, c, (n,), generator=g).to(DEVICE)
    points = torch.randn(n, 3, generator=g).to(DEVICE)
    present = torch.bincount(labels, minlength=c) > 0
    any_share = neighbour_class_share(knn_indices(points, labels, k=4, within_class=False),
                                      labels, c).cpu()
    torch.testing.assert_close(any_share[present.cpu()].sum(1),
                               torch.ones(int(present.sum()), dtype=torch.float64))
    own_share = neighbour_class_share(knn_indices(points, labels, k=4, within_class=True),
                                      labels, c).cpu()
    torch.testing.assert_close(own_share[present.cpu()],
                               torch.eye(c, dtype=torch.float64)[present.cpu()])


def test_oversample_label_mass_by_hand_and_conserved():
    counts = t([100, 30, 10, 0])
    share = t([[0.8, 0.1, 0.1, 0.0], [0.5, 0.5, 0.0, 0.0], [0.7, 0.2, 0.1, 0.0],
               [float("nan")] * 4], dtype=torch.float64)
    hard = oversample_label_mass(counts, share, rule="hard").cpu()
    assert hard.tolist() == [100.0, 100.0, 100.0, 0.0]
    soft = oversample_label_mass(counts, share, rule="soft").cpu()
    # extra = [0, 70, 90]; d = 0: 100 + 0.5 * (70 * 0.5 + 90 * 0.7) = 149
    # d = 1: 30 + 35 + 0.5 * (70 * 0.5 + 90 * 0.2) = 91.5; d = 2: 10 + 45 + 0.5 * 9 = 59.5
    torch.testing.assert_close(soft, torch.tensor([149.0, 91.5, 59.5, 0.0], dtype=torch.float64))
    assert abs(float(soft.sum()) - 300.0) < 1e-9
    quarter = oversample_label_mass(counts, share, rule="soft", lam_mean=0.25).cpu()
    expected = torch.tensor([124.5, 95.75, 79.75, 0.0], dtype=torch.float64)
    torch.testing.assert_close(quarter, expected)


@pytest.mark.parametrize("preset", ["smote", "soft_smote"])
def test_label_mass_formula_matches_the_mixer(preset):
    """Label mass summed over many epochs of the real mixer agrees with the closed form."""
    sizes = [40, 15, 6]
    labels = long_tailed_labels(sizes)
    g = torch.Generator().manual_seed(7)
    inputs = torch.randn(len(labels), 2, generator=g).to(DEVICE)
    inputs[labels == 2] += 0.5  # the tail sits among the head, as in images
    counts = counts_of(labels, 3)
    mixer = Mixer.preset(preset, class_counts=counts, k=3).to(DEVICE)
    mixer.neighbours.fit(inputs, labels)  # partners read from the fitted inputs
    g = gen(0)
    epochs, total = 300, torch.zeros(3, dtype=torch.float64, device=DEVICE)
    for _ in range(epochs):
        idx = torch.randperm(len(labels), generator=g, device=DEVICE)
        order, synthetic = resample_anchors(idx, labels, 3, "oversample", g)
        _, target = mixer(inputs[order], labels[order], order, synthetic, generator=g)
        total += target.sum(0).double()
    share = neighbour_class_share(mixer.neighbours.indices, labels, 3)
    rule = PRESETS[preset]["rule"]
    expected = oversample_label_mass(counts, share, rule=rule).cpu()
    if rule == "hard":
        assert (total / epochs).cpu().tolist() == [40.0, 40.0, 40.0]
    else:
        assert float(expected[2]) < 35.0  # the formula does see the loss of tail mass
        torch.testing.assert_close((total / epochs).cpu(), expected, atol=0.6, rtol=0)


def test_balanced_mixup_config_from_the_readme_resolves_and_checks_beta():
    from tailmix.pipeline.config import resolve

    base = {"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
            "train": {"epochs": 2}, "strategy": "Mixup"}
    spec = resolve({**base, "mixer": {"preset": "mixup", "partner": "balanced",
                                      "partner_q": 0, "alpha": 0.2, "beta": 1}})
    assert spec.composition.mixer["beta"] == 1
    for mixer, key in (({"preset": "smote", "beta": 1}, "mixer.beta"),
                       ({"preset": "mixup", "beta": 0}, "mixer.beta")):
        with pytest.raises(ParameterError) as info:
            resolve({**base, "mixer": mixer})
        assert info.value.name == key, info.value


# ------------------------------------------------------------ how often and when it mixes

def test_prob_mixes_that_share_of_batches_and_leaves_the_rest_untouched():
    """``prob``: one draw a batch decides whether it is mixed; an unmixed batch keeps its
    inputs bit for bit and one-hot targets. Over 2,000 batches the mixed share is 0.3
    within a binomial test."""
    counts = [50, 20, 5]
    mixer = Mixer(class_counts=counts, prob=0.3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 3), torch.arange(16) % 3
    one_hot = torch.nn.functional.one_hot(y, 3).float()
    mixed = 0
    for _ in range(2000):
        x_mix, target = mixer(x, y, generator=g)
        if torch.equal(x_mix, x):
            assert torch.equal(target, one_hot)
        else:
            mixed += 1
            assert not torch.equal(target, one_hot)
    assert stats.binomtest(mixed, 2000, 0.3).pvalue > 1e-3


def test_prob_draws_per_example_when_lam_is_per_example():
    mixer = Mixer(class_counts=[10, 10], prob=0.25, lam_per="example", lam="uniform")
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(400, 2), torch.arange(400) % 2
    x_mix, _ = mixer(x, y, generator=g)
    kept = int((x_mix == x).all(dim=1).sum())
    # a mixed example equal to its anchor needs lam == 0 or a partner equal to it
    assert stats.binomtest(400 - kept, 400, 0.25).pvalue > 1e-3


def test_a_mixer_mixes_only_inside_its_epochs_and_draws_nothing_outside():
    """``from_epoch <= epoch < until_epoch``, as :meth:`Mixer.start_epoch` is told; outside,
    the batch passes unmixed and the generator is not advanced."""
    mixer = Mixer(class_counts=[30, 3], from_epoch=2, until_epoch=4)
    x, y = torch.rand(8, 5), torch.arange(8) % 2
    labels, inputs = torch.arange(33) % 2, torch.rand(33, 5)
    seen = []
    for epoch in range(6):
        mixer.start_epoch(epoch, labels=labels, inputs=inputs, features=lambda: None)
        g = torch.Generator().manual_seed(7)
        before = g.get_state()
        x_mix, target = mixer(x, y, generator=g)
        unmixed = torch.equal(x_mix, x)
        assert unmixed == torch.equal(g.get_state(), before)
        assert unmixed == torch.equal(target, torch.nn.functional.one_hot(y, 2).float())
        seen.append(not unmixed)
    assert seen == [False, False, True, True, False, False]
    assert Mixer(class_counts=[3, 3]).active  # a loop that never calls start_epoch mixes


@pytest.mark.parametrize("mixer, key", [({"prob": 0}, "mixer.prob"),
                                        ({"prob": 1.5}, "mixer.prob"),
                                        ({"from_epoch": 3, "until_epoch": 3},
                                         "mixer.until_epoch"),
                                        ({"from_epoch": -1}, "mixer.from_epoch"),
                                        ({"until_epoch": 1.5}, "mixer.until_epoch")])
def test_bad_prob_or_epochs_are_refused_naming_the_key(mixer, key):
    from tailmix.pipeline.config import resolve

    cfg = {"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
           "train": {"epochs": 10}, "strategy": "Mixup", "mixer": mixer}
    with pytest.raises(ParameterError) as info:
        resolve(cfg)
    assert info.value.name == key, info.value


@pytest.mark.parametrize("window, epochs, key", [
    ({"from_epoch": 150, "until_epoch": 0.5}, 200, "mixer.until_epoch"),
    ({"from_epoch": 0.5, "until_epoch": 0.3}, 10, "mixer.until_epoch"),
    ({"from_epoch": 50}, 20, "mixer.from_epoch")])
def test_an_epoch_window_that_would_never_mix_is_refused(window, epochs, key):
    from tailmix.pipeline.config import resolve

    with pytest.raises(ParameterError) as info:
        resolve({"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
                 "train": {"epochs": epochs}, "strategy": "Mixup", "mixer": window})
    assert info.value.name == key, info.value


@pytest.mark.parametrize("epochs, window", [(200, (4, 197)), (60, (1, 59)), (2, (0, 2)),
                                            (1, (0, 1))])
def test_epoch_shares_of_the_mixer_become_epochs_with_one_that_mixes(epochs, window):
    """CMO's window, 3 < epoch < 197 of 200 (0-based), as shares 0.02 and 0.985: any run
    keeps at least one epoch that mixes."""
    from tailmix.pipeline.config import resolve

    spec = resolve({"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"},
                    "train": {"epochs": epochs, "warmup_epochs": 0, "milestones": [],
                              "lr_factors": []},
                    "strategy": "Mixup", "mixer": {"from_epoch": 0.02, "until_epoch": 0.985}})
    m = spec.composition.mixer
    assert (m["from_epoch"], m["until_epoch"]) == window


# ------------------------------------------------------------------- UniMix's two knobs

def test_batch_partners_are_drawn_by_class_weight_with_replacement():
    """``partner="batch"``: each partner an example of the same batch, drawn with
    probability ``~ n_y ** -partner_q`` (UniMix's sampler); chi-square over 300 batches."""
    counts = torch.tensor([400.0, 100.0, 25.0])
    mixer = Mixer(class_counts=counts, partner="batch", partner_q=0.5, lam="uniform")
    y = torch.tensor([0] * 8 + [1] * 4 + [2] * 4)
    x = torch.nn.functional.one_hot(torch.arange(16), 16).float()  # each row names itself
    g = torch.Generator().manual_seed(3)
    drawn = torch.zeros(16)
    eye = torch.eye(16, dtype=torch.bool)
    for _ in range(300):
        x_mix, _ = mixer(x, y, generator=g)
        # row i holds (1 - lam) at column i and lam at its partner's (all at i: itself)
        other = x_mix.masked_fill(eye, 0.0)
        partner = torch.where(other.sum(dim=1) > 0, other.argmax(dim=1), torch.arange(16))
        drawn += torch.bincount(partner, minlength=16).float()
    weight = counts[y] ** -0.5
    expected = weight / weight.sum() * drawn.sum()
    assert stats.chisquare(drawn.numpy(), expected.numpy()).pvalue > 1e-3


def test_unimix_share_follows_its_wrapped_distribution():
    """``lam="unimix"``: for an anchor of class size 90 and a partner of size 10 the anchor
    keeps ``0.1 + b`` (``b ~ Beta(0.8, 0.8)``), less 1 above 1: a KS test against that law."""
    counts = [90, 10]
    mixer = Mixer(class_counts=counts, lam="unimix", alpha=0.8)
    g = torch.Generator().manual_seed(5)
    y = torch.tensor([0, 1] * 64)
    kept = []
    for _ in range(40):
        _, target = mixer(torch.rand(128, 2), y, generator=g)
        pair = (y == 0) & (target[:, 1] > 0)  # an anchor of class 0 with a class-1 partner
        kept.append(target[pair, 0])
    kept = torch.cat(kept).double().numpy()
    law = stats.beta(0.8, 0.8)

    def cdf(t):
        t = torch.as_tensor(t, dtype=torch.float64).numpy()
        low = law.cdf(t.clip(0.1, 1.0) - 0.1) * (t >= 0.1)
        return low + law.cdf((t + 0.9).clip(0.9, 1.0)) - law.cdf(0.9)

    assert len(kept) > 1000
    assert stats.kstest(kept, cdf).pvalue > 1e-3


def test_unimix_knobs_need_counts_and_refuse_lam_per():
    with pytest.raises(ParameterError) as info:
        Mixer(lam="unimix")
    assert info.value.name == "class_counts"
    with pytest.raises(ParameterError) as info:
        Mixer(partner="batch")
    assert info.value.name == "class_counts"
    assert Mixer(class_counts=[3, 1], lam="unimix").unused(["lam_per", "alpha"]) == [
        ("lam_per", "lam: uniform or beta")]


# ------------------------------------------------------------- two mixed views (GLMC)

def test_pair_mixes_two_views_with_the_same_partners_and_share():
    """``Mixer.pair``: the blended view is ``lerp(x1, x1[perm], lam)`` and the pasted view
    takes its box from ``x2[perm]``, the same permutation and draw of ``lam``; each target
    follows its own view (the pasted one by the box's area)."""
    counts = [5, 3]
    mixer = Mixer(class_counts=counts, lam="uniform")
    b = 6
    # every image constant, its own value: a mixed pixel tells which images it mixes
    x1 = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, 8, 8).clone()
    x2 = x1 + 100
    y = torch.tensor([0, 0, 0, 1, 1, 0])
    (v1, t1), (v2, t2) = mixer.pair(x1, x2, y, generator=torch.Generator().manual_seed(4))
    assert (v1 == v1[:, :, :1, :1]).all()  # blended: one value per image
    for i in range(b):
        pasted = v2[i].unique()
        assert 100 + i in pasted or len(pasted) == 1
        others = [int(v) - 100 for v in pasted if int(v) != 100 + i]
        j = others[0] if others else None
        if j is None:
            continue
        lam = float(v1[i, 0, 0, 0] - x1[i, 0, 0, 0]) / (j - i)  # v1 = x_i + lam (x_j - x_i)
        area = float((v2[i] == 100 + j).float().mean())
        assert abs(t1[i, y[j]] - (lam if y[j] != y[i] else 1.0)) < 1e-5
        assert abs(t2[i, y[j]] - (area if y[j] != y[i] else 1.0)) < 1e-5


def test_pair_draws_one_share_for_both_views():
    """Two blended views of the same inputs are the same mix: one draw of ``lam`` (and of
    the partners) serves both; the generator then stands where one draw leaves it."""
    mixer = Mixer(class_counts=[4, 2], lam_per="example")
    x, y = torch.rand(6, 3), torch.tensor([0, 0, 0, 1, 1, 0])
    (v1, t1), (v2, t2) = mixer.pair(x, x.clone(), y, modes=("interpolate", "interpolate"),
                                    generator=torch.Generator().manual_seed(2))
    assert torch.equal(v1, v2) and torch.equal(t1, t2)
    one, _ = mixer(x, y, generator=torch.Generator().manual_seed(2))
    assert torch.equal(one, v1)  # the same draws as a single mixing


def test_pair_fetches_a_partner_once_per_view():
    """Partners by dataset index (a class pool) are fetched, so augmented, once per view,
    with the same indices."""
    counts = [30, 3]
    labels = torch.tensor([0] * 30 + [1] * 3)
    mixer = Mixer(class_counts=counts, partner="balanced")
    mixer.pool.fit(labels, inputs=torch.rand(33, 1, 4, 4))
    asked = []

    def fetch(idx):
        asked.append(idx.clone())
        return torch.rand(len(idx), 1, 4, 4)

    x, y = torch.rand(8, 1, 4, 4), labels[:8]
    mixer.pair(x, x.clone(), y, generator=torch.Generator().manual_seed(0), fetch=fetch)
    assert len(asked) == 2 and torch.equal(asked[0], asked[1])


def test_mixed_views_train_end_to_end_and_are_refused_without_a_mixer(tmp_path):
    """``consistency: {views: mixed}``: the classifier sees both mixed views (twice the
    batch) and the run trains; without a mixer it is refused naming the key."""
    from tailmix.pipeline.build import build_run
    from tailmix.pipeline.config import resolve

    cfg = {"dataset": {"name": "digits", "n_max": 60, "ratio": 10},
           "model": {"arch": "small_cnn"},
           "train": {"epochs": 2, "batch_size": 32, "device": "cpu", "precision": "fp32"},
           "log": {"progress": False}, "strategy": "Mixup",
           "consistency": {"weight": 0.5, "dim": 16, "views": "mixed"}}
    run = build_run(cfg, tmp_path / "run", log=lambda _: None)
    sizes = []
    step = run.trainer.step
    call = step.forward

    def forward(model, x, target, views=None):
        sizes.append((x.shape[0], views))
        return call(model, x, target, views)

    step.forward = forward
    run.fit()
    assert sizes and all(v == "halves" and n % 2 == 0 for n, v in sizes)
    assert sizes[0][0] == 64
    import json

    rows = [json.loads(r) for r in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert all(0 <= r["train_acc"] <= 100 for r in rows)  # two views, one accuracy
    with pytest.raises(ParameterError) as info:
        build_run({**cfg, "strategy": "ERM"}, None, log=lambda _: None)
    assert info.value.name == "consistency.views"
    with pytest.raises(ParameterError) as info:  # its views are one blended, one pasted
        build_run({**cfg, "mixer": {"input_mode": "cutmix"}}, None, log=lambda _: None)
    assert info.value.name == "mixer.input_mode"
    with pytest.raises(ParameterError) as info:
        resolve({**cfg, "consistency": {"weight": 1.0, "views": "twice"}})
    assert info.value.name == "consistency.views"


def test_a_step_of_two_views_counts_each_example_once_in_the_accuracy(tmp_path):
    """A step that classifies two views of each example (twice the batch's rows) gets the
    accuracy of its examples, not twice it: every row right is 100%."""
    import json

    from tailmix.pipeline.build import build_run
    from tailmix.pipeline.steps import StepOutput

    cfg = {"dataset": {"name": "digits", "n_max": 60, "ratio": 10},
           "model": {"arch": "small_cnn"},
           "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "precision": "fp32"},
           "log": {"progress": False}, "strategy": "ERM"}
    run = build_run(cfg, tmp_path / "run", log=lambda _: None)
    real = run.trainer.step

    def two_views(model, batch):
        out = real(model, batch)
        both = torch.cat([out.target, out.target])
        return StepOutput(out.loss, both * 10, both)  # every row right

    run.trainer.step = two_views
    run.fit()
    row = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    assert row["train_acc"] == pytest.approx(100.0)
