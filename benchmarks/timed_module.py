"""The LightningModule every per-step benchmark times: a classifier whose ``training_step`` first calls
``on_step`` (the benchmark's clock), then does cross-entropy, ``self.log`` and Adam, as a user's would.

Built against whichever library the benchmark passes in (lightning_lib or pytorch_lightning), so both
run the same module.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def build_mlp(widths: tuple[int, ...], device: torch.device | None = None) -> nn.Module:
    """Linear layers of ``widths`` with ReLUs between them, built on ``device`` (a big model initialised on
    the CPU first would dwarf a GPU benchmark's timed window)."""
    layers: list[nn.Module] = []
    with device or torch.device("cpu"):
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def timed_classifier(pl: Any, build_net: Callable[[], nn.Module], on_step: Callable[[], None]) -> Any:
    """A LightningModule class of ``pl`` around ``build_net()`` that calls ``on_step`` as each step starts."""

    class Timed(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = build_net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            on_step()
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    return Timed
