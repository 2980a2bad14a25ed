from fractions import Fraction

import numpy as np
import pytest
import torch

from tailmix._validation import ParameterError
from tailmix.weights import (
    WEIGHT_SCHEDULES,
    build_weight_schedule,
    check_class_counts,
    class_balanced_weights,
    inverse_frequency_weights,
)

CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


# --- weight vectors --------------------------------------------------------------------------


def test_class_balanced_exact_values():
    # beta = 0.5, counts (1, 2, 4): (1 - b) / (1 - b**n) = 1, 2/3, 8/15; sum 33/15; times 3
    got = class_balanced_weights([1, 2, 4], beta=0.5)
    assert got.tolist() == pytest.approx([15 / 11, 10 / 11, 8 / 11], rel=1e-6)
    assert got.dtype == torch.float32


def test_class_balanced_exact_fractions_for_unsorted_counts():
    # beta = 3/4 (exact in binary), counts (3, 1, 2), in that order:
    # (1 - b) / (1 - b**n) = (1/4) / (37/64), 1, (1/4) / (7/16) = 16/37, 1, 4/7;
    # their sum is 519/259, so times 3 / sum: 112/173, 259/173, 148/173 (they sum to 3).
    got = class_balanced_weights([3, 1, 2], beta=0.75)
    assert got.tolist() == pytest.approx([112 / 173, 259 / 173, 148 / 173], rel=1e-7)


@pytest.mark.parametrize("name", ["cb", "drw"])
def test_schedules_give_effective_number_weights_at_the_default_beta(name):
    """The schedules' own default beta is 0.9999; expected values in exact rationals."""
    counts = [100, 10, 1, 37]
    beta = Fraction(0.9999)  # the float's exact value
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = [float(len(counts) * r / sum(raw)) for r in raw]
    schedule = build_weight_schedule(name, class_counts=counts, epochs=10)
    got = schedule(schedule.start_epoch)
    assert got.dtype == torch.float32
    # rounding to float32 costs at most 2 ** -24 relative; twice that leaves room for the
    # float64 arithmetic before it (a wrong beta or formula is off by far more)
    assert got.tolist() == pytest.approx(expected, rel=2**-23, abs=0)
    # cb weights from the start; drw from 0.8 of the run
    assert schedule.start_epoch == (0 if name == "cb" else 8)
    if name == "drw":
        assert schedule(7) is None


def test_class_balanced_uniform_at_beta_zero():
    assert torch.equal(class_balanced_weights(CIFAR10_LT_100, beta=0.0), torch.ones(10))


@pytest.mark.parametrize("seed", range(20))
def test_class_balanced_sums_to_num_classes_and_favours_rare_classes(seed):
    gen = torch.Generator().manual_seed(seed)
    num_classes = int(torch.randint(2, 50, (1,), generator=gen))
    counts = torch.randint(1, 5000, (num_classes,), generator=gen)
    beta = float(torch.rand((), generator=gen)) * 0.9999
    weights = class_balanced_weights(counts, beta=beta)
    assert weights.sum().item() == pytest.approx(num_classes, rel=1e-5)
    order = torch.argsort(counts)
    assert torch.all(weights[order][1:] <= weights[order][:-1] + 1e-6)


def test_class_balanced_approaches_inverse_frequency_as_beta_grows():
    counts = [1, 2, 4]
    near_one = class_balanced_weights(counts, beta=1 - 1e-7)
    assert torch.allclose(near_one, inverse_frequency_weights(counts), atol=1e-5)


def test_class_balanced_cifar10_lt_default_beta():
    weights = class_balanced_weights(CIFAR10_LT_100)  # beta = 0.9999
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in CIFAR10_LT_100]
    expected = [10 * r / sum(raw) for r in raw]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)


def test_inverse_frequency_exact_values():
    assert inverse_frequency_weights([1, 4]).tolist() == pytest.approx([1.6, 0.4])
    assert inverse_frequency_weights([1, 4], power=0.5).tolist() == pytest.approx([4 / 3, 2 / 3])
    assert torch.equal(inverse_frequency_weights([7, 1, 3], power=0.0), torch.ones(3))


def test_counts_accept_lists_arrays_and_tensors():
    expected = class_balanced_weights([5, 2, 1], beta=0.9)
    assert torch.equal(class_balanced_weights(np.array([5, 2, 1]), beta=0.9), expected)
    assert torch.equal(class_balanced_weights(torch.tensor([5, 2, 1]), beta=0.9), expected)


@pytest.mark.parametrize(
    "call, parameter",
    [
        (lambda: class_balanced_weights([3, 1], beta=1.0), "beta"),
        (lambda: class_balanced_weights([3, 1], beta=-0.1), "beta"),
        (lambda: class_balanced_weights([3, 0], beta=0.9), "class_counts"),
        (lambda: class_balanced_weights([[3, 1]], beta=0.9), "class_counts"),
        (lambda: inverse_frequency_weights([3, 1], power=-1.0), "power"),
        (lambda: inverse_frequency_weights([], power=1.0), "class_counts"),
        (lambda: check_class_counts([1.0, float("nan")]), "class_counts"),
        (lambda: check_class_counts("10"), "class_counts"),
    ],
)
def test_weight_errors(call, parameter):
    with pytest.raises(ParameterError) as info:
        call()
    assert info.value.name == parameter


# --- schedules -------------------------------------------------------------------------------


def test_drw_switches_exactly_at_default_start():
    schedule = build_weight_schedule("drw", class_counts=CIFAR10_LT_100, epochs=200)
    assert schedule.name == "drw" and schedule.start_epoch == 160
    assert schedule(0) is None and schedule(159) is None
    expected = class_balanced_weights(CIFAR10_LT_100, beta=0.9999)
    assert torch.equal(schedule(160), expected)
    assert torch.equal(schedule(199), expected)


@pytest.mark.parametrize("epochs, start", [(1, 0), (2, 1), (5, 4), (10, 8), (60, 48), (300, 240)])
def test_drw_default_start_follows_run_length(epochs, start):
    schedule = build_weight_schedule("drw", class_counts=[3, 1], epochs=epochs)
    assert schedule.start_epoch == start
    assert schedule(start) is not None
    assert start == 0 or schedule(start - 1) is None


def test_drw_explicit_start_and_beta():
    schedule = build_weight_schedule("drw", class_counts=[1, 2, 4], epochs=10, start_epoch=3,
                                     beta=0.5)
    assert schedule(2) is None
    assert schedule(3).tolist() == pytest.approx([15 / 11, 10 / 11, 8 / 11], rel=1e-6)


def test_drw_start_beyond_last_epoch_is_an_error():
    with pytest.raises(ParameterError) as info:
        build_weight_schedule("drw", class_counts=[3, 1], epochs=200, start_epoch=200)
    assert info.value.name == "start_epoch"
    assert "start_epoch" in str(info.value) and "epochs=200" in str(info.value)
    with pytest.raises(ParameterError, match="start_epoch"):
        build_weight_schedule("drw", class_counts=[3, 1], epochs=200, start_epoch=-1)


def test_other_schedules():
    counts = [1, 4]
    none = build_weight_schedule("none", class_counts=counts, epochs=5)
    assert none.start_epoch is None and all(none(e) is None for e in range(5))
    cb = build_weight_schedule("cb", class_counts=counts, epochs=5, beta=0.5)
    assert cb.start_epoch == 0
    # beta = 0.5, counts (1, 4): 1 and 0.5 / 0.9375 = 8/15; normalised to sum 2
    assert cb(0).tolist() == pytest.approx([30 / 23, 16 / 23], rel=1e-6)
    inverse = build_weight_schedule("inverse", class_counts=counts, epochs=5)
    assert inverse(0).tolist() == pytest.approx([1.6, 0.4])
    powered = build_weight_schedule("inverse", class_counts=counts, epochs=5, power=0.5)
    assert powered(4).tolist() == pytest.approx([4 / 3, 2 / 3])
    sqrt = build_weight_schedule("sqrt_inverse", class_counts=counts, epochs=5)
    assert sqrt(0).tolist() == pytest.approx([4 / 3, 2 / 3])
    late = build_weight_schedule("cb", class_counts=counts, epochs=5, start_epoch=2)
    assert late(1) is None and late(2) is not None


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"name": "focal"}, "name"),
        ({"name": "drw", "beta": 1.0}, "beta"),
        ({"name": "cb", "beta": -0.5}, "beta"),
        ({"name": "drw", "epochs": 0}, "epochs"),
        ({"name": "drw", "gamma": 2.0}, "gamma"),
        ({"name": "sqrt_inverse", "power": 2.0}, "power"),
        ({"name": "inverse", "power": -2.0}, "power"),
        ({"name": "cb", "start_epoch": 10}, "start_epoch"),
        ({"name": "drw", "class_counts": [1, 0]}, "class_counts"),
    ],
)
def test_schedule_errors(kwargs, parameter):
    arguments = {"class_counts": [3, 1], "epochs": 10, **kwargs}
    name = arguments.pop("name")
    with pytest.raises(ParameterError) as info:
        build_weight_schedule(name, **arguments)
    assert info.value.name == parameter


def test_schedule_rejects_negative_epoch():
    with pytest.raises(ParameterError, match="epoch"):
        build_weight_schedule("drw", class_counts=[3, 1], epochs=10)(-1)


def test_every_schedule_name_builds():
    for name in WEIGHT_SCHEDULES:
        schedule = build_weight_schedule(name, class_counts=[3, 1], epochs=4)
        assert schedule.name == name
        last = schedule(3)
        assert last is None or last.sum().item() == pytest.approx(2.0)


def test_cumulative_schedule_with_a_power_moves_to_inverse_frequency_weights():
    """``cumulative`` with ``power`` (GLMC's ``n ** -1.2``): at epoch 5 of 10 the weights
    are 3/4 uniform and 1/4 the re-weighting, written out by hand, then scaled to sum to C."""
    from tailmix.weights import build_weight_schedule

    counts = [100.0, 10.0, 1.0]
    schedule = build_weight_schedule("cumulative", class_counts=counts, epochs=10, power=1.2)
    raw = [n ** -1.2 for n in counts]
    w = [3 * v / sum(raw) for v in raw]
    blend = [0.75 * 1.0 + 0.25 * v for v in w]
    expected = torch.tensor([3 * v / sum(blend) for v in blend])
    torch.testing.assert_close(schedule(5), expected, rtol=1e-6, atol=0)
    assert schedule(0) is None  # all uniform at the start


def test_cumulative_schedule_refuses_beta_beside_power():
    from tailmix.weights import build_weight_schedule

    with pytest.raises(ParameterError) as info:
        build_weight_schedule("cumulative", class_counts=[5, 1], epochs=4, power=1.0, beta=0.5)
    assert info.value.name == "beta"
