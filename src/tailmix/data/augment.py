"""Batched, device-resident augmentation: random crop with padding, flip, policy, cutout,
normalisation.

Everything is a tensor op on the whole batch, on whatever device the batch lives on; there
is no per-image Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tailmix._validation import ParameterError, check_choice, check_number
from tailmix.data.autoaugment import Cutout
from tailmix.pipeline.sections import Section, Sections, section


class BatchAugment(nn.Module):
    """Turn a batch of raw inputs into normalised float inputs, augmenting when training.

    Images: ``uint8`` (B, C, H, W) -> float (B, C, H, W): random crop of the original size
    from the zero-padded image (``crop_padding`` pixels each side), horizontal flip with
    probability 0.5 when ``hflip``, then ``policy`` (e.g.
    :class:`tailmix.data.autoaugment.RandAugment`) on the [0, 1] images when given, then a
    ``cutout`` x ``cutout`` hole set to 0 (:class:`tailmix.data.autoaugment.Cutout`) when
    ``cutout > 0``, then per-channel normalisation. Evaluation (``train=False``) only
    normalises. Feature vectors: float (B, D) -> standardised (B, D), no augmentation.

    With no policy and no cutout the output and the use of the generator are those of the
    crop-and-flip pipeline alone, so seeded runs made without them reproduce exactly.
    """

    def __init__(self, *, mean: torch.Tensor, std: torch.Tensor, crop_padding: int = 0,
                 hflip: bool = False, policy: nn.Module | None = None, cutout: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        if policy is not None and not isinstance(policy, nn.Module):
            raise ParameterError("policy", "an nn.Module taking (x, generator) or None", policy)
        self.policy = policy
        self.cutout = check_number("cutout", cutout, low=0, integer=True)
        self.cutout_op = Cutout(size=self.cutout) if self.cutout > 0 else None

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                train: bool = True) -> torch.Tensor:
        if x.dim() != 4:
            return self._normalise(x.float())
        x = x.float().div_(255.0)
        if not train:
            return self._normalise(x)
        b, _, h, w = x.shape
        p = self.crop_padding
        if p > 0:
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=generator)
            dx = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=generator)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
            batch = torch.arange(b, device=x.device)[:, None, None]
            # Advanced indexing puts the indexed dims first: (B, H, W, C) -> (B, C, H, W).
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        if self.hflip:
            flip = torch.rand(b, device=x.device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.policy is not None:
            x = self.policy(x, generator=generator)
        if self.cutout_op is not None:
            x = self.cutout_op(x, generator=generator)
        return self._normalise(x)


AUGMENT_POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")


def _policy(*names: str):
    return lambda s: s.policy in names


@section("augment")
@dataclass
class AugmentSection(Section):
    """The ``augment`` config section: a policy (null: none) with its knobs, and a cutout
    hole's side (0: none), added to the training batches' augmentation after crop and flip,
    before normalisation."""

    policy: str | None = None
    num_ops: int = 2
    magnitude: float = 9
    bins: int = 31
    cutout: int = 0

    ACTS_ONLY = {
        "num_ops": ("augment.policy: randaugment", _policy("randaugment")),
        "magnitude": ("augment.policy: randaugment", _policy("randaugment")),
        "bins": ("augment.policy: randaugment or trivialaugment",
                 _policy("randaugment", "trivialaugment")),
    }

    def check(self, run: Sections) -> None:
        if self.policy is not None:
            check_choice("augment.policy", self.policy, AUGMENT_POLICIES)
        check_number("augment.num_ops", self.num_ops, low=1, integer=True)
        bins = check_number("augment.bins", self.bins, low=2, integer=True)
        if self.policy == "randaugment":
            check_number("augment.magnitude", self.magnitude, low=0, high=bins - 1)
        else:
            check_number("augment.magnitude", self.magnitude, low=0)
        check_number("augment.cutout", self.cutout, low=0, integer=True)

    def adapt(self, data: Any) -> None:
        """Put the policy and the cutout into ``data.augment``."""
        policy = self.policy or "none"
        if policy == "none" and not self.cutout:
            return
        key, value = ("augment.policy", policy) if policy != "none" else \
            ("augment.cutout", self.cutout)
        if not data.is_image:
            raise ParameterError(key, "none for inputs that are not images", value)
        shape = getattr(data.train_inputs, "shape", None)  # (N, C, H, W) in memory, else None
        channels = shape[1] if shape is not None else 3
        if policy != "none" and channels not in (1, 3):
            raise ParameterError(key, f"none for images of {channels} channels (the policies "
                                 "take grey or RGB images)", value)
        if shape is not None and self.cutout >= min(shape[-2:]):  # the hole would blank them
            raise ParameterError("augment.cutout", f"a hole smaller than the {shape[-2]} x "
                                 f"{shape[-1]} images (0: none)", self.cutout)
        from tailmix.data.autoaugment import build_policy

        knobs = {"autoaugment": {}, "trivialaugment": {"num_bins": self.bins},
                 "randaugment": {"num_ops": self.num_ops, "magnitude": self.magnitude,
                                 "num_bins": self.bins}}
        aug = data.augment
        aug.policy = build_policy(policy, **knobs.get(policy, {}))
        aug.cutout = int(self.cutout)
        aug.cutout_op = Cutout(size=aug.cutout) if aug.cutout > 0 else None
