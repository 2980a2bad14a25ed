"""The strategy catalogue: named compositions of sampler x mixer x loss x weights x head.

A strategy is data, not a training loop: every name below is trained by the same loop in
:mod:`tailmix.pipeline.engine`. A config may override any part (``loss: {name: focal, gamma: 2}``)
or spell a composition from scratch under any name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from tailmix._validation import ParameterError
from tailmix.registry import STRATEGIES


@dataclass(frozen=True)
class Strategy:
    """A named composition. ``settings`` are config sections the strategy sets beyond its
    parts (``{"augment": {"policy": "autoaugment"}, "sam": {...}}``): defaults under the
    run's config, so a config that sets a key keeps its own value. ``paper`` names the
    publication whose method the composition follows (empty for a plain baseline)."""

    name: str
    summary: str
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "instance"})
    mixer: dict[str, Any] | None = None
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "ce"})
    weights: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    head: str = "linear"
    generative: dict[str, Any] | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    paper: str = ""


_DRW = {"name": "drw", "start_epoch": 0.8, "beta": 0.9999}
# CMO (Park et al., CVPR 2022; the authors' CIFAR defaults): a box of a class-balanced
# example (their minority sampler's weights n ** -1 per example) pasted onto the
# instance-sampled image, its area Beta(1, 1), labels by area, in half the batches, and
# not in the first 4 and the last 3 of 200 epochs (0-based 3 < epoch < 197).
_CMO = {"preset": "mixup", "partner": "balanced", "partner_q": 0.0, "input_mode": "cutmix",
        "alpha": 1.0, "prob": 0.5, "from_epoch": 0.02, "until_epoch": 0.985}
_MAMIX_AA = Strategy("MAMix-DRW-AA", "MAMix-DRW with AutoAugment (CIFAR-10 policy) and Cutout 16 "
                     "on the device: for long schedules (200 epochs); short ones under-fit",
                     mixer={"preset": "mamix"}, weights=dict(_DRW),
                     settings={"augment": {"policy": "autoaugment", "cutout": 16}},
                     paper="Cheng, Mai, Lin, TAAI 2023; AutoAugment: Cubuk et al., CVPR 2019")

for _s in [
    Strategy("ERM", "plain cross-entropy on the long-tailed data"),
    Strategy("CB", "class-balanced weights (effective number, beta 0.9999) from the start",
             weights={"name": "cb", "beta": 0.9999}, paper="Cui et al., CVPR 2019"),
    Strategy("DRW", "cross-entropy, class-balanced weights deferred to 80% of the run",
             weights=dict(_DRW), paper="Cao et al., NeurIPS 2019"),
    Strategy("Focal", "focal loss, gamma 1", loss={"name": "focal", "gamma": 1.0},
             paper="Lin et al., ICCV 2017"),
    Strategy("LDAM-DRW", "LDAM margins (max 0.5, s 30) on a cosine head, with DRW",
             loss={"name": "ldam", "max_margin": 0.5, "s": 30.0}, weights=dict(_DRW),
             head="cosine", paper="Cao et al., NeurIPS 2019"),
    Strategy("LA", "logit-adjusted loss (tau 1)", loss={"name": "la", "tau": 1.0},
             paper="Menon et al., ICLR 2021"),
    Strategy("BS", "balanced softmax", loss={"name": "bs"}, paper="Ren et al., NeurIPS 2020"),
    Strategy("SMOTE", "oversample every class to n_max by interpolating same-class "
             "neighbours (k 5), anchor's hard label", mixer={"preset": "smote"},
             paper="Chawla et al., JAIR 2002"),
    Strategy("Borderline-SMOTE", "SMOTE whose synthetic examples come only from examples "
             "in danger: at least half, not all, of their 10 nearest neighbours over all "
             "classes are of other classes (Borderline-SMOTE-1)",
             mixer={"preset": "borderline_smote"}, paper="Han, Wang, Mao, ICIC 2005"),
    Strategy("Borderline-SMOTE-2", "Borderline-SMOTE whose anchors in danger interpolate "
             "toward any of their 5 nearest neighbours, at most half-way toward one of "
             "another class, keeping the anchor's label", mixer={"preset": "borderline_smote2"},
             paper="Han, Wang, Mao, ICIC 2005"),
    Strategy("ADASYN", "SMOTE whose synthetic examples go to each example in proportion to "
             "the share of other classes among its 5 nearest neighbours",
             mixer={"preset": "adasyn"}, paper="He, Bai, Garcia, Li, IJCNN 2008"),
    Strategy("soft-SMOTE", "SMOTE with neighbours from any class and soft (Mixup) labels",
             mixer={"preset": "soft_smote"}, paper="Cheng, Mai, Lin, TAAI 2023"),
    Strategy("Mixup", "Mixup (alpha 1) with soft labels", mixer={"preset": "mixup"},
             paper="Zhang et al., ICLR 2018"),
    Strategy("Mixup-DRW", "Mixup (alpha 1) with DRW", mixer={"preset": "mixup"},
             weights=dict(_DRW), paper="Zhang et al., ICLR 2018; DRW: Cao et al., NeurIPS 2019"),
    Strategy("Balanced-MixUp", "Mixup of instance-sampled anchors with class-balanced "
             "partners, the partner's share drawn from Beta(0.2, 1): mostly the anchor",
             mixer={"preset": "mixup", "partner": "balanced", "partner_q": 0.0,
                    "alpha": 0.2, "beta": 1.0},
             paper="Galdran, Carneiro, Gonzalez Ballester, MICCAI 2021"),
    # Under DRW, CMO's code averages the background's and the patch's label terms each
    # over its own class weights (lam * ce_w(y) + (1 - lam) * ce_w(y2)): normalise sources.
    Strategy("CMO-DRW", "a class-balanced example's box pasted onto the instance-sampled "
             "image (CutMix, labels by area) in half the batches, with DRW (the "
             "background's and the patch's labels each a weighted mean)",
             mixer=dict(_CMO), weights={**_DRW, "normalise": "sources"},
             paper="Park et al., CVPR 2022"),
    Strategy("CMO-BS", "CMO's pasted class-balanced boxes with balanced softmax",
             mixer=dict(_CMO), loss={"name": "bs"}, paper="Park et al., CVPR 2022"),
    Strategy("UniMix", "partners drawn from the batch by class weight n ** -0.5, the "
             "anchor's share n_partner / (n_anchor + n_partner) + Beta(0.8, 0.8) (wrapped), "
             "with the prior-compensated (logit-adjusted) loss",
             mixer={"preset": "mixup", "partner": "batch", "partner_q": 0.5, "lam": "unimix",
                    "alpha": 0.8},
             loss={"name": "la", "tau": 1.0}, paper="Xu et al., NeurIPS 2021"),
    Strategy("MiSLAS", "Mixup (alpha 1), then a twentieth of the run re-training the classifier, "
             "not re-initialised, on class-balanced batches with label-aware smoothing "
             "(eps 0.3 for the largest class to 0 for the smallest, concave), lr 0.05",
             mixer={"preset": "mixup"},
             settings={"crt": {"epochs": 0.05, "lr": 0.05, "reinit": False,
                               "loss": {"name": "las", "eps_head": 0.3, "eps_tail": 0.0}}},
             paper="Zhong et al., CVPR 2021"),
    # GLMC (Du et al., CVPR 2023; the authors' CIFAR-10 ratio-100 command): partners from
    # the whole training set by instance (their second loader's weights n ** -0 = 1: as a
    # class pool, classes ~ n), one Beta(1, 1) share for a blended and a pasted view of the
    # batch, a SimSiam-style term between the views (their weight 1 beside the sum of the
    # two views' losses and of the term's two halves; our loss is the mean of the views'
    # and the term the mean of its halves, so weight 1 keeps their ratio), and the loss
    # moving from plain to n ** -1.2 re-weighted targets as (t / T) ** 2, the weighted loss
    # a mean over the rows as theirs (never divided by the weighted mass, so the
    # classification loss shrinks beside the term as the weights take over). Their two
    # heads (plain and re-weighted, the second used at test) are one head here whose class
    # weights move the same way. Their optimiser (lr 0.01, batch 64, weight decay 5e-3,
    # cosine) is a run setting: the config's protocol applies, as to every strategy.
    Strategy("GLMC", "a blended (Mixup) and a pasted (CutMix) view of each batch with the "
             "same partners and share, a consistency term between them, and class weights "
             "moving from uniform to n ** -1.2 along the run (one head)",
             mixer={"preset": "mixup", "partner": "balanced", "partner_q": -1.0},
             weights={"name": "cumulative", "power": 1.2, "normalise": "rows"},
             settings={"consistency": {"weight": 1.0, "views": "mixed"}},
             paper="Du et al., CVPR 2023"),
    Strategy("Remix-DRW", "Remix labels (K 3, tau 0.5) with DRW",
             mixer={"preset": "remix"}, weights=dict(_DRW), paper="Chou et al., ECCV-W 2020"),
    Strategy("MAMix-DRW", "margin-aware Mixup labels (q -0.25) with DRW",
             mixer={"preset": "mamix"}, weights=dict(_DRW), paper="Cheng, Mai, Lin, TAAI 2023"),
    _MAMIX_AA,
    replace(_MAMIX_AA, name="MAMix-DRW-AA-SimSiam",
            summary="MAMix-DRW-AA with a two-view consistency term (SimSiam-style, weight 1): "
                    "the recipe for long schedules; each step runs the network on two more "
                    "views",
            settings={**_MAMIX_AA.settings, "consistency": {"weight": 1.0}},
            paper=_MAMIX_AA.paper + "; SimSiam: Chen, He, CVPR 2021"),
    Strategy("M2m", "ERM warm-up (80% of the run), then class-balanced batches whose "
             "minority slots take majority examples translated toward the slot's class",
             generative={"name": "m2m", "steps": 10, "step_size": 0.1, "lam": 0.5,
                         "gamma": 0.9, "beta": 0.999},  # warm-up: m2m.WARMUP_SHARE
             paper="Kim, Jeong, Shin, CVPR 2020"),
    Strategy("DeepSMOTE", "SMOTE in an autoencoder's latent space tops every class up to "
             "n_max with decoded images", generative={"name": "deepsmote", "ae_epochs": 50,
                                                      "latent_dim": 300, "k": 5},
             paper="Dablain, Krawczyk, Chawla, IEEE TNNLS 2022"),
]:
    STRATEGIES.register(_s.name, _s)


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a named composition to the catalogue (or replace one)."""
    return STRATEGIES.register(strategy.name, strategy)


def _merge(base: dict[str, Any] | None, override: dict[str, Any] | None, key: str,
           strategy: str):
    """Override a component: a different ``name``/``preset`` replaces it, else params update."""
    if override is None:
        return copy.deepcopy(base)
    if not isinstance(override, dict):
        raise ParameterError(key, "a mapping", override)
    ident = "preset" if key == "mixer" else "name"
    if base is None and override.get(ident) is None:
        raise ParameterError(key, f"a mapping with a {ident!r} (strategy {strategy!r} has no "
                             f"{key} to adjust; e.g. {key}: {{{ident}: ...}})", override)
    if base is None or (ident in override and override[ident] != base.get(ident)):
        out = copy.deepcopy(override)
    else:
        out = {**copy.deepcopy(base), **override}
    if key == "mixer" and out.get("preset") == "none":
        return None
    return out


def compose(config: dict[str, Any]) -> dict[str, Any]:
    """The composition a resolved config asks for: the strategy's parts under its overrides."""
    name = config["strategy"]
    s = STRATEGIES.get(name, "strategy")
    parts = {key: _merge(getattr(s, key), config.get(key), key, name)
             for key in ("sampler", "mixer", "loss", "weights", "generative")}
    return {**parts, "head": config["model"]["head"] or s.head}
