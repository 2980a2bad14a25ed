"""Exact k nearest neighbours in bounded memory, for SMOTE-style partners."""

from __future__ import annotations

import torch
from torch import Tensor

from tailmix._validation import ParameterError, check_number

__all__ = ["knn_indices"]

# Distances held at once when ``chunk_size`` is left to the function: 2**24 floats (64 MiB).
_DISTANCE_BUDGET = 1 << 24


def knn_indices(
    points: Tensor,
    labels: Tensor,
    *,
    k: int,
    within_class: bool,
    chunk_size: int | None = None,
) -> Tensor:
    """The ``k`` nearest neighbours (Euclidean) of every point, itself excluded.

    Distances are computed a block of rows at a time (``chunk_size`` rows against all
    candidates), so memory stays at ``chunk_size * N`` distances and no ``N x N`` matrix is
    ever built.

    Parameters
    ----------
    points : Tensor
        ``(N, ...)`` points; trailing dimensions are flattened. Integer inputs (``uint8``
        images) are converted to float one class or one set at a time.
    labels : Tensor
        ``(N,)`` integer class labels, non-negative.
    k : int
        Neighbours per point, at least 1.
    within_class : bool
        Look for neighbours among the point's own class only (SMOTE) or among all points.
    chunk_size : int, optional
        Rows per distance block. By default, as many as keep a block near 2**24 distances.

    Returns
    -------
    LongTensor
        ``(N, k)`` dataset indices of the neighbours, nearest first, on ``points``' device.
        When the candidate set holds ``n <= k`` points, only its ``n - 1`` other points are
        neighbours and each row repeats them cyclically to fill ``k`` columns. A point with
        no candidate at all (a class of one example when ``within_class``) has its own index
        in every column: a mixer treats it as "copy only".

    Raises
    ------
    ParameterError
        For bad shapes, a negative label, ``k < 1`` or ``chunk_size < 1``.

    Examples
    --------
    >>> import torch
    >>> points = torch.tensor([[0.0], [1.0], [3.0], [10.0], [11.0]])
    >>> labels = torch.tensor([0, 0, 0, 1, 2])
    >>> knn_indices(points, labels, k=2, within_class=True)
    tensor([[1, 2],
            [0, 2],
            [1, 0],
            [3, 3],
            [4, 4]])
    """
    k = check_number("k", k, low=1, integer=True)
    if chunk_size is not None:
        chunk_size = check_number("chunk_size", chunk_size, low=1, integer=True)
    if not isinstance(points, Tensor) or points.ndim < 2:
        got = getattr(points, "shape", points)
        raise ParameterError("points", "a tensor of shape (N, ...) with at least 2 dims", got)
    n = points.shape[0]
    if (
        not isinstance(labels, Tensor)
        or labels.shape != (n,)
        or labels.is_floating_point()
        or labels.is_complex()
    ):
        got = getattr(labels, "shape", labels)
        raise ParameterError("labels", f"an integer tensor of shape ({n},)", got)
    if n and int(labels.min()) < 0:
        raise ParameterError("labels", "non-negative class labels", int(labels.min()))
    points = points.reshape(n, -1)
    labels = labels.to(points.device)
    if not within_class:
        return _knn_block(points, k, chunk_size)
    out = torch.empty(n, k, dtype=torch.long, device=points.device)
    order = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels).tolist()
    start = 0
    for size in sizes:  # one block per class, never per point
        if size:
            members = order[start : start + size]
            out[members] = members[_knn_block(points[members], k, chunk_size)]
            start += size
    return out


def _knn_block(points: Tensor, k: int, chunk_size: int | None) -> Tensor:
    """The ``k`` nearest neighbours within one candidate set, as local indices ``(n, k)``."""
    n = points.shape[0]
    device = points.device
    k_eff = min(k, n - 1)
    if k_eff <= 0:
        return torch.arange(n, device=device).unsqueeze(1).expand(n, k).clone()
    if not points.is_floating_point():
        points = points.float()
    # Centring changes no distance but shrinks the norms the matrix-product form of cdist
    # subtracts, which keeps its rounding error small.
    points = points - points.mean(dim=0, keepdim=True)
    chunk = chunk_size or max(1, _DISTANCE_BUDGET // n)
    found = torch.empty(n, k_eff, dtype=torch.long, device=device)
    for start in range(0, n, chunk):
        rows = points[start : start + chunk]
        dist = torch.cdist(rows, points)
        local = torch.arange(rows.shape[0], device=device)
        dist[local, start + local] = float("inf")  # a point is not its own neighbour
        found[start : start + rows.shape[0]] = dist.topk(k_eff, largest=False).indices
    if k_eff == k:
        return found
    return found[:, torch.arange(k, device=device) % k_eff]
