"""Generative strategies: examples made for minority classes rather than mixed in a batch.

- M2m translates majority examples toward minority classes inside the training step
  (:class:`~tailmix.generative.m2m.M2mStep`, a :class:`tailmix.pipeline.steps.MixStep`).
- DeepSMOTE is a data transform applied before training
  (:meth:`~tailmix.generative.deepsmote.DeepSMOTE.transform`: the enlarged dataset and
  which of its examples are real).

The builder (:mod:`tailmix.pipeline.build`) turns a config's ``generative`` mapping into them.
"""

from __future__ import annotations

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
    M2mStep,
    accept_translations,
    resolve_warmup,
    seed_acceptance,
    translate,
)

__all__ = [
    "GENERATIVE",
    "ConvAutoencoder",
    "DeepSMOTE",
    "LatentSmote",
    "M2m",
    "M2mStep",
    "SyntheticSet",
    "accept_translations",
    "append_synthetic",
    "latent_smote",
    "reconstruction_error",
    "resolve_warmup",
    "seed_acceptance",
    "train_autoencoder",
    "translate",
]

#: The generative strategies a config's ``generative.name`` may name.
GENERATIVE: dict[str, type] = {"m2m": M2m, "deepsmote": DeepSMOTE}
