import math

import numpy as np
import pytest
import torch

from tailmix._validation import ParameterError
from tailmix.samplers import SAMPLERS, Phased, Resampled, build_sampler, epoch_generator

COUNTS = [500, 120, 30, 6]


def _shuffled_labels(counts, seed=0):
    """Labels with the given class counts, in a random (not class-sorted) order."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


LABELS = _shuffled_labels(COUNTS)


def test_instance_is_a_fresh_permutation_each_epoch():
    sampler = build_sampler("instance", labels=LABELS, class_counts=COUNTS)
    assert len(sampler) == sum(COUNTS)
    first, second = sampler.epoch_indices(0, seed=0), sampler.epoch_indices(1, seed=0)
    for order in (first, second):
        assert order.dtype == torch.int64 and order.device.type == "cpu"
        assert torch.equal(torch.sort(order).values, torch.arange(sum(COUNTS)))
    assert not torch.equal(first, second)


def test_instance_with_more_samples_concatenates_permutations():
    sampler = build_sampler("instance", labels=torch.tensor([0, 1, 1]), num_samples=7)
    order = sampler.epoch_indices(0, seed=3)
    assert len(order) == 7
    assert torch.equal(torch.sort(order[:3]).values, torch.arange(3))
    assert torch.equal(torch.sort(order[3:6]).values, torch.arange(3))


@pytest.mark.parametrize(
    "name, targets",
    [
        ("class_balanced", [0.25] * 4),
        ("sqrt", [math.sqrt(n) / sum(math.sqrt(m) for m in COUNTS) for n in COUNTS]),
        ("instance", [n / sum(COUNTS) for n in COUNTS]),
    ],
)
def test_class_frequencies_match_targets(name, targets):
    sampler = build_sampler(name, labels=LABELS, class_counts=COUNTS, num_samples=20_000)
    drawn = torch.cat([sampler.epoch_indices(epoch, seed=11) for epoch in range(3)])
    frequencies = torch.bincount(LABELS[drawn], minlength=4).double() / len(drawn)
    # 60,000 draws: standard error <= 0.002, so 0.01 is five standard errors
    assert frequencies.tolist() == pytest.approx(targets, abs=0.01)


@pytest.mark.parametrize("name", ["class_balanced", "sqrt"])
def test_examples_within_a_class_are_uniform(name):
    sampler = build_sampler(name, labels=LABELS, class_counts=COUNTS, num_samples=30_000)
    drawn = sampler.epoch_indices(0, seed=5)
    rare = torch.nonzero(LABELS == 3).flatten()  # the class with 6 examples
    hits = (drawn[:, None] == rare[None, :]).sum(0).double()
    assert hits.sum() > 1000
    assert (hits / hits.sum()).tolist() == pytest.approx([1 / 6] * 6, abs=0.04)
    assert set(drawn.tolist()) <= set(range(len(LABELS)))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_deterministic_given_seed_and_epoch(name):
    first = build_sampler(name, labels=LABELS, class_counts=COUNTS)
    second = build_sampler(name, labels=LABELS.numpy(), class_counts=np.array(COUNTS))
    assert torch.equal(first.epoch_indices(4, seed=9), second.epoch_indices(4, seed=9))
    assert not torch.equal(first.epoch_indices(4, seed=9), first.epoch_indices(4, seed=10))
    assert not torch.equal(first.epoch_indices(4, seed=9), first.epoch_indices(5, seed=9))


def test_sampling_leaves_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_sampler("class_balanced", labels=LABELS).epoch_indices(0, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_epoch_generator_differs_per_pair():
    draws = {
        (seed, epoch): torch.randint(0, 2**62, (1,), generator=epoch_generator(seed, epoch)).item()
        for seed in range(4)
        for epoch in range(4)
    }
    assert len(set(draws.values())) == 16


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("num_samples", [None, 655, 1000])
def test_distributed_shards_rebuild_the_single_process_sequence(name, world_size, num_samples):
    def make(rank, size):
        return build_sampler(name, labels=LABELS, class_counts=COUNTS, num_samples=num_samples,
                             rank=rank, world_size=size)

    single = make(0, 1).epoch_indices(2, seed=1)
    shards = [make(rank, world_size).epoch_indices(2, seed=1) for rank in range(world_size)]
    length = math.ceil(len(single) / world_size)
    assert all(len(shard) == length == len(make(r, world_size)) for r, shard in enumerate(shards))
    # rank r holds positions r, r + world_size, ...: disjoint, and together every position
    rebuilt = torch.full((length * world_size,), -1, dtype=torch.long)
    for rank, shard in enumerate(shards):
        assert torch.all(rebuilt[rank::world_size] == -1)
        rebuilt[rank::world_size] = shard
    assert torch.equal(rebuilt[: len(single)], single)
    padding = len(rebuilt) - len(single)
    assert torch.equal(rebuilt[len(single) :], single[:padding])


def test_tiny_dataset_pads_by_repeating():
    shards = [
        build_sampler("instance", labels=torch.tensor([0, 1]), rank=r, world_size=5)
        .epoch_indices(0, seed=0)
        for r in range(5)
    ]
    assert all(len(shard) == 1 for shard in shards)
    single = build_sampler("instance", labels=torch.tensor([0, 1])).epoch_indices(0, seed=0)
    assert torch.cat(shards).tolist() == single.repeat(3)[:5].tolist()


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"name": "oversample"}, "name"),
        ({"rank": 2, "world_size": 2}, "rank"),
        ({"rank": -1}, "rank"),
        ({"world_size": 0}, "world_size"),
        ({"num_samples": 0}, "num_samples"),
        ({"class_counts": [500, 120, 30, 7]}, "class_counts"),
        ({"class_counts": [500, 120, 30]}, "class_counts"),
        ({"labels": torch.tensor([0.0, 1.0])}, "labels"),
        ({"labels": torch.tensor([[0, 1]])}, "labels"),
        ({"labels": torch.tensor([0, 2]), "class_counts": None}, "labels"),
    ],
)
def test_sampler_errors(kwargs, parameter):
    arguments = {"name": "class_balanced", "labels": LABELS, "class_counts": COUNTS, **kwargs}
    with pytest.raises(ParameterError) as info:
        build_sampler(arguments.pop("name"), **arguments)
    assert info.value.name == parameter


def test_epoch_and_seed_must_be_non_negative():
    sampler = build_sampler("instance", labels=LABELS)
    with pytest.raises(ParameterError, match="epoch"):
        sampler.epoch_indices(-1, seed=0)
    with pytest.raises(ParameterError, match="seed"):
        sampler.epoch_indices(0, seed=-3)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_epoch_plan_and_dataloader_protocol(name):
    """The trainer's plan is the whole epoch (no synthetic slots); a DataLoader iterates
    this rank's share of the epoch chosen with ``set_epoch``, from the sampler's seed."""
    whole = build_sampler(name, labels=LABELS, class_counts=COUNTS, seed=7)
    idx, mask = whole.epoch_plan(3, 7, torch.Generator())
    assert mask is None and torch.equal(idx, whole.global_indices(3, seed=7))
    for rank in range(2):
        share = build_sampler(name, labels=LABELS, class_counts=COUNTS, seed=7, rank=rank,
                              world_size=2)
        share.set_epoch(3)
        assert list(share) == share.epoch_indices(3, seed=7).tolist()
        assert list(share) != share.epoch_indices(4, seed=7).tolist()
    loader = torch.utils.data.DataLoader(LABELS, batch_size=100, sampler=whole)
    whole.set_epoch(3)
    assert torch.equal(torch.cat(list(loader)), LABELS[idx])
    with pytest.raises(ParameterError, match="'epoch'"):
        whole.set_epoch(-1)


def test_phased_switches_sampler_at_an_epoch():
    before = build_sampler("instance", labels=LABELS, class_counts=COUNTS)
    after = build_sampler("class_balanced", labels=LABELS, class_counts=COUNTS)
    phased = Phased(before=before, after=after, switch_epoch=2)
    for epoch, expected in [(0, before), (1, before), (2, after), (5, after)]:
        assert phased.current(epoch) is expected
        assert torch.equal(phased.global_indices(epoch, 3), expected.global_indices(epoch, 3))
        assert torch.equal(phased.epoch_indices(epoch, 3), expected.epoch_indices(epoch, 3))
        idx, mask = phased.epoch_plan(epoch, 3, torch.Generator())
        assert mask is None and torch.equal(idx, expected.global_indices(epoch, 3))
    with pytest.raises(ParameterError, match="'switch_epoch'"):
        Phased(before=before, after=after, switch_epoch=-1)


def test_resampled_iterates_index_and_synthetic_pairs_of_its_share():
    labels = torch.tensor([0] * 6 + [1] * 2)
    shares = []
    for rank in range(2):
        base = build_sampler("instance", labels=labels, rank=rank, world_size=2, seed=1)
        planner = Resampled(base, mode="oversample")
        planner.set_epoch(2)
        pairs = list(planner)
        assert len(pairs) == len(planner) == 6  # 12 slots: 8 real, 4 synthetic of class 1
        shares.append(pairs)
    idx, mask = planner.epoch_plan(2, 1)
    rebuilt = [p for pair in zip(*shares, strict=True) for p in pair]
    assert rebuilt == list(zip(idx.tolist(), mask.tolist(), strict=True))
    assert sum(synthetic for _, synthetic in rebuilt) == 4
