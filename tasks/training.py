"""The ``fit``, ``validate`` and ``test`` tasks: plain functions first, Prefect tasks at the bottom.

``fit`` always asks for ``ckpt_path="last"`` in the run's checkpoint folder: a first attempt finds nothing
and starts fresh, a retry (Prefect's, or a re-run with the same run_key after a crash) finds the newest
committed checkpoint and continues exactly from it, in the same MLflow run.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

import lightning_lib as pl
from lightning_lib.callbacks import Callback, ModelCheckpoint
from lightning_lib.checkpoint._format import load_file
from tasks.config import TrainConfig
from tasks.data import PreparedData
from tasks.factory import (
    FiniteLossGuard,
    build_datamodule,
    build_logger,
    build_model,
    build_trainer,
    checkpoint_dir,
    without_userinfo,
)
from tasks.progress import PrefectProgress, in_prefect_run
from tasks.retry import retrying
from tasks.tracking import tracking_uri

log = logging.getLogger(__name__)


class FitResult(BaseModel):
    """What ``fit`` hands on: where the checkpoints and the MLflow run are, and the final metrics."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    mlflow_run_id: str
    mlflow_experiment_id: str
    tracking_uri: str
    checkpoint_dir: str
    best_checkpoint_uri: str
    last_checkpoint_uri: str
    checkpoint_uris: list[str]
    model_uri: str | None
    metrics: dict[str, float]
    global_step: int
    epochs: int
    steps_this_attempt: int
    resumed_from: str | None


class EvalResult(BaseModel):
    """The metrics of one ``validate`` or ``test`` of a checkpoint."""

    model_config = ConfigDict(frozen=True)

    stage: Literal["validate", "test"]
    checkpoint_uri: str
    metrics: dict[str, float]


class _AttemptRecorder(Callback):
    """Where this attempt started: the step restored from a checkpoint (0 when fresh) and its path."""

    def __init__(self) -> None:
        self.start_step = 0
        self.resumed_from: str | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start_step = trainer.global_step
        self.resumed_from = trainer.ckpt_path


TAG_INPUT_SHA256 = "data.input_sha256"
TAG_DATASET_ID = "data.dataset_id"


def data_tags(prepared: PreparedData) -> dict[str, str]:
    """The run's data identity, in full (MLflow cuts dataset digests to 36 characters)."""
    return {TAG_INPUT_SHA256: prepared.input_sha256, TAG_DATASET_ID: prepared.dataset_id}


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in sorted(metrics.items())}


def load_weights(model: Any, checkpoint_uri: str) -> None:
    """Warm start: the weights of another run's checkpoint (optimizer and progress start fresh)."""
    checkpoint = load_file(checkpoint_uri)  # verified, weights_only=True
    model.load_state_dict(checkpoint["state_dict"])


def _end_failed(logger: Any, exc: BaseException) -> None:
    try:
        logger.log_exception(exc)
        logger.finalize("failed")
    except Exception:  # the original error is what the caller must see
        log.exception("Could not end the MLflow run as failed after %r", exc)


def fit_model(
    config: TrainConfig,
    prepared: PreparedData,
    run_key: str,
    init_from: str | None = None,
    progress_artifact: bool = True,
    extra_callbacks: list[Any] | None = None,
) -> FitResult:
    """Train (or continue training) the run ``run_key``; return once its checkpoints are committed.

    A config asking for several devices is run by torchrun, one process per device (tasks.distributed_fit).
    """
    from tasks.distributed_fit import launch_fit, needs_launch

    if needs_launch(config):
        return launch_fit(config, prepared, run_key, init_from)
    pl.seed_everything(config.seed)
    datamodule = build_datamodule(config, prepared)
    model = build_model(config)
    if init_from:
        load_weights(model, init_from)  # a resumed fit replaces these with its own checkpoint's
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir(config, run_key), **config.checkpoint.callback_kwargs()
    )
    attempt = _AttemptRecorder()
    callbacks: list[Any] = [checkpoint, attempt, FiniteLossGuard(), *(extra_callbacks or [])]
    if progress_artifact and in_prefect_run():
        callbacks.append(PrefectProgress(description=f"Training {run_key}"))
    logger = build_logger(config, run_key, tags=data_tags(prepared))
    try:
        # The config itself goes into the run's params (``config.*``): ``reproduce`` rebuilds it from there.
        logger.log_hyperparams(config.to_flat_params())
        logger.log_dataset(
            name=os.path.basename(config.data.source.rstrip("/")) or "data",
            digest=prepared.input_sha256,
            source=config.data.source,
            schema={"features": prepared.features, "target": prepared.target},
            profile={
                "train_rows": prepared.train.rows,
                "val_rows": prepared.val.rows,
                "test_rows": prepared.test.rows,
            },
        )
        trainer = build_trainer(config, callbacks, logger)
        with warnings.catch_warnings():
            # a first attempt has nothing to resume from: that is the normal case here, not news
            warnings.filterwarnings("ignore", message=r".*no committed checkpoint verifies yet.*")
            trainer.fit(model, datamodule=datamodule, ckpt_path="last")
    except BaseException as exc:
        # The run was started above (the config is recorded first): whatever fails before the Trainer took
        # over must end it FAILED, never leave it RUNNING. After the Trainer's own failure path this does
        # nothing (the logger has ended the run already).
        _end_failed(logger, exc)
        raise

    last = checkpoint.last_model_path
    if not last:
        raise ValueError(
            f"The fit of run {run_key} saved no checkpoint after {trainer.global_step} steps: check "
            "trainer.max_epochs, max_steps and limit_train_batches (there is nothing to evaluate or register)."
        )
    best = checkpoint.best_model_path or last
    uris = sorted({*checkpoint.best_k_models, last} - {""})
    info = logger.logged_model_info
    return FitResult(
        run_key=run_key,
        mlflow_run_id=str(logger.run_id),
        mlflow_experiment_id=str(logger.experiment_id),
        tracking_uri=without_userinfo(tracking_uri(config)),
        checkpoint_dir=checkpoint_dir(config, run_key),
        best_checkpoint_uri=best,
        last_checkpoint_uri=last,
        checkpoint_uris=uris,
        model_uri=None if info is None else str(info.model_uri),
        metrics=_floats(trainer.callback_metrics),
        global_step=trainer.global_step,
        epochs=trainer.current_epoch,
        steps_this_attempt=trainer.global_step - attempt.start_step,
        resumed_from=attempt.resumed_from,
    )


def evaluate_checkpoint(
    config: TrainConfig,
    prepared: PreparedData,
    checkpoint_uri: str,
    stage: Literal["validate", "test"],
    run_key: str | None = None,
) -> EvalResult:
    """Validate or test a checkpoint on the prepared data; with ``run_key`` the metrics go to its MLflow run.

    The module is rebuilt from the checkpoint's own hyper-parameters and the data module's state (the
    training statistics) comes from the checkpoint, so a champion trained on older data is evaluated
    exactly as it was trained, on the same split as the challenger.
    """
    pl.seed_everything(config.seed)
    datamodule = build_datamodule(config, prepared)
    model = config.load_model_class().load_from_checkpoint(checkpoint_uri)
    kwargs = {k: v for k, v in config.trainer.to_kwargs().items() if v is not None}
    kwargs["enable_progress_bar"] = False
    # one process, whatever the fit used: exact metrics (a DistributedSampler pads the last batch with
    # repeated samples), and no launcher re-running the worker's command for the other ranks
    kwargs.update(devices=1, strategy="auto", num_nodes=1)
    trainer = pl.Trainer(**kwargs, logger=False, enable_checkpointing=False)
    run = trainer.validate if stage == "validate" else trainer.test
    results = run(model, datamodule=datamodule, ckpt_path=checkpoint_uri, verbose=False)
    metrics = _floats(results[0] if results else {})
    if run_key:
        # at the checkpoint's own step, so the run's curves show the evaluation where the model was taken
        step = int(load_file(checkpoint_uri).get("global_step", 0))
        logger = build_logger(config, run_key, log_model=False)
        logger.log_metrics(metrics, step=step)
        logger.finalize("success")
    return EvalResult(stage=stage, checkpoint_uri=checkpoint_uri, metrics=metrics)


# Never served from a cache: a finished fit is cheap to "re-run" (it resumes at its end), and a cached
# result could point at checkpoints that retention has since deleted.
_RETRYING = retrying(cache_policy=NO_CACHE, result_serializer="json")


@task(name="fit", **_RETRYING)
def fit(config: TrainConfig, prepared: PreparedData, run_key: str, init_from: str | None = None) -> FitResult:
    """Prefect task around :func:`fit_model`: retried on transient faults, resuming each time."""
    return fit_model(config, prepared, run_key, init_from)


@task(name="validate", **_RETRYING)
def validate(
    config: TrainConfig, prepared: PreparedData, checkpoint_uri: str, run_key: str | None = None
) -> EvalResult:
    """Prefect task: validation metrics of a checkpoint."""
    return evaluate_checkpoint(config, prepared, checkpoint_uri, "validate", run_key)


@task(name="test", **_RETRYING)
def test(
    config: TrainConfig, prepared: PreparedData, checkpoint_uri: str, run_key: str | None = None
) -> EvalResult:
    """Prefect task: test metrics of a checkpoint."""
    return evaluate_checkpoint(config, prepared, checkpoint_uri, "test", run_key)


test.__test__ = False  # type: ignore[attr-defined,unused-ignore]  # not a pytest test, despite its name

__all__ = [
    "TAG_DATASET_ID",
    "TAG_INPUT_SHA256",
    "EvalResult",
    "FitResult",
    "data_tags",
    "evaluate_checkpoint",
    "fit",
    "fit_model",
    "load_weights",
    "test",
    "validate",
]
