"""The ``fit``, ``validate`` and ``test`` tasks: plain functions first, Prefect tasks at the bottom.

``fit`` always asks for ``ckpt_path="last"`` in the run's checkpoint folder: a first attempt finds nothing
and starts fresh, a retry (Prefect's, or a re-run with the same run_key after a crash) finds the newest
committed checkpoint and continues exactly from it, in the same MLflow run.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

import lightning_lib as pl
from lightning_lib.callbacks import Callback, ModelCheckpoint
from lightning_lib.checkpoint import load_file
from tasks.config import TrainConfig
from tasks.factory import (
    FiniteLossGuard,
    build_datamodule,
    build_logger,
    build_model,
    build_trainer,
    checkpoint_dir,
    without_userinfo,
)
from tasks.follow import mlflow_link, say, warn_if_no_git
from tasks.naming import run_name
from tasks.progress import PrefectProgress, in_prefect_run
from tasks.retry import retrying
from tasks.run_data import RunData
from tasks.run_identity import LeaseGuard, hold_run_key
from tasks.tracking import tracking_uri

_METRICS_PER_REQUEST = 1000  # MLflow's limit of metrics per log-batch request
log = logging.getLogger(__name__)


# The newest metric values an outage kept from MLflow that the fit's result carries to be delivered later
# (about 60 bytes each in the task's JSON result); older ones are counted, per metric, not carried.
MAX_PENDING_METRICS = 10_000


class PendingDelivery(BaseModel):
    """What the MLflow logger could not deliver at the end of a fit (the server was away): delivered by
    :func:`deliver_pending` (the ``deliver`` task, and ``register``) once the server is back.

    Kept: up to :data:`MAX_PENDING_METRICS` newest metric values with their original steps and times, the
    params and tags (checkpoint references among them), the final status. Not kept: older metric values
    beyond that cap and those the logger's buffer dropped during a long outage (``metrics_not_kept``
    counts them, ``summary`` names them per metric), dataset inputs (the run's data tags identify the
    data), and the metric-curves PNG and ``checkpoints/references.json`` artifacts (the same URIs and
    hashes are in the tags and in the fit's result).
    """

    # NaN and infinite metric values survive the JSON round trip of a task result
    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")

    metrics: list[tuple[str, float, int, int]] = []  # (key, value, timestamp in ms, step), oldest first
    params: list[tuple[str, str]] = []
    tags: list[tuple[str, str]] = []
    status: str = "FINISHED"
    metrics_not_kept: int = 0
    summary: str = ""


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
    pending: PendingDelivery | None = None  # what MLflow has not received yet (an outage at the end)


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
TAG_FINGERPRINT = "data.fingerprint"
CHECKPOINT_DATA_KEY = "data_identity"
LISTING_ARTIFACT_PATH = "data"  # the MLflow artifact folder of the data sources' listing


def data_tags(prepared: RunData) -> dict[str, str]:
    """The run's data identity, in full (MLflow cuts dataset digests to 36 characters): the table's sha256,
    or the fingerprint of a project data module's sources."""
    tags = {TAG_DATASET_ID: prepared.dataset_id}
    if prepared.kind == "table":
        tags[TAG_INPUT_SHA256] = prepared.input_sha256
    elif prepared.digest is not None:
        tags[TAG_FINGERPRINT] = prepared.digest
    return tags


def data_identity(prepared: RunData) -> dict[str, Any]:
    """The data identity as plain data, as the checkpoint keeps it (``data_identity``)."""
    identity: dict[str, Any] = {"kind": prepared.kind, "dataset_id": prepared.dataset_id}
    identity["digest"] = prepared.digest
    identity["sources"] = [prepared.source] if prepared.kind == "table" else prepared.sources
    return identity


class DataIdentityRecorder(Callback):
    """Writes the run's data identity into every checkpoint, so a checkpoint says what it was trained on."""

    def __init__(self, prepared: RunData) -> None:
        self.identity = data_identity(prepared)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_DATA_KEY] = dict(self.identity)


def _log_dataset(logger: Any, config: TrainConfig, prepared: RunData) -> None:
    """The data as an MLflow dataset input: the table with its splits, or the data module's sources."""
    if prepared.kind == "table":
        logger.log_dataset(
            name=os.path.basename(prepared.source.rstrip("/")) or "data",
            digest=prepared.input_sha256,
            source=prepared.source,
            schema={"features": prepared.features, "target": prepared.target},
            profile={
                "train_rows": prepared.train.rows,
                "val_rows": prepared.val.rows,
                "test_rows": prepared.test.rows,
            },
        )
        return
    fingerprint = prepared.fingerprint
    if fingerprint is None:
        return  # nothing declared: the logger describes the training dataset itself
    logger.log_dataset(
        name=config.datamodule.rpartition(":")[2],
        digest=fingerprint.digest,
        source=", ".join(prepared.sources),
        profile={
            "sources": fingerprint.source_names,
            "objects": fingerprint.objects,
            "bytes": fingerprint.total_bytes,
        },
    )
    if prepared.listing_uri is not None:
        _log_listing(logger, prepared.listing_uri)


def _log_listing(logger: Any, listing_uri: str) -> None:
    """The full listing behind the fingerprint, as the run's ``data/`` artifact (``reproduce`` names the
    first object that differs from it)."""
    import tempfile

    from lightning_lib.storage import open_store, split_uri
    from tasks.sources import LISTING_ARTIFACT

    root, name = split_uri(listing_uri)
    with tempfile.TemporaryDirectory(prefix="lightning-lib-listing-") as folder:
        path = os.path.join(folder, LISTING_ARTIFACT)
        open_store(root).get_file(name, path)
        logger.experiment.log_artifact(logger.run_id, path, LISTING_ARTIFACT_PATH)


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
    prepared: RunData,
    run_key: str,
    init_from: str | None = None,
    progress_artifact: bool = True,
    extra_callbacks: list[Any] | None = None,
) -> FitResult:
    """Train (or continue training) the run ``run_key``; return once its checkpoints are committed.

    First, before anything is trained, committed or logged (``tasks.run_identity``): the run key's lease is
    taken (a second fit of the key is refused, naming the holder), the config is compared with the one the
    run key started with (a different one is refused, naming each field), and a run whose checkpoints were
    lost while its MLflow run has history is refused. The lease is held until the fit ends.
    """
    from tasks.distributed_fit import processes_per_node

    processes_per_node(config)  # the device count is refused (a bad parameter) before the run key is held
    with hold_run_key(config, prepared, run_key) as guards:
        return _fit_held(
            config, prepared, run_key, init_from, progress_artifact, [*guards, *(extra_callbacks or [])]
        )


def _fit_held(
    config: TrainConfig,
    prepared: RunData,
    run_key: str,
    init_from: str | None = None,
    progress_artifact: bool = True,
    extra_callbacks: list[Any] | None = None,
) -> FitResult:
    """The fit of a held run key. A config asking for several devices is run by torchrun, one process per
    device (tasks.distributed_fit)."""
    from tasks.distributed_fit import launch_fit, needs_launch

    if needs_launch(config):
        # the ranks get no LeaseGuard: this process holds the lease, and launch_fit polls it
        guard = next((c for c in extra_callbacks or [] if isinstance(c, LeaseGuard)), None)
        return launch_fit(
            config, prepared, run_key, init_from, lease_check=guard.lease.check if guard else None
        )
    pl.seed_everything(config.seed)
    datamodule = build_datamodule(config, prepared)
    model = build_model(config)
    if init_from:
        load_weights(model, init_from)  # a resumed fit replaces these with its own checkpoint's
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir(config, run_key), **config.checkpoint.callback_kwargs()
    )
    attempt = _AttemptRecorder()
    callbacks: list[Any] = [
        checkpoint,
        attempt,
        FiniteLossGuard(),
        DataIdentityRecorder(prepared),
        *(extra_callbacks or []),
    ]
    progress = None
    if progress_artifact and in_prefect_run():
        progress = PrefectProgress(description=f"Training {run_name(config)}")
        callbacks.append(progress)
    # a loud warning (and a tag on the run) when the code carries no git commit: reproduce would refuse it
    logger = build_logger(config, run_key, tags={**data_tags(prepared), **warn_if_no_git()})
    try:
        # The config itself goes into the run's params (``config.*``): ``reproduce`` rebuilds it from there.
        with warnings.catch_warnings():
            # A continued run keeps its first attempt's params. hold_run_key refused any compared field
            # that differs, so what differs here is where things are (NOT_COMPARED: the run key given
            # to continue a derived one, a moved checkpoint root), not news.
            warnings.filterwarnings("ignore", message=r"MLflow params cannot change", category=RuntimeWarning)
            logger.log_hyperparams(config.to_flat_params())
        say(
            "MLflow run %s of run key %s: %s",
            logger.run_id,
            run_key,
            mlflow_link(
                without_userinfo(tracking_uri(config)), str(logger.experiment_id), str(logger.run_id)
            ),
        )
        _log_dataset(logger, config, prepared)
        trainer = build_trainer(config, callbacks, logger)
        with warnings.catch_warnings():
            # a first attempt has nothing to resume from: that is the normal case here, not news
            warnings.filterwarnings("ignore", message=r".*no committed checkpoint verifies yet.*")
            # the folder is this run key's own: its record and lease are written before the fit, and a
            # later attempt finds the run's checkpoints there by design (Lightning's warning is for a
            # folder shared by accident)
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty\.")
            trainer.fit(model, datamodule=datamodule, ckpt_path="last")
        if progress is not None:
            progress.wait()  # its last post ran beside the logger's end of the run
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
        pending=_pending(logger.delivery_report),
    )


def _pending(report: Any) -> PendingDelivery | None:
    """What an outage at the end of the fit kept from MLflow, as plain data for a later task."""
    if report is None or report.ok:
        return None
    lost = list(report.lost_records)
    kept = lost[-MAX_PENDING_METRICS:]
    total = sum(loss.count for loss in report.lost_metrics.values())
    pending = PendingDelivery(
        metrics=[(str(k), float(v), int(t), int(s)) for k, v, t, s in kept],
        params=[pair for kind, items in report.lost_items if kind == "params" for pair in items],
        tags=[pair for kind, items in report.lost_items if kind == "tags" for pair in items],
        metrics_not_kept=total - len(kept),
        summary=report.summary()[:4000],
    )
    log.warning(
        "MLflow did not receive everything of run %s at the end of the fit; %d metric values, %d params "
        "and %d tags will be delivered once the server is back (%d older values are not kept).",
        report.run_id, len(pending.metrics), len(pending.params), len(pending.tags), pending.metrics_not_kept,
    )  # fmt: skip
    return pending


class MlflowUnavailable(ConnectionError):
    """The tracking server does not answer: transient, the task is retried."""


def _wait_for_server(uri: str, timeout: float) -> None:
    """Raise :class:`MlflowUnavailable` unless the tracking server answers its health check with a 2xx.

    A 5xx or any other non-2xx answer (a proxy's 502/503 while the server restarts, a maintenance page)
    counts as unavailable like no answer at all: delivering into it would fail half-way."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except requests.RequestException as exc:
        raise MlflowUnavailable(
            f"Expected the MLflow tracking server at {without_userinfo(uri)} to answer, received "
            f"{type(exc).__name__}; the delivery is retried."
        ) from exc
    if not 200 <= response.status_code < 300:
        raise MlflowUnavailable(
            f"Expected the MLflow tracking server at {without_userinfo(uri)} to answer its health check "
            f"with 2xx, received HTTP {response.status_code}; the delivery is retried."
        )


def deliver_pending(config: TrainConfig, fit_result: FitResult, prepared: RunData | None = None) -> FitResult:
    """Deliver to the fit's MLflow run what an outage kept from it; log the model from the checkpoint
    when the fit could not. Returns the fit's result completed (``pending`` None, ``model_uri`` set).

    Idempotent: MLflow ignores a metric value logged again with the same key, step, time and value, and
    an equal param; so a retry after a partial delivery duplicates nothing. An unreachable server raises
    :class:`MlflowUnavailable` (transient, retried by Prefect) before anything is sent.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from lightning_lib.loggers.mlflow import log_pytorch_model

    pending = fit_result.pending
    if pending is None and fit_result.model_uri is not None:
        return fit_result
    uri = tracking_uri(config)
    _wait_for_server(uri, timeout=10.0)
    client = MlflowClient(uri)
    run_id = fit_result.mlflow_run_id
    if pending is not None:
        _log_metric_batches(client, run_id, [Metric(k, v, t, s) for k, v, t, s in pending.metrics])
        for start in range(0, len(pending.params), 100):
            params = [Param(k, v) for k, v in pending.params[start : start + 100]]
            client.log_batch(run_id, params=params, synchronous=True)
        for start in range(0, len(pending.tags), 100):
            client.log_batch(
                run_id, tags=[RunTag(k, v) for k, v in pending.tags[start : start + 100]], synchronous=True
            )
    model_uri = fit_result.model_uri
    if model_uri is None:
        best = fit_result.best_checkpoint_uri
        module = config.load_model_class().load_from_checkpoint(best)
        module.eval()
        preprocessor, example = _example(config, prepared, module, best)
        info = log_pytorch_model(uri, run_id, module, example, preprocessor=preprocessor)
        model_uri = str(info.model_uri)
    if pending is not None and client.get_run(run_id).info.status == "RUNNING":
        # the fit's final status was lost with the outage; a later task may already have set it
        client.set_terminated(run_id, status=pending.status)
    if pending is not None and pending.metrics_not_kept:
        log.warning(
            "MLflow run %s misses %d metric values for good: %s",
            run_id,
            pending.metrics_not_kept,
            pending.summary,
        )
    return fit_result.model_copy(update={"pending": None, "model_uri": model_uri})


def _example(
    config: TrainConfig, prepared: RunData | None, module: Any, checkpoint_uri: str
) -> tuple[Any, Any]:
    """The data module's preprocessor and the model's input example, as the logger takes them at the end
    of a fit: the data module rebuilt, set up for fit and given the checkpoint's state (its training
    statistics); without serving hooks, the first training rows as the example.

    A data module with a ``preprocessor`` hook that cannot be rebuilt is an error: the model without its
    preprocessing would predict something else than the pipeline.
    """
    from types import SimpleNamespace

    from lightning_lib.loggers.mlflow import example_input, serving_parts

    hooked = callable(getattr(config.load_datamodule_class(), "preprocessor", None))
    if prepared is None:
        if hooked:
            raise ValueError(
                f"Expected the prepared data to log the model of {checkpoint_uri} with its data module's "
                f"preprocessor ({config.datamodule}), received none."
            )
        return None, example_input(module, None)
    try:
        datamodule = build_datamodule(config, prepared)
        datamodule.setup("fit")
        # after setup, as Lightning restores a data module's state
        state = load_file(checkpoint_uri).get(type(datamodule).__qualname__)
        if state:
            datamodule.load_state_dict(state)
        preprocessor, example = serving_parts(datamodule)
        if preprocessor is None and example is None:
            example = example_input(module, SimpleNamespace(train_dataloader=datamodule.train_dataloader()))
        return preprocessor, example
    except Exception as exc:
        if hooked:
            raise
        # without an example the model is still logged (pickled)
        log.info("No input example for the model of this run: %s", exc)
        return None, example_input(module, None)


def evaluate_checkpoint(
    config: TrainConfig,
    prepared: RunData,
    checkpoint_uri: str,
    stage: Literal["validate", "test"],
    run_key: str | None = None,
    mlflow_run_id: str | None = None,
) -> EvalResult:
    """Validate or test a checkpoint on the prepared data; with ``mlflow_run_id`` (or ``run_key``) the
    metrics go to that MLflow run, at the checkpoint's own step.

    The module is rebuilt from the checkpoint's own hyper-parameters and the data module's state (the
    training statistics) comes from the checkpoint, so a champion trained on older data is evaluated
    exactly as it was trained, on the same split as the challenger.

    With ``mlflow_run_id`` (the fit's run, known to the flow) the metrics are one synchronous request to
    that run: its status and the rest of it stay as the fit left them. With only ``run_key`` the run is
    found again, and continued and ended, by a logger of that key.
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
    if mlflow_run_id or run_key:
        # at the checkpoint's own step, so the run's curves show the evaluation where the model was taken
        step = int(load_file(checkpoint_uri).get("global_step", 0))
        if mlflow_run_id:
            log_run_metrics(tracking_uri(config), mlflow_run_id, metrics, step)
        else:
            logger = build_logger(config, str(run_key), log_model=False)
            logger.log_metrics(metrics, step=step)
            logger.finalize("success")
    return EvalResult(stage=stage, checkpoint_uri=checkpoint_uri, metrics=metrics)


def log_run_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` to the MLflow run ``run_id`` and return once MLflow has them.

    An unreachable server raises :class:`MlflowUnavailable` (transient: the task is retried) before
    anything is sent."""
    if not metrics:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from lightning_lib.loggers.mlflow import clean_name

    _wait_for_server(uri, timeout=10.0)
    timestamp = int(time.time() * 1000)
    values = [Metric(clean_name(k), v, timestamp, step) for k, v in metrics.items()]
    _log_metric_batches(MlflowClient(uri), run_id, values)


def _log_metric_batches(client: Any, run_id: str, metrics: list[Any]) -> None:
    """``metrics`` (MLflow ``Metric`` objects) to run ``run_id``, synchronously, in batches MLflow accepts."""
    for start in range(0, len(metrics), _METRICS_PER_REQUEST):
        client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_REQUEST], synchronous=True)


# Never served from a cache: a finished fit is cheap to "re-run" (it resumes at its end), and a cached
# result could point at checkpoints that retention has since deleted.
_RETRYING = retrying(cache_policy=NO_CACHE, result_serializer="json")


def require_evaluation_steps(config: TrainConfig, flow_name: str) -> None:
    """Refuse, before any work, a model the flow could fit but not evaluate: the training and retraining
    flows validate and test the best checkpoint after the fit, and registration and promotion read the
    test metrics. Without this a model lacking ``test_step`` failed after its whole fit."""
    model_class = config.load_model_class()
    missing = [
        hook
        for hook in ("validation_step", "test_step")
        if getattr(model_class, hook) is getattr(pl.LightningModule, hook)
    ]
    if missing:
        raise ValueError(
            f"Expected the model {config.model} to implement {' and '.join(missing)}: the {flow_name} flow "
            "validates and tests the best checkpoint after the fit (registration and promotion read the "
            f"test metrics); received a LightningModule without {' or '.join(missing)}."
        )


@task(name="fit", **_RETRYING)
def fit(config: TrainConfig, prepared: RunData, run_key: str, init_from: str | None = None) -> FitResult:
    """Prefect task around :func:`fit_model`: retried on transient faults, resuming each time."""
    return fit_model(config, prepared, run_key, init_from)


@task(name="deliver", **_RETRYING)
def deliver(config: TrainConfig, fit_result: FitResult, prepared: RunData | None = None) -> FitResult:
    """Prefect task around :func:`deliver_pending`: retried while MLflow is away."""
    return deliver_pending(config, fit_result, prepared)


@task(name="validate", **_RETRYING)
def validate(
    config: TrainConfig,
    prepared: RunData,
    checkpoint_uri: str,
    run_key: str | None = None,
    mlflow_run_id: str | None = None,
) -> EvalResult:
    """Prefect task: validation metrics of a checkpoint."""
    return evaluate_checkpoint(config, prepared, checkpoint_uri, "validate", run_key, mlflow_run_id)


@task(name="test", **_RETRYING)
def test(
    config: TrainConfig,
    prepared: RunData,
    checkpoint_uri: str,
    run_key: str | None = None,
    mlflow_run_id: str | None = None,
) -> EvalResult:
    """Prefect task: test metrics of a checkpoint."""
    return evaluate_checkpoint(config, prepared, checkpoint_uri, "test", run_key, mlflow_run_id)


test.__test__ = False  # type: ignore[attr-defined,unused-ignore]  # not a pytest test, despite its name

__all__ = [
    "MAX_PENDING_METRICS",
    "TAG_DATASET_ID",
    "TAG_INPUT_SHA256",
    "EvalResult",
    "FitResult",
    "MlflowUnavailable",
    "PendingDelivery",
    "data_tags",
    "deliver",
    "deliver_pending",
    "evaluate_checkpoint",
    "fit",
    "fit_model",
    "load_weights",
    "log_run_metrics",
    "require_evaluation_steps",
    "test",
    "validate",
]
