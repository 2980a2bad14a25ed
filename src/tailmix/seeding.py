"""Every random stream of a run, derived from its seed in one place.

A run's randomness is split into named streams so that each can be reproduced alone and a
resumed run draws exactly what it would have drawn:

========== ============================================================ =================
stream      what it drives                                               varies with
========== ============================================================ =================
data        which images a long-tailed profile keeps (``data_seed``)    -
validation  which images a validation split takes (``data_seed``)       -
statistics  the sample of training files channel statistics read        - (fixed)
init        the network's initial weights (global torch seed)           -
head        a re-initialised head (cRT; global torch seed, restored)    -
order       the sampler's order of examples in an epoch (CPU)           epoch
batch       crops, flips, partners, lam and resampled anchors (device)  epoch, rank
generation  a generative step's draws (M2m's slots, seeds, noise)       epoch, rank
decode      random-resized crops of images decoded from files (CPU)     epoch, rank
synthesis   DeepSMOTE's autoencoder and draws (its own ``seed``)        -
========== ============================================================ =================

A stream is a seed (:func:`derive_seed`), a ``torch.Generator`` (:func:`generator`) or a
NumPy generator (:func:`numpy_generator`); one image's crop in the ``decode`` stream has
its own seed (:func:`sample_seed`).

>>> derive_seed(0, "order", epoch=1) == derive_seed(0, "order", epoch=1)
True
>>> derive_seed(0, "batch", epoch=1) != derive_seed(0, "batch", epoch=1, rank=1)
True
"""

from __future__ import annotations

import numpy as np
import torch

from tailmix._validation import check_choice, check_number

__all__ = ["STREAMS", "derive_seed", "generator", "numpy_generator", "sample_seed"]

STREAMS = ("data", "validation", "statistics", "init", "head", "order", "batch",
           "generation", "decode", "synthesis")

# Salt of the batch stream (rank 0), and of the stream another rank crops and mixes with.
_BATCH_SALT = 1
_RANK_SALT = 1_000
_GENERATION_TAG = 0x4D326D
_DECODE_TAG = 0x4A5047
_VALIDATION_TAG = 0x56414C


def derive_seed(seed: int, stream: str, *, epoch: int = 0, rank: int = 0) -> int:
    """The seed of one stream (see the module table) for ``epoch`` on process ``rank``.

    Parameters
    ----------
    seed : int
        The run's seed (``train.seed``; ``dataset.data_seed`` for the ``data`` stream).
    stream : str
        One of :data:`STREAMS` (``validation`` and ``statistics`` are NumPy generators
        only: :func:`numpy_generator`).
    epoch, rank : int
        0-based epoch and process rank; ignored by ``data``, ``init``, ``head`` and
        ``synthesis``; ``order`` is the same on every process (each keeps its shard of one
        sequence).

    Returns
    -------
    int
        A non-negative seed below ``2 ** 63``.
    """
    seed = check_number("seed", seed, low=0, integer=True)
    check_choice("stream", stream, STREAMS)
    epoch = check_number("epoch", epoch, low=0, integer=True)
    rank = check_number("rank", rank, low=0, integer=True)
    if stream in ("validation", "statistics"):
        raise ValueError(f"the {stream!r} stream is a NumPy generator: numpy_generator()")
    if stream in ("data", "init", "synthesis"):
        return seed
    if stream == "head":
        return seed + 1
    if stream == "order":
        return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    if stream in ("generation", "decode"):
        tag = _GENERATION_TAG if stream == "generation" else _DECODE_TAG
        state = np.random.SeedSequence([seed, epoch, rank, tag])
        return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    salt = _BATCH_SALT if rank == 0 else _RANK_SALT + rank
    return (seed * 1_000_003 + epoch * 7_919 + salt * 104_729) % (2**63 - 1)


def generator(seed: int, stream: str, *, epoch: int = 0, rank: int = 0,
              device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed`."""
    return torch.Generator(device=device).manual_seed(
        derive_seed(seed, stream, epoch=epoch, rank=rank))


def numpy_generator(seed: int, stream: str, *, epoch: int = 0,
                    rank: int = 0) -> np.random.Generator:
    """A NumPy generator of one stream: ``validation`` (a split seeded by ``data_seed``, a
    stream of its own), ``statistics`` (the same sample whatever the seed: the channel
    statistics of a dataset do not change with a run's seed), else seeded with
    :func:`derive_seed`."""
    if stream == "validation":
        return np.random.default_rng([int(seed), _VALIDATION_TAG])
    if stream == "statistics":
        return np.random.default_rng(0)
    return np.random.default_rng(derive_seed(seed, stream, epoch=epoch, rank=rank))


def sample_seed(seed: int, position: int) -> int:
    """The seed of the image at ``position`` in an epoch of the ``decode`` stream (``seed``
    from :func:`derive_seed`), so that its crop does not depend on which worker decodes it."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1, dtype=np.uint64)[0])
