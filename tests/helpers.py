"""Shared test models: one tiny BoringModel-style module, data helpers, and a hook recorder.

The same classes are built for lightning_lib and for pytorch_lightning (the reference) through
``make_classes(pl)``, so parity tests run one program on both libraries.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import lightning_lib

CALLBACK_HOOKS = [
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end",
    "on_train_batch_start", "on_train_batch_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_predict_epoch_start", "on_predict_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
    "on_train_start", "on_train_end", "on_validation_start", "on_validation_end", "on_test_start",
    "on_test_end", "on_predict_start", "on_predict_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad",
]  # fmt: skip
MODULE_HOOKS = [
    *(h for h in CALLBACK_HOOKS if h not in ("on_sanity_check_start", "on_sanity_check_end")),
    "prepare_data", "configure_model", "configure_optimizers", "optimizer_step", "optimizer_zero_grad",
    "configure_gradient_clipping", "on_before_batch_transfer", "transfer_batch_to_device",
    "on_after_batch_transfer", "training_step", "validation_step", "test_step", "predict_step", "backward",
    "on_validation_model_eval", "on_validation_model_train", "on_validation_model_zero_grad",
    "on_test_model_eval", "on_test_model_train", "lr_scheduler_step",
]  # fmt: skip


class RandomDataset(Dataset):
    """``length`` random vectors of ``size`` features, drawn once from a seeded generator."""

    def __init__(self, size: int = 32, length: int = 64, seed: int = 0) -> None:
        self.data = torch.randn(length, size, generator=torch.Generator().manual_seed(seed))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]

    def __len__(self) -> int:
        return len(self.data)


class Crash(RuntimeError):
    """What ``CrashAfter`` raises: a stand-in for a process dying in the middle of a fit."""


class CrashAfter(lightning_lib.Callback):
    """Raises after the given global step's batch, like a process killed there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            raise Crash(f"crash after step {trainer.global_step}")


def classification_data(n: int = 256, features: int = 32, classes: int = 10, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return TensorDataset(x, y)


def make_classes(pl: ModuleType) -> dict[str, Any]:
    """BoringModel / ClassifierModel / RandomDataModule for library ``pl``."""

    class BoringModel(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self(batch).sum()
            self.log("train_loss", loss)
            return {"loss": loss}

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self(batch).sum()
            self.log("val_loss", loss)
            return {"x": loss}

        def test_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self(batch).sum()
            self.log("test_loss", loss)
            return {"y": loss}

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.layer.parameters(), lr=0.1)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(RandomDataset(32, 64), batch_size=2)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(RandomDataset(32, 64, seed=1), batch_size=2)

        def test_dataloader(self) -> DataLoader:
            return DataLoader(RandomDataset(32, 64, seed=2), batch_size=2)

        def predict_dataloader(self) -> DataLoader:
            return DataLoader(RandomDataset(32, 64, seed=3), batch_size=2)

    class ClassifierModel(pl.LightningModule):
        """A small MLP with dropout: exercises the global RNG, logging and validation."""

        def __init__(self, lr: float = 0.01, hidden: int = 64, dropout: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(32, hidden),
                torch.nn.ReLU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden, 10),
            )
            self.losses: list[float] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y)
            self.losses.append(loss.item())
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(logits, y), prog_bar=True)
            self.log("val_acc", (logits.argmax(-1) == y).float().mean())

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            self.log("test_loss", torch.nn.functional.cross_entropy(logits, y))
            self.log("test_acc", (logits.argmax(-1) == y).float().mean(), reduce_fx="mean")

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0]).argmax(-1)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    class ClassifierDataModule(pl.LightningDataModule):
        def __init__(self, batch_size: int = 16, n: int = 256) -> None:
            super().__init__()
            self.save_hyperparameters()

        def setup(self, stage: str) -> None:
            self.train_set = classification_data(self.hparams.n, seed=0)
            self.val_set = classification_data(self.hparams.n // 4, seed=1)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

        def test_dataloader(self) -> DataLoader:
            return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

        def predict_dataloader(self) -> DataLoader:
            return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    return {
        "BoringModel": BoringModel,
        "ClassifierModel": ClassifierModel,
        "ClassifierDataModule": ClassifierDataModule,
    }


_OURS = make_classes(lightning_lib)
BoringModel = _OURS["BoringModel"]
ClassifierModel = _OURS["ClassifierModel"]
ClassifierDataModule = _OURS["ClassifierDataModule"]


def reference_lightning() -> ModuleType:
    """pytorch_lightning, or skip the test when it is not installed."""
    return pytest.importorskip("pytorch_lightning")


def quiet_trainer_kwargs(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "default_root_dir": str(tmp_path),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "accelerator": "cpu",
    }
    kwargs.update(overrides)
    return kwargs


def recording_classes(pl: ModuleType, base_model: type, calls: list[str]) -> tuple[type, type]:
    """Subclasses of ``base_model`` and ``pl.Callback`` that record every hook they receive."""

    def wrap(prefix: str, name: str, parent: type) -> Callable[..., Any]:
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(f"{prefix}:{name}")
            return getattr(super(owner[prefix], self), name)(*args, **kwargs)

        hook.__name__ = name
        return hook

    owner: dict[str, type] = {}
    module_ns = {h: wrap("M", h, base_model) for h in MODULE_HOOKS if hasattr(base_model, h)}
    callback_ns = {h: wrap("C", h, pl.Callback) for h in CALLBACK_HOOKS}
    owner["M"] = type("RecordingModel", (base_model,), module_ns)
    owner["C"] = type("RecordingCallback", (pl.Callback,), callback_ns)
    return owner["M"], owner["C"]
