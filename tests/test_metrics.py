import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
)

from tailmix._validation import ParameterError
from tailmix.metrics import compute_metrics, precision_recall, shot_groups


def _random_case(gen: torch.Generator, num_classes: int, n: int, unused: int):
    """Logits that never predict the last ``unused`` classes, labels over all classes."""
    logits = torch.randn(n, num_classes, generator=gen) * 3.0
    if unused:
        logits[:, num_classes - unused :] -= 40.0
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    return logits, labels


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_sklearn_on_random_predictions(seed):
    gen = torch.Generator().manual_seed(seed)
    num_classes = int(torch.randint(2, 12, (1,), generator=gen))
    n = int(torch.randint(1, 300, (1,), generator=gen))
    unused = seed % 3 if num_classes > 3 else 0
    logits, labels = _random_case(gen, num_classes, n, unused)
    counts = torch.randint(1, 500, (num_classes,), generator=gen)

    m = compute_metrics(logits, labels, counts)

    y, p = labels.numpy(), logits.argmax(1).numpy()
    present = sorted(set(y.tolist()))
    assert m["top1"] == pytest.approx(100 * accuracy_score(y, p), abs=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes absent from y_true
        sk_balanced = balanced_accuracy_score(y, p)
        sk_f1 = f1_score(y, p, average="macro", zero_division=0)
    assert m["balanced_accuracy"] == pytest.approx(100 * sk_balanced, abs=1e-4)
    assert m["macro_f1"] == pytest.approx(100 * sk_f1, abs=1e-4)
    cm = confusion_matrix(y, p, labels=list(range(num_classes)))
    assert m["confusion_matrix"] == cm.tolist()
    for c in range(num_classes):
        if c in present:
            assert m["per_class_accuracy"][c] == pytest.approx(
                100 * cm[c, c] / cm[c].sum(), abs=1e-4
            )
        else:
            assert m["per_class_accuracy"][c] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_precision = precision_score(y, p, labels=list(range(num_classes)), average=None,
                                       zero_division=0)
    predicted = set(p.tolist())
    for c in range(num_classes):
        if c in predicted:
            assert m["per_class_precision"][c] == pytest.approx(100 * sk_precision[c], abs=1e-4)
        else:
            assert m["per_class_precision"][c] is None
    z = logits.double().numpy()
    top = z.max(1)
    log_norm = top + np.log(np.exp(z - top[:, None]).sum(1))
    ref_nll = float(np.mean(log_norm - z[np.arange(n), y]))
    assert m["nll"] == pytest.approx(ref_nll, rel=1e-4, abs=1e-5)
    assert m["num_examples"] == n and m["num_classes"] == num_classes
    assert 0 <= m["ece"] <= 100
    assert sum(m["reliability"]["bin_count"]) == n
    json.dumps(m)  # JSON-ready: no tensors, no NaN surprises in structure


def test_never_predicted_class_counts_zero_in_macro_f1():
    # class 2 is in the labels but never predicted: its F1 is 0 and it still counts.
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 5.0, 0]])
    labels = torch.tensor([0, 1, 2, 2])
    m = compute_metrics(logits, labels, [10, 10, 10])
    # F1: class 0 = 2*1/(1+2) = 2/3, class 1 = 2*1/(1+2) = 2/3, class 2 = 0
    assert m["macro_f1"] == pytest.approx(100 * (4 / 3) / 3, abs=1e-4)
    assert m["per_class_accuracy"] == [100.0, 100.0, 0.0]
    assert m["balanced_accuracy"] == pytest.approx(200 / 3, abs=1e-4)
    assert m["top1"] == 50.0


def test_precision_and_recall_from_a_confusion_matrix_by_hand():
    # rows true, columns predicted; class 2 has no examples, class 3 is never predicted
    matrix = [[5, 1, 2, 0],
              [3, 6, 0, 0],
              [0, 0, 0, 0],
              [2, 1, 1, 0]]
    scores = precision_recall(matrix)
    # precision: diagonal over column sums 10, 8, 3, 0
    assert scores["precision"] == [50.0, 75.0, 0.0, None]
    # recall: diagonal over row sums 8, 9, 0, 4
    assert scores["recall"] == [62.5, 66.6667, None, 0.0]
    assert precision_recall(torch.tensor(matrix)) == scores
    for bad in ([[1, 2]], [[1, -1], [0, 2]], [[0.5, 0], [0, 1]], [], "ab"):
        with pytest.raises(ParameterError) as err:
            precision_recall(bad)
        assert err.value.name == "confusion_matrix"


def test_metrics_record_precision_beside_recall():
    # predictions 0, 0, 1, 1, 1 for labels 0, 1, 1, 1, 2
    logits = torch.tensor([[3.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0], [0, 3.0, 0]])
    m = compute_metrics(logits, torch.tensor([0, 1, 1, 1, 2]), [30, 20, 10])
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 2, 0], [0, 1, 0]]
    assert m["per_class_precision"] == [50.0, 66.6667, None]
    assert m["per_class_accuracy"] == [100.0, 66.6667, 0.0]
    assert precision_recall(m["confusion_matrix"])["recall"] == m["per_class_accuracy"]


def test_ece_hand_computed():
    # Two classes; confidence = sigmoid(d) for logits [d, 0].
    d = torch.tensor([0.0, math.log(3.0), math.log(9.0), math.log(9.0), math.log(3.0)])
    logits = torch.stack([d, torch.zeros_like(d)], 1)
    labels = torch.tensor([0, 0, 0, 1, 1])
    # confidences 0.5, 0.75, 0.9, 0.9, 0.75; predictions all class 0;
    # correct: 1, 1, 1, 0, 0.
    # 15 bins of width 1/15: 0.5 -> (7/15, 8/15] bin 7; 0.75 -> bin 11; 0.9 -> bin 13.
    # bin 7: n=1 conf .5 acc 1; bin 11: n=2 conf .75 acc .5; bin 13: n=2 conf .9 acc .5.
    expected = (1 * 0.5 + 2 * 0.25 + 2 * 0.4) / 5
    m = compute_metrics(logits, labels, [100, 100])
    assert m["ece"] == pytest.approx(100 * expected, abs=1e-4)
    rel = m["reliability"]
    assert rel["bin_count"] == [0] * 7 + [1, 0, 0, 0, 2, 0, 2, 0]
    assert rel["bin_confidence"][7] == pytest.approx(50.0)
    assert rel["bin_confidence"][11] == pytest.approx(75.0)
    assert rel["bin_accuracy"][13] == pytest.approx(50.0)
    assert rel["bin_accuracy"][0] is None and rel["bin_confidence"][14] is None
    assert len(rel["bin_edges"]) == 16 and rel["bin_edges"][-1] == 100.0


def test_ece_two_bins():
    logits = torch.tensor([[math.log(4.0), 0.0], [0.0, math.log(4.0)], [0.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    # confidences 0.8, 0.8, 0.5 (tie -> class 0 predicted); correct 1, 0, 0
    # 2 bins: [0, .5] holds 0.5 (acc 0), (.5, 1] holds the two 0.8s (acc .5)
    m = compute_metrics(logits, labels, [1, 1], ece_bins=2)
    assert m["ece"] == pytest.approx(100 * (1 * 0.5 + 2 * 0.3) / 3, abs=1e-4)
    assert m["reliability"]["bin_count"] == [1, 2]


def test_perfect_predictions():
    labels = torch.arange(6) % 3
    logits = torch.nn.functional.one_hot(labels, 3).float() * 50
    m = compute_metrics(logits, labels, [200, 50, 5])
    assert m["top1"] == m["balanced_accuracy"] == m["macro_f1"] == 100.0
    assert m["many_shot"] == m["medium_shot"] == m["few_shot"] == 100.0
    assert m["ece"] == pytest.approx(0.0, abs=1e-3)
    assert m["nll"] == pytest.approx(0.0, abs=1e-6)


def test_shot_group_accuracy_and_empty_groups():
    logits = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    labels = torch.tensor([0, 1, 2, 2])
    m = compute_metrics(logits, labels, [1000, 500, 50])
    assert m["many_shot"] == 50.0  # classes 0 (100 %) and 1 (0 %)
    assert m["medium_shot"] == 50.0  # class 2
    assert m["few_shot"] is None


def test_shot_groups_at_thresholds():
    counts = [101, 100, 99, 21, 20, 19, 0]
    assert shot_groups(counts) == {"many": [0], "medium": [1, 2, 3, 4], "few": [5, 6]}
    assert shot_groups(torch.tensor(counts), many_threshold=20, few_threshold=20) == {
        "many": [0, 1, 2, 3],
        "medium": [4],
        "few": [5, 6],
    }
    assert shot_groups([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]) == {
        "many": list(range(8)),
        "medium": [8, 9],
        "few": [],
    }


def test_works_on_low_precision_and_keeps_device():
    gen = torch.Generator().manual_seed(3)
    logits, labels = _random_case(gen, 5, 64, 0)
    full = compute_metrics(logits, labels, [10] * 5)
    half = compute_metrics(logits.bfloat16(), labels.int(), [10] * 5)
    assert (
        half["confusion_matrix"]
        == compute_metrics(logits.bfloat16().float(), labels, [10] * 5)["confusion_matrix"]
    )
    assert half["nll"] == pytest.approx(full["nll"], rel=2e-2)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(logits=torch.zeros(3)), "logits"),
        (dict(logits=torch.zeros(3, 2, dtype=torch.long)), "logits"),
        (dict(labels=torch.tensor([0, 1])), "labels"),
        (dict(labels=torch.tensor([0, 1, 2])), "labels"),
        (dict(labels=torch.tensor([0.0, 1.0, 1.0])), "labels"),
        (dict(class_counts=[1, 2, 3]), "class_counts"),
        (dict(class_counts=[1, -2]), "class_counts"),
        (dict(class_counts=[1.5, 2]), "class_counts"),
        (dict(ece_bins=0), "ece_bins"),
        (dict(many_threshold=10, few_threshold=20), "few_threshold"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = dict(logits=torch.zeros(3, 2), labels=torch.tensor([0, 1, 1]), class_counts=[5, 5])
    args.update(kwargs)
    with pytest.raises(ParameterError) as err:
        compute_metrics(args.pop("logits"), args.pop("labels"), args.pop("class_counts"), **args)
    assert err.value.name == name
