"""Modules for the ddp_spawn tests: spawned processes unpickle them, so they live at a module's top level."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as ours


class _Body:
    """The same small regression model, written once for both libraries."""

    fail_on_rank: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail_on_rank is not None and self.global_rank == self.fail_on_rank:  # type: ignore[attr-defined]
            raise ValueError(f"training_step failed on rank {self.fail_on_rank}")
        loss = self._loss(batch)
        self.log("train_loss", loss, sync_dist=True)  # type: ignore[attr-defined]
        self.log("rank_sum", float(self.global_rank), reduce_fx="sum", sync_dist=True)  # type: ignore[attr-defined]
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), sync_dist=True)  # type: ignore[attr-defined]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)  # type: ignore[attr-defined]

    def _loader(self) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=generator)
        y = x.sum(dim=1, keepdim=True)
        # one batch per rank: the averaged gradient does not depend on which samples each rank gets
        return DataLoader(TensorDataset(x, y), batch_size=16)

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader()

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader()


class OursModel(_Body, ours.LightningModule):
    """The model on lightning_lib."""


class OursFailingModel(OursModel):
    """Raises in training_step on rank 1 only."""

    fail_on_rank = 1


try:
    import pytorch_lightning as ref

    class RefModel(_Body, ref.LightningModule):
        """The same model on pytorch_lightning (the reference)."""

except ImportError:  # the parity test skips without the reference
    RefModel = None  # type: ignore[assignment,misc]
