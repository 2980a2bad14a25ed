"""Per-example and per-class margins of a trained classifier.

An example's margin is ``z_y - max_{k != y} z_k``: how far the true class's logit lies above
the strongest competitor. Mixing rules that treat classes unevenly leave minority classes with
larger margins than majority ones; :func:`fit_margin_slope` condenses that into one number,
the slope of ``log(mean margin)`` on ``log(n_c)`` (LDAM's analysis suggests about -0.25).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tailmix._validation import ParameterError, check_labels, check_number

__all__ = ["class_margin_stats", "example_margins", "fit_margin_slope", "margin_report"]

_DECIMALS = 6


def _check_logits_labels(logits: Any, labels: Any, prefix: str = "") -> Tensor:
    """Check ``(N, C)`` float logits and their ``(N,)`` labels; return the labels as long."""
    lname, yname = f"{prefix}logits", f"{prefix}labels"
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        raise ParameterError(lname, "a float tensor of shape (N, C)", logits)
    if logits.shape[1] < 2:
        raise ParameterError(lname, "a tensor with at least 2 classes (columns)", logits.shape)
    return check_labels(labels, name=yname, num_classes=logits.shape[1], length=logits.shape[0])


def example_margins(logits: Tensor, labels: Tensor) -> Tensor:
    """Margin of every example: its true-class logit minus the largest other logit.

    Parameters
    ----------
    logits
        Tensor of shape (N, C) with C >= 2, on any device.
    labels
        Integer tensor of shape (N,).

    Returns
    -------
    Tensor
        Shape (N,), ``float32`` (or wider if the logits are), on the logits' device. Positive
        where the example is classified correctly with no tie.

    Examples
    --------
    >>> example_margins(torch.tensor([[3.0, 1.0, 2.5], [0.0, 2.0, -1.0]]), torch.tensor([0, 2]))
    tensor([ 0.5000, -3.0000])
    """
    labels = _check_logits_labels(logits, labels)
    z = logits.detach()
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    labels = labels.to(device=z.device)
    true = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


def _segment_quantile(sorted_values: Tensor, starts: Tensor, counts: Tensor, q: float) -> Tensor:
    """Linear-interpolation quantile (numpy's default) of each sorted segment."""
    pos = q * (counts - 1).clamp(min=0).double()
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = pos - lo.double()
    if sorted_values.numel() == 0:
        return torch.zeros(counts.shape, dtype=torch.float64, device=counts.device)
    last = sorted_values.numel() - 1
    v_lo = sorted_values[(starts + lo).clamp(max=last)].double()
    v_hi = sorted_values[(starts + hi).clamp(max=last)].double()
    return v_lo + frac * (v_hi - v_lo)


def _host_list(values: Tensor, valid: list[bool]) -> list[float | None]:
    """Rounded host floats; None where not ``valid`` or not finite (strict JSON)."""
    return [
        round(v, _DECIMALS) if ok and math.isfinite(v) else None
        for v, ok in zip(values.cpu().tolist(), valid, strict=True)
    ]


def class_margin_stats(margins: Tensor, labels: Tensor, num_classes: int) -> dict[str, list]:
    """Summaries of the margins of each class.

    Parameters
    ----------
    margins
        Tensor of shape (N,), e.g. from :func:`example_margins`.
    labels
        Integer tensor of shape (N,) with values in ``0..num_classes-1``.
    num_classes
        Number of classes C.

    Returns
    -------
    dict
        Lists of length C: ``mean``, ``median``, ``p10`` (10th percentile, linear
        interpolation as numpy's default), ``min`` (``None`` for a class without examples,
        or where the value is not finite: logits with NaN or inf) and ``count``.

    Examples
    --------
    >>> s = class_margin_stats(torch.tensor([1.0, 3.0, -2.0]), torch.tensor([0, 0, 2]), 3)
    >>> s["mean"], s["min"], s["count"]
    ([2.0, None, -2.0], [1.0, None, -2.0], [2, 0, 1])
    """
    num_classes = check_number("num_classes", num_classes, low=1, integer=True)
    if not isinstance(margins, Tensor) or margins.ndim != 1 or not margins.is_floating_point():
        raise ParameterError("margins", "a float tensor of shape (N,)", margins)
    labels = check_labels(labels, num_classes=num_classes, length=margins.shape[0])

    values = margins.detach().double()
    labels = labels.to(device=values.device)
    counts = torch.bincount(labels, minlength=num_classes)
    sums = torch.bincount(labels, weights=values, minlength=num_classes)
    mean = sums / counts.clamp(min=1).double()

    # Sort by value, then stably by class: each class becomes one sorted segment.
    by_value = values.argsort()
    by_class = labels[by_value].argsort(stable=True)
    sorted_values = values[by_value][by_class]
    starts = counts.cumsum(0) - counts

    median = _segment_quantile(sorted_values, starts, counts, 0.5)
    p10 = _segment_quantile(sorted_values, starts, counts, 0.1)
    minimum = _segment_quantile(sorted_values, starts, counts, 0.0)

    count_list = [int(c) for c in counts.cpu().tolist()]
    valid = [c > 0 for c in count_list]
    return {
        "mean": _host_list(mean, valid),
        "median": _host_list(median, valid),
        "p10": _host_list(p10, valid),
        "min": _host_list(minimum, valid),
        "count": count_list,
    }


def fit_margin_slope(
    mean_margins: Sequence[float | None] | Tensor,
    class_counts: Sequence[int] | Tensor,
) -> dict[str, Any]:
    """Least-squares fit of ``log(mean margin) = intercept + slope * log(n_c)``.

    Only classes with a positive, finite mean margin and ``n_c > 0`` are used.

    Parameters
    ----------
    mean_margins
        Mean margin per class (``None`` allowed for a class without examples).
    class_counts
        Training images per class, same length.

    Returns
    -------
    dict
        ``slope`` and ``intercept`` (``None`` when fewer than two classes are usable or all
        usable classes have the same size) and ``n_used``, the number of classes used.

    Examples
    --------
    >>> fit = fit_margin_slope([4.0, 2.0, -1.0, None], [1, 16, 100, 5])
    >>> fit["slope"], fit["n_used"]
    (-0.25, 2)
    """
    means = mean_margins.tolist() if isinstance(mean_margins, Tensor) else list(mean_margins)
    counts = class_counts.tolist() if isinstance(class_counts, Tensor) else list(class_counts)
    if len(means) != len(counts):
        raise ParameterError(
            "class_counts", f"a sequence of length {len(means)} (as mean_margins)", len(counts)
        )
    xs, ys = [], []
    for m, n in zip(means, counts, strict=True):
        if m is None:
            continue
        if isinstance(m, bool) or not isinstance(m, (int, float)):
            raise ParameterError("mean_margins", "a sequence of numbers or None", mean_margins)
        if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0:
            raise ParameterError("class_counts", "a sequence of non-negative ints", class_counts)
        if math.isfinite(m) and m > 0 and n > 0:
            xs.append(math.log(n))
            ys.append(math.log(m))
    result: dict[str, Any] = {"slope": None, "intercept": None, "n_used": len(xs)}
    if len(xs) < 2:
        return result
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - x_mean) ** 2 for x in xs)
    if sxx <= 1e-12:
        return result
    sxy = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    result["slope"] = round(slope, _DECIMALS)
    result["intercept"] = round(y_mean - slope * x_mean, _DECIMALS)
    return result


def _split_report(logits: Tensor, labels: Tensor, counts: list[int]) -> dict[str, Any]:
    stats = class_margin_stats(example_margins(logits, labels), labels, len(counts))
    fit = fit_margin_slope(stats["mean"], counts)
    return {**stats, **fit}


def margin_report(
    train_logits: Tensor,
    train_labels: Tensor,
    test_logits: Tensor,
    test_labels: Tensor,
    class_counts: Sequence[int] | Tensor,
) -> dict[str, Any]:
    """Per-class margin summaries and fitted slopes on the training and test sets.

    Parameters
    ----------
    train_logits, train_labels
        Logits (N, C) and labels (N,) of the (unaugmented) training set.
    test_logits, test_labels
        Logits (M, C) and labels (M,) of the test set.
    class_counts
        Training images per class (length C).

    Returns
    -------
    dict
        JSON-ready ``{"class_counts": [...], "train": {...}, "test": {...}}`` where each
        split holds the lists of :func:`class_margin_stats` plus ``slope``, ``intercept``
        and ``n_used`` from :func:`fit_margin_slope`. It holds no NaN or inf: a value that
        is not finite (a network whose logits are) is None.
    """
    _check_logits_labels(train_logits, train_labels, "train_")
    _check_logits_labels(test_logits, test_labels, "test_")
    num_classes = train_logits.shape[1]
    if test_logits.shape[1] != num_classes:
        raise ParameterError(
            "test_logits", f"a tensor with {num_classes} columns", tuple(test_logits.shape)
        )
    counts = class_counts.tolist() if isinstance(class_counts, Tensor) else list(class_counts)
    if len(counts) != num_classes or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts
    ):
        raise ParameterError(
            "class_counts", f"a sequence of {num_classes} non-negative ints", class_counts
        )
    return {
        "class_counts": counts,
        "train": _split_report(train_logits, train_labels, counts),
        "test": _split_report(test_logits, test_labels, counts),
    }
