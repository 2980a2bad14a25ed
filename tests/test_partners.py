"""Partners beyond the batch (a class pool) and Mixup with CutMix in one batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tailmix._validation import ParameterError
from tailmix.mixing import Mixer
from tailmix.mixing.mixer import ClassPool

COUNTS = [500, 100, 20, 5]


def _labels():
    return torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])[
        torch.randperm(sum(COUNTS), generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, -0.5, -1.0])
def test_pool_class_frequencies_follow_n_to_the_q(q):
    labels = _labels()
    pool = ClassPool(q=q).fit(labels)
    n = np.array(COUNTS, dtype=float)
    target = n ** -q / (n ** -q).sum()  # q 0: balanced, -1: as the data, 1: inverse
    np.testing.assert_allclose(pool.class_probabilities().numpy(), target, rtol=1e-6)
    drawn = pool.partners(200_000, torch.Generator().manual_seed(0))
    freq = np.bincount(labels[drawn].numpy(), minlength=4) / len(drawn)
    # 200k draws: the standard error of a share is at most 0.0011.
    np.testing.assert_allclose(freq, target, atol=0.005)


def test_pool_draws_every_example_of_a_class_equally():
    labels = _labels()
    pool = ClassPool(q=0.0).fit(labels)
    drawn = pool.partners(100_000, torch.Generator().manual_seed(2))
    hits = np.bincount(drawn.numpy(), minlength=len(labels))
    for c, n in enumerate(COUNTS):
        members = hits[(labels == c).numpy()]
        assert members.min() > 0
        expected = 100_000 / 4 / n
        # relative spread of Poisson counts: sqrt(expected) / expected, 5 sigma
        assert np.abs(members - expected).max() < 5 * np.sqrt(expected) + 1


def test_pool_is_seeded_and_skips_absent_classes():
    labels = torch.tensor([0, 0, 2, 2, 2])
    pool = ClassPool(q=0.0).fit(labels, num_classes=4)
    assert pool.class_probabilities().tolist() == [0.5, 0.0, 0.5, 0.0]
    a = pool.partners(50, torch.Generator().manual_seed(3))
    b = pool.partners(50, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and set(labels[a].tolist()) == {0, 2}


def test_balanced_partners_rebalance_the_partner_labels_of_a_mixer():
    labels = _labels()
    inputs = torch.arange(len(labels), dtype=torch.float32)[:, None].repeat(1, 3)
    mixer = Mixer.preset("mixup", class_counts=COUNTS, partner="balanced")
    mixer.pool.fit(labels, inputs=inputs)
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(0, len(labels))
    _, target = mixer(inputs[idx], labels[idx], generator=g)
    assert torch.allclose(target.sum(1), torch.ones(len(idx)))
    tail_mass = torch.zeros(4)
    for _ in range(20):
        _, t = mixer(inputs[idx], labels[idx], generator=g)
        tail_mass += t.sum(0)
    # anchors are as the data (500:100:20:5), partners balanced: class 3 gets far more
    # than its 0.8% of the label mass.
    share = tail_mass / tail_mass.sum()
    assert share[3] > 0.05


def test_either_pastes_or_blends_each_example():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g)
    y = torch.arange(64) % 4
    for prob, pasted in ((1.0, True), (0.0, False)):
        mixer = Mixer.preset("mixup", class_counts=COUNTS, input_mode="either",
                             cutmix_prob=prob, lam_per="example")
        x_mix, target = mixer(x, y, generator=torch.Generator().manual_seed(5))
        perm = torch.randperm(64, generator=torch.Generator().manual_seed(5))
        from_anchor = torch.isclose(x_mix, x)
        from_partner = torch.isclose(x_mix, x[perm])
        if pasted:  # every pixel is the anchor's or the partner's
            assert bool((from_anchor | from_partner).all())
            # soft rule: the partner's label share is the pasted area
            share = from_partner.float().mean((1, 2, 3))
            same = y == y[perm]
            rows = ~same
            assert torch.allclose(target[rows, y[perm][rows]], share[rows], atol=1e-6)
        else:
            assert bool((~(from_anchor | from_partner)).any())


def test_either_mixes_both_kinds_in_one_batch():
    x = torch.rand(256, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(256) % 4
    mixer = Mixer.preset("mixup", class_counts=COUNTS, input_mode="either", cutmix_prob=0.5,
                         lam_per="example", alpha=0.5)
    x_mix, _ = mixer(x, y, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    pure = (torch.isclose(x_mix, x) | torch.isclose(x_mix, x[perm])).flatten(1).all(1)
    assert 0.35 < pure.float().mean().item() < 0.7


@pytest.mark.parametrize("knobs, name", [
    ({"partner_q": float("nan")}, "partner_q"), ({"cutmix_prob": 1.5}, "cutmix_prob"),
    ({"partner": "global"}, "partner"), ({"input_mode": "both"}, "input_mode"),
])
def test_bad_knobs_name_themselves(knobs, name):
    with pytest.raises(ParameterError) as info:
        Mixer.preset("mixup", class_counts=COUNTS, **knobs)
    assert info.value.name == name


def test_a_run_with_balanced_partners_and_either_learns():
    from conftest import digits_config

    from tailmix.pipeline.build import build_run

    cfg = digits_config(epochs=4)
    cfg["strategy"] = "MAMix-DRW"
    cfg["mixer"] = {"preset": "mamix", "partner": "balanced", "partner_q": 0.0,
                    "input_mode": "either"}
    run = build_run(cfg, None, log=lambda _: None)
    mixer = run.trainer.step.mixer
    assert mixer.pool is not None and not mixer.uses_neighbours
    rows = [run.trainer.train_epoch(e) for e in range(3)]
    assert mixer.pool.fitted and rows[-1]["train_loss"] < rows[0]["train_loss"]


@pytest.mark.parametrize("rule", ["hard", "soft", "remix", "mamix"])
@pytest.mark.parametrize("partner", ["random", "balanced"])
@pytest.mark.parametrize("mode", ["interpolate", "cutmix", "either"])
def test_every_combination_mixes_with_every_label_rule(rule, partner, mode):
    labels = _labels()
    images = torch.rand(len(labels), 3, 6, 6, generator=torch.Generator().manual_seed(0))
    mixer = Mixer(class_counts=COUNTS, partner=partner, input_mode=mode, rule=rule,
                  lam_per="example")
    if mixer.pool is not None:
        mixer.pool.fit(labels, inputs=images)
    idx = torch.arange(64)
    x_mix, target = mixer(images[idx], labels[idx], idx,
                          generator=torch.Generator().manual_seed(1))
    assert x_mix.shape == (64, 3, 6, 6) and target.shape == (64, 4)
    assert torch.allclose(target.sum(1), torch.ones(64)) and bool((target >= 0).all())
    assert float(x_mix.min()) >= 0 and float(x_mix.max()) <= 1  # convex or pasted
    assert not torch.equal(x_mix, images[idx])  # something was mixed
