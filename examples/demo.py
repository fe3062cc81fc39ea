"""Train the bundled digits example end to end on CPU: ``python -m examples.demo``.

Everything runs on embedded defaults (no servers, nothing downloaded): a seeded fit with
checkpointing on ``val_acc`` and early stopping, then a test of the best checkpoint, then a
short summary of what happened and where the files went.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import lightning_lib as pl
from examples.digits import DigitsClassifier, DigitsDataModule
from lightning_lib.callbacks import EarlyStopping, ModelCheckpoint


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-epochs", type=int, default=20, help="upper bound; early stopping may end sooner"
    )
    parser.add_argument("--root-dir", default=".", help="logs and checkpoints go to ROOT_DIR/lightning_logs")
    parser.add_argument("--seed", type=int, default=42, help="seeds the model, the split and the shuffling")
    args = parser.parse_args(argv)
    if args.max_epochs < 1:
        parser.error(f"Expected --max-epochs >= 1, received {args.max_epochs}.")
    return args


def run(max_epochs: int = 20, root_dir: str = ".", seed: int = 42) -> dict[str, Any]:
    """Fit, test the best checkpoint, and return the summary as plain data."""
    start = time.perf_counter()
    pl.seed_everything(seed)
    datamodule = DigitsDataModule(seed=seed)
    # Anneal the learning rate over the planned epochs; early stopping may cut it short.
    model = DigitsClassifier(t_max=max_epochs)
    checkpoint = ModelCheckpoint(monitor="val_acc", mode="max")
    # Patience of a few epochs: digits saturate quickly, so waiting longer only burns time.
    early_stopping = EarlyStopping(monitor="val_acc", mode="max", patience=5)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        default_root_dir=root_dir,
        callbacks=[checkpoint, early_stopping],
        # About 20 batches per epoch: log more often than the default 50 to get a real curve.
        log_every_n_steps=5,
    )
    trainer.fit(model, datamodule=datamodule)
    test_results = trainer.test(model, datamodule=datamodule, ckpt_path="best")

    best_score = checkpoint.best_model_score
    return {
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "stopped_early": bool(early_stopping.stopped_epoch),
        "best_model_path": checkpoint.best_model_path,
        "best_val_acc": None if best_score is None else float(best_score),
        "test": {name: float(value) for name, value in test_results[0].items()},
        "wall_time_s": round(time.perf_counter() - start, 2),
        "log_dir": trainer.logger.log_dir if trainer.logger is not None else None,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few aligned lines a person can read at a glance after the progress bar."""
    best = summary["best_val_acc"]
    lines = [
        "Digits demo summary",
        f"  epochs run       {summary['epochs']} ({summary['global_step']} steps"
        f"{', stopped early' if summary['stopped_early'] else ''})",
        f"  best checkpoint  {summary['best_model_path']}",
        f"  best val_acc     {'n/a' if best is None else f'{best:.4f}'}",
        "  test             " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary["test"].items())),
        f"  wall time        {summary['wall_time_s']:.1f} s",
        f"  logs             {summary['log_dir']}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    summary = run(max_epochs=args.max_epochs, root_dir=args.root_dir, seed=args.seed)
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main()
