"""A training job run as a subprocess by the crash and SIGTERM tests.

Usage: python -m tests.scripts.train_job ROOT [--resume] [--steps-sleep SECONDS] [--out FILE]
Writes the final weights to --out when the fit completes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from tests.helpers import ClassifierModel, classification_data


class SlowSteps(pl.Callback):
    """Gives a signal time to arrive between batches."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.seconds:
            time.sleep(self.seconds)
        print(f"step {trainer.global_step}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps-sleep", type=float, default=0.0)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pl.seed_everything(5)
    model = ClassifierModel(dropout=0.2)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=f"{args.root}/ckpt", every_n_train_steps=args.every, save_top_k=-1, save_last=True
    )
    trainer = pl.Trainer(
        max_epochs=3,
        default_root_dir=args.root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=2,
        callbacks=[checkpoint, SlowSteps(args.steps_sleep)],
    )
    train = DataLoader(classification_data(96, seed=0), batch_size=8, shuffle=True, num_workers=args.workers)
    val = DataLoader(classification_data(32, seed=1), batch_size=8)
    trainer.fit(model, train, val, ckpt_path="last" if args.resume else None)
    if args.out:
        torch.save([p.detach() for p in model.parameters()], args.out)


if __name__ == "__main__":
    main()
