"""The LightningModule example from the Lightning docs runs unchanged but for the import.

MNIST is replaced by 64 synthetic 28x28 images so the test needs no download and stays fast.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as L
from lightning_lib.checkpoint import read_manifest
from lightning_lib.storage import LocalStore


# ---- the docs' code, verbatim ------------------------------------------------------------------------
class LitModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return torch.relu(self.l1(x.view(x.size(0), -1)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        y_hat = self.l1(x.view(x.size(0), -1))
        loss = F.cross_entropy(y_hat, y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


# ------------------------------------------------------------------------------------------------------
def _images(seed: int, n: int = 64) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.rand(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator)
    )


def test_docs_example_trains_logs_and_checkpoints(tmp_path: Path) -> None:
    # 8 steps an epoch, so the default log_every_n_steps=50 writes one row in ten epochs
    train_dataloader = DataLoader(_images(0), batch_size=8, shuffle=True)
    val_dataloader = DataLoader(_images(1), batch_size=32)
    model = LitModel()
    before = model.l1.weight.detach().clone()

    trainer = L.Trainer(max_epochs=10, default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.fit(model, train_dataloader, val_dataloader)

    assert trainer.state.finished
    assert trainer.current_epoch == 10
    assert trainer.global_step == 10 * 8
    assert not torch.equal(before, model.l1.weight)
    assert "train_loss" in trainer.callback_metrics

    # the default CSVLogger wrote the logged loss under lightning_logs/version_0
    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert Path(trainer.log_dir) == log_dir
    with open(log_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(6, 49)]
    losses = torch.tensor([float(r["train_loss"]) for r in rows])
    assert torch.isfinite(losses).all()

    # the default ModelCheckpoint kept the last epoch's weights
    checkpoints = sorted(p.name for p in (log_dir / "checkpoints").iterdir())
    assert checkpoints == ["epoch=9-step=80.ckpt"]
    restored = LitModel.load_from_checkpoint(log_dir / "checkpoints" / checkpoints[0])
    torch.testing.assert_close(restored.l1.weight, model.l1.weight)
    assert trainer.checkpoint_callback.best_model_path == str(log_dir / "checkpoints" / checkpoints[0])


def test_docs_example_without_validation_loader(tmp_path: Path) -> None:
    model = LitModel()
    trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    trainer.fit(model, DataLoader(_images(0), batch_size=16))
    assert trainer.global_step == 4
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch=0-step=4.ckpt"]
    assert read_manifest(LocalStore(tmp_path / "checkpoints"), "epoch=0-step=4.ckpt") is not None  # committed
