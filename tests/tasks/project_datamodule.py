"""A project's own data module, as a user writes it: plain Lightning, no pipeline code, reading a folder of
``.pt`` tensors; ``data_sources()`` is the one optional hook it adds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as pl

PREPARE_CALLS: list[str] = []  # what prepare_data did, in this process (the tests read it)


class FolderDataModule(pl.LightningDataModule):
    """Random regression rows written by ``prepare_data`` into ``root`` (once), read by ``setup``."""

    def __init__(self, root: str, rows: int = 64, batch_size: int = 16, seed: int = 0, declare: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.root = root
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.declare = declare
        self.splits: dict[str, TensorDataset] = {}

    def prepare_data(self) -> None:
        PREPARE_CALLS.append(self.root)
        folder = Path(self.root)
        if (folder / "train.pt").exists():
            return  # idempotent, as Lightning asks of prepare_data
        folder.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(1234)
        for split in ("train", "val", "test"):
            x = torch.randn(self.rows, 4, generator=generator)
            torch.save({"x": x, "y": x.sum(dim=1, keepdim=True)}, folder / f"{split}.pt")

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            data = torch.load(os.path.join(self.root, f"{split}.pt"), weights_only=True)
            self.splits[split] = TensorDataset(data["x"], data["y"])

    def data_sources(self) -> list[str]:
        return [self.root] if self.declare else []

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.splits[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.splits["test"].tensors[0]), batch_size=self.batch_size)


class Regressor(pl.LightningModule):
    """A linear model over the four columns; logs train/val/test loss."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class RegressorWithoutTestStep(Regressor):
    """A project's model that has no ``test_step`` (common: fit and validation only)."""

    test_step = pl.LightningModule.test_step  # type: ignore[assignment]
