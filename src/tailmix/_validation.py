"""Argument checks shared by every component.

Every public constructor and function validates its arguments before doing any work and
raises :class:`ParameterError` whose message names the parameter, what was expected and
what was given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


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
