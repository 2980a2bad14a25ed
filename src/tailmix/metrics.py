"""Evaluation metrics for imbalanced classification.

Everything is computed on the device the logits live on with ``bincount``-style reductions;
only the final summaries are moved to the host and turned into plain Python numbers, so the
result of :func:`compute_metrics` can be written as JSON as is.

Accuracy-like values (top-1, balanced accuracy, per-class accuracy, many/medium/few-shot
accuracy, macro F1, calibration error and the reliability bins) are in percent, 0 to 100.
The negative log-likelihood is in nats per example.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tailmix._validation import ParameterError, check_labels, check_number

__all__ = ["ADJUSTED_KEYS", "METRIC_NAMES", "REPORT_KEYS", "SUMMARY_KEYS", "compute_metrics",
           "precision_recall", "shot_groups"]

#: The test metrics an evaluated epoch records in its history row.
SUMMARY_KEYS = ("top1", "balanced_accuracy", "many_shot", "medium_shot", "few_shot",
                "test_loss")
#: The metrics every table shows (``tailmix eval``, ``compare``, ``bench``, reports), with
#: the names tables give them.
METRIC_NAMES = {"top1": "top-1", "balanced_accuracy": "balanced accuracy",
                "many_shot": "many-shot", "medium_shot": "medium-shot", "few_shot": "few-shot",
                "macro_f1": "macro F1", "ece": "ECE"}
REPORT_KEYS = tuple(METRIC_NAMES)
#: What an adjusted prediction records (post-hoc logit adjustment, tau-normalisation): the
#: table's metrics but calibration, which the adjustment is not meant to keep.
ADJUSTED_KEYS = tuple(k for k in REPORT_KEYS if k != "ece")

_DECIMALS = 4


def _as_counts(class_counts: Sequence[int] | Tensor, name: str = "class_counts") -> list[int]:
    """Turn training class counts into a list of non-negative ints."""
    expected = "a non-empty sequence of non-negative ints"
    if isinstance(class_counts, Tensor):
        if (
            class_counts.ndim != 1
            or class_counts.is_floating_point()
            and not bool((class_counts == class_counts.round()).all())
        ):
            raise ParameterError(name, expected, class_counts)
        values = [int(v) for v in class_counts.tolist()]
    else:
        try:
            values = [check_number(name, v, low=0, integer=True) for v in class_counts]
        except (ParameterError, TypeError):
            raise ParameterError(name, expected, class_counts) from None
    if not values or min(values) < 0:
        raise ParameterError(name, expected, class_counts)
    return values


def _check_thresholds(many_threshold: Any, few_threshold: Any) -> tuple[int, int]:
    many = check_number("many_threshold", many_threshold, low=0, integer=True)
    few = check_number("few_threshold", few_threshold, low=0, integer=True)
    if few > many:
        raise ParameterError(
            "few_threshold", f"an int no larger than many_threshold={many}", few_threshold
        )
    return many, few


def shot_groups(
    class_counts: Sequence[int] | Tensor,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, list[int]]:
    """Split classes into many-, medium- and few-shot groups by training class size.

    Parameters
    ----------
    class_counts
        Training images per class, ``n_c``.
    many_threshold
        Classes with ``n_c > many_threshold`` are many-shot.
    few_threshold
        Classes with ``n_c < few_threshold`` are few-shot; the rest
        (``few_threshold <= n_c <= many_threshold``) are medium-shot.

    Returns
    -------
    dict
        ``{"many": [...], "medium": [...], "few": [...]}``, lists of class indices in
        increasing order (a list may be empty).

    Examples
    --------
    >>> shot_groups([500, 101, 100, 20, 19, 3])
    {'many': [0, 1], 'medium': [2, 3], 'few': [4, 5]}
    """
    counts = _as_counts(class_counts)
    many, few = _check_thresholds(many_threshold, few_threshold)
    return {
        "many": [c for c, n in enumerate(counts) if n > many],
        "medium": [c for c, n in enumerate(counts) if few <= n <= many],
        "few": [c for c, n in enumerate(counts) if n < few],
    }


def _check_inputs(logits: Any, labels: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] == 0:
        raise ParameterError("logits", "a float tensor of shape (N, C) with N >= 1", logits)
    if not logits.is_floating_point():
        raise ParameterError("logits", "a floating-point tensor", logits.dtype)
    if logits.shape[1] < 2:
        raise ParameterError("logits", "a tensor with at least 2 classes (columns)", logits.shape)
    labels = check_labels(labels, num_classes=logits.shape[1], length=logits.shape[0])
    return logits, labels.to(device=logits.device)


def _percent(x: Tensor) -> Tensor:
    return x.double() * 100.0


def _rounded(value: float | None, decimals: int = _DECIMALS) -> float | None:
    return None if value is None else round(float(value), decimals)


def _rounded_list(values: Tensor, valid: Tensor | None = None) -> list[float | None]:
    """Host list of rounded floats, with ``None`` where ``valid`` is False."""
    out = [round(v, _DECIMALS) for v in values.detach().cpu().double().tolist()]
    if valid is not None:
        out = [v if ok else None for v, ok in zip(out, valid.cpu().tolist(), strict=True)]
    return out


def precision_recall(confusion_matrix: Sequence[Sequence[int]] | Tensor
                     ) -> dict[str, list[float | None]]:
    """Per-class precision and recall, in percent, from a confusion matrix.

    Parameters
    ----------
    confusion_matrix
        Square matrix of counts, rows true classes and columns predicted classes (the
        ``confusion_matrix`` of :func:`compute_metrics`).

    Returns
    -------
    dict
        ``precision`` (``M[c, c]`` over column ``c``'s sum; ``None`` for a class never
        predicted) and ``recall`` (``M[c, c]`` over row ``c``'s sum, which is the class's
        accuracy; ``None`` for a class without examples), one entry per class.

    Examples
    --------
    >>> precision_recall([[3, 1], [2, 4]])
    {'precision': [60.0, 80.0], 'recall': [75.0, 66.6667]}
    """
    expected = "a square matrix (C, C) of non-negative int counts with C >= 1"
    try:
        matrix = torch.as_tensor(confusion_matrix)
    except (TypeError, ValueError, RuntimeError):
        raise ParameterError("confusion_matrix", expected, confusion_matrix) from None
    if (matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0
            or matrix.dtype == torch.bool or matrix.is_complex()
            or matrix.is_floating_point() and not bool((matrix == matrix.round()).all())
            or bool((matrix < 0).any())):
        raise ParameterError("confusion_matrix", expected, confusion_matrix)
    matrix = matrix.long()
    true_pos = matrix.diagonal().double()
    support, predicted = matrix.sum(dim=1), matrix.sum(dim=0)
    precision = true_pos / predicted.clamp(min=1).double()
    recall = true_pos / support.clamp(min=1).double()
    return {"precision": _rounded_list(_percent(precision), predicted > 0),
            "recall": _rounded_list(_percent(recall), support > 0)}


def _reliability(
    confidence: Tensor, correct: Tensor, num_bins: int
) -> tuple[Tensor, dict[str, list]]:
    """Expected calibration error and per-bin data over equal-width confidence bins.

    Bin ``b`` holds the confidences in ``(b / B, (b + 1) / B]``; the first bin also takes 0.
    """
    n = confidence.shape[0]
    bins = (torch.ceil(confidence.double() * num_bins).long() - 1).clamp_(0, num_bins - 1)
    count = torch.bincount(bins, minlength=num_bins)
    conf_sum = torch.bincount(bins, weights=confidence.double(), minlength=num_bins)
    hit_sum = torch.bincount(bins, weights=correct.double(), minlength=num_bins)
    safe = count.clamp(min=1).double()
    bin_conf, bin_acc = conf_sum / safe, hit_sum / safe
    ece = ((count.double() / n) * (bin_acc - bin_conf).abs()).sum()
    filled = count > 0
    edges = torch.linspace(0.0, 100.0, num_bins + 1, dtype=torch.float64)
    return _percent(ece), {
        "bin_edges": [round(v, _DECIMALS) for v in edges.tolist()],
        "bin_confidence": _rounded_list(_percent(bin_conf), filled),
        "bin_accuracy": _rounded_list(_percent(bin_acc), filled),
        "bin_count": [int(v) for v in count.cpu().tolist()],
    }


def compute_metrics(
    logits: Tensor,
    labels: Tensor,
    class_counts: Sequence[int] | Tensor,
    *,
    many_threshold: int = 100,
    few_threshold: int = 20,
    ece_bins: int = 15,
) -> dict[str, Any]:
    """Summarise a classifier's predictions on a (usually balanced) test set.

    Parameters
    ----------
    logits
        Tensor of shape (N, C), on any device.
    labels
        Integer tensor of shape (N,) with values in ``0..C-1``.
    class_counts
        Training images per class (length C); they decide the many/medium/few groups.
    many_threshold, few_threshold
        Group limits, see :func:`shot_groups`.
    ece_bins
        Number of equal-width confidence bins for the expected calibration error.

    Returns
    -------
    dict
        JSON-ready summary with keys ``top1``, ``balanced_accuracy``, ``per_class_accuracy``
        (``None`` for a class absent from ``labels``; each class's recall),
        ``per_class_precision`` (``None`` for a class never predicted), ``many_shot``,
        ``medium_shot``, ``few_shot`` (mean per-class accuracy over the group's classes present in
        ``labels``; ``None`` when there are none), ``macro_f1`` (over the classes that occur
        in the labels or the predictions, as scikit-learn does by default), ``ece``,
        ``reliability`` (``bin_edges``, ``bin_confidence``, ``bin_accuracy`` with ``None``
        for empty bins, ``bin_count``), ``confusion_matrix`` (rows are true classes,
        columns predicted classes), ``nll``, ``num_examples`` and ``num_classes``.
        Every value except ``nll``, the counts and the matrix is in percent.

    Examples
    --------
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    >>> m = compute_metrics(logits, torch.tensor([0, 1, 1]), [50, 5])
    >>> m["top1"], m["balanced_accuracy"], m["confusion_matrix"]
    (66.6667, 75.0, [[1, 0], [1, 1]])
    """
    logits, labels = _check_inputs(logits, labels)
    num_classes = logits.shape[1]
    counts = _as_counts(class_counts)
    if len(counts) != num_classes:
        raise ParameterError(
            "class_counts", f"a sequence of length {num_classes} (columns of logits)", counts
        )
    many, few = _check_thresholds(many_threshold, few_threshold)
    num_bins = check_number("ece_bins", ece_bins, low=1, integer=True)

    with torch.no_grad():
        logits = logits.detach().float()
        n = labels.shape[0]
        probs = logits.softmax(dim=1)
        confidence, pred = probs.max(dim=1)
        correct = pred == labels

        confusion = torch.bincount(
            labels * num_classes + pred, minlength=num_classes * num_classes
        ).view(num_classes, num_classes)
        support = confusion.sum(dim=1)
        predicted = confusion.sum(dim=0)
        true_pos = confusion.diagonal()

        present = support > 0
        recall = true_pos.double() / support.clamp(min=1).double()
        balanced = recall[present].mean()

        f1_defined = present | (predicted > 0)
        f1 = 2.0 * true_pos.double() / (support + predicted).clamp(min=1).double()
        macro_f1 = f1[f1_defined].mean()

        ece, reliability = _reliability(confidence, correct, num_bins)
        nll = F.cross_entropy(logits, labels)
        top1 = correct.double().mean()

        per_class = _rounded_list(_percent(recall), present)
        result: dict[str, Any] = {
            "top1": _rounded(_percent(top1)),
            "balanced_accuracy": _rounded(_percent(balanced)),
            "per_class_accuracy": per_class,
            "per_class_precision": precision_recall(confusion)["precision"],
        }
        recall_host = _percent(recall).cpu()
        present_host = present.cpu()
        for name, members in shot_groups(counts, many, few).items():
            index = torch.tensor(members, dtype=torch.long)
            index = index[present_host[index]]
            mean = recall_host[index].mean() if index.numel() else None
            result[f"{name}_shot"] = _rounded(mean)
        result.update(
            macro_f1=_rounded(_percent(macro_f1)),
            ece=_rounded(ece),
            reliability=reliability,
            confusion_matrix=confusion.cpu().tolist(),
            nll=_rounded(nll, 6),
            num_examples=int(n),
            num_classes=int(num_classes),
        )
    return result
