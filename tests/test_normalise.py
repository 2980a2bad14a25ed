"""What a class-weighted loss divides by (``weights.normalise``): the weighted target mass,
the rows, or each source's own mass (the anchors' labels and the partners' apart)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tailmix._validation import ParameterError
from tailmix.losses import LOSSES, build_loss
from tailmix.mixing import Mixer

COUNTS = [500, 200, 80, 30, 10]


def _parts(gen, b, c=5, per_batch=True):
    """Anchor and partner labels, a share each, and the parts a mixer would give."""
    y = torch.randint(0, c, (b,), generator=gen)
    y2 = torch.randint(0, c, (b,), generator=gen)
    lam = torch.rand(1 if per_batch else b, generator=gen, dtype=torch.float64).expand(b)
    eye = torch.eye(c, dtype=torch.float64)
    return y, y2, lam, torch.stack([(1 - lam)[:, None] * eye[y], lam[:, None] * eye[y2]])


def test_sources_is_the_two_weighted_means_of_cmo_and_the_reference_code():
    """``lam * ce_w(y_a) + (1 - lam) * ce_w(y_b)`` with PyTorch's weighted mean for each
    label set, over random batches, shares and weights (per-batch share, as CMO's)."""
    gen = torch.Generator().manual_seed(0)
    loss = build_loss("ce", class_counts=COUNTS)
    for _ in range(100):
        b = int(torch.randint(2, 17, (1,), generator=gen))
        y, y2, lam, parts = _parts(gen, b)
        z = torch.randn(b, 5, generator=gen, dtype=torch.float64)
        v = torch.rand(5, generator=gen, dtype=torch.float64) * 4 + 0.01
        want = (1 - lam[0]) * F.cross_entropy(z, y, weight=v) \
            + lam[0] * F.cross_entropy(z, y2, weight=v)
        got = loss(z, parts, v, normalise="sources")
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
        assert loss.class_terms(z, parts, v, normalise="sources").sum().item() == \
            pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_sources_agrees_with_mass_where_it_must(name):
    """One source, or no class weights: ``sources`` is the plain weighted mean or mean."""
    gen = torch.Generator().manual_seed(1)
    loss = build_loss(name, class_counts=COUNTS)
    for _ in range(20):
        b = int(torch.randint(2, 9, (1,), generator=gen))
        _, _, _, parts = _parts(gen, b, per_batch=False)
        z = torch.randn(b, 5, generator=gen, dtype=torch.float64)
        v = torch.rand(5, generator=gen, dtype=torch.float64) * 4 + 0.01
        whole = parts.sum(0)
        assert loss(z, parts, normalise="sources").item() == \
            pytest.approx(loss(z, whole).item(), rel=1e-12)
        assert loss(z, whole[None], v, normalise="sources").item() == \
            pytest.approx(loss(z, whole, v).item(), rel=1e-12)  # a single source
        one = torch.stack([whole, torch.zeros_like(whole)])  # an unmixed batch
        assert loss(z, one, v, normalise="sources").item() == \
            pytest.approx(loss(z, whole, v).item(), rel=1e-12)


def test_sources_refuses_parts_of_another_shape():
    loss = build_loss("ce", class_counts=COUNTS)
    with pytest.raises(ParameterError, match="target"):
        loss(torch.zeros(3, 5), torch.zeros(2, 4, 5), torch.ones(5), normalise="sources")


@pytest.mark.parametrize("knobs", [
    {"preset": "mixup"}, {"preset": "remix"}, {"preset": "mamix"},
    {"preset": "mixup", "partner": "balanced", "partner_q": 0.0, "input_mode": "cutmix",
     "prob": 0.5},
    {"preset": "mixup", "partner": "batch", "partner_q": 0.5, "lam": "unimix", "alpha": 0.8},
    {"preset": "mixup", "lam_per": "example", "input_mode": "either", "prob": 0.5},
], ids=["mixup", "remix", "mamix", "cmo", "unimix", "either"])
def test_a_mixers_parts_add_up_to_its_targets_exactly(knobs):
    """``parts=True`` splits the same draw's targets by source: the same inputs, parts that
    sum bit for bit to the targets, the anchors' part on the anchors' labels."""
    knobs = dict(knobs)
    preset = knobs.pop("preset")
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(64, 3, 8, 8, generator=gen)
    y = torch.arange(64) % 5  # every class present (the class pool draws from each)
    index = torch.arange(64)
    fetch = lambda idx: x[idx]  # noqa: E731
    for seed in range(5):
        mixer = Mixer.preset(preset, class_counts=COUNTS, **knobs)
        mixer.start_epoch(0, labels=y, inputs=x, features=lambda: x.flatten(1))
        a_x, a_t = mixer(x, y, index, generator=torch.Generator().manual_seed(seed),
                         fetch=fetch)
        b_x, parts = mixer(x, y, index, generator=torch.Generator().manual_seed(seed),
                           fetch=fetch, parts=True)
        assert torch.equal(a_x, b_x)
        assert parts.shape == (2, *a_t.shape)
        assert torch.equal(parts.sum(0), a_t)
        off_anchor = torch.ones_like(a_t, dtype=torch.bool).scatter_(1, y[:, None], False)
        assert (parts[0][off_anchor] == 0).all()


def test_a_run_with_sources_trains_and_cmo_drw_uses_it(tmp_path):
    from tailmix import train
    from tailmix.pipeline.config import load_config_file

    cfg = {**load_config_file("digits"), "strategy": "CMO-DRW"}
    cfg["train"] = {**cfg["train"], "epochs": 6}
    cfg["log"] = {**cfg.get("log", {}), "progress": False}
    result = train(cfg, tmp_path / "run", log=lambda _: None)
    assert result["final"]["top1"] > 50  # digits, 10 classes: it learns
    plain = train({**cfg, "weights": {"normalise": "mass"}}, tmp_path / "mass",
                  log=lambda _: None)
    assert plain["final"] != result["final"]  # the re-weighted epochs differ


def _digits(strategy, epochs=2, **sections):
    from tailmix.pipeline.config import load_config_file

    cfg = {**load_config_file("digits"), "strategy": strategy, **sections}
    cfg["train"] = {**cfg["train"], "epochs": epochs, **sections.get("train", {})}
    cfg["log"] = {**cfg.get("log", {}), "progress": False}
    return cfg


@pytest.mark.parametrize("strategy, sections", [
    ("GLMC", {}),  # two mixed views of one batch (Mixer.pair's parts)
    ("CMO-DRW", {"sam": {"rho": 0.05, "tail_below": 40}}),  # ImbSAM: the loss by class
    ("CMO-DRW", {"sam": {"rho": 0.05}}),  # SAM's second pass on the same parts
], ids=["glmc-views", "imbsam", "sam"])
def test_sources_trains_with_views_and_sharpness(tmp_path, strategy, sections):
    from tailmix import train

    cfg = _digits(strategy, epochs=3, weights={"normalise": "sources",
                                               **({"start_epoch": 0} if strategy != "GLMC"
                                                  else {})}, **sections)
    result = train(cfg, tmp_path / "run", log=lambda _: None)
    assert 0 <= result["final"]["top1"] <= 100 and result["final"]["test_loss"] < 10


def test_sources_refusals_name_the_setting(tmp_path):
    from tailmix.pipeline.config import resolve

    with pytest.raises(ParameterError) as err:
        resolve(_digits("CMO-DRW", train={"accumulate": 2}))
    assert err.value.name == "train.accumulate"
    with pytest.raises(ParameterError) as err:
        resolve(_digits("M2m", mixer={"preset": "mixup"},
                        weights={"name": "drw", "normalise": "sources"}))
    assert err.value.name == "weights.normalise"


def test_a_loss_or_mixer_without_the_keyword_is_refused_by_name():
    from tailmix.mixing import Mixer
    from tailmix.pipeline.steps import MixStep
    from tailmix.weights import build_weight_schedule

    class OwnLoss(torch.nn.Module):
        def forward(self, logits, target, class_weights=None):
            return logits.sum()

    class OwnMixer(torch.nn.Module):
        def forward(self, x, y, index=None, synthetic=None, *, generator=None, fetch=None):
            return x, y

        def forget_search(self):
            pass

    rows = build_weight_schedule("cb", class_counts=COUNTS, epochs=2, normalise="rows")
    sources = build_weight_schedule("cb", class_counts=COUNTS, epochs=2, normalise="sources")
    common = dict(inputs=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.long),
                  augment=torch.nn.Identity(), num_classes=5, device=torch.device("cpu"))
    with pytest.raises(ParameterError, match="OwnLoss") as err:
        MixStep(loss=OwnLoss(), weights=rows, **common)
    assert err.value.name == "weights.normalise"
    with pytest.raises(ParameterError, match="OwnMixer") as err:
        MixStep(loss=build_loss("ce", class_counts=COUNTS), weights=sources,
                mixer=OwnMixer(), **common)
    assert err.value.name == "weights.normalise"
    MixStep(loss=OwnLoss(), weights=build_weight_schedule("cb", class_counts=COUNTS,
                                                          epochs=2), **common)
    MixStep(loss=build_loss("ce", class_counts=COUNTS), weights=sources,
            mixer=Mixer(class_counts=COUNTS), **common)
