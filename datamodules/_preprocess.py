"""The serving preprocessors: raw feature rows (float32 ``(N, F)``) to what the model was trained on.

They are plain tensor arithmetic over buffers, so ``torch.export`` traces them and a checkpoint's
``state_dict`` restores them; the loaders apply :func:`standardize`, the same formula, so serving and
training inputs agree bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` in float32: the one formula shared by the loaders and :class:`Standardize`."""
    return (x.to(torch.float32) - mean) / std


class Standardize(nn.Module):
    """Subtracts the training split's per-feature mean and divides by its std (both buffers)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().to(torch.float32).clone())
        self.register_buffer("std", std.detach().to(torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(x, self.mean, self.std)


class ToFloat32(nn.Module):
    """What the loaders do without standardisation: the raw rows as float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32)
