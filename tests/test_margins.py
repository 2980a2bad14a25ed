import json
import math

import numpy as np
import pytest
import torch

from tailmix._validation import ParameterError
from tailmix.margins import (
    class_margin_stats,
    example_margins,
    fit_margin_slope,
    margin_report,
)


def test_example_margins_hand_made():
    logits = torch.tensor(
        [
            [3.0, 1.0, 2.5],  # y=0: 3 - 2.5
            [0.0, 2.0, -1.0],  # y=2: -1 - 2
            [1.0, 1.0, 0.0],  # y=1: tie with class 0 -> 0
            [-5.0, -7.0, -6.0],  # y=1: -7 - (-5)
        ]
    )
    labels = torch.tensor([0, 2, 1, 1])
    assert example_margins(logits, labels).tolist() == [0.5, -3.0, 0.0, -2.0]


@pytest.mark.parametrize("seed", range(10))
def test_example_margins_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(50, 7, generator=gen)
    labels = torch.randint(0, 7, (50,), generator=gen)
    got = example_margins(logits, labels)
    for i in range(50):
        others = [logits[i, k] for k in range(7) if k != labels[i]]
        assert got[i] == pytest.approx(float(logits[i, labels[i]] - max(others)), abs=1e-6)
    # sign agrees with correctness
    assert torch.equal(got > 0, logits.argmax(1) == labels)


def test_example_margins_low_precision():
    logits = torch.tensor([[1.5, 0.5]], dtype=torch.bfloat16)
    assert example_margins(logits, torch.tensor([1])).dtype == torch.float32
    assert example_margins(logits, torch.tensor([1])).tolist() == [-1.0]


@pytest.mark.parametrize("seed", range(10))
def test_class_stats_match_numpy(seed):
    gen = torch.Generator().manual_seed(seed)
    num_classes = 6
    n = int(torch.randint(1, 80, (1,), generator=gen))
    margins = torch.randn(n, generator=gen) * 4
    labels = torch.randint(0, num_classes - 1, (n,), generator=gen)  # last class empty
    s = class_margin_stats(margins, labels, num_classes)
    m, y = margins.double().numpy(), labels.numpy()
    for c in range(num_classes):
        vals = m[y == c]
        assert s["count"][c] == len(vals)
        if len(vals) == 0:
            assert s["mean"][c] is s["median"][c] is s["p10"][c] is s["min"][c] is None
            continue
        assert s["mean"][c] == pytest.approx(vals.mean(), abs=1e-5)
        assert s["median"][c] == pytest.approx(np.median(vals), abs=1e-5)
        assert s["p10"][c] == pytest.approx(np.percentile(vals, 10), abs=1e-5)
        assert s["min"][c] == pytest.approx(vals.min(), abs=1e-5)


def test_class_stats_hand_computed():
    margins = torch.tensor([4.0, 1.0, 3.0, 2.0, -1.0, 10.0])
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    s = class_margin_stats(margins, labels, 3)
    assert s["mean"] == [2.5, -1.0, 10.0]
    assert s["median"] == [2.5, -1.0, 10.0]
    # class 0 sorted 1,2,3,4: position 0.1 * 3 = 0.3 -> 1.3
    assert s["p10"] == [pytest.approx(1.3), -1.0, 10.0]
    assert s["min"] == [1.0, -1.0, 10.0]
    assert s["count"] == [4, 1, 1]


def test_slope_recovered_from_power_law():
    gen = np.random.default_rng(0)
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    means = [3.0 * n**-0.25 * math.exp(gen.normal(0, 0.02)) for n in counts]
    fit = fit_margin_slope(means, counts)
    assert fit["slope"] == pytest.approx(-0.25, abs=0.02)
    assert math.exp(fit["intercept"]) == pytest.approx(3.0, rel=0.15)
    assert fit["n_used"] == 10


def test_slope_exact_without_noise():
    counts = torch.tensor([10, 100, 1000])
    means = [2.0 * n**0.5 for n in counts.tolist()]
    fit = fit_margin_slope(torch.tensor(means), counts)
    assert fit["slope"] == pytest.approx(0.5, abs=1e-6)
    assert fit["intercept"] == pytest.approx(math.log(2.0), abs=1e-6)


def test_slope_excludes_non_positive_margins():
    counts = [1000, 100, 10, 50, 20]
    means = [1.0, 10**0.5, 10.0, -3.0, 0.0]  # last two must be ignored
    fit = fit_margin_slope(means, counts)
    assert fit["n_used"] == 3
    assert fit["slope"] == pytest.approx(-0.5, abs=1e-6)


def test_slope_none_when_too_few_classes():
    assert fit_margin_slope([1.0, -1.0, None], [10, 20, 30]) == {
        "slope": None,
        "intercept": None,
        "n_used": 1,
    }
    assert fit_margin_slope([1.0, 2.0], [10, 10])["slope"] is None  # no spread in n_c
    assert fit_margin_slope([1.0, 2.0], [0, 10])["n_used"] == 1


def test_margin_report_structure():
    gen = torch.Generator().manual_seed(1)
    counts = [40, 20, 10]
    train_labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    test_labels = torch.arange(3).repeat(10)
    train_logits = torch.randn(70, 3, generator=gen) + 3 * torch.eye(3)[train_labels]
    test_logits = torch.randn(30, 3, generator=gen) + 3 * torch.eye(3)[test_labels]
    report = margin_report(train_logits, train_labels, test_logits, test_labels, counts)
    json.dumps(report)
    assert report["class_counts"] == counts
    for split, labels in (("train", train_labels), ("test", test_labels)):
        part = report[split]
        assert set(part) == {
            "mean",
            "median",
            "p10",
            "min",
            "count",
            "slope",
            "intercept",
            "n_used",
        }
        assert part["count"] == torch.bincount(labels, minlength=3).tolist()
    expected = class_margin_stats(example_margins(test_logits, test_labels), test_labels, 3)
    assert report["test"]["mean"] == expected["mean"]
    assert report["train"]["slope"] == fit_margin_slope(report["train"]["mean"], counts)["slope"]


def test_bad_arguments():
    with pytest.raises(ParameterError) as err:
        example_margins(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    assert err.value.name == "logits"
    with pytest.raises(ParameterError) as err:
        example_margins(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    assert err.value.name == "labels"
    with pytest.raises(ParameterError) as err:
        class_margin_stats(torch.zeros(3), torch.tensor([0, 1]), 2)
    assert err.value.name == "labels"
    with pytest.raises(ParameterError) as err:
        class_margin_stats(torch.zeros(2), torch.tensor([0, 1]), 0)
    assert err.value.name == "num_classes"
    with pytest.raises(ParameterError) as err:
        fit_margin_slope([1.0, 2.0], [1, 2, 3])
    assert err.value.name == "class_counts"
    x, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ParameterError) as err:
        margin_report(x, y, torch.zeros(4, 3), y, [2, 2])
    assert err.value.name == "test_logits"
    with pytest.raises(ParameterError) as err:
        margin_report(x, y, x, y, [2, 2, 2])
    assert err.value.name == "class_counts"
