"""Every random stream of a run, derived from its seed in one place.

A run's randomness is split into named streams so that each can be reproduced alone and a
resumed run draws exactly what it would have drawn:

========== ============================================================ =================
stream      what it drives                                               varies with
========== ============================================================ =================
data        which images a long-tailed profile keeps (``data_seed``)    -
init        the network's initial weights (global torch seed)           -
order       the sampler's order of examples in an epoch (CPU)           epoch
batch       crops, flips, partners, lam and resampled anchors (device)  epoch, rank
generation  a generative step's draws (M2m's slots, seeds, noise)       epoch, rank
decode      random-resized crops of images decoded from files (CPU)     epoch, rank
========== ============================================================ =================

>>> derive_seed(0, "order", epoch=1) == derive_seed(0, "order", epoch=1)
True
>>> derive_seed(0, "batch", epoch=1) != derive_seed(0, "batch", epoch=1, rank=1)
True
"""

from __future__ import annotations

import numpy as np
import torch

from tailmix._validation import check_choice, check_number

__all__ = ["STREAMS", "derive_seed", "generator"]

STREAMS = ("data", "init", "order", "batch", "generation", "decode")

# Salt of the batch stream (rank 0), and of the stream another rank crops and mixes with.
_BATCH_SALT = 1
_RANK_SALT = 1_000
_GENERATION_TAG = 0x4D326D
_DECODE_TAG = 0x4A5047


def derive_seed(seed: int, stream: str, *, epoch: int = 0, rank: int = 0) -> int:
    """The seed of one stream (see the module table) for ``epoch`` on process ``rank``.

    Parameters
    ----------
    seed : int
        The run's seed (``train.seed``; ``dataset.data_seed`` for the ``data`` stream).
    stream : {"data", "init", "order", "batch", "generation", "decode"}
    epoch, rank : int
        0-based epoch and process rank; ignored by ``data`` and ``init``; ``order`` is the
        same on every process (each keeps its shard of one sequence).

    Returns
    -------
    int
        A non-negative seed below ``2 ** 63``.
    """
    seed = check_number("seed", seed, low=0, integer=True)
    check_choice("stream", stream, STREAMS)
    epoch = check_number("epoch", epoch, low=0, integer=True)
    rank = check_number("rank", rank, low=0, integer=True)
    if stream in ("data", "init"):
        return seed
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
