"""MLFlowLogger across a crash: a fit continuing its run never records a (metric, step) point twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from lightning_lib.loggers import MLFlowLogger
from tests.helpers import ClassifierModel, Crash, CrashAfter, classification_data

mlflow = pytest.importorskip("mlflow")

# 12 batches an epoch, 2 epochs; a checkpoint every 5 steps. Crashed after step 14, the fit resumes from
# step 10 and replays steps 11-14, the end of epoch 0 (validation and epoch metrics) included.
EVERY = 5
CRASH_AT = 14

History = dict[str, list[tuple[int, float]]]


def new_logger(save_dir: Path, run_key: str = "run-1") -> MLFlowLogger:
    return MLFlowLogger(save_dir=str(save_dir), run_key=run_key, log_metric_curves=False, flush_interval=0.05)


def fit(root: Path, logger: MLFlowLogger, *, resume: bool = False, crash_at: int | None = None) -> pl.Trainer:
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


def history(logger: MLFlowLogger) -> History:
    client = logger.experiment
    run = client.get_run(str(logger.run_id))
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


def assert_one_clean_history(before: History, after: History, expected: History) -> None:
    """``after`` is ``expected`` (an uninterrupted run), and no point of ``before`` was recorded again.

    Lightning logs ``epoch`` with every call, so at an epoch's last step it has one point per call
    (train step, validation, epoch end) in any run: there, the points and their steps are compared.
    """
    assert after.keys() == expected.keys()
    for key, points in expected.items():
        if key == "epoch":
            assert set(after[key]) == set(points)
        else:
            assert after[key] == points, key
            assert [step for step, _ in points] == sorted({step for step, _ in points}), key
    for key, points in before.items():
        counts = Counter(step for step, _ in after[key])
        for step, count in Counter(step for step, _ in points).items():
            assert counts[step] == count, (key, step)


def test_a_fit_resumed_after_a_crash_records_each_step_once(tmp_path: Path) -> None:
    reference = new_logger(tmp_path / "reference")
    fit(tmp_path / "reference", reference)
    expected = history(reference)

    first = new_logger(tmp_path / "mlruns")
    with pytest.raises(Crash):
        fit(tmp_path, first, crash_at=CRASH_AT)
    before = history(first)  # the failure path delivered everything the first attempt logged
    # the premise: points beyond the last checkpoint (step 10), the end of epoch 0 among them
    assert max(step for step, _ in before["train_loss_step"]) >= 2 * EVERY + 1
    assert before["val_loss"] == expected["val_loss"][:1]
    assert before["train_loss_epoch"] == expected["train_loss_epoch"][:1]

    second = new_logger(tmp_path / "mlruns")
    trainer = fit(tmp_path, second, resume=True)
    assert trainer.ckpt_path is not None and f"step={2 * EVERY}" in trainer.ckpt_path  # before epoch 0's end
    assert second.run_id == first.run_id
    assert_one_clean_history(before, history(second), expected)


def test_points_are_skipped_per_metric_while_a_fit_replays_only(tmp_path: Path) -> None:
    first = new_logger(tmp_path)
    for step in range(5):
        first.log_metrics({"loss": float(step), "epoch": 0.0}, step=step)
    first.finalize("failed")  # killed after the train step 4, before its validation

    second = new_logger(tmp_path)
    second.log_graph(torch.nn.Linear(1, 1))  # what the Trainer calls when a fit starts
    for step in range(2, 7):  # resumed from a checkpoint at step 2
        second.log_metrics({"loss": float(step), "epoch": 0.0}, step=step)
        if step == 4:
            second.log_metrics({"val": 0.5, "epoch": 0.0}, step=step)
    assert second._recorded is None  # past every recorded step: log_metrics is back to no check at all
    second.log_metrics({"loss": -1.0}, step=3)  # beyond the replay, an earlier step is a new point
    second.finalize("success")

    after = history(second)
    assert after["loss"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, -1.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 6.0)]
    assert after["val"] == [(4, 0.5)]  # a validation metric at a step the train metrics had recorded
    assert [step for step, _ in after["epoch"]] == [0, 1, 2, 3, 4, 5, 6]

    # validate/test after the fit (a new logger on the run, no fit) log at the checkpoint's step
    evaluation = new_logger(tmp_path)
    evaluation.log_metrics({"val": 0.25, "loss": -2.0}, step=2)
    evaluation.finalize("success")
    after = history(evaluation)
    assert after["val"] == [(2, 0.25), (4, 0.5)]
    assert (2, -2.0) in after["loss"]


def test_a_new_run_skips_nothing(tmp_path: Path) -> None:
    logger = new_logger(tmp_path)
    logger.log_graph(torch.nn.Linear(1, 1))
    for step, value in ((3, 3.0), (1, 1.0), (1, 1.5)):
        logger.log_metrics({"loss": value}, step=step)
    logger.finalize("success")
    assert history(logger)["loss"] == [(1, 1.0), (1, 1.5), (3, 3.0)]


def test_params_given_before_a_continued_run_is_used_are_compared_with_its_recorded_ones(
    tmp_path: Path,
) -> None:
    """The first call on a logger that continues a run by its key may be ``log_hyperparams`` (the
    pipeline's fit logs the config first): a param recorded with another value is kept, with a warning,
    not sent and refused by MLflow (which lost it and failed the pipeline's delivery after the fit)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MLFlowLogger(experiment_name="e", tracking_uri=uri, run_key="k1")
    first.log_hyperparams({"config.run_key": None, "config.lr": 0.1})
    first.finalize("success")
    second = MLFlowLogger(experiment_name="e", tracking_uri=uri, run_key="k1")
    with pytest.warns(RuntimeWarning, match=r"keeping the recorded values of \['config.run_key'\]"):
        second.log_hyperparams({"config.run_key": "k1", "config.lr": 0.1, "config.seed": 3})
    second.finalize("success")
    report = second.delivery_report
    assert report is not None and report.ok, report.summary()
    assert second.run_id == first.run_id
    params = second.experiment.get_run(second.run_id).data.params
    assert params == {"config.run_key": "None", "config.lr": "0.1", "config.seed": "3"}
