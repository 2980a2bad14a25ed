"""Argument checks shared by every component.

Every public constructor and function validates its arguments before doing any work and
raises :class:`ParameterError` whose message names the parameter, what was expected and
what was given.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class ParameterError(ValueError):
    """A parameter is missing, of the wrong type or out of range."""

    def __init__(self, name: str, expected: str, got: Any):
        self.name, self.expected, self.got = name, expected, got
        super().__init__(f"The {name!r} parameter must be {expected}. Got {got!r} instead.")


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Any:
    """Check that ``value`` is a (finite) number in the given interval and return it.

    >>> check_number("k", 3, low=1, integer=True)
    3
    >>> check_number("k", 0, low=1, integer=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tailmix._validation.ParameterError: The 'k' parameter must be an int in the range [1, ...
    """
    lo = "(" if low_open else "["
    hi = ")" if high_open or high is None else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    kind = "an int" if integer else "a number"
    expected = f"{kind} in the range {interval}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, expected, value)
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise ParameterError(name, expected, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(name, expected, value)
    if low is not None and (value < low or (low_open and value == low)):
        raise ParameterError(name, expected, value)
    if high is not None and (value > high or (high_open and value == high)):
        raise ParameterError(name, expected, value)
    return int(value) if integer else value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices`` and return it."""
    choices = list(choices)
    if value not in choices:
        raise ParameterError(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_permutation(name: str, order: Any, num_classes: int | None = None) -> list[int]:
    """Check that ``order`` is a permutation of the class indices ``0..C-1`` (ints; ``C``:
    ``num_classes`` when given, else its length) and return it as a list.

    >>> check_permutation("class_order", [2, 0, 1])
    [2, 0, 1]
    >>> check_permutation("class_order", [0, 1], num_classes=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tailmix._validation.ParameterError: The 'class_order' parameter must be a permutation of 0..2...
    """
    c = len(order) if num_classes is None and isinstance(order, (list, tuple)) else num_classes
    expected = ("a permutation of the class indices 0..C-1 (ints)" if num_classes is None
                else f"a permutation of 0..{num_classes - 1}")
    if (not isinstance(order, (list, tuple)) or c is None
            or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in order)
            or sorted(int(k) for k in order) != list(range(c))):
        raise ParameterError(name, expected, order)
    return [int(k) for k in order]


def check_labels(
    labels: Any,
    *,
    name: str = "labels",
    num_classes: int | None = None,
    length: int | None = None,
) -> torch.Tensor:
    """Check class labels and return them as a ``long`` tensor.

    Parameters
    ----------
    labels : Tensor, ndarray or sequence of ints
        A 1-D collection of integer class labels, all ``>= 0``.
    name : str, default "labels"
        Parameter name used in error messages.
    num_classes : int, optional
        When given, every label must also be below it.
    length : int, optional
        When given, the number of labels required.

    Returns
    -------
    LongTensor
        Shape ``(N,)``, ``int64``: on the input's device for a tensor (the tensor itself when
        it is already ``int64``), on the CPU (a copy) otherwise.

    Raises
    ------
    ParameterError
        Naming ``name``, for anything but a 1-D integer collection (``bool`` included), a
        wrong length, a negative label or one ``>= num_classes``.

    Examples
    --------
    >>> check_labels([2, 0, 1], num_classes=3)
    tensor([2, 0, 1])
    >>> check_labels([0, 3], num_classes=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tailmix._validation.ParameterError: The 'labels' parameter must be class labels in [0, 2]...
    """
    import numpy as np
    import torch

    if num_classes is not None:
        num_classes = check_number("num_classes", num_classes, low=1, integer=True)
    if length is not None:
        length = check_number("length", length, low=0, integer=True)
    expected = "a 1-D integer tensor or array of class labels"
    if length is not None:
        expected += f" of length {length}"
    if isinstance(labels, torch.Tensor):
        tensor = labels
    else:
        try:
            array = np.asarray(labels)
        except (TypeError, ValueError) as error:
            raise ParameterError(name, expected, labels) from error
        if array.ndim == 1 and array.size == 0:
            array = array.astype(np.int64)  # [] reads as float64
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ParameterError(name, expected, labels)
        tensor = torch.from_numpy(array.astype(np.int64))
    if (
        tensor.ndim != 1
        or tensor.dtype == torch.bool
        or tensor.is_floating_point()
        or tensor.is_complex()
    ):
        raise ParameterError(name, expected, f"shape {tuple(tensor.shape)}, {tensor.dtype}")
    if length is not None and tensor.shape[0] != length:
        raise ParameterError(name, expected, f"{tensor.shape[0]} labels")
    tensor = tensor.long()
    if tensor.numel():
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            wanted = ("non-negative class labels" if num_classes is None
                      else f"class labels in [0, {num_classes - 1}]")
            raise ParameterError(name, wanted, f"values in [{low}, {high}]")
    return tensor


# A number with an exponent but no dot or no exponent sign (1e-3, 5E2): YAML 1.1 reads it
# as a string; ``--set`` values read it as a float, and a config file gets a hint.
EXPONENT_NUMBER = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def yaml_float(text: str) -> str:
    """``1e-3`` spelled so that YAML 1.1 reads a float: ``1.0e-3``."""
    mantissa, exponent = re.split("[eE]", text.strip().replace("_", ""))
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}"



def type_name(types: tuple) -> str:
    names = {int: "an int", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a mapping", None: "null"}
    return " or ".join(names.get(t, str(t)) for t in types)


def check_type(key: str, value: Any, types: tuple) -> Any:
    """``value`` if it is one of ``types`` (a finite number where numbers go), else a
    :class:`ParameterError` naming ``key``."""
    if value is None and None in types:
        return None
    if isinstance(value, bool) and bool not in types:
        raise ParameterError(key, type_name(types), value)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, tuple(t for t in types if t is not None)):
        expected = type_name(types)
        if float in types and isinstance(value, str) and EXPONENT_NUMBER.match(value.strip()):
            expected += (f" (YAML reads {value.strip()} as a string: write it with a dot and a "
                         f"signed exponent, e.g. {yaml_float(value)})")
        raise ParameterError(key, expected, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(key, "a finite number", value)
    return value

_INT64 = 2**63


def refuse_non_finite(config: Mapping[str, Any]) -> None:
    """A NaN or infinity anywhere in ``config`` (YAML's ``.nan``, ``.inf``), or an int
    beyond 64 bits, is an error naming its key (``train.lr``, ``train.milestones[1]``,
    ``mixer.q``)."""
    stack: list[tuple[str, Any]] = [(str(k), v) for k, v in config.items()]
    seen: set[int] = set()
    while stack:
        key, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterError(key, "a finite number", value)
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise ParameterError(key, "a finite number (an int within 64 bits)",
                                 f"an int of {len(str(abs(value)))} digits")
        if isinstance(value, (dict, list)):
            if id(value) in seen:  # YAML anchors can make a structure hold itself
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                stack.extend((f"{key}.{sub}", v) for sub, v in value.items())
            else:
                stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))


def keywords(factory: Any, *, keyword_only: bool = False,
             named_only: bool = False) -> tuple[str, ...] | None:
    """The keyword names ``factory`` (a class or function) takes, or None when it takes
    any (``**kwargs``) or has no signature to read. ``keyword_only``: only those after
    ``*``; ``named_only``: its named keywords even when it also takes ``**kwargs`` (a
    module class whose ``**kwargs`` are ``nn.Module``'s, a reader's that it passes on)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return None
    if not named_only and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.KEYWORD_ONLY,) if keyword_only else (
        inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds)


def check_keywords(given: Mapping[str, Any], factory: Any, *, what: str,
                   reserved: Iterable[str] = (), keyword_only: bool = False,
                   named_only: bool = False, prefix: str = "") -> tuple[str, ...] | None:
    """Refuse the keys of ``given`` that ``factory`` does not take (:func:`keywords`, less
    ``reserved``: those the caller sets itself): a :class:`ParameterError` naming the
    first (``prefix`` + key, in sorted order), saying ``what`` takes which, and giving the
    unknown keys. Returns the accepted names (None: ``factory`` takes any)."""
    names = keywords(factory, keyword_only=keyword_only, named_only=named_only)
    if names is None:
        return None
    accepted = tuple(n for n in names if n not in set(reserved))
    unknown = sorted(k for k in given if k not in accepted)
    if unknown:
        listed = ", ".join(accepted) or "none"
        raise ParameterError(f"{prefix}{unknown[0]}", f"a parameter {what} takes ({listed})",
                             unknown if len(unknown) > 1 else unknown[0])
    return accepted
