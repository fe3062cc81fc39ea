"""A small training script the DDP tests run as a real program (the local launcher re-runs it per rank).

It trains a regression MLP on fixed data, logs the loss with ``sync_dist=True`` and writes, from rank
zero, the global loss of every step, the final weights and where it started to ``--out`` (JSON).
Options make it checkpoint (local folder or s3://), resume from "last", kill one rank at a step, and
accumulate gradients.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as pl
from lightning_lib.callbacks import Callback, ModelCheckpoint

SAMPLES = 64


class Regressor(pl.LightningModule):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, sync_dist=True, on_step=True, on_epoch=False)
        self.log("rank_max", float(self.global_rank), sync_dist=True, reduce_fx="max")
        self.log("rank_sum", float(self.global_rank), sync_dist=True, reduce_fx="sum", on_step=True)
        gathered = self.all_gather(torch.tensor([float(self.global_rank)]))
        if self.trainer.world_size > 1:
            assert gathered.shape == (self.trainer.world_size, 1), gathered.shape
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class Record(Callback):
    """The synced loss of every step, and the step this run started from."""

    def __init__(
        self, kill_rank: int | None, kill_step: int | None, kill_signal: int = signal.SIGKILL
    ) -> None:
        self.losses: dict[int, float] = {}
        self.start_step = 0
        self.kill_rank = kill_rank
        self.kill_step = kill_step
        self.kill_signal = kill_signal
        self.allreduces = 0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start_step = trainer.global_step
        ddp = getattr(trainer.strategy, "_ddp", None)
        if ddp is not None:  # counts the gradient all-reduces (one bucket: the model is small)
            # a lambda: DDP refuses a hook whose annotations are (postponed) strings
            ddp.register_comm_hook(self, lambda state, bucket: _counting_allreduce(state, bucket))

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.losses[trainer.global_step] = float(trainer.callback_metrics["train_loss"])
        if trainer.global_rank == self.kill_rank and trainer.global_step == self.kill_step:
            os.kill(os.getpid(), self.kill_signal)


def _counting_allreduce(record: Record, bucket: Any) -> Any:
    import torch.distributed as dist

    record.allreduces += 1
    tensor = bucket.buffer().div_(dist.get_world_size())
    return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(SAMPLES, 8, generator=generator)
    return TensorDataset(x, x.sum(dim=1, keepdim=True).sin())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--ckpt-dir", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--kill-step", type=int, default=None)
    parser.add_argument("--signal", choices=("SIGKILL", "SIGTERM"), default="SIGKILL")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--monitor", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    pl.seed_everything(7, verbose=False)
    if args.dropout:
        # each rank its own random stream, so a resume that restored the wrong rank's RNG would show
        torch.manual_seed(7 + int(os.environ.get("RANK", "0")))
    model = Regressor(args.dropout)
    batch = args.global_batch // args.devices
    train = DataLoader(data(), batch_size=batch, shuffle=args.shuffle)
    val = DataLoader(data(), batch_size=batch)
    record = Record(args.kill_rank, args.kill_step, getattr(signal, args.signal))
    callbacks: list[Any] = [record]
    if args.ckpt_dir:
        ranking = {"monitor": "val_loss", "save_top_k": 2} if args.monitor else {"save_top_k": -1}
        callbacks.append(
            ModelCheckpoint(dirpath=args.ckpt_dir, every_n_train_steps=2, save_last=True, **ranking)
        )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_steps=args.max_steps,
        accumulate_grad_batches=args.accumulate,
        limit_val_batches=2,
        val_check_interval=4,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(args.ckpt_dir),
        logger=False,
        callbacks=callbacks,
    )
    trainer.fit(model, train, val, ckpt_path="last" if args.resume else None)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    validated = trainer.validate(model, val, verbose=False)
    predictions = trainer.predict(model, DataLoader(data(), batch_size=batch)) or []
    checkpoint = trainer.checkpoint_callback
    own = {  # what every rank must agree on (or, for predictions, split between them)
        "fit_metrics": fit_metrics,
        "validated": validated,
        "predicted_rows": sum(len(p) for p in predictions),
        "best_model_path": checkpoint.best_model_path if checkpoint else None,
        "last_model_path": checkpoint.last_model_path if checkpoint else None,
        "allreduces": record.allreduces,
    }
    with open(f"{args.out}.rank{trainer.global_rank}", "w", encoding="utf-8") as handle:
        json.dump(own, handle)
    if trainer.is_global_zero:
        result = {
            "world_size": trainer.world_size,
            "start_step": record.start_step,
            "global_step": trainer.global_step,
            "losses": {str(k): v for k, v in sorted(record.losses.items())},
            "weights": [p.detach().flatten().tolist() for p in model.parameters()],
            "val_loss": fit_metrics["val_loss"],
        }
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    main()
