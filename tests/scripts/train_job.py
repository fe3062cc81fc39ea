"""A training job run as a subprocess by the crash and SIGTERM tests.

Usage: python -m tests.scripts.train_job ROOT [--resume] [--steps-sleep SECONDS] [--out FILE]
       [--dirpath PATH_OR_S3_URI] [--max-epochs N] [--every N] [--hidden N] [--top-k K]
       [--orphan-grace SECONDS] [--commit-delay SECONDS] [--s3-part-mib N] [--workers N] [--log-dir DIR] [--no-last]

Writes the final weights to --out when the fit completes. Prints ``step N`` after every training
batch and ``save step N`` whenever a checkpoint starts being written (its upload follows in the
background), so a test can time a kill to land while an upload is in flight. With --log-dir, every step
is logged to MLflow (a SQLite store in DIR/mlruns, run key ``job``) and to a CSVLogger (DIR/csv/version_0).
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


class AnnounceSaves(pl.Callback):
    """Prints when a checkpoint's state is being captured: its commit starts right after."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        print(f"save step {trainer.global_step}", flush=True)


def hold_commits_open(seconds: float) -> None:
    """Wait ``seconds`` between serialising a checkpoint and uploading it, so a kill can land mid-commit."""
    from lightning_lib.checkpoint import _writer as checkpoint_writer

    upload = checkpoint_writer.write_checkpoint

    def slow_upload(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return upload(*args, **kwargs)

    checkpoint_writer.write_checkpoint = slow_upload  # type: ignore[assignment]


def use_small_s3_parts(mib: int) -> None:
    """Make S3 stores upload in ``mib``-MiB multipart parts, so test-sized checkpoints go up as
    multipart uploads (a kill then leaves an incomplete upload for the next run to abort)."""
    from lightning_lib.storage import _store as store

    base = store.S3Store

    class SmallPartS3Store(base):  # type: ignore[misc, valid-type]
        def __init__(self, uri: str, **options: int) -> None:
            options.setdefault("multipart_threshold", mib * 1024 * 1024)
            options.setdefault("multipart_chunksize", mib * 1024 * 1024)
            super().__init__(uri, **options)

    store.S3Store = SmallPartS3Store  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps-sleep", type=float, default=0.0)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--dirpath", default=None, help="checkpoint folder or s3:// URI (ROOT/ckpt)")
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64, help="hidden width: bigger = slower commits")
    parser.add_argument("--top-k", type=int, default=-1)
    parser.add_argument(
        "--orphan-grace", type=float, default=None, help="seconds; default: ModelCheckpoint's"
    )
    parser.add_argument(
        "--commit-delay", type=float, default=0.0, help="seconds each commit waits between staging and upload"
    )
    parser.add_argument("--s3-part-mib", type=int, default=None, help="S3 multipart threshold and part size")
    parser.add_argument("--log-dir", default=None, help="log every step to MLflow and a CSVLogger there")
    parser.add_argument(
        "--no-last", action="store_true", help="no last.ckpt (it is saved at every validation end too)"
    )
    args = parser.parse_args()
    if args.commit_delay:
        hold_commits_open(args.commit_delay)
    if args.s3_part_mib:
        use_small_s3_parts(args.s3_part_mib)
    pl.seed_everything(5)
    model = ClassifierModel(dropout=0.2, hidden=args.hidden)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=args.dirpath or f"{args.root}/ckpt",
        every_n_train_steps=args.every,
        save_top_k=args.top_k,
        save_last=not args.no_last,
    )
    if args.orphan_grace is not None:
        checkpoint.orphan_grace_seconds = args.orphan_grace
    logger: Any = False
    if args.log_dir:
        from lightning_lib.loggers import CSVLogger, MLFlowLogger

        logger = [
            MLFlowLogger(
                save_dir=f"{args.log_dir}/mlruns", run_key="job", log_metric_curves=False, flush_interval=0.05
            ),
            CSVLogger(args.log_dir, name="csv", version=0, flush_logs_every_n_steps=1),
        ]
    trainer = pl.Trainer(
        max_epochs=args.max_epochs,
        default_root_dir=args.root,
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=2,
        callbacks=[checkpoint, SlowSteps(args.steps_sleep), AnnounceSaves()],
    )
    train = DataLoader(classification_data(96, seed=0), batch_size=8, shuffle=True, num_workers=args.workers)
    val = DataLoader(classification_data(32, seed=1), batch_size=8)
    trainer.fit(model, train, val, ckpt_path="last" if args.resume else None)
    if args.out:
        torch.save([p.detach() for p in model.parameters()], args.out)
    print(f"done step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
