"""CSVLogger across a crash: a fit resuming from a checkpoint continues metrics.csv, never repeating a row."""

from __future__ import annotations

import csv
import io
import os
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from lightning_lib.loggers import CSVLogger
from lightning_lib.storage import open_store
from tests.helpers import ClassifierModel, Crash, CrashAfter, classification_data

# 12 batches an epoch, 2 epochs; a checkpoint every 5 steps (5, 10, 15, 20). Killed after step 14, the fit
# resumes from step 10 and replays steps 11-14, the end of epoch 0 (validation, epoch metrics) included.
EVERY = 5
CRASH_AT = 14


def fit(root: Path, logger: CSVLogger, *, resume: bool = False, crash_at: int | None = None) -> pl.Trainer:
    pl.seed_everything(7)
    model = ClassifierModel(dropout=0.2, hidden=16)
    callbacks: list[Any] = [
        # no last.ckpt: it would also be saved at the end of epoch 0's validation (step 12)
        pl.callbacks.ModelCheckpoint(dirpath=str(root / "ckpt"), every_n_train_steps=EVERY, save_top_k=-1)
    ]
    if crash_at is not None:
        callbacks.append(CrashAfter(crash_at))
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=str(root),
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=1,
        limit_val_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train = DataLoader(classification_data(96, seed=0), batch_size=8, shuffle=True)
    val = DataLoader(classification_data(32, seed=1), batch_size=8)
    trainer.fit(model, train, val, ckpt_path="last" if resume else None)
    return trainer


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return rows_of(f.read())


def steps_of(rows: list[dict[str, str]], key: str) -> list[int]:
    return [int(row["step"]) for row in rows if row.get(key)]


def resuming_module(ckpt_path: str | None = "last.ckpt") -> torch.nn.Module:
    """What ``log_graph`` receives at the start of a fit that resumes from ``ckpt_path``."""
    module = torch.nn.Linear(1, 1)
    module._trainer = SimpleNamespace(ckpt_path=ckpt_path)  # type: ignore[assignment]
    return module


def test_a_fit_resumed_after_a_crash_continues_metrics_csv_as_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = CSVLogger(tmp_path / "reference", version=0, flush_logs_every_n_steps=1)
    fit(tmp_path / "reference", reference)
    expected = read_rows(os.path.join(reference.log_dir, "metrics.csv"))

    root = tmp_path / "crashed"
    first = CSVLogger(root, version=0, flush_logs_every_n_steps=1)
    with pytest.raises(Crash):
        fit(root, first, crash_at=CRASH_AT)
    before = read_rows(os.path.join(first.log_dir, "metrics.csv"))
    # the premise: rows beyond the last checkpoint (step 10), the end of epoch 0 among them
    assert max(steps_of(before, "train_loss_step")) >= 2 * EVERY + 1
    assert steps_of(before, "train_loss_epoch") == steps_of(expected, "train_loss_epoch")[:1]

    second = CSVLogger(root, version=0, flush_logs_every_n_steps=1)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        trainer = fit(root, second, resume=True)
    assert trainer.ckpt_path is not None and f"step={2 * EVERY}" in trainer.ckpt_path  # before epoch 0's end
    after = read_rows(os.path.join(second.log_dir, "metrics.csv"))
    assert after == expected  # every row once, same values, same order
    assert after[: len(before)] == before  # the first attempt's rows stand


def test_a_fresh_fit_into_a_reused_version_still_replaces_its_rows(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"old": 1.0}, step=0)
    first.finalize("success")

    second = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        second.log_graph(resuming_module(ckpt_path=None))  # a fit, but from scratch
        second.log_metrics({"new": 2.0}, step=0)
    second.finalize("success")
    assert read_rows(os.path.join(second.log_dir, "metrics.csv")) == [{"new": "2.0", "step": "0"}]


def _log_attempt(logger: CSVLogger, steps: range) -> None:
    """The rows of a fit: a train row per step and, at step 4, validation and epoch rows."""
    for step in steps:
        logger.log_metrics({"loss": float(step), "epoch": step // 5}, step=step)
        if step == 4:
            logger.log_metrics({"val": 0.5, "epoch": 0}, step=step)
            logger.log_metrics({"loss_epoch": 1.5, "epoch": 0}, step=step)


def test_replayed_rows_are_skipped_per_metric_and_a_half_written_row_is_dropped(tmp_path: Path) -> None:
    reference = CSVLogger(tmp_path / "reference", version=0)
    _log_attempt(reference, range(10))
    reference.finalize("success")
    expected = read_rows(os.path.join(reference.log_dir, "metrics.csv"))

    first = CSVLogger(tmp_path, version=0, flush_logs_every_n_steps=1)
    _log_attempt(first, range(4))
    first.log_metrics({"loss": 4.0, "epoch": 0}, step=4)  # killed before step 4's validation row
    first.finalize("failed")
    path = os.path.join(first.log_dir, "metrics.csv")
    with open(path, "r+", encoding="utf-8", newline="") as f:
        complete = f.read()
        assert complete.count("\n") == 6
        f.write(complete.splitlines(keepends=True)[1][:5])  # the kill cut the next row short

    second = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        second.log_graph(resuming_module())
    with open(path, encoding="utf-8", newline="") as f:
        assert f.read() == complete
    _log_attempt(second, range(2, 10))  # resumed from a checkpoint at step 2
    second.finalize("success")
    rows = read_rows(path)
    assert rows == expected
    # step 4 has the train row once, and the validation and epoch rows that had not been saved
    assert [sorted(k for k, v in row.items() if v) for row in rows if row["step"] == "4"] == [
        ["epoch", "loss", "step"],
        ["epoch", "step", "val"],
        ["epoch", "loss_epoch", "step"],
    ]
    # once past the kept rows, a later row at an earlier step is new (validate/test after the fit)
    second.log_metrics({"loss": 99.0}, step=1)
    second.save()
    assert read_rows(path)[-1] == {"epoch": "", "loss": "99.0", "loss_epoch": "", "step": "1", "val": ""}


def test_an_object_store_version_is_continued_the_same_way(s3_endpoint: str) -> None:
    root = f"{s3_endpoint}/{uuid.uuid4().hex}"
    first = CSVLogger(root, version=0, flush_logs_every_n_steps=1)
    _log_attempt(first, range(6))
    first.finalize("failed")

    second = CSVLogger(root, version=0)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        second.log_graph(resuming_module())
    _log_attempt(second, range(3, 10))
    second.log_metrics({"extra": 1.0}, step=9)  # a new column: the whole file is uploaded again
    second.finalize("success")

    reference = CSVLogger(root, version=1)
    _log_attempt(reference, range(10))
    reference.log_metrics({"extra": 1.0}, step=9)
    reference.finalize("success")
    store = open_store(root)
    text = store.get_bytes("lightning_logs/version_0/metrics.csv").decode("utf-8")
    assert text == store.get_bytes("lightning_logs/version_1/metrics.csv").decode("utf-8")
    assert steps_of(rows_of(text), "loss") == list(range(10))
