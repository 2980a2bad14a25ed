"""Generative strategies: examples made for minority classes rather than mixed in a batch.

A generative strategy speaks the training loop's two-call protocol:

- ``prepare(trainer)``: once before the first (or resumed) epoch; may replace the training
  data and the sampler (DeepSMOTE appends synthetic images);
- ``transform_batch(x, target, y, idx, epoch, trainer) -> (x, target)``: on every training
  batch after augmentation and mixing (M2m translates examples here).

:func:`build_generative` turns a config's ``generative`` mapping into one of them.
"""

from __future__ import annotations

import inspect
from typing import Any

from tailmix._validation import ParameterError, check_choice
from tailmix.generative.deepsmote import (
    ConvAutoencoder,
    DeepSMOTE,
    LatentSmote,
    SyntheticSet,
    append_synthetic,
    latent_smote,
    reconstruction_error,
    train_autoencoder,
)
from tailmix.generative.m2m import (
    M2m,
    PhasedSampler,
    accept_translations,
    seed_acceptance,
    translate,
)

__all__ = [
    "GENERATIVE",
    "ConvAutoencoder",
    "DeepSMOTE",
    "LatentSmote",
    "M2m",
    "PhasedSampler",
    "SyntheticSet",
    "accept_translations",
    "append_synthetic",
    "build_generative",
    "latent_smote",
    "reconstruction_error",
    "seed_acceptance",
    "train_autoencoder",
    "translate",
]

GENERATIVE: dict[str, type] = {"m2m": M2m, "deepsmote": DeepSMOTE}

# Constructor keywords that the builder fills from the config and the data, not the user.
_FILLED = {"m2m": {"class_counts", "seed"}, "deepsmote": set()}


def build_generative(spec: dict[str, Any], *, cfg: dict[str, Any], data: Any) -> Any:
    """Build a generative strategy from a config's ``generative`` mapping.

    Parameters
    ----------
    spec : dict
        ``{"name": "m2m" | "deepsmote", **params}``; M2m's ``warmup_epochs`` may be an epoch
        number or a share of the run in (0, 1).
    cfg : dict
        The resolved run configuration (``train.epochs``, ``train.seed``).
    data : LongTailData
        The training data (class counts; DeepSMOTE needs images).

    Returns
    -------
    M2m or DeepSMOTE

    Raises
    ------
    ParameterError
        On an unknown name or parameter, a bad value, a warm-up that leaves no epoch for
        M2m, or DeepSMOTE on feature vectors. Nothing is trained before these checks.
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ParameterError("generative", "a mapping with a 'name' ('m2m' or 'deepsmote')",
                             spec)
    name = check_choice("generative.name", spec["name"], GENERATIVE)
    params = {key: value for key, value in spec.items() if key != "name"}
    kind = GENERATIVE[name]
    accepted = sorted(
        p.name for p in inspect.signature(kind).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _FILLED[name]
    )
    for key in params:
        if key not in accepted:
            raise ParameterError(f"generative.{key}",
                                 f"one of the {name!r} parameters: " + ", ".join(accepted), key)
    return kind.from_spec(params, cfg=cfg, data=data)
