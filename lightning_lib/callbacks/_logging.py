"""When callbacks that log per batch (device stats, throughput) write: Lightning's ``should_update_logs``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


def should_update_logs(trainer: Trainer, loop_batches: int) -> bool:
    """Whether this batch is a logging step: every ``log_every_n_steps``, or when the trainer stops.

    Training counts the batches that stepped (``+ 1``: hooks before the step ask too); an evaluation or
    prediction loop counts ``loop_batches``, the batches it started in its current run (the caller
    counts them, resetting at each run's start hook).
    """
    every = trainer.log_every_n_steps
    if every == 0:
        return False
    if trainer.training:
        step = trainer.progress.batches_that_stepped + 1
    elif trainer.evaluating or trainer.predicting:
        step = loop_batches
    else:
        return True
    return step % every == 0 or bool(trainer.should_stop)
