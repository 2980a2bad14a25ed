"""What a generative oversampler adds to a run: the protocol the builder reads.

Each hook has a default that adds nothing, so an oversampler overrides only what it uses:
DeepSMOTE enlarges the training set before training (:meth:`Generative.transform`); M2m
changes the sampler after its warm-up (:meth:`Generative.plan`) and translates inside the
step (:meth:`Generative.step`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Generative"]


class Generative:
    """The base of a generative oversampler (every hook optional)."""

    #: True when it needs the whole training set in memory (no streamed images).
    needs_memory: bool = False

    @classmethod
    def resolve_params(cls, params: dict[str, Any], epochs: int, notes: list[str]) -> None:
        """Turn the config's shares of the run into epochs, in ``params`` (the
        ``generative`` mapping), before the oversampler is built."""

    def transform(self, data: Any, *, device: Any = "cpu",
                  log: Callable[[str], None] | None = None) -> tuple[Any, Any]:
        """The training data to train on, and which of its examples are real (a boolean
        mask; None when all are)."""
        return data, None

    def plan(self, sampler: Any, run: Any) -> Any:
        """The epoch planner for the run (:class:`tailmix.pipeline.sections.Assembly`)."""
        return sampler

    def step(self, step_args: dict[str, Any], run: Any) -> Any:
        """The run's step, or None for the default :class:`tailmix.pipeline.steps.MixStep`."""
        return None
