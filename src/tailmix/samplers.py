"""Anchor samplers: the order in which training examples are visited in an epoch.

A sampler turns ``(seed, epoch)`` into a LongTensor of dataset indices, the same on every
call and every process. For distributed training every rank builds the same global
sequence, pads it to a multiple of ``world_size`` by repeating its start, and keeps the
positions ``rank::world_size``: the ranks are disjoint and together they draw exactly the
single-process sequence.

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

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.weights import ClassCounts, check_class_counts

__all__ = [
    "SAMPLERS",
    "AnchorSampler",
    "ClassBalancedSampler",
    "ClassPowerSampler",
    "InstanceSampler",
    "SquareRootSampler",
    "build_sampler",
    "epoch_generator",
]


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
    seed = check_number("seed", seed, low=0, integer=True)
    epoch = check_number("epoch", epoch, low=0, integer=True)
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _check_labels(labels: Any) -> Tensor:
    expected = "a non-empty 1-D integer tensor or array of non-negative labels"
    if isinstance(labels, Tensor):
        tensor = labels.detach().cpu()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(labels))
        except (TypeError, ValueError) as error:
            raise ParameterError("labels", expected, labels) from error
    if tensor.ndim != 1 or tensor.numel() == 0 or tensor.is_floating_point() or tensor.is_complex():
        raise ParameterError("labels", expected, labels)
    tensor = tensor.long()
    if bool((tensor < 0).any()):
        raise ParameterError("labels", expected, labels)
    return tensor


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
    ):
        world_size = check_number("world_size", world_size, low=1, integer=True)
        rank = check_number("rank", rank, low=0, high=world_size - 1, integer=True)
        if num_samples is not None:
            num_samples = check_number("num_samples", num_samples, low=1, integer=True)
        labels = _check_labels(labels)
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
        # Dataset indices grouped by class, and where each class's group starts.
        self._by_class = torch.argsort(labels, stable=True)
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
        sequence = self.global_indices(epoch, seed)
        total = len(self) * self.world_size
        if total > sequence.numel():
            repeats = math.ceil(total / sequence.numel())
            sequence = sequence.repeat(repeats)[:total]
        return sequence[self.rank :: self.world_size].clone()

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


SAMPLERS: dict[str, type[AnchorSampler]] = {
    "instance": InstanceSampler,
    "class_balanced": ClassBalancedSampler,
    "sqrt": SquareRootSampler,
}


def build_sampler(
    name: str,
    *,
    labels: Tensor | np.ndarray,
    class_counts: ClassCounts | None = None,
    num_samples: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> AnchorSampler:
    """Build an anchor sampler by name.

    Parameters
    ----------
    name : {"instance", "class_balanced", "sqrt"}
        ``"instance"``: a permutation of all indices. ``"class_balanced"``: class uniform,
        then an example uniformly, with replacement. ``"sqrt"``: class probability
        proportional to ``sqrt(n_c)``.
    labels, class_counts, num_samples, rank, world_size
        See :class:`AnchorSampler`.

    Returns
    -------
    AnchorSampler

    Raises
    ------
    ParameterError
        On an unknown name, ``world_size < 1``, ``rank`` outside ``[0, world_size)``, or
        labels and counts that disagree.
    """
    check_choice("name", name, SAMPLERS)
    return SAMPLERS[name](
        labels=labels,
        class_counts=class_counts,
        num_samples=num_samples,
        rank=rank,
        world_size=world_size,
    )
