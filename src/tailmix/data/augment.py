"""Batched, device-resident augmentation: random crop with padding, flip, normalisation.

Everything is a tensor op on the whole batch, on whatever device the batch lives on; there
is no per-image Python.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchAugment(nn.Module):
    """Turn a batch of raw inputs into normalised float inputs, augmenting when training.

    Images: ``uint8`` (B, C, H, W) -> float (B, C, H, W): random crop of the original size
    from the zero-padded image (``crop_padding`` pixels each side), horizontal flip with
    probability 0.5 when ``hflip``, then per-channel normalisation. Feature vectors: float
    (B, D) -> standardised (B, D), no augmentation.
    """

    def __init__(self, *, mean: torch.Tensor, std: torch.Tensor, crop_padding: int = 0,
                 hflip: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)

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
        return self._normalise(x)
