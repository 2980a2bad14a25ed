"""tailmix: deep imbalanced classification on PyTorch.

SMOTE, soft SMOTE, Mixup, Remix and margin-aware Mixup (MAMix) as one augmentation family,
composed with losses, class-weight schedules and samplers into named strategies.

``tailmix.train(config, out_dir)`` runs a config end to end; the parts (``tailmix.mixing``,
``tailmix.losses``, ``tailmix.samplers``, ``tailmix.weights``) work in any PyTorch loop.
"""

from typing import Any

from tailmix._version import __version__

__all__ = ["__version__", "train"]


def train(config: Any, out_dir: Any = None, **kwargs: Any) -> dict:
    """Train a config into a run folder (see :func:`tailmix.build.train`)."""
    from tailmix.build import train as _train

    return _train(config, out_dir, **kwargs)
