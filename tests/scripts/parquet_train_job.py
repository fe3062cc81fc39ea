"""A fit over ShardedParquetDataModule run as a subprocess by its SIGKILL test.

Usage: python -m tests.scripts.parquet_train_job TRAIN VAL ROOT [--workers N] [--resume] [--out FILE]

Prints ``step N`` after every training batch (after a short pause, so a kill lands near that step)
and writes the final weights to --out when the fit completes. Checkpoints every 5 steps under ROOT/ckpt.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import lightning_lib as pl
from datamodules import ShardedParquetDataModule
from tests.datamodules.parquet_data import FEATURES
from tests.helpers import ClassifierModel


class ReportSteps(pl.Callback):
    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        time.sleep(0.02)
        print(f"step {trainer.global_step}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train")
    parser.add_argument("val")
    parser.add_argument("root")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pl.seed_everything(21)
    model = ClassifierModel(dropout=0.3)
    datamodule = ShardedParquetDataModule(
        args.train,
        args.val,
        features=FEATURES,
        target="label",
        batch_size=16,
        num_workers=args.workers,
        shuffle_buffer=50,
        seed=4,
        standardize=True,
    )
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=f"{args.root}/ckpt", every_n_train_steps=5, save_top_k=-1, save_last=True
    )
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=args.root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=2,
        callbacks=[checkpoint, ReportSteps()],
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path="last" if args.resume else None)
    if args.out:
        torch.save([p.detach() for p in model.parameters()], args.out)
    print(f"done step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
