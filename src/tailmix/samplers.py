"""Anchor samplers: the order in which training examples are visited in an epoch.

A sampler turns ``(seed, epoch)`` into a LongTensor of dataset indices, the same on every
call and every process. For distributed training every rank builds the same global
sequence, pads it to a multiple of ``world_size`` by repeating its start, and keeps the
positions ``rank::world_size``: the ranks are disjoint and together they draw exactly the
single-process sequence.

A sampler also plans an epoch for the training loop (:meth:`AnchorSampler.epoch_plan`: the
indices and, for oversampling, which slots are synthetic) and is a
``torch.utils.data.Sampler`` for a user's ``DataLoader`` (``set_epoch``, then iterate).
:class:`Resampled` re-draws another sampler's sequence class-balanced or oversampled to
balance (SMOTE's anchors); :class:`Phased` switches samplers at an epoch.

>>> import torch
>>> sampler = build_sampler("instance", labels=torch.tensor([0, 0, 1]), class_counts=[2, 1])
>>> sorted(sampler.epoch_indices(0, seed=0).tolist())
[0, 1, 2]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tailmix._validation import (
    ParameterError,
    check_choice,
    check_keywords,
    check_labels,
    check_number,
)
from tailmix.registry import SAMPLERS
from tailmix.seeding import derive_seed
from tailmix.weights import ClassCounts, check_class_counts

__all__ = [
    "SAMPLERS",
    "AnchorSampler",
    "ClassBalancedSampler",
    "ClassPowerSampler",
    "InstanceSampler",
    "Phased",
    "Resampled",
    "SquareRootSampler",
    "build_sampler",
    "epoch_generator",
]

#: What a sampler plans for one epoch: dataset indices and, for an oversampling sampler,
#: a bool mask of the synthetic slots (None: every slot is a real example).
EpochPlan = tuple[Tensor, "Tensor | None"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch)``, distinct for every pair.

    Parameters
    ----------
    seed, epoch : int
        Non-negative integers.

    Returns
    -------
    torch.Generator
    """
    return torch.Generator().manual_seed(derive_seed(seed, "order", epoch=epoch))


class AnchorSampler:
    """Base class: validates, seeds, shards; subclasses draw the global sequence.

    Subclasses implement ``_draw(generator) -> LongTensor`` of length ``num_samples``.

    Parameters
    ----------
    labels : Tensor or ndarray
        Shape ``(N,)``, integer labels in ``0..C-1``.
    class_counts : sequence of numbers, ndarray or Tensor, optional
        ``n_c`` per class; must equal the label counts. Defaults to the label counts.
    num_samples : int, optional
        Length of the global sequence per epoch, ``>= 1``; defaults to ``N``.
    rank : int
        This process's rank, in ``[0, world_size)``.
    world_size : int
        Number of processes, ``>= 1``.
    seed : int
        The training seed a ``DataLoader`` iteration uses (see :meth:`set_epoch`).

    Attributes
    ----------
    num_samples : int
        Global sequence length (before padding).
    class_counts : Tensor
        ``int64`` counts per class.
    """

    name = "base"

    def __init__(
        self,
        *,
        labels: Tensor | np.ndarray,
        class_counts: ClassCounts | None = None,
        num_samples: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ):
        world_size = check_number("world_size", world_size, low=1, integer=True)
        self.seed = check_number("seed", seed, low=0, integer=True)
        self.epoch = 0
        rank = check_number("rank", rank, low=0, high=world_size - 1, integer=True)
        if num_samples is not None:
            num_samples = check_number("num_samples", num_samples, low=1, integer=True)
        labels = check_labels(labels).cpu()
        if labels.numel() == 0:
            raise ParameterError("labels", "a non-empty 1-D integer tensor or array of "
                                 "non-negative labels", labels)
        observed = torch.bincount(labels)
        if class_counts is None:
            counts = observed
            if bool((counts == 0).any()):
                raise ParameterError(
                    "labels", "labels covering every class 0..max(labels)", observed.tolist()
                )
        else:
            counts = check_class_counts(class_counts)
            num_classes = counts.numel()
            if labels.max() >= num_classes or not torch.equal(
                torch.bincount(labels, minlength=num_classes).double(), counts
            ):
                raise ParameterError(
                    "class_counts",
                    f"the per-class label counts {observed.tolist()}",
                    counts.tolist(),
                )
            counts = counts.long()
        self.labels = labels
        self.class_counts = counts
        self.num_samples = labels.numel() if num_samples is None else num_samples
        self.rank = rank
        self.world_size = world_size
        # Dataset indices grouped by class, and where each class's group starts. Labels
        # already in class order (a config check's probe labels) are grouped as they are:
        # a stable sort of millions of them would take most of the check.
        in_order = bool((labels[1:] >= labels[:-1]).all())
        self._by_class = (torch.arange(labels.numel()) if in_order
                          else torch.argsort(labels, stable=True))
        self._class_start = torch.cumsum(counts, 0) - counts

    def __len__(self) -> int:
        """Number of indices this rank gets per epoch."""
        return math.ceil(self.num_samples / self.world_size)

    def global_indices(self, epoch: int, seed: int) -> Tensor:
        """The whole epoch's sequence, as every rank sees it before sharding.

        Returns
        -------
        Tensor
            ``int64`` CPU tensor of length ``num_samples``.
        """
        return self._draw(epoch_generator(seed, epoch))

    def epoch_indices(self, epoch: int, seed: int) -> Tensor:
        """This rank's anchor order for ``epoch``, deterministic given ``(seed, epoch)``.

        Parameters
        ----------
        epoch : int
            0-based epoch, ``>= 0``.
        seed : int
            Training seed, ``>= 0``.

        Returns
        -------
        Tensor
            ``int64`` CPU tensor of dataset indices, of length ``len(self)``.
        """
        from tailmix.distributed import shard

        sequence = self.global_indices(epoch, seed)
        return shard(sequence, rank=self.rank, world_size=self.world_size).clone()

    def epoch_plan(self, epoch: int, seed: int, generator: torch.Generator | None = None
                   ) -> EpochPlan:
        """The whole epoch's indices (every process alike) and no synthetic mask.

        ``generator`` serves the samplers that re-draw on the device (:class:`Resampled`);
        this one ignores it.
        """
        return self.global_indices(epoch, seed), None

    # -- torch.utils.data.Sampler protocol, for a user's DataLoader -----------------------

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration draws (as ``DistributedSampler`` does)."""
        self.epoch = check_number("epoch", epoch, low=0, integer=True)

    def __iter__(self):
        return iter(self.epoch_indices(self.epoch, self.seed).tolist())

    def _draw(self, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, rank={self.rank}, "
            f"world_size={self.world_size})"
        )


class InstanceSampler(AnchorSampler):
    """Every example once per epoch in random order (a permutation).

    A ``num_samples`` other than ``N`` concatenates fresh permutations and truncates.
    """

    name = "instance"

    def _draw(self, generator: torch.Generator) -> Tensor:
        size = self.labels.numel()
        rounds = math.ceil(self.num_samples / size)
        permutations = [torch.randperm(size, generator=generator) for _ in range(rounds)]
        return torch.cat(permutations)[: self.num_samples]


class ClassPowerSampler(AnchorSampler):
    """Each draw picks class ``c`` with probability proportional to ``n_c ** power``, then
    an example of that class uniformly; draws are with replacement.

    ``power = 0`` is class-balanced, ``0.5`` square-root, ``1`` instance-balanced with
    replacement.
    """

    name = "class_power"
    power: float = 0.0

    def _draw(self, generator: torch.Generator) -> Tensor:
        counts = self.class_counts
        class_probs = counts.double().pow(self.power)
        classes = torch.multinomial(
            class_probs, self.num_samples, replacement=True, generator=generator
        )
        sizes = counts[classes]
        uniform = torch.rand(self.num_samples, dtype=torch.float64, generator=generator)
        within = torch.minimum((uniform * sizes).long(), sizes - 1)
        return self._by_class[self._class_start[classes] + within]


class ClassBalancedSampler(ClassPowerSampler):
    """Class uniform, then an example of it uniformly (with replacement)."""

    name = "class_balanced"
    power = 0.0


class SquareRootSampler(ClassPowerSampler):
    """Class probability proportional to ``sqrt(n_c)``, then an example of it uniformly."""

    name = "sqrt"
    power = 0.5


SAMPLERS.register("instance", InstanceSampler)
SAMPLERS.register("class_balanced", ClassBalancedSampler)
SAMPLERS.register("sqrt", SquareRootSampler)


def build_sampler(
    name: str,
    *,
    labels: Tensor | np.ndarray,
    class_counts: ClassCounts | None = None,
    num_samples: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    **params: Any,
) -> AnchorSampler:
    """Build an anchor sampler by name (any registered in :data:`SAMPLERS`).

    Parameters
    ----------
    name : {"instance", "class_balanced", "sqrt"}
        ``"instance"``: a permutation of all indices. ``"class_balanced"``: class uniform,
        then an example uniformly, with replacement. ``"sqrt"``: class probability
        proportional to ``sqrt(n_c)``.
    labels, class_counts, num_samples, rank, world_size
        See :class:`AnchorSampler`.
    **params
        Further keywords of a registered sampler class that takes them; any keyword the
        class's constructor does not take is an error.

    Returns
    -------
    AnchorSampler

    Raises
    ------
    ParameterError
        On an unknown name, a keyword the sampler does not take (naming it and listing those
        it does), ``world_size < 1``, ``rank`` outside ``[0, world_size)``, or labels and
        counts that disagree.
    """
    sampler = SAMPLERS.get(name, "name")
    check_keywords(params, sampler, what=f"the {name!r} sampler")
    return sampler(
        labels=labels,
        class_counts=class_counts,
        num_samples=num_samples,
        rank=rank,
        world_size=world_size,
        seed=seed,
        **params,
    )


class Resampled:
    """Re-draw another sampler's epoch: class-balanced, or oversampled to balance.

    ``"oversample"`` (SMOTE's anchors): the base sequence once, plus ``n_max - n_c`` extra
    slots for each class ``c`` (counts taken over the base sequence), each an example of
    ``c`` drawn uniformly, all shuffled together; the plan's mask is True on the extra
    (synthetic) slots, which a mixer turns into interpolations. ``"class_balanced"``: as
    many draws as the base sequence, each class equally likely, then a member of it
    uniformly; no mask. The draws come from the epoch's device generator (the ``batch``
    stream), so they happen where the data lives.

    Parameters
    ----------
    base : AnchorSampler
        The sampler whose sequence is re-drawn.
    mode : {"oversample", "class_balanced"}
    labels : Tensor, optional
        The training labels on the device the re-draw happens on (default: the base
        sampler's, on the CPU).
    num_classes : int, optional
        Number of classes; defaults to the base sampler's.
    anchor_weights : Tensor or callable, optional
        ``"oversample"`` only: ``(N,)`` weights of the training examples as anchors of the
        extra slots, or a callable returning them at each epoch's plan (a mixer's
        :meth:`~tailmix.mixing.Mixer.anchor_weights`, whose neighbour table may be searched
        again between epochs). Within a class, the extra slots go to its examples in
        proportion to their weights (Borderline-SMOTE: 1 for an example in danger, 0 for the
        others). A class whose examples all weigh 0 is topped up from all of them, as
        without weights (imbalanced-learn adds none to it): every class still reaches
        ``n_max``. None: uniformly within the class.
    quota : bool, default False
        With ``anchor_weights``: give each example its share of the class's extra slots,
        rounded to whole slots (the largest remainders rounded up, so the class gets exactly
        its ``n_max - n_c``), the same every epoch, as ADASYN does; otherwise draw the
        slots with replacement in proportion to the weights, as SMOTE draws its anchors.

    Examples
    --------
    >>> import torch
    >>> base = build_sampler("instance", labels=torch.tensor([0, 0, 0, 1]))
    >>> idx, synthetic = Resampled(base, mode="oversample").epoch_plan(
    ...     0, 0, torch.Generator().manual_seed(0))
    >>> len(idx), int(synthetic.sum())   # class 1 topped up from 1 to 3 examples
    (6, 2)
    """

    MODES = ("oversample", "class_balanced")

    def __init__(self, base: AnchorSampler, *, mode: str, labels: Tensor | None = None,
                 num_classes: int | None = None, anchor_weights: Any = None,
                 quota: bool = False):
        self.base = base
        self.mode = check_choice("mode", mode, self.MODES)
        if anchor_weights is not None and self.mode != "oversample":
            raise ParameterError("anchor_weights", "None with mode 'class_balanced' (weights "
                                 "place the extra slots of 'oversample')", "weights")
        if not isinstance(quota, bool):
            raise ParameterError("quota", "true or false", quota)
        self.anchor_weights, self.quota = anchor_weights, quota
        self.labels = base.labels if labels is None else labels
        self.num_classes = int(base.class_counts.numel() if num_classes is None
                               else num_classes)
        self.seed, self.epoch = base.seed, 0

    def epoch_plan(self, epoch: int, seed: int, generator: torch.Generator | None = None
                   ) -> EpochPlan:
        """The re-drawn epoch (default generator: the ``batch`` stream, on the CPU)."""
        labels = self.labels
        g = generator if generator is not None else torch.Generator(
            device=labels.device).manual_seed(derive_seed(seed, "batch", epoch=epoch))
        idx = self.base.global_indices(epoch, seed).to(labels.device)
        weights = self.anchor_weights
        if callable(weights):
            weights = weights()
        if weights is not None and (not isinstance(weights, Tensor)
                                    or weights.shape != labels.shape):
            raise ParameterError("anchor_weights", f"a tensor of shape {tuple(labels.shape)} "
                                 "(one weight per training example)",
                                 getattr(weights, "shape", weights))
        return resample_anchors(idx, labels, self.num_classes, self.mode, g,
                                weights=weights, quota=self.quota)

    def global_indices(self, epoch: int, seed: int) -> Tensor:
        return self.epoch_plan(epoch, seed)[0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_number("epoch", epoch, low=0, integer=True)

    def __iter__(self):
        """(index, synthetic) pairs of this process's share, for a ``DataLoader`` over a
        :class:`tailmix.data.IndexedDataset`."""
        from tailmix.distributed import shard

        idx, mask = self.epoch_plan(self.epoch, self.seed)
        if mask is None:
            mask = torch.zeros_like(idx, dtype=torch.bool)
        where = dict(rank=self.base.rank, world_size=self.base.world_size)
        return iter(zip(shard(idx, **where).tolist(), shard(mask, **where).tolist(),
                        strict=True))

    def __len__(self) -> int:
        counts = self.base.class_counts
        n = int(counts.max()) * int((counts > 0).sum()) if self.mode == "oversample" \
            else self.base.num_samples
        return math.ceil(n / self.base.world_size)


def resample_anchors(idx: Tensor, labels: Tensor, num_classes: int, mode: str,
                     generator: torch.Generator, *, weights: Tensor | None = None,
                     quota: bool = False) -> EpochPlan:
    """Re-draw the anchor sequence ``idx`` (see :class:`Resampled`); ``labels`` are the
    training labels, on ``idx``'s device; ``weights`` (one per training example) place the
    extra slots of ``"oversample"``, drawn or (``quota``) allotted."""
    g, device = generator, idx.device
    anchor_labels = labels[idx]
    order = torch.argsort(anchor_labels, stable=True)
    counts = torch.bincount(anchor_labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    if mode == "class_balanced":
        classes = torch.multinomial((counts > 0).float(), idx.shape[0], replacement=True,
                                    generator=g)
        return idx[order[_draw_members(classes, starts, counts, g)]], None
    extra_per_class = torch.where(counts > 0, counts.max() - counts, 0)
    if weights is None:
        classes = torch.repeat_interleave(torch.arange(num_classes, device=device),
                                          extra_per_class)
        extra = idx[order[_draw_members(classes, starts, counts, g)]]
    else:
        extra = _weighted_extra(idx[order], starts.tolist(), counts.tolist(),
                                extra_per_class.tolist(), weights.to(device), quota, g)
    all_idx = torch.cat([idx, extra])
    synthetic = torch.cat([torch.zeros_like(idx, dtype=torch.bool),
                           torch.ones_like(extra, dtype=torch.bool)])
    shuffle = torch.randperm(all_idx.shape[0], generator=g, device=device)
    return all_idx[shuffle], synthetic[shuffle]


def _weighted_extra(sorted_idx: Tensor, starts: list[int], counts: list[int],
                    extras: list[int], weights: Tensor, quota: bool,
                    generator: torch.Generator) -> Tensor:
    """The extra slots of every class, placed on its members (``sorted_idx``, grouped by
    class) by their ``weights``: drawn in proportion, or allotted by largest remainder."""
    parts = [sorted_idx[:0]]
    for start, count, extra in zip(starts, counts, extras, strict=True):
        if not extra:
            continue
        members = sorted_idx[start:start + count]
        if quota:  # the allotment follows the examples, not this epoch's order of them
            members = members.sort().values
        w = weights[members].double()
        if not bool((w > 0).any()):  # no anchor weighs anything: the class's plain draw
            w = torch.ones_like(w)
        if quota:
            parts.append(members.repeat_interleave(largest_remainder(w, extra).to(
                members.device)))
        else:
            pick = torch.multinomial(w.float(), extra, replacement=True, generator=generator)
            parts.append(members[pick])
    return torch.cat(parts)


def largest_remainder(weights: Tensor, total: int) -> Tensor:
    """Whole shares of ``total`` in proportion to ``weights`` (non-negative, not all 0):
    each share rounded down, then the largest remainders (the first, among equal ones)
    rounded up until the shares sum to ``total``. Where rounding each share to the nearest
    whole already sums to ``total``, the two agree.

    >>> import torch
    >>> largest_remainder(torch.tensor([1.0, 1.0, 2.0]), 5).tolist()
    [1, 1, 3]
    """
    quota = weights.double().cpu() * total / weights.double().sum()
    shares = quota.floor()
    left = total - int(shares.sum())
    if left > 0:
        order = torch.argsort(shares - quota, stable=True)  # largest remainder first
        shares[order[:left]] += 1
    return shares.long()


def _draw_members(classes: Tensor, starts: Tensor, counts: Tensor,
                  generator: torch.Generator) -> Tensor:
    """Positions, in the class-sorted order, of one uniform member of each given class."""
    u = torch.rand(classes.shape, generator=generator, device=classes.device)
    offset = (u * counts[classes]).long().clamp_max(counts[classes] - 1)
    return starts[classes] + offset


class Phased:
    """Plan each epoch with ``before`` until ``switch_epoch``, with ``after`` from then on
    (M2m: instance-balanced warm-up, then class-balanced batches)."""

    def __init__(self, *, before: Any, after: Any, switch_epoch: int):
        self.before, self.after = before, after
        self.switch_epoch = check_number("switch_epoch", switch_epoch, low=0, integer=True)
        self.epoch = 0

    @property
    def seed(self) -> int:
        return self.before.seed

    @property
    def labels(self) -> Tensor:
        return self.before.labels

    @property
    def class_counts(self) -> Tensor:
        return self.before.class_counts

    @property
    def num_samples(self) -> int:
        return self.current(self.epoch).num_samples

    @property
    def rank(self) -> int:
        return self.before.rank

    @property
    def world_size(self) -> int:
        return self.before.world_size

    def current(self, epoch: int) -> Any:
        return self.after if epoch >= self.switch_epoch else self.before

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_number("epoch", epoch, low=0, integer=True)
        self.current(epoch).set_epoch(epoch)

    def __iter__(self):
        return iter(self.current(self.epoch))

    def __len__(self) -> int:
        return len(self.current(self.epoch))

    def epoch_plan(self, epoch: int, seed: int, generator: torch.Generator | None = None
                   ) -> EpochPlan:
        return self.current(epoch).epoch_plan(epoch, seed, generator)

    def global_indices(self, epoch: int, seed: int) -> Tensor:
        return self.current(epoch).global_indices(epoch, seed)

    def epoch_indices(self, epoch: int, seed: int) -> Tensor:
        return self.current(epoch).epoch_indices(epoch, seed)
