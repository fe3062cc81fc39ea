"""The end of an MLflow run: checkpoints recorded, why the run stopped, the end-of-fit artifacts, the
final status.

:class:`~lightning_lib.loggers.mlflow._logger.MLFlowLogger`'s ``after_save_checkpoint``, ``log_exception``
and ``finalize`` are the functions of the same names here, over the logger's state; :func:`log_fit_artifacts`
is what a fit leaves in the run.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lightning_lib.loggers.mlflow._context import TAG_EXCEPTION
from lightning_lib.loggers.mlflow._flavor import import_pytorch_flavor
from lightning_lib.loggers.mlflow._params import MAX_TAGS_PER_BATCH, chunks, prepare_tags
from lightning_lib.loggers.redact import redact_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from lightning_lib.callbacks.model_checkpoint import ModelCheckpoint
    from lightning_lib.loggers.mlflow._checkpoints import CheckpointReferences
    from lightning_lib.loggers.mlflow._logger import MLFlowLogger
    from lightning_lib.loggers.mlflow._worker import DeliveryReport

log = logging.getLogger("lightning_lib.loggers.mlflow._logger")

# at most this much of finalize's deadline is kept for the run's final status (one request)
_STATUS_RESERVE_S = 2.0

_STATUSES = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


_WARMED: set[str] = set()
_WARM_LOCK = threading.Lock()


def warm_end_of_fit(log_model: bool, curves: bool, background: bool = True) -> threading.Thread | None:
    """Import what the end of a fit needs (MLflow's PyTorch flavor and torch's export for the model,
    Pillow and its font for the curves), once per process: on a background thread (returned), or now
    with ``background=False`` (a process that prepares runs before they start: the CLI while Prefect's
    API starts, ``serve``'s forkserver).

    In a fresh process (a CLI run, a deployment's flow-run process) these cost seconds, which would all
    fall after the last training step; started with the run, they overlap the training instead. What is
    not done by the end of the fit is simply waited for by the import system, as without this thread.
    """
    wanted = {part for part, on in (("model", log_model), ("curves", curves)) if on}
    with _WARM_LOCK:
        todo = wanted - _WARMED
        _WARMED.update(todo)
    if not todo:
        return None
    if not background:
        _warm(todo)
        return None
    thread = threading.Thread(target=_warm, args=(todo,), name="mlflow-warm-up", daemon=True)
    thread.start()
    return thread


def _warm(parts: set[str]) -> None:
    try:
        if "curves" in parts:
            from lightning_lib.loggers.mlflow._curves import warm_up

            warm_up()
        if "model" in parts:
            # imports only: a warm-up export would initialise torch's tracing machinery (about a second)
            # but could run beside a torch.compile of the user's training step, and dynamo's state is
            # not thread-safe
            import_pytorch_flavor()
            # with the export's modules (1-2 s to import in a fresh process; pytorch_lightning's import
            # brought them before the flavor stopped importing it)
            import torch._dynamo
            import torch.export  # noqa: F401
            from mlflow.models import infer_signature  # noqa: F401
    except Exception as exc:  # only a head start: the end of the fit does the real work and reports
        log.debug("Warming up the end of the fit failed: %s", exc)


def after_save_checkpoint(logger: MLFlowLogger, checkpoint_callback: ModelCheckpoint) -> None:
    """Remember the checkpoint callback; with ``log_model="all"`` record its checkpoints now."""
    logger._checkpoint_callback = checkpoint_callback
    every = logger._log_model == "all" or (
        logger._log_model is True and getattr(checkpoint_callback, "save_top_k", None) == -1
    )
    if every:
        logger._references.add(checkpoint_callback)
        _send_checkpoint_tags(logger, logger._references.resolve())


def _record_checkpoints(logger: MLFlowLogger) -> None:
    if logger._checkpoint_callback is not None:
        logger._references.add(logger._checkpoint_callback)
    _send_checkpoint_tags(logger, logger._references.resolve(final=True))


def _send_checkpoint_tags(logger: MLFlowLogger, roles: dict[str, dict[str, Any]]) -> None:
    if not roles:
        return
    for chunk in chunks(prepare_tags(logger._references.tags(roles)), MAX_TAGS_PER_BATCH):
        logger._ensure_sender().add("tags", chunk)


def log_exception(logger: MLFlowLogger, exception: BaseException) -> None:
    """Tell the logger why the run is ending: KILLED for Ctrl-C / SIGTERM (``SystemExit``), else FAILED.

    The Trainer calls it before ``finalize("failed")``; the exception's type and message are recorded
    (scrubbed) in the ``lightning_lib.exception`` tag. After the run has ended it does nothing: a late
    report (an application making sure its run ended) must not reopen the run.
    """
    if logger._initialized and logger._sender is None:
        return
    logger._exception_status = "KILLED" if isinstance(exception, KeyboardInterrupt | SystemExit) else "FAILED"
    if logger._initialized:
        text = redact_text(f"{type(exception).__name__}: {exception}")[:8000]
        logger._ensure_sender().add("tags", [(TAG_EXCEPTION, text)])


def final_status(logger: MLFlowLogger, status: str) -> str:
    """The MLflow status a run ends with: ``status`` ("success", "failed", ...), or KILLED for an interrupt."""
    mlflow_status = _STATUSES.get(status.lower(), status.upper())
    if mlflow_status not in ("FINISHED", "FAILED", "KILLED"):
        log.warning("Unknown run status %r: ending the MLflow run as FAILED.", status)
        mlflow_status = "FAILED"
    if mlflow_status == "FAILED":
        if logger._exception_status is None:
            exc = sys.exc_info()[1]  # finalize("failed") runs inside the Trainer's except block
            if exc is not None:
                log_exception(logger, exc)
        mlflow_status = logger._exception_status or "FAILED"
    return mlflow_status


def finalize(logger: MLFlowLogger, status: str = "success") -> None:
    """End the run: deliver the queue, record checkpoints, model and curves, set the final status.

    Waits at most ``finalize_timeout`` for the queue; what did not arrive is reported (a warning and
    :attr:`delivery_report`). Never raises because MLflow is unreachable once the run exists; raises what
    kept the run from being created (the sender thread creates a new run, see ``MLFlowLogger._start``).

    Everything is done before it returns (the pipeline registers the model right after ``fit``), but the
    parts overlap: the curve PNG is drawn from the start, the system metrics monitor stops on its own
    thread, and while the server stores the rest of the queue the checkpoint references and the curves
    are uploaded (when the last request succeeded; otherwise only once the queue is through, so that an
    absent server costs one deadline, not MLflow's client retries). The model is exported once the
    curves are done; when their upload outlives the deadline it is not exported (torch.export must not run
    beside it) and the report says so. The status goes last, in the sender's last pass.
    """
    if not logger._initialized or logger._sender is None:
        return
    logger._await_run()
    mlflow_status = final_status(logger, status)
    sender = logger._sender
    # the final status gets the last part of the deadline to itself: otherwise an upload that uses it all
    # leaves the run RUNNING for ever
    deadline = time.monotonic() + logger._finalize_timeout
    work_deadline = deadline - min(_STATUS_RESERVE_S, 0.2 * logger._finalize_timeout)
    fitted, logger._fitting = logger._fitting, False
    history = logger._history if logger._log_metric_curves and fitted else None
    plot = CurvePlot(history) if history else None  # drawn from now on, beside all that follows
    metrics_stop: Callable[[float], None] | None = None
    if logger._system_metrics is not None:  # before the status: MLflow refuses metrics of an ended run
        from lightning_lib.loggers.mlflow._system import begin_stop_system_metrics

        metrics_stop = begin_stop_system_metrics(logger._system_metrics)
        logger._system_metrics = None
    if logger._dataset_thread is not None:
        logger._dataset_thread.join(max(0.0, work_deadline - time.monotonic()))
    logger._recorded = None  # the replay of the continued run ends with this fit
    if logger._log_model and fitted:
        _record_checkpoints(logger)
    sender.flush()  # under way while the artifacts below are uploaded
    artifacts = None
    if fitted:
        artifacts = _FitArtifacts(logger, sender.report, history, plot)
        if sender.healthy:
            artifacts.start()
    try:
        delivered = sender.flush(wait=True, timeout=max(0.0, work_deadline - time.monotonic()))
        if artifacts is not None:
            uploaded = True
            if artifacts.started:
                uploaded = artifacts.join(max(0.0, work_deadline - time.monotonic()))
            elif delivered:
                artifacts.run()
            else:
                sender.report.failures.append(
                    "artifacts (checkpoint references, curves, model): server unreachable"
                )
            if logger._log_model and mlflow_status == "FINISHED" and (delivered or artifacts.started):
                if not uploaded:
                    # torch.export traces with process-wide state: never beside the curves' upload, and
                    # waiting for that upload would take the fit past its deadline
                    sender.report.failures.append(
                        "model: not logged: the checkpoint references and curves were still uploading at"
                        " the deadline"
                    )
                elif not delivered:
                    sender.report.failures.append(
                        "model: not logged: the queue was not delivered before the deadline"
                    )
                else:
                    _attempt(sender.report, "model", lambda: _log_final_model(logger))
    finally:
        if artifacts is not None:
            artifacts.close_plot()
        elif plot is not None:
            plot.close()
    if metrics_stop is not None:
        metrics_stop(min(5.0, logger._finalize_timeout))
    report = sender.close(
        max(0.0, deadline - time.monotonic()), final=("status", [(mlflow_status, int(time.time() * 1000))])
    )
    logger._sender = None
    logger._terminated = True
    logger._exception_status = None
    logger.delivery_report = report
    if not report.ok:
        log.warning(report.summary())


class _FitArtifacts:
    """The uploads of a fit's end that do not need the queue delivered first (checkpoint references,
    copies, the curves), run on a thread beside the delivery, or on the caller's when the server was
    away (MLflow's client would retry each for minutes).

    The thread may outlive ``finalize``'s deadline (a slow server): it then owns the curve PNG's folder,
    which it removes once it no longer reads from it (:meth:`close_plot`)."""

    def __init__(
        self,
        logger: MLFlowLogger,
        report: DeliveryReport,
        history: Mapping[str, list[tuple[int, float]]] | None,
        plot: CurvePlot | None,
    ) -> None:
        self._logger, self._report, self._history, self._plot = logger, report, history, plot
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._finished = False  # the thread is done with the plot
        self._close_when_finished = False  # finalize has returned: the thread removes the plot's folder

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_on_thread, name="mlflow-fit-artifacts", daemon=True)
        self._thread.start()

    def run(self) -> None:
        logger = self._logger
        log_fit_artifacts(
            logger.experiment,
            str(logger._run_id),
            self._report,
            references=logger._references,
            copy_checkpoints=logger._copy_checkpoints,
            history=self._history,
            log_model=None,
            plot=self._plot,
        )

    def _run_on_thread(self) -> None:
        try:
            self.run()
        finally:
            with self._lock:
                self._finished = True
                close = self._close_when_finished
            if close and self._plot is not None:
                self._plot.close()

    def join(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the thread; False (and reported) when it still runs."""
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._report.failures.append(
                "artifacts (checkpoint references, curves): no answer before the deadline"
            )
            return False
        return True

    def close_plot(self) -> None:
        """Remove the curve PNG's folder now, or, while the thread may still upload the PNG, when it ends."""
        if self._plot is None:
            return
        with self._lock:
            if self._thread is not None and not self._finished:
                self._close_when_finished = True
                return
        self._plot.close()


def _log_final_model(logger: MLFlowLogger) -> None:
    from lightning_lib.loggers.mlflow._artifacts import best_weights, detached_copy
    from lightning_lib.loggers.mlflow._model import example_input, log_pytorch_model, serving_parts

    module = logger._module() if logger._module is not None else None
    if module is None:
        log.warning("log_model: no module was handed to the logger (log_graph), so none is logged.")
        return
    callback = logger._checkpoint_callback
    best = getattr(callback, "best_model_path", "") if getattr(callback, "monitor", None) else ""
    model = detached_copy(module, best_weights(best) if best else None)
    trainer = getattr(module, "_trainer", None)
    # the data module's state now, at the end of the fit: what its own loaders preprocessed with
    preprocessor, example = serving_parts(getattr(trainer, "datamodule", None))
    if preprocessor is not None and example is None:
        # a training batch is already preprocessed: as the example of raw inputs it would be wrong
        log.warning(
            "log_model: the data module has preprocessor() but no serving_example(), so the model is "
            "logged without an input example or signature."
        )
    elif example is None:
        example = example_input(module, trainer)
    logger.logged_model_info = log_pytorch_model(
        logger._tracking_uri,
        str(logger._run_id),
        model,
        example,
        registered_model_name=logger._registered_model_name,
        alias=logger._registered_model_alias,
        preprocessor=preprocessor,
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
    plot: CurvePlot | None = None,
) -> None:
    """The end-of-fit artifacts, each on its own: one that fails is reported, the others still go.

    ``checkpoints/references.json`` (URIs and hashes), optionally copies of the local checkpoints,
    ``plots/metric_curves.png`` when ``history`` is given, then the model through ``log_model``. The
    curves are drawn on a thread of their own (``plot``, which the caller may have started earlier, while
    the queue was delivered) and are done before the model is exported.
    """
    own_plot = plot is None and bool(history)
    if own_plot:
        plot = CurvePlot(history or {})

    def copies() -> None:
        for ref in references.records:
            uri = str(ref["uri"])
            if not uri.startswith("s3://") and os.path.exists(uri):
                client.log_artifact(run_id, uri, "checkpoints")

    def curves() -> None:
        assert plot is not None
        path = plot.result()
        if path is not None:
            client.log_artifact(run_id, path, "plots")

    steps: list[tuple[str, Callable[[], None]]] = []
    if references.records:
        steps.append(("checkpoint references", lambda: client.log_text(
            run_id, references.to_json(), "checkpoints/references.json")))  # fmt: skip
    if copy_checkpoints:
        steps.append(("checkpoint copies", copies))
    # the curves before the model: torch.export traces with process-wide state, and one export failed
    # (falling back to pickle) while the curves were drawn (then with matplotlib) on another thread under
    # heavy load
    if plot is not None:
        steps.append(("metric curves", curves))
    if log_model is not None:
        steps.append(("model", log_model))
    try:
        for what, step in steps:
            _attempt(report, what, step)
    finally:
        if own_plot and plot is not None:
            plot.close()


def _attempt(report: DeliveryReport, what: str, step: Callable[[], None]) -> None:
    """Run one end-of-fit step; a failure is logged and reported, never raised."""
    try:
        step()
    except Exception as exc:
        message = redact_text(f"{type(exc).__name__}: {exc}")[:500]
        log.warning("Could not log the %s to MLflow: %s", what, message)
        report.failures.append(f"{what}: {message}")


class CurvePlot:
    """The metric-curve PNG, drawn on a thread of its own into a temporary folder from the moment it is
    created: a few milliseconds per chart (longer on a busy machine), which overlap the delivery of the queue
    (mostly waiting on the server) and the checkpoint references."""

    def __init__(self, history: Mapping[str, list[tuple[int, float]]]) -> None:
        self._folder = tempfile.mkdtemp(prefix="lightning-lib-curves-")
        self.path = os.path.join(self._folder, "metric_curves.png")
        self._drawn = False
        self._error: BaseException | None = None
        snapshot = {key: list(points) for key, points in history.items()}
        self._thread = threading.Thread(
            target=self._draw, args=(snapshot,), name="mlflow-metric-curves", daemon=True
        )
        self._thread.start()

    def _draw(self, history: Mapping[str, list[tuple[int, float]]]) -> None:
        from lightning_lib.loggers.mlflow import _curves

        try:
            self._drawn = _curves.plot_metric_curves(history, self.path)
        except BaseException as exc:  # re-raised on the caller's thread by result()
            self._error = exc

    def result(self) -> str | None:
        """The PNG's path once drawn (None: nothing to plot, or no Pillow); the drawing's error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.path if self._drawn else None

    def close(self) -> None:
        """Wait for the drawing and remove the temporary folder."""
        self._thread.join()
        shutil.rmtree(self._folder, ignore_errors=True)
