"""Partners from the training set: exact k nearest neighbours in bounded memory and the
table of them a mixer draws SMOTE-style partners from (:class:`NeighbourTable`), examples
drawn by class (:class:`ClassPool`), and what such partners do to the class balance of the
labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tailmix._validation import ParameterError, check_choice, check_labels, check_number

__all__ = ["ANCHOR_RULES", "ClassPool", "NeighbourTable", "adasyn_density", "in_danger",
           "knn_indices", "neighbour_class_share", "oversample_label_mass"]

#: Rules that weight a class's anchors by the classes of their neighbours over all classes.
ANCHOR_RULES = ("borderline", "adasyn")

# Images converted to float at once while downscaling for the input-space kNN.
_POOL_CHUNK = 4096

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
    labels = check_labels(labels, length=n)
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


def neighbour_class_share(neighbours: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Which classes a class's neighbours belong to.

    Parameters
    ----------
    neighbours : LongTensor
        ``(N, k)`` neighbour table of dataset indices, as :func:`knn_indices` returns it.
    labels : Tensor
        ``(N,)`` integer class labels, in ``[0, num_classes)``.
    num_classes : int
        Number of classes ``C``.

    Returns
    -------
    Tensor
        ``(C, C)`` float64: row ``c`` holds, for the neighbour slots of class-``c``
        examples, the share that point to each class (rows sum to 1). A class with no
        examples has a row of NaN.

    Examples
    --------
    >>> import torch
    >>> labels = torch.tensor([0, 0, 1])
    >>> table = torch.tensor([[1, 2], [0, 0], [0, 1]])
    >>> neighbour_class_share(table, labels, 2)
    tensor([[0.7500, 0.2500],
            [1.0000, 0.0000]], dtype=torch.float64)
    """
    num_classes = check_number("num_classes", num_classes, low=1, integer=True)
    if (
        not isinstance(neighbours, Tensor)
        or neighbours.ndim != 2
        or neighbours.is_floating_point()
        or neighbours.is_complex()
    ):
        got = getattr(neighbours, "shape", neighbours)
        raise ParameterError("neighbours", "an integer tensor of shape (N, k)", got)
    n = neighbours.shape[0]
    labels = check_labels(labels, num_classes=num_classes, length=n)
    if neighbours.numel() and (int(neighbours.min()) < 0 or int(neighbours.max()) >= n):
        got = (int(neighbours.min()), int(neighbours.max()))
        raise ParameterError("neighbours", f"dataset indices in [0, {n})", got)
    labels = labels.to(neighbours.device)
    pair = labels[:, None] * num_classes + labels[neighbours]
    counts = torch.bincount(pair.flatten(), minlength=num_classes * num_classes)
    counts = counts.view(num_classes, num_classes).double()
    return counts / counts.sum(dim=1, keepdim=True)


def _other_class_counts(context: Tensor, labels: Tensor) -> Tensor:
    """For each row of the any-class table ``context`` ``(N, m)``, how many of its ``m``
    neighbours belong to another class than the row's own."""
    if (not isinstance(context, Tensor) or context.ndim != 2 or context.is_floating_point()
            or context.is_complex()):
        got = getattr(context, "shape", context)
        raise ParameterError("neighbours", "an integer tensor of shape (N, m)", got)
    labels = check_labels(labels, length=context.shape[0]).to(context.device)
    return (labels[context] != labels.unsqueeze(1)).sum(dim=1)


def in_danger(context: Tensor, labels: Tensor) -> Tensor:
    """Borderline-SMOTE's examples "in danger" (Han, Wang, Mao, ICIC 2005): at least half,
    but not all, of an example's ``m`` nearest neighbours over all classes belong to other
    classes (``m / 2 <= m' < m``). Those with ``m' = m`` are noise, those with ``m' < m / 2``
    safe; neither is an anchor of Borderline-SMOTE.

    Parameters
    ----------
    context : LongTensor
        ``(N, m)`` nearest neighbours over all classes, as :func:`knn_indices` with
        ``within_class=False`` returns them.
    labels : Tensor
        ``(N,)`` integer class labels.

    Returns
    -------
    BoolTensor
        ``(N,)``, True where the example is in danger.

    Examples
    --------
    >>> import torch
    >>> labels = torch.tensor([0, 0, 1, 1, 1])
    >>> context = torch.tensor([[2, 1], [0, 0], [0, 1], [0, 1], [2, 4]])
    >>> in_danger(context, labels).tolist()   # 1 of 2 other: danger; 2 of 2: noise
    [True, False, False, False, False]
    """
    other = _other_class_counts(context, labels)
    m = context.shape[1]
    return (2 * other >= m) & (other < m)


def adasyn_density(context: Tensor, labels: Tensor) -> Tensor:
    """ADASYN's weight of each example (He, Bai, Garcia, Li, IJCNN 2008): the share of its
    ``m`` nearest neighbours over all classes that belong to other classes. Within a class,
    an example receives synthetic examples in proportion to it.

    Parameters
    ----------
    context : LongTensor
        ``(N, m)`` nearest neighbours over all classes.
    labels : Tensor
        ``(N,)`` integer class labels.

    Returns
    -------
    Tensor
        ``(N,)`` float64 in ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> labels = torch.tensor([0, 0, 1, 1])
    >>> context = torch.tensor([[2, 1], [0, 0], [3, 3], [0, 1]])
    >>> adasyn_density(context, labels).tolist()
    [0.5, 0.0, 0.0, 1.0]
    """
    return _other_class_counts(context, labels).double() / context.shape[1]


def oversample_label_mass(
    class_counts: Tensor, share: Tensor, *, rule: str, lam_mean: float = 0.5
) -> Tensor:
    """Expected label mass per class in one epoch of kNN oversampling (SMOTE, soft SMOTE).

    An ``"oversample"`` mixer shows every example once unmixed and adds ``n_max - n_c``
    synthetic examples to each class ``c``, each made from a class-``c`` anchor and one of
    its neighbours with partner share ``lam``. Under the ``"hard"`` rule the synthetic
    example's label is the anchor's; under ``"soft"`` the partner's class receives ``lam``
    of it. With anchors drawn uniformly within the class and partners uniformly among the
    anchor's neighbours, the expected mass of class ``d`` is::

        hard: n_max                    (for every class with examples)
        soft: n_d + (1 - E[lam]) e_d + E[lam] * sum_c e_c share[c, d],   e_c = n_max - n_c

    Parameters
    ----------
    class_counts : Tensor
        ``(C,)`` training examples per class.
    share : Tensor
        ``(C, C)`` neighbour class shares from :func:`neighbour_class_share`.
    rule : {"hard", "soft"}
        The mixer's label rule.
    lam_mean : float, default 0.5
        ``E[lam]``; 0.5 for ``Uniform(0, 1)`` and every symmetric ``Beta(alpha, alpha)``.

    Returns
    -------
    Tensor
        ``(C,)`` float64 expected label mass per epoch; it sums to ``C' * n_max`` for the
        ``C'`` classes with examples.

    Examples
    --------
    >>> import torch
    >>> counts = torch.tensor([100, 10])
    >>> share = torch.tensor([[1.0, 0.0], [0.6, 0.4]], dtype=torch.float64)
    >>> oversample_label_mass(counts, share, rule="soft")
    tensor([127.,  73.], dtype=torch.float64)
    """
    rule = check_choice("rule", rule, ("hard", "soft"))
    lam_mean = check_number("lam_mean", lam_mean, low=0.0, high=1.0)
    if not isinstance(class_counts, Tensor) or class_counts.ndim != 1:
        got = getattr(class_counts, "shape", class_counts)
        raise ParameterError("class_counts", "a 1-D tensor of counts per class", got)
    c = class_counts.shape[0]
    if not isinstance(share, Tensor) or share.shape != (c, c):
        got = getattr(share, "shape", share)
        raise ParameterError("share", f"a ({c}, {c}) tensor of neighbour class shares", got)
    n = class_counts.to(torch.float64)
    present = n > 0
    if rule == "hard":
        return torch.where(present, n.max(), 0.0)
    extra = torch.where(present, n.max() - n, 0.0)
    share = torch.nan_to_num(share.to(device=n.device, dtype=torch.float64), nan=0.0)
    return n + (1.0 - lam_mean) * extra + lam_mean * (extra @ share)


class NeighbourTable:
    """The ``k`` nearest neighbours of every training example: SMOTE-style partners.

    Fit it on the points to search (raw inputs, or network features) and their labels; a
    mixer then draws each anchor's partner uniformly among its ``k`` neighbours by the
    anchor's dataset index.

    Parameters
    ----------
    k : int, default 5
        Neighbours per example.
    within_class : bool, default True
        Neighbours from the example's own class (SMOTE) or from any class (soft SMOTE).
    downscale : int, optional
        Average-pool images to ``downscale x downscale`` before the search.
    m_neighbors : int, optional
        Also search each example's ``m_neighbors`` nearest neighbours over all classes
        (:attr:`context`), from which :meth:`anchor_weights` tells Borderline-SMOTE's
        examples in danger and ADASYN's weights. None: no such search.

    Attributes
    ----------
    indices : LongTensor
        ``(N, k)`` dataset indices of the neighbours, nearest first (empty before ``fit``).
        A row that repeats its own index has no neighbour: the mixer copies it unmixed.
    context : LongTensor or None
        ``(N, m_neighbors)`` nearest neighbours over all classes, when ``m_neighbors`` is set
        (None otherwise).
    labels : LongTensor
        ``(N,)`` labels the table was fitted with.
    inputs : Tensor
        What a partner's input is read from by default: the ``inputs`` given to ``fit``
        (the searched points when none were given).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    >>> table = NeighbourTable(k=1, within_class=False).fit(x, torch.tensor([0, 0, 1, 1]))
    >>> table.indices.squeeze(1).tolist()
    [1, 0, 3, 2]
    """

    def __init__(self, *, k: int = 5, within_class: bool = True, downscale: int | None = None,
                 m_neighbors: int | None = None):
        self.k = check_number("k", k, low=1, integer=True)
        if m_neighbors is not None:
            m_neighbors = check_number("m_neighbors", m_neighbors, low=1, integer=True)
        self.m_neighbors = m_neighbors
        self.context: Tensor | None = None
        if not isinstance(within_class, bool):
            raise ParameterError("within_class", "true or false", within_class)
        self.within_class = within_class
        if downscale is not None:
            downscale = check_number("downscale", downscale, low=1, integer=True)
        self.downscale = downscale
        self.indices = torch.empty(0, self.k, dtype=torch.long)
        self.labels = torch.empty(0, dtype=torch.long)
        self.inputs: Tensor | None = None

    @property
    def fitted(self) -> bool:
        return self.indices.shape[0] > 0

    def fit(self, points: Tensor, labels: Tensor, *, inputs: Tensor | None = None
            ) -> NeighbourTable:
        """Search the neighbours of ``points`` (``(N, ...)``; images are downscaled first
        when ``downscale`` is set) among examples labelled ``labels``; ``inputs`` (default
        ``points``) is what partners are read from. Returns self."""
        search = self._points(points)
        self.indices = knn_indices(search, labels, k=self.k, within_class=self.within_class)
        self.indices = self.indices.to(labels.device)
        if self.m_neighbors is not None:
            self.context = knn_indices(search, labels, k=self.m_neighbors,
                                       within_class=False).to(labels.device)
        self.labels = labels
        self.inputs = points if inputs is None else inputs
        return self

    def restore(self, indices: Tensor, labels: Tensor, *, inputs: Tensor,
                context: Tensor | None = None) -> NeighbourTable:
        """A table searched before (``indices`` and ``context``, as saved) over ``labels``
        and ``inputs``, without searching again. Returns self."""
        for name, table in (("indices", indices), ("context", context)):
            if table is not None and (table.ndim != 2 or table.shape[0] != labels.shape[0]):
                raise ParameterError(name, f"a ({labels.shape[0]}, k) table of neighbours "
                                     "of these examples", tuple(table.shape))
        self.indices, self.labels, self.inputs = indices.to(labels.device), labels, inputs
        self.context = None if context is None else context.to(labels.device)
        return self

    def anchor_weights(self, rule: str) -> Tensor:
        """``(N,)`` float64 weights of the examples as anchors of synthetic examples, from
        :attr:`context`: ``"borderline"``, 1 for an example in danger (:func:`in_danger`)
        and 0 otherwise; ``"adasyn"``, its share of other-class neighbours
        (:func:`adasyn_density`)."""
        rule = check_choice("anchors", rule, ANCHOR_RULES)
        if self.context is None:
            raise ParameterError("neighbours", "a table fitted with m_neighbors set (the "
                                 f"{rule!r} anchors read neighbours over all classes)", self)
        if rule == "borderline":
            return in_danger(self.context, self.labels).double()
        return adasyn_density(self.context, self.labels)

    def _points(self, points: Tensor) -> Tensor:
        if points.ndim != 4 or self.downscale is None:
            return points
        side = self.downscale
        return torch.cat([
            F.adaptive_avg_pool2d(points[s: s + _POOL_CHUNK].float(), side)
            for s in range(0, points.shape[0], _POOL_CHUNK)
        ])

    def partners(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One neighbour of each example in ``index``, drawn uniformly among its ``k``."""
        if not self.fitted:
            raise ParameterError("neighbours", "a fitted table (call fit(points, labels))",
                                 "an empty table")
        rows = self.indices[index]
        pick = torch.randint(0, self.k, (index.shape[0], 1), generator=generator,
                             device=rows.device)
        return rows.gather(1, pick).squeeze(1)

    def to(self, device: torch.device | str) -> NeighbourTable:
        self.indices, self.labels = self.indices.to(device), self.labels.to(device)
        if self.context is not None:
            self.context = self.context.to(device)
        return self

    def __repr__(self) -> str:
        m = "" if self.m_neighbors is None else f", m_neighbors={self.m_neighbors}"
        return (f"NeighbourTable(k={self.k}, within_class={self.within_class}{m}, "
                f"rows={self.indices.shape[0]})")


class ClassPool:
    """Partners from the whole training set, drawn by class: class ``c`` with probability
    proportional to ``n_c ** -q``, then one of its examples uniformly.

    ``q = 0`` draws classes uniformly (class-balanced partners: Balanced-MixUp, CMO),
    ``q > 0`` favours the tail further (``q = 1``: inversely to the class sizes), ``q = -1``
    draws as often as the data has them (an example uniformly from the whole set: GLMC).

    Parameters
    ----------
    q : float, default 0.0
        Minus the power of the class sizes.

    Examples
    --------
    >>> import torch
    >>> pool = ClassPool(q=0.0).fit(torch.tensor([0, 0, 0, 1]))
    >>> partners = pool.partners(1000, torch.Generator().manual_seed(0))
    >>> round((pool.labels[partners] == 1).float().mean().item(), 1)
    0.5
    """

    def __init__(self, *, q: float = 0.0):
        self.q = check_number("partner_q", q)
        self.labels = torch.empty(0, dtype=torch.long)
        self.inputs: Tensor | None = None
        self._order = self._start = self._counts = self._probs = None

    @property
    def fitted(self) -> bool:
        return self.labels.shape[0] > 0

    def fit(self, labels: Tensor, *, inputs: Tensor | None = None,
            num_classes: int | None = None) -> ClassPool:
        """Index ``labels`` (``(N,)``) by class; ``inputs`` is what partners are read from
        by default. Returns self."""
        labels = labels.long()
        device = labels.device
        # The bookkeeping in float64 on the CPU (some devices have no float64), then moved.
        counts = torch.bincount(labels.cpu(), minlength=num_classes or 0)
        present = counts > 0
        weight = torch.where(present, counts.double().clamp_min(1) ** -self.q, 0.0)
        self._probs = (weight / weight.sum()).float().to(device)
        self._order = torch.argsort(labels, stable=True)
        self._start = (torch.cumsum(counts, 0) - counts).to(device)
        self._counts = counts.to(device)
        self.labels, self.inputs = labels, inputs
        return self

    def class_probabilities(self) -> Tensor:
        """``(C,)`` the probability of drawing each class."""
        return self._probs

    def partners(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` dataset indices, drawn as the class doc says, on the generator's device
        (the pool's without one)."""
        if not self.fitted:
            raise ParameterError("partner", "a fitted class pool (call pool.fit(labels))",
                                 "an empty pool")
        device = self.labels.device if generator is None else generator.device
        probs = self._probs.to(device)
        cls = torch.multinomial(probs, n, replacement=True, generator=generator)
        u = torch.rand(n, generator=generator, device=device)
        counts = self._counts.to(device)[cls]
        within = torch.minimum((u * counts).long(), counts - 1)
        return self._order.to(device)[self._start.to(device)[cls] + within]

    def to(self, device: torch.device | str) -> ClassPool:
        if self.fitted:
            self.labels = self.labels.to(device)
            self._order, self._start = self._order.to(device), self._start.to(device)
            self._counts, self._probs = self._counts.to(device), self._probs.to(device)
        return self

    def __repr__(self) -> str:
        return f"ClassPool(q={self.q:g}, rows={self.labels.shape[0]})"
