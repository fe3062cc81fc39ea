"""Exact resumption: stop a fit anywhere, resume from the newest checkpoint, get the same weights.

The interrupted fit raises from a callback right after a chosen batch (as a crash would), keeping
only what its checkpoints committed; the resumed fit starts from `ckpt_path`. Data order, dropout
masks, schedulers, accumulation and validation must all line up with an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler

import lightning_lib as pl
from tests.helpers import ClassifierModel, Crash, CrashAfter, classification_data, quiet_trainer_kwargs


class ScheduledClassifier(ClassifierModel):
    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.8)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loader(kind: str, workers: int = 0) -> DataLoader:
    data = classification_data(96, seed=0)
    if kind == "shuffle":
        return DataLoader(data, batch_size=8, shuffle=True, num_workers=workers)
    if kind == "shuffle_generator":
        gen = torch.Generator().manual_seed(7)
        return DataLoader(data, batch_size=8, shuffle=True, generator=gen, num_workers=workers)
    return DataLoader(data, batch_size=8, sampler=SequentialSampler(data), num_workers=workers)


def _fit(
    root: Path, kind: str, workers: int, crash_at: int | None, ckpt_path: Any, extra: dict[str, Any]
) -> tuple[list[torch.Tensor], pl.Trainer]:
    pl.seed_everything(99)
    model = ScheduledClassifier(dropout=0.3)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=str(root / "ckpt"), save_top_k=-1, every_n_train_steps=extra.pop("every", 4), save_last=True
    )
    callbacks: list[Any] = [checkpoint]
    if crash_at is not None:
        callbacks.append(CrashAfter(crash_at))
    trainer = pl.Trainer(
        callbacks=callbacks,
        **quiet_trainer_kwargs(root, max_epochs=3, enable_checkpointing=True, limit_val_batches=2, **extra),
    )
    val = DataLoader(classification_data(32, seed=1), batch_size=8)
    if crash_at is not None:
        with pytest.raises(Crash):
            trainer.fit(model, _loader(kind, workers), val, ckpt_path=ckpt_path)
    else:
        trainer.fit(model, _loader(kind, workers), val, ckpt_path=ckpt_path)
    return [p.detach().clone() for p in model.parameters()], trainer


CASES = [
    ("shuffle", 0, {}),
    ("shuffle_generator", 0, {}),
    ("sequential", 0, {}),
    ("shuffle", 0, {"accumulate_grad_batches": 3, "every": 2}),
    ("shuffle", 0, {"val_check_interval": 5}),
]


@pytest.mark.parametrize(("kind", "workers", "extra"), CASES)
@pytest.mark.parametrize("crash_at", [6, 12, 25])
def test_interrupted_and_resumed_equals_uninterrupted(
    tmp_path: Path, kind: str, workers: int, extra: dict[str, Any], crash_at: int
) -> None:
    reference, ref_trainer = _fit(tmp_path / "ref", kind, workers, None, None, dict(extra))
    crash_at = min(crash_at, ref_trainer.global_step - 1)  # accumulation takes fewer optimizer steps
    _fit(tmp_path / "run", kind, workers, crash_at, None, dict(extra))
    weights, trainer = _fit(tmp_path / "run", kind, workers, None, "last", dict(extra))
    assert trainer.global_step == ref_trainer.global_step
    assert trainer.current_epoch == ref_trainer.current_epoch
    for ours, ref in zip(weights, reference):
        assert torch.equal(ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["shuffle", "shuffle_generator"])
def test_resume_with_worker_processes(tmp_path: Path, kind: str) -> None:
    reference, _ = _fit(tmp_path / "ref", kind, 2, None, None, {})
    _fit(tmp_path / "run", kind, 2, 10, None, {})
    weights, _ = _fit(tmp_path / "run", kind, 2, None, "last", {})
    for ours, ref in zip(weights, reference):
        assert torch.equal(ours, ref)


def test_resume_twice_from_epoch_end_checkpoints(tmp_path: Path) -> None:
    reference, _ = _fit(tmp_path / "ref", "shuffle", 0, None, None, {"every": 12})
    _fit(tmp_path / "run", "shuffle", 0, 13, None, {"every": 12})
    _fit(tmp_path / "run", "shuffle", 0, 26, "last", {"every": 12})
    weights, _ = _fit(tmp_path / "run", "shuffle", 0, None, "last", {"every": 12})
    for ours, ref in zip(weights, reference):
        assert torch.equal(ours, ref)
