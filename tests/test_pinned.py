"""Pinned values: the strategy catalogue's compositions, the lr schedule of a run and how
shares of a run become epochs.

Every expected value below is written out by hand from the method descriptions in
``tailmix/pipeline/strategies.py`` (and the papers they cite), not read back from the library, so
that a strategy quietly mapped to something else (LDAM-DRW to plain cross-entropy, DRW
switching on at the wrong epoch, Remix with MAMix's rule) fails here.
"""

import json

import pytest
import torch
from conftest import digits_config
from torch import nn

from tailmix._validation import ParameterError
from tailmix.models import CosineHead
from tailmix.pipeline.build import build_run, make_generative
from tailmix.pipeline.callbacks import Callback
from tailmix.pipeline.config import resolve, resolve_epoch
from tailmix.registry import STRATEGIES, load_builtins
from tailmix.weights import class_balanced_weights, inverse_frequency_weights

# --------------------------------------------------------------------------- the catalogue

EPOCHS = 10  # the runs below are resolved for 10 epochs: DRW's 80 % is epoch 8
_INSTANCE = {"name": "instance"}
_CE = {"name": "ce"}
_NONE = {"name": "none"}
_DRW = {"name": "drw", "start_epoch": 8, "beta": 0.9999}  # deferred to 0.8 of 10 epochs

_CMO = {"preset": "mixup", "partner": "balanced", "partner_q": 0.0, "input_mode": "cutmix",
        "alpha": 1.0, "prob": 0.5, "from_epoch": 0, "until_epoch": 10}

# strategy -> its composition for a digits config of 10 epochs, shares resolved to epochs.
CATALOGUE = {
    "ERM": {"sampler": _INSTANCE, "mixer": None, "loss": _CE, "weights": _NONE,
            "generative": None, "head": "linear"},
    "CB": {"sampler": _INSTANCE, "mixer": None, "loss": _CE,
           "weights": {"name": "cb", "beta": 0.9999}, "generative": None, "head": "linear"},
    "DRW": {"sampler": _INSTANCE, "mixer": None, "loss": _CE, "weights": _DRW,
            "generative": None, "head": "linear"},
    "Focal": {"sampler": _INSTANCE, "mixer": None, "loss": {"name": "focal", "gamma": 1.0},
              "weights": _NONE, "generative": None, "head": "linear"},
    "LDAM-DRW": {"sampler": _INSTANCE, "mixer": None,
                 "loss": {"name": "ldam", "max_margin": 0.5, "s": 30.0}, "weights": _DRW,
                 "generative": None, "head": "cosine"},
    "LA": {"sampler": _INSTANCE, "mixer": None, "loss": {"name": "la", "tau": 1.0},
           "weights": _NONE, "generative": None, "head": "linear"},
    "BS": {"sampler": _INSTANCE, "mixer": None, "loss": {"name": "bs"}, "weights": _NONE,
           "generative": None, "head": "linear"},
    "SMOTE": {"sampler": _INSTANCE, "mixer": {"preset": "smote"}, "loss": _CE,
              "weights": _NONE, "generative": None, "head": "linear"},
    # Han et al. 2005, imbalanced-learn's BorderlineSMOTE defaults: m_neighbors 10, k 5
    "Borderline-SMOTE": {"sampler": _INSTANCE, "mixer": {"preset": "borderline_smote"},
                         "loss": _CE, "weights": _NONE, "generative": None, "head": "linear"},
    # Han et al. 2005's second variant (imbalanced-learn's kind="borderline-2")
    "Borderline-SMOTE-2": {"sampler": _INSTANCE, "mixer": {"preset": "borderline_smote2"},
                           "loss": _CE, "weights": _NONE, "generative": None,
                           "head": "linear"},
    # He et al. 2008, imbalanced-learn's ADASYN default n_neighbors 5 for both searches
    "ADASYN": {"sampler": _INSTANCE, "mixer": {"preset": "adasyn"}, "loss": _CE,
               "weights": _NONE, "generative": None, "head": "linear"},
    "soft-SMOTE": {"sampler": _INSTANCE, "mixer": {"preset": "soft_smote"}, "loss": _CE,
                   "weights": _NONE, "generative": None, "head": "linear"},
    "Mixup": {"sampler": _INSTANCE, "mixer": {"preset": "mixup"}, "loss": _CE,
              "weights": _NONE, "generative": None, "head": "linear"},
    "Mixup-DRW": {"sampler": _INSTANCE, "mixer": {"preset": "mixup"}, "loss": _CE,
                  "weights": _DRW, "generative": None, "head": "linear"},
    # Galdran et al. 2021: instance anchors, a class-balanced partner, share ~ Beta(0.2, 1)
    "Balanced-MixUp": {"sampler": _INSTANCE,
                       "mixer": {"preset": "mixup", "partner": "balanced", "partner_q": 0.0,
                                 "alpha": 0.2, "beta": 1.0},
                       "loss": _CE, "weights": _NONE, "generative": None, "head": "linear"},
    # Park et al. 2022: a class-balanced partner's box pasted in half the batches, labels by
    # area, epochs 4..196 of 200 (shares 0.02 and 0.985: 0 and 10 of a 10-epoch run); under
    # DRW the background's and the patch's labels each a weighted mean (their code's
    # lam * ce_w(y) + (1 - lam) * ce_w(y2))
    "CMO-DRW": {"sampler": _INSTANCE, "mixer": _CMO, "loss": _CE,
                "weights": {**_DRW, "normalise": "sources"}, "generative": None,
                "head": "linear"},
    "CMO-BS": {"sampler": _INSTANCE, "mixer": _CMO, "loss": {"name": "bs"}, "weights": _NONE,
               "generative": None, "head": "linear"},
    # Xu et al. 2021 (the authors' CIFAR-10 code): partners from the batch ~ n ** -0.5 (tau
    # -0.5), the anchor's share n_j / (n_i + n_j) + Beta(0.8, 0.8), Bayias = logit adjustment
    "UniMix": {"sampler": _INSTANCE,
               "mixer": {"preset": "mixup", "partner": "batch", "partner_q": 0.5,
                         "lam": "unimix", "alpha": 0.8},
               "loss": {"name": "la", "tau": 1.0}, "weights": _NONE, "generative": None,
               "head": "linear"},
    # Zhong et al. 2021, stage one: Mixup alpha 1 with cross-entropy (stage two is its crt
    # settings, pinned in tests/test_strategies.py)
    "MiSLAS": {"sampler": _INSTANCE, "mixer": {"preset": "mixup"}, "loss": _CE,
               "weights": _NONE, "generative": None, "head": "linear"},
    # Du et al. 2023: instance-drawn partners from the whole set, cumulative n ** -1.2
    # weights from the start that scale the loss (a mean over the rows, never divided by
    # the weighted mass); its two views and their term are consistency settings
    "GLMC": {"sampler": _INSTANCE,
             "mixer": {"preset": "mixup", "partner": "balanced", "partner_q": -1.0},
             "loss": _CE, "weights": {"name": "cumulative", "power": 1.2, "normalise": "rows"},
             "generative": None, "head": "linear"},
    "Remix-DRW": {"sampler": _INSTANCE, "mixer": {"preset": "remix"}, "loss": _CE,
                  "weights": _DRW, "generative": None, "head": "linear"},
    "MAMix-DRW": {"sampler": _INSTANCE, "mixer": {"preset": "mamix"}, "loss": _CE,
                  "weights": _DRW, "generative": None, "head": "linear"},
    "MAMix-DRW-AA": {"sampler": _INSTANCE, "mixer": {"preset": "mamix"}, "loss": _CE,
                     "weights": _DRW, "generative": None, "head": "linear"},
    "MAMix-DRW-AA-SimSiam": {"sampler": _INSTANCE, "mixer": {"preset": "mamix"},
                             "loss": _CE, "weights": _DRW, "generative": None,
                             "head": "linear"},
    "M2m": {"sampler": _INSTANCE, "mixer": None, "loss": _CE, "weights": _NONE,
            "generative": {"name": "m2m", "warmup_epochs": 8, "steps": 10, "step_size": 0.1,
                           "lam": 0.5, "gamma": 0.9, "beta": 0.999},
            "head": "linear"},
    "DeepSMOTE": {"sampler": _INSTANCE, "mixer": None, "loss": _CE, "weights": _NONE,
                  "generative": {"name": "deepsmote", "ae_epochs": 50, "latent_dim": 300,
                                 "k": 5},
                  "head": "linear"},
}

# preset -> the knobs of the Mixer it builds (the label rule's parameters filled in).
_SMOTE_KNOBS = {"anchors": "oversample", "lam": "uniform", "alpha": 1.0, "lam_per": "example",
                "k": 5, "input_mode": "interpolate", "space": "input", "rule_params": {},
                "m_neighbors": None, "anchor_quota": False, "other_class_scale": 1.0}
_MIXUP_KNOBS = {"anchors": "instance", "partner": "random", "lam": "beta", "alpha": 1.0,
                "lam_per": "batch", "input_mode": "interpolate"}
MIXER_KNOBS = {
    # same-class neighbours, the anchor's hard label
    "smote": {**_SMOTE_KNOBS, "partner": "knn_class", "rule": "hard"},
    # neighbours from any class, Mixup's soft label
    "soft_smote": {**_SMOTE_KNOBS, "partner": "knn_any", "rule": "soft"},
    # only examples in danger among their 10 neighbours over all classes are anchors
    "borderline_smote": {**_SMOTE_KNOBS, "anchors": "borderline", "m_neighbors": 10,
                         "partner": "knn_class", "rule": "hard", "anchor_quota": False},
    # the same anchors; any-class neighbours, at most half-way toward another class
    "borderline_smote2": {**_SMOTE_KNOBS, "anchors": "borderline", "m_neighbors": 10,
                          "partner": "knn_any", "rule": "hard", "other_class_scale": 0.5},
    # anchors allotted by their share of other-class neighbours among k = 5
    "adasyn": {**_SMOTE_KNOBS, "anchors": "adasyn", "m_neighbors": 5, "partner": "knn_class",
               "rule": "hard", "anchor_quota": True},
    "mixup": {**_MIXUP_KNOBS, "rule": "soft", "rule_params": {}},
    "remix": {**_MIXUP_KNOBS, "rule": "remix", "rule_params": {"K": 3.0, "tau": 0.5}},
    "mamix": {**_MIXUP_KNOBS, "rule": "mamix", "rule_params": {"q": -0.25}},
}

# loss name -> the class the builder makes
LOSS_CLASSES = {"ce": "CrossEntropy", "focal": "Focal", "ldam": "LDAM", "la": "LogitAdjusted",
                "bs": "BalancedSoftmax"}


def _config(name: str) -> dict:
    # No lr steps: on a 10-epoch run DRW's share would move before the x0.01 step at 8.
    cfg = digits_config(epochs=EPOCHS, milestones=[], lr_factors=[])
    cfg["strategy"] = name
    cfg["eval"] = {"every": EPOCHS, "margins": False, "many_threshold": 60}
    load_builtins()
    if "cutout" in STRATEGIES.get(name, "strategy").settings.get("augment", {}):
        cfg["augment"] = {"cutout": 2}  # a 16 x 16 hole would blank the 8 x 8 digits
    return cfg


def test_the_catalogue_is_pinned_whole():
    load_builtins()
    assert sorted(STRATEGIES) == sorted(CATALOGUE)  # a new strategy needs its row here


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_strategy_resolves_to_its_pinned_composition(name):
    spec = resolve(_config(name))
    assert spec.composition.to_dict() == CATALOGUE[name]
    assert spec.strategy == name and spec.epochs == EPOCHS


@pytest.mark.parametrize("name", [n for n in CATALOGUE if n != "DeepSMOTE"])
def test_strategy_builds_its_pinned_parts(name):
    """The objects a run trains with, not only the composition it records. (DeepSMOTE's
    autoencoder trains while the run is built; its parts are checked below.)"""
    expected = CATALOGUE[name]
    run = build_run(_config(name), None, log=lambda _: None)
    step, counts = run.trainer.step, run.data.class_counts
    if name == "MiSLAS":  # the main run's step; its re-training stage is pinned elsewhere
        step = step.before
    # loss: its class and every parameter of the composition
    loss = expected["loss"]
    assert type(step.loss).__name__ == LOSS_CLASSES[loss["name"]]
    for key, value in loss.items():
        if key != "name":
            assert getattr(step.loss, key) == value, key
    # mixer: every knob of the preset
    if expected["mixer"] is None:
        assert step.mixer is None
    else:
        # the preset's knobs, under the ones the strategy sets itself
        knobs = {**MIXER_KNOBS[expected["mixer"]["preset"]],
                 **{k: v for k, v in expected["mixer"].items() if k != "preset"}}
        got = {k: getattr(step.mixer, k) for k in knobs}
        got["rule_params"] = dict(got["rule_params"])
        assert got == knobs
    # weights: none, from the start, or from the pinned epoch; effective-number weights
    schedule, start = step.weights, expected["weights"].get("start_epoch")
    assert schedule.normalise == expected["weights"].get("normalise", "mass")
    if expected["weights"]["name"] == "none":
        assert all(schedule(e) is None for e in range(EPOCHS))
    elif expected["weights"]["name"] == "cumulative":  # uniform, then (t / T) ** 2 of n ** -p
        w = inverse_frequency_weights(counts, expected["weights"]["power"])
        assert schedule(0) is None
        for e in range(1, EPOCHS):
            a = (e / EPOCHS) ** 2
            blend = (1 - a) + a * w
            torch.testing.assert_close(schedule(e), blend * len(w) / blend.sum())
    else:
        start = 0 if start is None else start
        assert [schedule(e) is None for e in range(EPOCHS)] == [e < start for e in range(EPOCHS)]
        cb = class_balanced_weights(counts, beta=0.9999)
        assert all(torch.equal(schedule(e), cb) for e in range(start, EPOCHS))
    # head
    head = run.trainer.model.head
    if expected["head"] == "cosine":
        assert isinstance(head, CosineHead)
    else:
        assert type(head) is nn.Linear
    # the epoch planner
    sampler = run.trainer.sampler
    if expected["mixer"] is not None and MIXER_KNOBS[expected["mixer"]["preset"]][
            "anchors"] != "instance":
        assert type(sampler).__name__ == "Resampled" and sampler.mode == "oversample"
        weighted = step.mixer.m_neighbors is not None
        assert (sampler.anchor_weights is not None) == weighted
        assert sampler.quota == (name == "ADASYN")
        sampler = sampler.base
    if name == "MiSLAS":  # the main run's 10 epochs, then re-training on balanced batches
        assert type(sampler).__name__ == "Phased" and sampler.switch_epoch == EPOCHS
        assert sampler.after.name == "class_balanced"
        sampler = sampler.before
    if name == "M2m":  # ERM warm-up, then class-balanced batches
        assert type(sampler).__name__ == "Phased" and sampler.switch_epoch == 8
        assert sampler.after.name == "class_balanced"
        sampler = sampler.before
        m2m = step.m2m
        for key, value in expected["generative"].items():
            if key != "name":
                assert getattr(m2m, key) == value, key
    assert sampler.name == expected["sampler"]["name"]


def test_deepsmote_builds_its_pinned_parts():
    part = CATALOGUE["DeepSMOTE"]["generative"]
    deepsmote = make_generative(part, counts=[120, 60, 30, 10])
    assert type(deepsmote).__name__ == "DeepSMOTE"
    assert (deepsmote.ae_epochs, deepsmote.latent_dim, deepsmote.k) == (50, 300, 5)


# --------------------------------------------------------------------------- epochs


@pytest.mark.parametrize(("value", "epochs", "expected"), [
    (0.8, 200, 160),   # DRW's default start in the CIFAR-LT protocol
    (0.9, 200, 180),
    (0.8, 10, 8),
    (0.8, 1, 0),       # a one-epoch run: the share lands on its only epoch
    (0.5, 3, 2),       # 1.5 -> 2: Python's round, half to even ...
    (0.5, 5, 2),       # ... so 2.5 -> 2, not 3
    (0.5, 7, 4),       # 3.5 -> 4
    (0.25, 10, 2),     # 2.5 -> 2
    (0.07, 100, 7),    # 7.000000000000001 -> 7 (not 8: no ceiling)
    (0.29, 100, 29),   # 28.999999999999996 -> 29 (not 28: no truncation)
    (0.999, 10, 9),    # 9.99 rounds to 10, capped at the last epoch
    (0.001, 10, 0),
    (3, 10, 3),        # ints are epoch numbers and pass through ...
    (0, 10, 0),
    (500, 10, 500),    # ... unchecked here (the components check their range)
    (3.0, 10, 3),      # an integral float is an epoch number too ...
    (1.0, 10, 1),      # ... so 1.0 is epoch 1, not the whole run
])
def test_resolve_epoch_values(value, epochs, expected):
    got = resolve_epoch("x", value, epochs)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", [1.5, -0.5, -2.5, True, "0.5", None])
def test_resolve_epoch_rejects(value):
    with pytest.raises(ParameterError) as info:
        resolve_epoch("train.milestones[0]", value, 10)
    assert info.value.name == "train.milestones[0]"


def test_shares_of_the_run_resolve_in_the_spec():
    cfg = digits_config(epochs=200)  # the step schedule's default milestones 0.8, 0.9
    cfg["strategy"] = "DRW"
    spec = resolve(cfg)
    assert spec.milestones == (160, 180)
    assert spec.composition.weights["start_epoch"] == 160
    cfg = digits_config(epochs=10, milestones=[0.5, 7, 0.999], lr_factors=[0.1, 0.01, 0.001])
    cfg["strategy"] = "M2m"
    cfg["weights"] = {"name": "drw", "start_epoch": 0.5}
    spec = resolve(cfg)
    assert spec.milestones == (5, 7, 9)
    assert spec.composition.weights["start_epoch"] == 5
    assert spec.composition.generative["warmup_epochs"] == 8


# --------------------------------------------------------------------------- lr schedule


class _LrProbe(Callback):
    """Records the lr each step reports and the lr the optimiser holds after each epoch."""

    def __init__(self, optimizer):
        self.optimizer, self.steps, self.applied = optimizer, [], []

    def on_epoch_start(self, state, epoch):
        self.epoch = epoch

    def on_step_end(self, state, step, steps, loss_sum, seen, lr):
        self.steps.append((self.epoch, step, steps, lr))

    def on_epoch_end(self, state, row):
        self.applied.append([g["lr"] for g in self.optimizer.param_groups])


def test_step_schedule_lr_of_every_epoch(tmp_path):
    """lr 0.05, warm-up 2 epochs, x0.1 at 0.5 of 10 epochs (epoch 5), x0.01 at 0.8 (8).

    ``history.jsonl``'s lr is the lr of the epoch's last step. The warm-up is linear in
    the run's progress, ``lr * (epoch + step / steps) / warmup``: the first epoch ends
    half-way up (0.025), the second at the full lr; the 0-based epochs 5, 6, 7 run at
    0.05 * 0.1 and 8, 9 at 0.05 * 0.01.
    """
    cfg = digits_config(epochs=10, lr=0.05, warmup_epochs=2, milestones=[0.5, 0.8],
                        lr_factors=[0.1, 0.01], batch_size=32)
    cfg["dataset"].update(n_max=30, ratio=10)  # 76 images: 3 steps an epoch
    cfg["eval"] = {"every": 10, "margins": False, "many_threshold": 20, "few_threshold": 5}
    run = build_run(cfg, tmp_path / "run", log=lambda _: None)
    assert run.spec.milestones == (5, 8)
    probe = _LrProbe(run.trainer.optimizer)
    run.trainer.callbacks.append(probe)
    run.fit()
    hist = [json.loads(x) for x in (tmp_path / "run/history.jsonl").read_text().splitlines()]
    expected = [0.025, 0.05, 0.05, 0.05, 0.05, 0.005, 0.005, 0.005, 0.0005, 0.0005]
    assert [h["lr"] for h in hist] == pytest.approx(expected, rel=1e-12, abs=0)
    # ... and it is the lr the optimiser stepped with (one parameter group, no scale)
    assert probe.applied == [[pytest.approx(lr, rel=1e-12, abs=0)] for lr in expected]
    # within the warm-up, step by step
    warm = [(e, s, n, lr) for e, s, n, lr in probe.steps if e < 2]
    n = warm[0][2]
    assert len(warm) == 2 * n and n > 1
    assert [lr for *_, lr in warm] == pytest.approx(
        [0.05 * (e + s / n) / 2 for e, s, _, _ in warm], rel=1e-12, abs=0)
