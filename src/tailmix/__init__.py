"""tailmix: deep imbalanced classification on PyTorch.

SMOTE, soft SMOTE, Mixup, Remix and margin-aware Mixup (MAMix) as one augmentation family,
composed with losses, class-weight schedules and samplers into named strategies.

``tailmix.train(config, out_dir)`` runs a config end to end; the parts (``tailmix.mixing``,
``tailmix.losses``, ``tailmix.samplers``, ``tailmix.weights``) work in any PyTorch loop.

Three layers: the parts at the top level (mixing, losses, samplers, weights, data, models,
generative, sam, consistency, metrics), usable in any loop; :mod:`tailmix.pipeline`, which
turns a config into a run (config -> build -> engine, with its steps and callbacks); and
:mod:`tailmix.tools`, which works on finished runs (report, predict, export, bench,
analysis). ``ARCHITECTURE.md`` draws them.
"""

from typing import Any

from tailmix import _moved
from tailmix._version import __version__

_moved.install()  # tailmix.build, tailmix.predict, ...: the modules' names before the layers

__all__ = ["__version__", "train"]


def train(config: Any, out_dir: Any = None, **kwargs: Any) -> dict:
    """Train a config into a run folder (see :func:`tailmix.pipeline.build.train`)."""
    from tailmix.pipeline.build import train as _train

    return _train(config, out_dir, **kwargs)
