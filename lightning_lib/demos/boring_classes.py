"""The "boring" model, data module and random datasets that users' tests subclass (Lightning's names).

Every class behaves as Lightning's namesake, so a test written against ``pytorch_lightning.demos`` gets
the same shapes, losses and number of batches here: 32 random features in, a linear layer to 2 outputs,
the mean squared distance to 1 as the loss, SGD(lr=0.1) with a StepLR(step_size=1), 64 samples per split.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from lightning_lib.core.datamodule import LightningDataModule
from lightning_lib.core.module import LightningModule
from lightning_lib.utilities.types import STEP_OUTPUT


class RandomDataset(Dataset[Tensor]):
    """``length`` random vectors of ``size`` features, drawn once (from the global torch RNG) at construction."""

    def __init__(self, size: int, length: int) -> None:
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index: int) -> Tensor:
        return self.data[index]

    def __len__(self) -> int:
        return self.len


class RandomDictDataset(Dataset[dict[str, Tensor]]):
    """Like :class:`RandomDataset`, each item a dict: ``{"a": x, "b": x + 2}``."""

    def __init__(self, size: int, length: int) -> None:
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = self.data[index]
        return {"a": sample, "b": sample + 2}

    def __len__(self) -> int:
        return self.len


class RandomIterableDataset(IterableDataset[Tensor]):
    """``count`` random vectors of ``size`` features, drawn as they are iterated; no ``len``."""

    def __init__(self, size: int, count: int) -> None:
        self.count = count
        self.size = size

    def __iter__(self) -> Iterator[Tensor]:
        return (torch.randn(self.size) for _ in range(self.count))


class RandomIterableDatasetWithLen(RandomIterableDataset):
    """:class:`RandomIterableDataset` that also reports its ``len``."""

    def __len__(self) -> int:
        return self.count


class BoringModel(LightningModule):
    """A linear layer (32 -> 2) trained towards 1: the model to subclass when a test needs "a model".

    ``training_step`` returns ``{"loss": ...}``, ``validation_step`` ``{"x": ...}`` and ``test_step``
    ``{"y": ...}``; every dataloader is 64 samples of :class:`RandomDataset` with batch size 1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)

    def loss(self, preds: Tensor, labels: Tensor | None = None) -> Tensor:
        """Mean squared error to ``labels`` (ones by default): any loss that moves the weights."""
        target = torch.ones_like(preds) if labels is None else labels
        return F.mse_loss(preds, target)

    def step(self, batch: Any) -> Tensor:
        return self.loss(self(batch))

    def training_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        return {"loss": self.step(batch)}

    def validation_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        return {"x": self.step(batch)}

    def test_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        return {"y": self.step(batch)}

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[LRScheduler]]:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)]

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(RandomDataset(32, 64))

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(RandomDataset(32, 64))

    def test_dataloader(self) -> DataLoader[Any]:
        return DataLoader(RandomDataset(32, 64))

    def predict_dataloader(self) -> DataLoader[Any]:
        return DataLoader(RandomDataset(32, 64))


class BoringDataModule(LightningDataModule):
    """256 random samples of 32 features split four ways: train, val, test and predict (64 each)."""

    def __init__(self) -> None:
        super().__init__()
        self.random_full = RandomDataset(32, 64 * 4)

    def _split(self, index: int) -> Subset[Tensor]:
        return Subset(self.random_full, indices=range(64 * index, 64 * (index + 1)))

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.random_train = self._split(0)
        if stage in ("fit", "validate"):
            self.random_val = self._split(1)
        if stage == "test":
            self.random_test = self._split(2)
        if stage == "predict":
            self.random_predict = self._split(3)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_train)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_val)

    def test_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_test)

    def predict_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_predict)


class BoringDataModuleNoLen(LightningDataModule):
    """Iterable datasets without a length: 512 train, 128 val, 256 test and 64 predict samples."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.random_train = RandomIterableDataset(32, 512)
        if stage in ("fit", "validate"):
            self.random_val = RandomIterableDataset(32, 128)
        if stage == "test":
            self.random_test = RandomIterableDataset(32, 256)
        if stage == "predict":
            self.random_predict = RandomIterableDataset(32, 64)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_train)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_val)

    def test_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_test)

    def predict_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.random_predict)


class IterableBoringDataModule(LightningDataModule):
    """Two dataloaders per stage, one sized and one iterable, of 4 features (16 / 32 / 64 / 128 samples)."""

    _SAMPLES = {"train": 16, "val": 32, "test": 64, "predict": 128}

    def setup(self, stage: str) -> None:
        names = {"fit": ("train", "val"), "validate": ("val",)}.get(stage, (stage,))
        for name in names:
            count = self._SAMPLES.get(name)
            if count is not None:
                datasets = [RandomDataset(4, count), RandomIterableDataset(4, count)]
                setattr(self, f"{name}_datasets", datasets)

    def _loaders(self, name: str) -> list[DataLoader[Any]]:
        return [DataLoader(dataset) for dataset in getattr(self, f"{name}_datasets")]

    def train_dataloader(self) -> list[DataLoader[Any]]:
        return self._loaders("train")

    def val_dataloader(self) -> list[DataLoader[Any]]:
        return self._loaders("val")

    def test_dataloader(self) -> list[DataLoader[Any]]:
        return self._loaders("test")

    def predict_dataloader(self) -> list[DataLoader[Any]]:
        return self._loaders("predict")


class ManualOptimBoringModel(BoringModel):
    """:class:`BoringModel` under manual optimization: zero_grad, ``manual_backward`` and step per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        optimizer = self.optimizers()
        loss = self.step(batch)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


class DemoModel(LightningModule):
    """A linear layer of 32 inputs and a ReLU, trained to shrink its outputs' sum with Adam."""

    def __init__(self, out_dim: int = 10, learning_rate: float = 0.02) -> None:
        super().__init__()
        self.l1 = nn.Linear(32, out_dim)
        self.learning_rate = learning_rate

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.l1(x.view(x.size(0), -1)))

    def training_step(self, batch: Any, batch_nb: int) -> STEP_OUTPUT:
        return self(batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


__all__ = [
    "BoringDataModule",
    "BoringDataModuleNoLen",
    "BoringModel",
    "DemoModel",
    "IterableBoringDataModule",
    "ManualOptimBoringModel",
    "RandomDataset",
    "RandomDictDataset",
    "RandomIterableDataset",
    "RandomIterableDatasetWithLen",
]
