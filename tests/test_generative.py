"""Generative strategies: M2m's translation and rejection rule, DeepSMOTE's autoencoder,
latent SMOTE, balancing and cache, and both strategies end to end on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DEVICE, digits_config, train_interrupted
from torch import nn

from tailmix._validation import ParameterError
from tailmix.data import from_arrays, prepare_dataset
from tailmix.generative import (
    ConvAutoencoder,
    DeepSMOTE,
    M2m,
    M2mStep,
    accept_translations,
    latent_smote,
    reconstruction_error,
    resolve_warmup,
    seed_acceptance,
    translate,
)
from tailmix.generative import deepsmote as deepsmote_module
from tailmix.generative import m2m as m2m_module
from tailmix.mixing import knn_indices
from tailmix.pipeline.build import build_run, load_data, make_generative, train
from tailmix.pipeline.config import resolve
from tailmix.samplers import ClassBalancedSampler, InstanceSampler, Phased


def _cfg(strategy: str, epochs: int, **generative) -> dict:
    cfg = digits_config(epochs=epochs)
    cfg["strategy"] = strategy
    cfg["train"]["milestones"] = []
    cfg["train"]["lr_factors"] = []
    if generative:
        cfg["generative"] = generative
    return cfg


@pytest.fixture(scope="module")
def digits():
    return load_data(digits_config())


@pytest.fixture(scope="module")
def trained_erm():
    """A small CNN trained as ERM on long-tailed digits for 5 epochs (a built run), with its
    weights after the first 2 (shared by the M2m tests)."""
    run = build_run(_cfg("ERM", 5), None)
    for epoch in range(5):
        run.trainer.train_epoch(epoch)
        if epoch == 1:
            after_two = {key: value.clone()
                         for key, value in run.trainer.model.state_dict().items()}
    run.trainer.model.eval()
    return run, after_two


# --------------------------------------------------------------------------- M2m


def test_seed_acceptance_matches_hand_computed_values():
    src = torch.tensor([120.0, 60.0, 30.0, 30.0, 6.0])
    p = seed_acceptance(src, torch.tensor(30.0), 0.99)
    expected = [1 - 0.99**90, 1 - 0.99**30, 0.0, 0.0, 0.0]
    assert torch.allclose(p, torch.tensor(expected), atol=1e-6)
    assert torch.equal(seed_acceptance(src, torch.tensor(30.0), 0.0),
                       torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))


def test_rejection_rule_rejects_what_it_should():
    # Confident and certain seed: kept. Not confident, or seed never accepted: rejected.
    confidence = torch.tensor([0.95, 0.50, 0.95, 0.8999, 0.90, 1.0])
    acceptance = torch.tensor([1.00, 1.00, 0.00, 1.0000, 1.00, 0.0])
    gen = torch.Generator().manual_seed(0)
    ok = accept_translations(confidence, acceptance, gamma=0.9, generator=gen)
    assert ok.tolist() == [True, False, False, False, True, False]
    # With g always confident, a seed is accepted with probability 1 - beta^(n_k0 - n_k).
    n = 40_000
    p = seed_acceptance(torch.full((n,), 60.0), torch.tensor(50.0), 0.95)  # 1 - 0.95^10
    ok = accept_translations(torch.ones(n), p, gamma=0.9, generator=gen)
    assert abs(ok.float().mean().item() - (1 - 0.95**10)) < 0.015


class _Fixed(nn.Module):
    """Logits = x @ w: a fixed linear classifier for feature vectors."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        return x @ self.w


class _Recording(_Fixed):
    """The fixed classifier, recording how many examples each call saw: ``g`` sees every
    attempted translation (at each step and for the final confidence)."""

    def __init__(self, w: torch.Tensor):
        super().__init__(w)
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return super().forward(x)


def _apply(m2m: M2m, x, y, target=None, seed=0):
    """One M2m batch with ``g = f`` a fixed classifier; returns the new inputs and targets
    and how many translations were attempted."""
    target = torch.nn.functional.one_hot(y, 3).float() if target is None else target
    f = _Recording(torch.eye(3) * 5.0)
    m2m.g = f
    out_x, out_t = m2m.translate_batch(x, target, y, f=f, to_pixels=lambda t: t,
                                       normalise=lambda t: t, bounds=None,
                                       generator=torch.Generator().manual_seed(seed))
    if f.sizes:  # every call of one batch sees the same translated examples
        assert len(f.sizes) == m2m.steps + 1 and len(set(f.sizes)) == 1
    return out_x, out_t, f.sizes[0] if f.sizes else 0


def test_m2m_batch_replaces_only_accepted_minority_slots():
    # Classes of 100, 10 and 1 examples; the largest class is never a generation slot and
    # the smallest is one in 99% of cases; seeds come only from larger classes.
    y = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])
    x = torch.nn.functional.one_hot(y, 3).float() * 3.0
    m2m = M2m(class_counts=[100, 10, 1], warmup_epochs=1, steps=5, step_size=1.0, lam=0.5,
              gamma=0.0, beta=0.0, init_noise=0.0)
    out_x, out_t, attempted = _apply(m2m, x, y)
    changed = (out_x != x).any(1)
    assert not changed[:3].any()  # majority slots untouched
    assert attempted >= 4
    # gamma 0 and beta 0: every attempt is accepted and replaces its slot.
    assert int(changed.sum()) == attempted
    # A translated example moved toward its slot's class: that logit now leads.
    assert torch.equal(out_x[changed].argmax(1), y[changed])
    assert torch.equal(out_t, torch.nn.functional.one_hot(y, 3).float())
    # The draws come from the generator alone: the same seed, the same batch.
    again_x, again_t, _ = _apply(M2m(class_counts=[100, 10, 1], warmup_epochs=1, steps=5,
                                     step_size=1.0, lam=0.5, gamma=0.0, beta=0.0,
                                     init_noise=0.0), x, y)
    assert torch.equal(again_x, out_x) and torch.equal(again_t, out_t)

    # gamma 1: g is never that confident, so everything is rejected and nothing changes.
    strict = M2m(class_counts=[100, 10, 1], warmup_epochs=1, steps=5, step_size=1.0,
                 gamma=1.0, beta=0.0, init_noise=0.0)
    soft = torch.full((8, 3), 1 / 3)
    out_x, out_t, attempted = _apply(strict, x, y, target=soft)
    assert torch.equal(out_x, x) and torch.equal(out_t, soft)
    assert attempted >= 4  # attempted, and all rejected

    # A batch with no larger class than the slot's has no seed: nothing is attempted.
    only_small = torch.tensor([2, 2, 2])
    alone = M2m(class_counts=[100, 10, 1], warmup_epochs=1, gamma=0.0, beta=0.0)
    xs = torch.zeros(3, 3)
    out_x, _, attempted = _apply(alone, xs, only_small)
    assert torch.equal(out_x, xs) and attempted == 0

    # Without g (before the warm-up ends) there is nothing to translate with.
    with pytest.raises(ParameterError, match="'g'"):
        M2m(class_counts=[100, 10, 1], warmup_epochs=1).translate_batch(
            x, out_t, y, f=_Fixed(torch.eye(3)), to_pixels=lambda t: t,
            normalise=lambda t: t, bounds=None)


def test_frozen_copy_is_a_detached_evaluation_copy():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
    g = M2m.frozen_copy(net)
    assert not g.training and net.training
    assert not any(p.requires_grad for p in g.parameters())
    assert all(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not torch.equal(g[0].weight, net[0].weight)  # a copy, not a view


def test_translation_raises_the_target_logit(trained_erm):
    model = trained_erm[0].trainer.model
    data = trained_erm[0].data
    aug = data.augment
    mean, std = aug.mean.view(1, -1, 1, 1), aug.std.view(1, -1, 1, 1)
    source = data.train_labels == 0  # the largest class
    pixels = data.train_inputs[source][:64].float() / 255.0
    k0 = data.train_labels[source][:64]
    k = torch.full_like(k0, 9)  # the smallest class
    before = model((pixels - mean) / std).detach()
    out = translate(pixels, source=k0, target=k, g=model, f=model,
                    normalise=lambda p: (p - mean) / std, steps=10, step_size=0.1, lam=0.5,
                    init_noise=0.0)
    after = model((out - mean) / std).detach()
    gain = after[:, 9] - before[:, 9]
    assert (gain > 0).float().mean() >= 0.95 and gain.mean() > 0
    assert (after[:, 0] - before[:, 0]).mean() < 0  # and lowered the source logit
    assert out.min() >= 0 and out.max() <= 1
    moved = (out - pixels).flatten(1).norm(dim=1)
    assert (moved <= 10 * 0.1 + 1e-4).all() and (moved > 0).all()


def test_m2m_warmup_is_plain_erm_then_translates(trained_erm, monkeypatch):
    run = build_run(_cfg("M2m", 3, warmup_epochs=2, steps=3), None)
    m2m, trainer = run.extra["generative"], run.trainer
    assert isinstance(m2m, M2m) and m2m.warmup_epochs == 2
    assert isinstance(trainer.step, M2mStep) and trainer.step.m2m is m2m
    # instance-balanced batches during the warm-up, class-balanced after it
    sampler = trainer.sampler
    assert isinstance(sampler, Phased) and sampler.switch_epoch == 2
    assert isinstance(sampler.current(1), InstanceSampler)
    assert isinstance(sampler.current(2), ClassBalancedSampler)
    attempted = []
    original = m2m_module.translate

    def recording(pixels, **kwargs):
        attempted.append(len(pixels))
        return original(pixels, **kwargs)

    monkeypatch.setattr(m2m_module, "translate", recording)
    for epoch in range(2):
        trainer.train_epoch(epoch)
    erm = trained_erm[1]  # the ERM run's weights after the same 2 epochs
    b = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    assert all(torch.equal(erm[key], b[key]) for key in erm)
    assert attempted == [] and m2m.g is None
    trainer.train_epoch(2)
    assert sum(attempted) > 0
    assert m2m.g is not None and not m2m.g.training
    g = m2m.g.state_dict()
    assert all(torch.equal(g[key], b[key]) for key in g)  # g is the end-of-warm-up network


def test_m2m_trains_end_to_end_and_resumes_identically(tmp_path, monkeypatch):
    cfg = _cfg("M2m", 3, warmup_epochs=1, steps=2)
    result = train(cfg, tmp_path / "straight")
    assert 0 <= result["final"]["top1"] <= 100
    assert (tmp_path / "straight" / "checkpoints" / "m2m_g.pt").is_file()
    saved = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert saved["class_counts"][0] == 120

    train_interrupted(cfg, tmp_path / "resumed", at_epoch=2, monkeypatch=monkeypatch)
    # Resumed after the warm-up: g comes back from the run folder, the draws from the seed.
    train(cfg, tmp_path / "resumed", resume=True)
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize(("generative", "key"), [
    ({"warmup_epochs": 5}, "generative.warmup_epochs"),   # longer than the run
    ({"warmup_epochs": 4}, "generative.warmup_epochs"),   # leaves no M2m epoch
    ({"warmup_epochs": 0}, "generative.warmup_epochs"),
    ({"steps": 0}, "generative.steps"),
    ({"step_size": 0.0}, "generative.step_size"),
    ({"step_size": -0.1}, "generative.step_size"),
    ({"gamma": 1.5}, "generative.gamma"),
    ({"beta": 1.0}, "generative.beta"),
    ({"lam": -1}, "generative.lam"),
    ({"stpes": 3}, "generative.stpes"),
])
def test_m2m_rejects_bad_parameters_before_training(generative, key):
    with pytest.raises(ParameterError) as err:
        build_run(_cfg("M2m", 4, **generative), None)
    assert err.value.name == key


def test_m2m_warmup_may_be_a_share_of_the_run():
    spec = resolve(_cfg("M2m", 10, warmup_epochs=0.3))
    assert spec.composition.generative["warmup_epochs"] == 3
    assert resolve(_cfg("M2m", 10)).composition.generative["warmup_epochs"] == 8  # default
    assert resolve_warmup(4, 10) == 4 and resolve_warmup(0.5, 4) == 2
    with pytest.raises(ParameterError, match="generative.warmup_epochs"):
        resolve_warmup(10, 10)


def test_unknown_generative_name_is_rejected():
    cfg = _cfg("ERM", 2, name="gan")
    with pytest.raises(ParameterError) as err:
        build_run(cfg, None)
    assert err.value.name == "generative.name"


# --------------------------------------------------------------------------- DeepSMOTE


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 33, 31), (2, 5, 7)])
def test_autoencoder_keeps_any_image_size(shape):
    model = ConvAutoencoder(input_shape=shape, latent_dim=12, width=4)
    x = torch.rand(3, *shape)
    z = model.encode(x)
    out = model.decode(z)
    assert z.shape == (3, 12) and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1


def test_autoencoder_reconstruction_error_falls_on_digits(digits):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ConvAutoencoder(input_shape=digits.input_shape, latent_dim=32, width=16)
    before = reconstruction_error(model, digits.train_inputs)
    history = deepsmote_module.train_autoencoder(
        model, digits.train_inputs, digits.train_labels, epochs=4, batch_size=32, lr=2e-3,
        generator=torch.Generator().manual_seed(0))
    after = reconstruction_error(model, digits.train_inputs)
    assert len(history) == 4 and history[-1] < history[0]
    assert after < 0.5 * before


def test_latent_smote_points_lie_between_same_class_neighbours():
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([0] * 20 + [1] * 6 + [2] * 2 + [3] * 1)
    latents = torch.randn(len(labels), 5, generator=gen)
    add = [0, 14, 18, 4]
    smote = latent_smote(latents, labels, add_per_class=add, k=3, generator=gen)
    assert torch.bincount(smote.labels, minlength=4).tolist() == add
    assert torch.equal(labels[smote.base], smote.labels)
    assert torch.equal(labels[smote.partner], smote.labels)
    assert ((smote.lam >= 0) & (smote.lam <= 1)).all()
    expected = latents[smote.base] + smote.lam[:, None] * (
        latents[smote.partner] - latents[smote.base])
    assert torch.allclose(smote.points, expected)
    knn = knn_indices(latents, labels, k=3, within_class=True)
    assert (knn[smote.base] == smote.partner[:, None]).any(1).all()
    # Collinear with its two parents: distances add up along the segment.
    d_base = (smote.points - latents[smote.base]).norm(dim=1)
    d_partner = (smote.points - latents[smote.partner]).norm(dim=1)
    span = (latents[smote.partner] - latents[smote.base]).norm(dim=1)
    assert torch.allclose(d_base + d_partner, span, atol=1e-5)
    # A class of one has only itself: its synthetic points are copies of it.
    only = smote.labels == 3
    assert torch.allclose(smote.points[only], latents[labels == 3].expand(4, -1))


def test_balanced_synthetic_set_and_cache_reuse(digits, tmp_path, monkeypatch):
    maker = DeepSMOTE(ae_epochs=1, latent_dim=16, width=8, k=3, cache_dir=tmp_path)
    first = maker.synthesize(digits)
    counts = digits.class_counts
    n_max = max(counts)
    assert not first.from_cache and first.cache_path.is_file()
    assert first.inputs.dtype == torch.uint8
    assert first.inputs.shape[1:] == digits.train_inputs.shape[1:]
    synth = torch.bincount(first.labels, minlength=len(counts)).tolist()
    assert synth == [n_max - n for n in counts]
    assert [a + b for a, b in zip(synth, counts, strict=True)] == [n_max] * len(counts)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached autoencoder should have been reused")

    monkeypatch.setattr(deepsmote_module, "train_autoencoder", no_training)
    second = DeepSMOTE(ae_epochs=1, latent_dim=16, width=8, k=3,
                       cache_dir=tmp_path).synthesize(digits)
    assert second.from_cache and second.cache_path == first.cache_path
    assert torch.equal(second.inputs, first.inputs) and torch.equal(second.labels, first.labels)
    # Another parameter or another profile is another cache entry.
    assert DeepSMOTE(ae_epochs=2, latent_dim=16, width=8, k=3,
                     cache_dir=tmp_path).cache_path(digits) != first.cache_path
    cfg = digits_config()
    cfg["dataset"]["ratio"] = 10
    other = load_data(cfg)
    assert maker.cache_key(other) != maker.cache_key(digits)
    assert not list(tmp_path.rglob("*.tmp"))


def test_deepsmote_trains_end_to_end_on_balanced_digits(tmp_path):
    cfg = _cfg("DeepSMOTE", 2, ae_epochs=2, width=8)
    run = build_run(cfg, tmp_path / "run")
    counts = run.data.class_counts
    labels = torch.bincount(run.data.train_labels.cpu(), minlength=10).tolist()
    assert labels == [max(counts)] * 10  # the classifier saw a balanced training set
    assert counts[0] == 120 and counts[-1] < 120  # losses and metrics keep the real counts
    deepsmote = run.extra["generative"]
    assert isinstance(deepsmote, DeepSMOTE) and deepsmote.num_real == sum(counts)
    assert len(run.trainer.sampler.global_indices(0, 0)) == 10 * max(counts)
    # the step draws from the enlarged set, with the real counts in its class weights
    assert len(run.trainer.step.labels) == 10 * max(counts)
    result = run.fit()
    assert 0 <= result["final"]["top1"] <= 100
    margins = json.loads((tmp_path / "run" / "margins.json").read_text())
    assert margins["class_counts"] == counts


def test_deepsmote_rejects_feature_vectors_before_training(monkeypatch):
    rng = np.random.default_rng(0)
    raw = from_arrays(rng.normal(size=(40, 6)).astype(np.float32), np.repeat(np.arange(2), 20),
                      rng.normal(size=(10, 6)).astype(np.float32), np.repeat(np.arange(2), 5))
    data = prepare_dataset(raw, profile="original")
    with pytest.raises(ParameterError) as err:
        DeepSMOTE.check_data(data)
    assert err.value.name == "generative.name"
    with pytest.raises(ParameterError):
        DeepSMOTE(ae_epochs=1).synthesize(data)
    with pytest.raises(ParameterError) as err:
        DeepSMOTE(ae_epochs=1).transform(data)
    assert err.value.name == "generative.name"
    # A run on such data stops while it is built, before any autoencoder trains.

    def no_training(*args, **kwargs):
        raise AssertionError("the autoencoder was trained")

    monkeypatch.setattr(deepsmote_module, "train_autoencoder", no_training)
    cfg = {"dataset": {"name": "arrays", "profile": "original"}, "model": {"arch": "mlp"},
           "strategy": "DeepSMOTE", "train": {"epochs": 2, "device": "cpu"},
           "log": {"progress": False}}
    with pytest.raises(ParameterError) as err:
        build_run(cfg, None, data=raw)
    assert err.value.name == "generative.name"


@pytest.mark.parametrize(("params", "key"), [
    ({"ae_epochs": 0}, "generative.ae_epochs"),
    ({"latent_dim": 0}, "generative.latent_dim"),
    ({"k": 0}, "generative.k"),
    ({"lr": 0}, "generative.lr"),
    ({"latent": 3}, "generative.latent"),
])
def test_deepsmote_rejects_bad_parameters(digits, params, key):
    with pytest.raises(ParameterError) as err:
        make_generative({"name": "deepsmote", **params}, counts=digits.class_counts)
    assert err.value.name == key
    with pytest.raises(ParameterError) as err:  # and so does a config, before any data
        resolve(_cfg("DeepSMOTE", 2, **params))
    assert err.value.name == key


def test_generative_mapping_needs_a_known_name():
    for part in ({"ae_epochs": 2}, "deepsmote", None):
        with pytest.raises(ParameterError) as err:
            make_generative(part, counts=[10, 5])
        assert err.value.name == "generative"
    assert isinstance(make_generative({"name": "deepsmote"}, counts=[10, 5]), DeepSMOTE)
    m2m = make_generative({"name": "m2m", "warmup_epochs": 3}, counts=[10, 5])
    assert isinstance(m2m, M2m) and m2m.class_counts.tolist() == [10.0, 5.0]


def test_generative_runs_on_the_test_device():
    # The M2m batch transform keeps every tensor on the device it is given.
    device = torch.device(DEVICE)
    y = torch.tensor([0, 0, 1, 2], device=device)
    m2m = M2m(class_counts=[50, 10, 2], warmup_epochs=1, gamma=0.0, beta=0.0).to(device)
    f = _Fixed(torch.eye(3, device=device))
    m2m.g = f
    x = torch.randn(4, 3, device=device)
    out_x, out_t = m2m.translate_batch(
        x, torch.nn.functional.one_hot(y, 3).float(), y, f=f, to_pixels=lambda t: t,
        normalise=lambda t: t, bounds=None,
        generator=torch.Generator(device=device).manual_seed(0))
    assert out_x.device == x.device and out_t.device == x.device


def test_every_process_reads_the_m2m_snapshot_only_rank0_writes_it(tmp_path):
    """Under torchrun a resumed M2m run must translate with the saved g on every rank."""
    from tailmix.pipeline.build import build_run
    from tailmix.pipeline.sections import Assembly

    run = build_run(_cfg("M2m", 3, warmup_epochs=1, steps=2), tmp_path / "run")
    step_kw = {k: getattr(run.trainer.step, k) for k in ("inputs", "labels", "augment", "loss",
                                                          "weights", "mixer", "num_classes",
                                                          "device", "amp", "channels_last")}
    for rank in (0, 1):
        built = Assembly(spec=run.spec, data=run.data, network=run.trainer.model,
                         optimizer=run.trainer.optimizer, device=run.device,
                         counts=run.data.class_counts, rank=rank, world_size=2,
                         out=tmp_path / "run")
        step = run.extra["generative"].step(step_kw, built)
        assert step.snapshot_path == tmp_path / "run" / "checkpoints" / "m2m_g.pt"
        assert step.save is (rank == 0)
