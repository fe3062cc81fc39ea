"""The end of an MLflow run: checkpoints recorded, why the run stopped, the end-of-fit artifacts, the
final status.

:class:`RunEnd` is a mixin of :class:`~lightning_lib.loggers.mlflow._logger.MLFlowLogger` (its methods take
the logger as ``self``); :func:`log_fit_artifacts` is what a fit leaves in the run.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lightning_lib.loggers.mlflow._context import TAG_EXCEPTION
from lightning_lib.loggers.mlflow._params import MAX_TAGS_PER_BATCH, chunks, prepare_tags
from lightning_lib.loggers.redact import redact_text

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models.model import ModelInfo

    from lightning_lib.callbacks.model_checkpoint import ModelCheckpoint
    from lightning_lib.loggers.mlflow._checkpoints import CheckpointReferences
    from lightning_lib.loggers.mlflow._logger import MLFlowLogger
    from lightning_lib.loggers.mlflow._worker import DeliveryReport, MetricSender

log = logging.getLogger("lightning_lib.loggers.mlflow._logger")

_STATUSES = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


class RunEnd:
    """``after_save_checkpoint``, ``log_exception`` and ``finalize`` of the MLflow logger."""

    # the logger's state these methods use; MLFlowLogger.__init__ sets it
    _references: CheckpointReferences
    _checkpoint_callback: ModelCheckpoint | None
    _sender: MetricSender | None
    _initialized: bool
    _fitting: bool
    _terminated: bool
    _exception_status: str | None
    _run_id: str | None
    delivery_report: DeliveryReport | None
    logged_model_info: ModelInfo | None

    def after_save_checkpoint(self: MLFlowLogger, checkpoint_callback: ModelCheckpoint) -> None:  # type: ignore[misc]
        """Remember the checkpoint callback; with ``log_model="all"`` record its checkpoints now."""
        self._checkpoint_callback = checkpoint_callback
        every = self._log_model == "all" or (
            self._log_model is True and getattr(checkpoint_callback, "save_top_k", None) == -1
        )
        if every:
            self._references.add(checkpoint_callback)
            self._send_checkpoint_tags(self._references.resolve())

    def _record_checkpoints(self: MLFlowLogger) -> None:  # type: ignore[misc]
        if self._checkpoint_callback is not None:
            self._references.add(self._checkpoint_callback)
        self._send_checkpoint_tags(self._references.resolve(final=True))

    def _send_checkpoint_tags(self: MLFlowLogger, roles: dict[str, dict[str, Any]]) -> None:  # type: ignore[misc]
        if not roles:
            return
        for chunk in chunks(prepare_tags(self._references.tags(roles)), MAX_TAGS_PER_BATCH):
            self._ensure_sender().add("tags", chunk)

    def log_exception(self: MLFlowLogger, exception: BaseException) -> None:  # type: ignore[misc]
        """Tell the logger why the run is ending: KILLED for Ctrl-C / SIGTERM (``SystemExit``), else FAILED.

        The Trainer calls it before ``finalize("failed")``; the exception's type and message are recorded
        (scrubbed) in the ``lightning_lib.exception`` tag. After the run has ended it does nothing: a late
        report (an application making sure its run ended) must not reopen the run.
        """
        if self._initialized and self._sender is None:
            return
        self._exception_status = (
            "KILLED" if isinstance(exception, KeyboardInterrupt | SystemExit) else "FAILED"
        )
        if self._initialized:
            text = redact_text(f"{type(exception).__name__}: {exception}")[:8000]
            self._ensure_sender().add("tags", [(TAG_EXCEPTION, text)])

    def _final_status(self: MLFlowLogger, status: str) -> str:  # type: ignore[misc]
        mlflow_status = _STATUSES.get(status.lower(), status.upper())
        if mlflow_status not in ("FINISHED", "FAILED", "KILLED"):
            log.warning("Unknown run status %r: ending the MLflow run as FAILED.", status)
            mlflow_status = "FAILED"
        if mlflow_status == "FAILED":
            if self._exception_status is None:
                exc = sys.exc_info()[1]  # finalize("failed") runs inside the Trainer's except block
                if exc is not None:
                    self.log_exception(exc)
            mlflow_status = self._exception_status or "FAILED"
        return mlflow_status

    def finalize(self: MLFlowLogger, status: str = "success") -> None:  # type: ignore[misc]
        """End the run: deliver the queue, record checkpoints, model and curves, set the final status.

        Waits at most ``finalize_timeout`` for the queue; what did not arrive is reported (a warning and
        :attr:`delivery_report`). Never raises because MLflow is unreachable.
        """
        if not self._initialized or self._sender is None:
            return
        mlflow_status = self._final_status(status)
        sender = self._sender
        deadline = time.monotonic() + self._finalize_timeout
        if self._dataset_thread is not None:
            self._dataset_thread.join(max(0.0, deadline - time.monotonic()))
        fitted, self._fitting = self._fitting, False
        if self._log_model and fitted:
            self._record_checkpoints()
        delivered = sender.flush(wait=True, timeout=max(0.0, deadline - time.monotonic()))
        if delivered and fitted:  # validate/test/predict end here too; only fit leaves curves, model
            log_fit_artifacts(
                self.experiment,
                str(self._run_id),
                sender.report,
                references=self._references,
                copy_checkpoints=self._copy_checkpoints,
                history=self._history if self._log_metric_curves else None,
                log_model=self._log_final_model if self._log_model and mlflow_status == "FINISHED" else None,
            )
        elif not delivered:
            sender.report.failures.append(
                "artifacts (checkpoint references, curves, model): server unreachable"
            )
        sender.add("status", [(mlflow_status, int(time.time() * 1000))])
        report = sender.close(max(0.0, deadline - time.monotonic()))
        self._sender = None
        self._terminated = True
        self._exception_status = None
        self.delivery_report = report
        if not report.ok:
            log.warning(report.summary())

    def _log_final_model(self: MLFlowLogger) -> None:  # type: ignore[misc]
        from lightning_lib.loggers.mlflow._artifacts import best_weights, detached_copy
        from lightning_lib.loggers.mlflow._model import example_input, log_pytorch_model

        module = self._module() if self._module is not None else None
        if module is None:
            log.warning("log_model: no module was handed to the logger (log_graph), so none is logged.")
            return
        callback = self._checkpoint_callback
        best = getattr(callback, "best_model_path", "") if getattr(callback, "monitor", None) else ""
        model = detached_copy(module, best_weights(best) if best else None)
        self.logged_model_info = log_pytorch_model(
            self._tracking_uri,
            str(self._run_id),
            model,
            example_input(module, getattr(module, "_trainer", None)),
            registered_model_name=self._registered_model_name,
            alias=self._registered_model_alias,
        )


def log_fit_artifacts(
    client: MlflowClient,
    run_id: str,
    report: DeliveryReport,
    *,
    references: CheckpointReferences,
    copy_checkpoints: bool,
    history: Mapping[str, list[tuple[int, float]]] | None,
    log_model: Callable[[], None] | None,
) -> None:
    """The end-of-fit artifacts, each on its own: one that fails is reported, the others still go.

    ``checkpoints/references.json`` (URIs and hashes), optionally copies of the local checkpoints,
    ``plots/metric_curves.png`` when ``history`` is given, then the model through ``log_model``.
    """
    from lightning_lib.loggers.mlflow._artifacts import plot_metric_curves

    def copies() -> None:
        for ref in references.records:
            uri = str(ref["uri"])
            if not uri.startswith("s3://") and os.path.exists(uri):
                client.log_artifact(run_id, uri, "checkpoints")

    def curves() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "metric_curves.png")
            if history and plot_metric_curves(history, path):
                client.log_artifact(run_id, path, "plots")

    steps: list[tuple[str, Callable[[], None]]] = []
    if references.records:
        steps.append(("checkpoint references", lambda: client.log_text(
            run_id, references.to_json(), "checkpoints/references.json")))  # fmt: skip
    if copy_checkpoints:
        steps.append(("checkpoint copies", copies))
    if history:
        steps.append(("metric curves", curves))
    if log_model is not None:
        steps.append(("model", log_model))
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            message = redact_text(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("Could not log the %s to MLflow: %s", what, message)
            report.failures.append(f"{what}: {message}")
