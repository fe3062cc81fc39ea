"""A small, self-contained example: an MLP classifying scikit-learn's 8x8 digits.

The data ships inside scikit-learn, so the example trains on a fresh machine without
any download; the whole dataset is 1797 samples and fits in memory many times over.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as pl
from examples.loaders import seeded_loader

NUM_FEATURES = 64
NUM_CLASSES = 10


class DigitsDataModule(pl.LightningDataModule):
    """Deterministic train/val/test split of ``sklearn.datasets.load_digits``.

    Features are standardised with the training split's statistics only, so nothing
    about the validation or test samples leaks into training.
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1, received {batch_size}.")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"Expected 0 < {name} < 1, received {value}.")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(
                "Expected val_fraction + test_fraction < 1, "
                f"received {val_fraction} + {test_fraction} = {val_fraction + test_fraction}."
            )
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def prepare_data(self) -> None:
        """Nothing to download: the digits are bundled with scikit-learn."""

    def setup(self, stage: str | None = None) -> None:
        """Build the split once; later stages (test after fit) reuse it unchanged."""
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits  # deferred: sklearn is an optional extra

        digits = load_digits()
        x = torch.as_tensor(digits.data, dtype=torch.float32)
        y = torch.as_tensor(digits.target, dtype=torch.long)

        # A private generator keeps the split identical for a given seed and leaves the
        # global RNG untouched, so model initialisation after setup is unaffected.
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        n_val = round(len(x) * self.val_fraction)
        n_test = round(len(x) * self.test_fraction)
        test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

        self.mean = x[train_idx].mean(dim=0)
        # Border pixels are constant (all zero) in training; clamp to avoid dividing by zero.
        # pixels that are (almost) constant in the training split must not blow up elsewhere: a pixel
        # that is always 0 in training but not in the test split would otherwise be divided by ~0
        self.std = x[train_idx].std(dim=0).clamp_min(1.0)
        x = (x - self.mean) / self.std

        self.train_set = TensorDataset(x[train_idx], y[train_idx])
        self.val_set = TensorDataset(x[val_idx], y[val_idx])
        self.test_set = TensorDataset(x[test_idx], y[test_idx])

    def _loader(self, dataset: TensorDataset | None, shuffle: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError("DigitsDataModule.setup() must run before asking for a dataloader.")
        return seeded_loader(dataset, self.batch_size, self.seed, shuffle, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        # Shuffled with its own seeded generator: the order is reproducible and independent
        # of how much global randomness the model or callbacks consumed.
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


class DigitsClassifier(pl.LightningModule):
    """A 64 -> hidden -> 10 MLP with dropout, trained with Adam and a learning-rate schedule.

    ``scheduler="cosine"`` anneals over ``t_max`` epochs (set it to the planned epoch count);
    ``scheduler="step"`` multiplies the rate by ``gamma`` every ``step_size`` epochs.
    """

    num_classes = NUM_CLASSES  # the pipeline checks the target's labels against it (tasks.data)

    def __init__(
        self,
        hidden: int = 128,
        dropout: float = 0.1,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        scheduler: str = "cosine",
        t_max: int = 20,
        step_size: int = 5,
        gamma: float = 0.5,
    ) -> None:
        super().__init__()
        if scheduler not in ("step", "cosine"):
            raise ValueError(f"Expected scheduler in ('step', 'cosine'), received {scheduler!r}.")
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(NUM_FEATURES, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss_and_acc(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, acc

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, acc = self._loss_and_acc(batch)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", acc)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._loss_and_acc(batch)
        # averaged over the processes of a DDP run (an identity with one), so every rank ranks checkpoints alike
        self.log("val_loss", loss, sync_dist=True)
        self.log("val_acc", acc, prog_bar=True, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._loss_and_acc(batch)
        self.log("test_loss", loss, sync_dist=True)
        self.log("test_acc", acc, sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if hp.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.t_max)
        else:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "frequency": 1},
        }
