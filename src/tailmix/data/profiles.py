"""Long-tailed class-count profiles and seeded per-class subsampling (DESIGN section 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from tailmix._validation import ParameterError, check_choice, check_number

PROFILES = ("exp", "step", "counts", "none")

# Named profiles: a base profile with fixed settings, for benchmarks whose conventions differ
# from the defaults. ``svhn_reference`` is the reference package's SVHN-LT: n_max capped at
# 1000 and the classes ordered 1, 2, ..., 9, 0 so that digit 0 is the smallest class.
#
# ``ldam_drw`` is the subset most CIFAR-LT papers train on: the exp profile over the whole
# pool (n_max = 5000 for CIFAR-10, 500 for CIFAR-100, counts equal to ``exp``'s) with the
# images chosen as the LDAM-DRW code does (``imbalance_cifar.py`` of Cao et al., NeurIPS 2019,
# github.com/kaidic/LDAM-DRW, reused by most later CIFAR-LT code): NumPy's global generator
# seeded once with the data seed (``np.random.seed(0)`` there), then, class by class in label
# order, ``np.random.shuffle`` of the class's indices in the release's order and the first
# n_c kept. It reproduces their subset on the official python release (whose order tailmix
# reads unchanged), not on a copy with its own file order.
NAMED_PROFILES: dict[str, dict] = {
    "svhn_reference": {"profile": "exp", "n_max": 1000,
                       "class_order": [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]},
    "ldam_drw": {"profile": "exp", "n_max": None, "class_order": None,
                 "selection": "numpy_shuffle"},
}


def class_counts(
    profile: str,
    *,
    num_classes: int,
    n_max: int,
    ratio: float = 1.0,
    counts: Sequence[int] | None = None,
) -> list[int]:
    """Per-class training counts of a long-tailed profile.

    ``exp``: n_c = floor(n_max * ratio ** (-c / (C - 1))); ``step``: the first floor(C / 2)
    classes get n_max, the others floor(n_max / ratio); ``counts``: the given list;
    ``none``: n_max for every class.

    >>> class_counts("exp", num_classes=10, n_max=5000, ratio=100)
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    >>> class_counts("step", num_classes=4, n_max=100, ratio=10)
    [100, 100, 10, 10]
    """
    check_choice("profile", profile, PROFILES)
    num_classes = check_number("num_classes", num_classes, low=1, integer=True)
    if profile == "counts":
        if counts is None or len(counts) != num_classes:
            raise ParameterError(
                "counts", f"a list of {num_classes} positive ints (one per class)", counts
            )
        for c, n in enumerate(counts):
            check_number(f"counts[{c}]", n, low=1, integer=True)
        return [int(n) for n in counts]
    n_max = check_number("n_max", n_max, low=1, integer=True)
    ratio = check_number("ratio", ratio, low=1)
    if profile == "none":
        return [n_max] * num_classes
    if profile == "step":
        n_min = math.floor(n_max / ratio)
        out = [n_max if c < num_classes // 2 else n_min for c in range(num_classes)]
    else:
        if num_classes == 1:
            return [n_max]
        # Computed in float64 as n_max * ratio ** (-c / (C - 1)) then floored; the tiny epsilon
        # guards exact integers (ratio ** 0 and ratio ** -1 cases) against rounding below.
        out = [
            math.floor(n_max * ratio ** (-c / (num_classes - 1)) + 1e-9)
            for c in range(num_classes)
        ]
    if min(out) < 1:
        raise ParameterError(
            "ratio", f"at most n_max={n_max} so that every class keeps an image", ratio
        )
    return out


def subsample_indices(labels: np.ndarray, counts: Sequence[int], *, seed: int = 0) -> np.ndarray:
    """Indices keeping the first ``counts[c]`` of a seeded permutation of each class.

    The permutation of class c's indices is drawn from a ``torch.Generator`` seeded with
    ``seed`` (the data seed, separate from the training seed); classes are visited in order
    with one generator, so the result depends only on the labels, the counts and the seed.
    The returned indices are sorted.
    """
    labels = np.asarray(labels)
    num_classes = len(counts)
    from tailmix.seeding import generator

    gen = generator(int(seed), "data")
    keep = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if counts[c] > len(idx):
            raise ParameterError(
                f"class counts[{c}]",
                f"at most the {len(idx)} images class {c} has in the source",
                int(counts[c]),
            )
        perm = torch.randperm(len(idx), generator=gen).numpy()
        keep.append(idx[perm[: counts[c]]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def numpy_shuffle_indices(labels: np.ndarray, counts: Sequence[int], *,
                          seed: int = 0) -> np.ndarray:
    """The LDAM-DRW code's choice (see ``ldam_drw`` in :data:`NAMED_PROFILES`): one NumPy
    legacy generator seeded with ``seed``; for each class in order, its indices (ascending)
    shuffled in place and the first ``counts[c]`` kept. Returns them sorted.

    >>> numpy_shuffle_indices(np.array([0, 1, 0, 1, 0, 1]), [2, 1], seed=0)
    array([2, 4, 5])
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(int(seed))  # the global generator np.random.seed(seed) sets
    keep = []
    for c in range(len(counts)):
        idx = np.flatnonzero(labels == c)
        if counts[c] > len(idx):
            raise ParameterError(f"class counts[{c}]",
                                 f"at most the {len(idx)} images class {c} has in the source",
                                 int(counts[c]))
        rng.shuffle(idx)
        keep.append(idx[: counts[c]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def subset_digest(indices: np.ndarray) -> str:
    """SHA-256 of the sorted source indices of a training subset (as little-endian int64):
    two runs with the same digest trained on the same images of the same source."""
    import hashlib

    data = np.sort(np.asarray(indices, dtype=np.int64)).astype("<i8").tobytes()
    return hashlib.sha256(data).hexdigest()
