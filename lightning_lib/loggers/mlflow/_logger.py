"""MLFlowLogger: Lightning's MLflow logger, made safe for long runs in a pipeline.

Same arguments, defaults, metric names and properties as ``pytorch_lightning.loggers.MLFlowLogger``,
plus what a production stage needs:

- metrics never wait for the network: they are queued and sent in batches from a background thread
  (:mod:`lightning_lib.loggers.mlflow._worker`); an unreachable server costs retries, not training time,
  and the end of the run reports, with numbers, whatever could not be delivered;
- the run is found again by ``run_key`` (a retry or a re-run continues it, never a second run) and ends
  FINISHED, FAILED or KILLED (SIGTERM, Ctrl-C);
- one clean history: a fit that continues a run (resuming from a checkpoint, or retried from the start)
  replays the earlier attempt's steps exactly, so a metric value at or before the step that metric had
  already recorded when the run was continued is not sent again;
- tags say where the run came from (git commit of the user's project, versions, seed, the orchestrator's
  run: :mod:`lightning_lib.utilities.orchestration`);
- params are flattened, scrubbed of credentials and fitted to MLflow's limits with a warning;
- the training data is recorded as a dataset input; checkpoints by URI and sha256; with ``log_model`` the
  model is logged as an MLflow model (optionally registered, with an alias); a PNG of the metric curves.

``import lightning_lib`` does not import mlflow: this module imports it when a run is first needed.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import importlib.util
import logging
import os
import re
import threading
import time
import warnings
import weakref
from argparse import Namespace
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from lightning_lib.loggers.logger import Logger, _convert_params, _flatten_dict, _sanitize_params
from lightning_lib.loggers.mlflow import _end
from lightning_lib.loggers.mlflow._checkpoints import CheckpointReferences
from lightning_lib.loggers.mlflow._context import TAG_RUN_KEY, environment_tags
from lightning_lib.loggers.mlflow._params import (
    MAX_PARAMS_PER_BATCH,
    MAX_TAGS_PER_BATCH,
    chunks,
    clean_name,
    prepare_params,
    prepare_tags,
)
from lightning_lib.loggers.mlflow._run import (
    experiment_id_for,
    find_run_by_key,
    recorded_steps,
    sqlite_artifact_location,
    wait_until_reachable,
)
from lightning_lib.loggers.mlflow._worker import DeliveryReport, MetricSender, RetryPolicy

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient
    from mlflow.models.model import ModelInfo

    from lightning_lib.callbacks.model_checkpoint import ModelCheckpoint
    from lightning_lib.loggers.mlflow._transport import DatasetSpec, Transport

log = logging.getLogger(__name__)

_RUN_KEY = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,250}")
_MAX_HISTORY = 20_000  # points kept per metric for the curve PNG; thinned by half beyond that


class MLFlowLogger(Logger):
    """Log to MLflow (see the module docstring for what it adds to Lightning's logger).

    Args:
        experiment_name: The experiment to log into; created if missing.
        run_name: The run's name (the ``mlflow.runName`` tag).
        tracking_uri: Where the tracking store is. Default: ``MLFLOW_TRACKING_URI`` if set, else a SQLite
            store ``<save_dir>/mlflow.db`` with artifacts under ``<save_dir>/artifacts``.
        tags: Tags for a new run (scrubbed of credentials like everything sent).
        save_dir: Folder of the default local store; ignored when a tracking URI is configured.
        log_model: ``False``; ``True``: at the end of fit, record the latest and best checkpoints (by URI and
            sha256) and log the model as an MLflow model; ``"all"``: record every checkpoint when saved.
        prefix: Put in front of every metric key, joined with ``"-"``.
        artifact_location: Artifact location of a newly created experiment.
        run_id: Continue this run instead of starting one.
        synchronous: ``True`` makes every logging call wait until MLflow has it (slow; for debugging).
        run_key: Stable identity of the training run: a run tagged with it in the experiment is continued
            instead of starting a new one (retries and re-runs share one run). While a fit logs into a
            continued run, a metric's values at steps up to the last one it had recorded are skipped: they
            are the earlier attempt's, which the resumed fit replays.
        git_path: Folder of the user's git project for the commit tags (default: the working directory).
        registered_model_name: Register the logged model under this name (needs ``log_model``).
        registered_model_alias: Point this alias of the registered model at the new version.
        copy_checkpoints: Also upload the checkpoint files into the run's artifacts (at the end of fit).
        log_metric_curves: Log ``plots/metric_curves.png`` at the end of fit.
        flush_interval: Longest time in seconds a metric value waits in the queue before being sent.
        max_buffered_metrics: Most metric values queued while the server is away; the oldest go first.
        finalize_timeout: Longest time in seconds ``finalize`` waits for the queue to be delivered.
        request_timeout: Timeout in seconds of one request of the background sender.
        startup_timeout: How long to wait for an HTTP tracking server to answer when the run starts
            before raising ``ConnectionError`` (no run can be created without it).
        retry: Backoff of the background sender's retries.
        log_system_metrics: Sample CPU, memory, disk, network and GPU use during each fit, on a thread,
            into the run's System metrics tab (``system/*`` metrics; needs ``psutil``).
        system_metrics_interval: Seconds between two system metrics samples.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        save_dir: str | None = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
        *,
        run_key: str | None = None,
        git_path: str | os.PathLike[str] | None = None,
        registered_model_name: str | None = None,
        registered_model_alias: str | None = None,
        copy_checkpoints: bool = False,
        log_metric_curves: bool = True,
        flush_interval: float = 1.0,
        max_buffered_metrics: int = 100_000,
        finalize_timeout: float = 30.0,
        request_timeout: float = 10.0,
        startup_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        log_system_metrics: bool = False,
        system_metrics_interval: float = 10.0,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ModuleNotFoundError(
                "MLFlowLogger needs mlflow: pip install 'lightning-lib[mlflow]' (or mlflow-skinny)."
            )
        if log_model not in (True, False, "all"):
            raise ValueError(f"Expected log_model to be True, False or 'all', received {log_model!r}.")
        if run_key is not None and not _RUN_KEY.fullmatch(run_key):
            raise ValueError(
                f"Expected run_key of 1-250 characters from [A-Za-z0-9_.:/@+=-], received {run_key!r}."
            )
        if system_metrics_interval <= 0:
            raise ValueError(f"Expected system_metrics_interval > 0, received {system_metrics_interval}.")
        for arg, value in (("flush_interval", flush_interval), ("finalize_timeout", finalize_timeout)):
            if value < 0:
                raise ValueError(f"Expected {arg} >= 0, received {value}.")
        if max_buffered_metrics < 1:
            raise ValueError(f"Expected max_buffered_metrics >= 1, received {max_buffered_metrics}.")
        if registered_model_alias and not registered_model_name:
            raise ValueError("Expected registered_model_name with registered_model_alias, received none.")
        if registered_model_name and not log_model:
            raise ValueError(
                f"Expected log_model=True or 'all' to register a model, received log_model={log_model!r}."
            )
        super().__init__()
        self._local_dir = (
            None if (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")) else (save_dir or "./mlruns")
        )
        if self._local_dir is not None:
            tracking_uri = f"sqlite:///{os.path.abspath(self._local_dir)}/mlflow.db"
        self._tracking_uri: str = tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
        self._experiment_name = experiment_name
        self._experiment_id: str | None = None
        self._run_name = run_name
        self._run_id = run_id
        self.tags = tags
        self._log_model = log_model
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._synchronous = bool(synchronous)
        self._run_key = run_key
        self._git_path = git_path
        self._registered_model_name = registered_model_name
        self._registered_model_alias = registered_model_alias
        self._copy_checkpoints = copy_checkpoints
        self._log_metric_curves = log_metric_curves
        self._flush_interval = flush_interval
        self._max_buffered = max_buffered_metrics
        self._finalize_timeout = finalize_timeout
        self._request_timeout = request_timeout
        self._startup_timeout = startup_timeout
        self._retry = retry
        self._log_system_metrics = log_system_metrics
        self._system_metrics_interval = system_metrics_interval
        self._system_metrics: Any = None  # the running monitor of the current fit (_system)
        self._client: MlflowClient | None = None  # the logger's own (never waits for the run)
        self._user_client: MlflowClient | None = None  # what ``experiment`` returns
        self._initialized = False
        self._opening: MetricSender | None = None  # the sender while it creates the run (see _start)
        self._run_tags: list[tuple[str, str]] = []
        self._resumed = False
        self._sender: MetricSender | None = None
        self._terminated = False
        self._names: dict[str, str | None] = {}  # metric key -> MLflow name (None: discarded)
        self._history: dict[str, list[tuple[int, float]]] = {}
        # A continued run's last recorded step per metric, read when the run is found; None once a fit
        # has logged past all of them (or the run is new), so that log_metrics then pays one check.
        self._recorded: dict[str, int] | None = None
        self._recorded_upto = -1  # the highest of those steps
        self._logged_params: dict[str, str] = {}
        self._exception_status: str | None = None
        self._module: weakref.ReferenceType[torch.nn.Module] | None = None
        self._dataset_pending = False
        self._fitting = False
        self._datasets_logged: set[tuple[str, str]] = set()
        self._dataset_thread: threading.Thread | None = None
        self._checkpoint_callback: ModelCheckpoint | None = None
        self._references = CheckpointReferences()
        self.delivery_report: DeliveryReport | None = None  # set by finalize
        self.logged_model_info: ModelInfo | None = None  # mlflow's ModelInfo of the model logged by finalize
        atexit.register(_close_at_exit, weakref.ref(self))

    # ---- identity ----------------------------------------------------------------------------------
    @property
    def experiment(self) -> MlflowClient:
        """The ``mlflow.MlflowClient``; the first access finds or creates the experiment and the run.

        A new run may still be being created by the sender thread when this returns (the Trainer touches
        ``experiment`` before the first step): any call on the client waits for the run first.
        """
        if not self._initialized:
            self._start()
        assert self._user_client is not None  # _start sets it or raises
        return self._user_client

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (starting the run if needed)."""
        _ = self.experiment
        self._await_run()
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment id (creating the experiment if needed)."""
        _ = self.experiment
        self._await_run()
        return self._experiment_id

    @property
    def name(self) -> str | None:
        """The experiment id, as in Lightning."""
        return self.experiment_id

    @property
    def version(self) -> str | None:
        """The run id, as in Lightning."""
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        """The local folder of the store (the default SQLite one, or a ``file:`` URI's), else ``None``."""
        if self._local_dir is None and self._tracking_uri.startswith("file:"):
            return self._tracking_uri[len("file:") :]
        return self._local_dir

    @property
    def tracking_uri(self) -> str:
        """The tracking URI in use."""
        return self._tracking_uri

    @property
    def run_key(self) -> str | None:
        """The run key this logger finds its run by, if any."""
        return self._run_key

    def _start(self) -> None:
        """Find or create the experiment and the run; a new run (no ``run_id`` or ``run_key`` to look up)
        is created by the sender thread while training starts.

        Lightning's logger creates the run before the first step, costing a few round trips (reachability,
        experiment, run) that the training waits for. Logging calls only queue, so they need no run id
        yet; what does (``run_id``, ``version``, ``experiment``, a checkpoint folder named by the run)
        waits for it, and an error creating it is raised there, by the next ``log_metrics`` or by
        ``finalize``. A run that may be continued is looked up before training: whether it exists decides
        which values the fit sends again.
        """
        from mlflow.tracking import MlflowClient

        if self._local_dir is not None:
            os.makedirs(self._local_dir, exist_ok=True)
        self._client = MlflowClient(self._tracking_uri)
        _end.warm_end_of_fit(bool(self._log_model), self._log_metric_curves)
        if self._run_id is None and not self._run_key:
            # the orchestrator's run tags come from the caller's context (context variables)
            context = contextvars.copy_context()
            self._opening = self._new_sender(opener=lambda: context.run(self._open_run))
            self._sender = self._opening
            self._user_client = _run_client(self._tracking_uri, weakref.ref(self))
            self._initialized = True
            return
        try:
            resumed_status = self._open_run()
        except BaseException:
            self._client = None
            raise
        self._user_client = self._client
        self._initialized = True
        sender = self._ensure_sender()
        if self._resumed:
            if resumed_status != "RUNNING":
                sender.add("status", [("RUNNING", None)])
            for chunk in chunks(self._run_tags, MAX_TAGS_PER_BATCH):
                sender.add("tags", chunk)

    def _open_run(self) -> str:
        """Find the experiment and the run, creating what is missing; return the run id (a new run) or the
        continued run's status. Runs on the caller's thread or, for a new run, on the sender's."""
        client = self._client
        assert client is not None
        if self._tracking_uri.startswith(("http://", "https://")):
            wait_until_reachable(self._tracking_uri, self._startup_timeout)
        tags = dict(environment_tags(self._git_path))
        tags.update(self.tags or {})
        if self._run_key:
            tags[TAG_RUN_KEY] = self._run_key
        if self._run_name:
            tags["mlflow.runName"] = self._run_name
        self._run_tags = clean_tags = prepare_tags(tags)
        run = None
        if self._run_id is not None:
            run = client.get_run(self._run_id)
            self._experiment_id = run.info.experiment_id
        else:
            # a new experiment of a SQLite store (the default one under save_dir, or a given one) keeps
            # its artifacts beside the database file
            location = self._artifact_location or sqlite_artifact_location(self._tracking_uri)
            self._experiment_id = self._experiment_id or experiment_id_for(
                client, self._experiment_name, location
            )
            if self._run_key:
                run = find_run_by_key(client, self._experiment_id, self._run_key)
        if run is None:
            run = client.create_run(self._experiment_id, tags=dict(clean_tags), run_name=self._run_name)
            self._run_id = run.info.run_id
            return str(run.info.run_id)
        self._resumed = True
        self._logged_params = dict(run.data.params)
        self._recorded = recorded_steps(run) or None
        self._recorded_upto = max(self._recorded.values(), default=-1) if self._recorded else -1
        log.info("Continuing MLflow run %s (run_key=%s).", run.info.run_id, self._run_key)
        self._run_id = run.info.run_id
        return str(run.info.status)

    def _await_run(self) -> None:
        """Wait for the run the sender thread is creating; raise (and start over next time) if it failed."""
        opening = self._opening
        if opening is None:
            return
        try:
            opening.wait_open()
        except Exception:
            if opening.open_error is not None and self._sender is opening:
                self._sender = self._opening = self._client = self._user_client = None
                self._initialized = False
                # what was queued to the failed sender reached no run: the next run must get it again
                self._logged_params.clear()
                self._datasets_logged.clear()
            raise
        self._opening = None

    def _ensure_sender(self) -> MetricSender:
        if not self._initialized:
            self._start()  # creates the sender
        if self._sender is None:
            self._sender = self._new_sender()
            if self._terminated:  # logging again after finalize (e.g. trainer.test after fit)
                self._sender.add("status", [("RUNNING", None)])
                self._terminated = False
        return self._sender

    def _new_sender(self, opener: Callable[[], str] | None = None) -> MetricSender:
        assert opener is not None or self._run_id is not None
        return MetricSender(
            self._transport(),
            None if opener is not None else self._run_id,
            max_buffer=self._max_buffered,
            interval=self._flush_interval,
            retry=self._retry,
            opener=opener,
        )

    def _transport(self) -> Transport:
        from lightning_lib.loggers.mlflow._transport import ClientTransport, RestTransport

        store = getattr(getattr(self._client, "_tracking_client", None), "store", None)
        get_host_creds = getattr(store, "get_host_creds", None)
        if self._tracking_uri.startswith(("http://", "https://")) and callable(get_host_creds):
            return RestTransport(get_host_creds, self._request_timeout)
        assert self._client is not None
        return ClientTransport(self._client)

    # ---- logging -----------------------------------------------------------------------------------
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Log params: flattened (``a/b``), scrubbed, fitted to MLflow's limits, 100 per request.

        MLflow params cannot change; one already recorded with another value (a resumed run given new
        hyper-parameters) is skipped with a warning instead of failing the request.
        """
        flat = _sanitize_params(_flatten_dict(_convert_params(params)))
        # a continued run is looked up first: its recorded params are what a new value is compared with
        sender = self._ensure_sender()
        pairs = []
        changed = []
        for key, value in prepare_params(flat):
            previous = self._logged_params.get(key)
            if previous is None:
                pairs.append((key, value))
                self._logged_params[key] = value
            elif previous != value:
                changed.append(key)
        if changed:
            warnings.warn(
                f"MLflow params cannot change; keeping the recorded values of {sorted(changed)}.",
                RuntimeWarning,
                stacklevel=2,
            )
        for chunk in chunks(pairs, MAX_PARAMS_PER_BATCH):
            sender.add("params", chunk)
        if self._synchronous:
            sender.flush(wait=True, timeout=self._finalize_timeout)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Queue ``metrics`` at ``step`` (``0`` when None, as in Lightning); returns at once."""
        sender = self._sender or self._ensure_sender()
        if sender.open_error is not None:
            self._await_run()  # raises why the run could not be created
        timestamp = int(time.time() * 1000)
        step = step or 0
        names = self._names
        history = self._history
        # Only a fit replays: validate/test metrics logged later at an earlier step (the best checkpoint's)
        # are new points of the run.
        recorded = self._recorded if self._fitting else None
        records = []
        for key, value in metrics.items():
            name = names[key] if key in names else self._metric_name(key, value)
            if name is None:
                continue
            if recorded is not None and step <= recorded.get(name, -1):
                continue  # the earlier attempt recorded this point (and the resume is exact)
            number = float(value)
            records.append((name, number, timestamp, step))
            points = history.get(name)
            if points is None:
                history[name] = points = []
            points.append((step, number))
            if len(points) > _MAX_HISTORY:
                del points[::2]
        if recorded is not None and step > self._recorded_upto:
            self._recorded = None  # past every recorded step: nothing more to skip
        if records:
            sender.add_metrics(records)
        if self._dataset_pending:
            self._record_train_dataset()
        if self._synchronous:
            sender.flush(wait=True, timeout=self._finalize_timeout)

    def _metric_name(self, key: str, value: Any) -> str | None:
        if isinstance(value, str):
            log.warning("Discarding metric with string value %s=%s.", key, value)
            return None  # not cached: a later numeric value under this key is logged
        full = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key
        name = clean_name(full)
        if name != full:
            warnings.warn(
                "MLflow only allows '_', '/', '.', '-' and ' ' special characters in metric names."
                f" Replacing {full} with {name}.",
                RuntimeWarning,
                stacklevel=3,
            )
        self._names[key] = name
        return name

    def flush(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Send everything queued now instead of at the next interval.

        With ``wait=False`` (what the Trainer calls at epoch ends) it returns at once; with ``wait=True``
        it blocks until MLflow has it all (True) or ``timeout`` passes (False).
        """
        if self._sender is None:
            return True
        return self._sender.flush(wait=wait, timeout=timeout)

    def save(self) -> None:
        """Nothing to do: values are queued and sent by the background sender (see :meth:`flush`)."""

    # ---- the end of the run (lightning_lib.loggers.mlflow._end) ----------------------------------------
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """Remember the checkpoint callback; with ``log_model="all"`` record its checkpoints now."""
        _end.after_save_checkpoint(self, checkpoint_callback)

    def log_exception(self, exception: BaseException) -> None:
        """Tell the logger why the run is ending: KILLED for Ctrl-C / SIGTERM (``SystemExit``), else FAILED."""
        _end.log_exception(self, exception)

    def finalize(self, status: str = "success") -> None:
        """End the run: deliver the queue, record checkpoints, model and curves, set the final status.

        Waits at most ``finalize_timeout`` for the queue; never raises because MLflow is unreachable
        during the fit, only when a new run could not be created at all (the error of that creation).
        """
        _end.finalize(self, status)

    def log_graph(self, model: torch.nn.Module, input_array: torch.Tensor | None = None) -> None:
        """Remember the module the Trainer is fitting (weakly): its data and weights are logged from it."""
        self._module = weakref.ref(model)
        self._dataset_pending = True
        self._fitting = True  # the Trainer calls log_graph at fit start only
        if self._recorded is not None:
            log.info(
                "MLflow run %s already has metrics up to step %d: this fit does not send again the values"
                " of steps each metric has recorded.",
                self._run_id,
                self._recorded_upto,
            )
        if self._log_system_metrics and self._system_metrics is None:
            from lightning_lib.loggers.mlflow._system import start_system_metrics

            self._system_metrics = start_system_metrics(
                str(self.run_id), self._tracking_uri, self._system_metrics_interval, self._resumed
            )

    def log_dataset(
        self,
        name: str,
        digest: str,
        source: str,
        schema: Any = None,
        profile: Any = None,
        context: str = "training",
    ) -> None:
        """Record a dataset input of the run: ``digest`` identifies the data, ``source`` says where it is.

        ``schema``/``profile`` may be dicts (stored as JSON). The digest is cut to MLflow's 36 characters.
        """
        from lightning_lib.loggers.mlflow._artifacts import make_spec

        self._log_spec(make_spec(name, digest, source, schema, profile, context))

    def _log_spec(self, spec: DatasetSpec) -> None:
        key = (spec.name, spec.digest)
        if key in self._datasets_logged:
            return
        self._datasets_logged.add(key)
        self._ensure_sender().add("inputs", [spec])

    def _record_train_dataset(self) -> None:
        """Record the train dataloader's dataset, hashing it on a helper thread (it may be large)."""
        self._dataset_pending = False
        module = self._module() if self._module is not None else None
        trainer = getattr(module, "_trainer", None)
        dataset = getattr(getattr(trainer, "train_dataloader", None), "dataset", None)
        if dataset is None:
            return

        def describe() -> None:
            from lightning_lib.loggers.mlflow._artifacts import dataset_spec

            try:
                spec = dataset_spec(dataset)
            except Exception as exc:
                log.warning("Could not describe the training data for MLflow: %s", exc)
                return
            sender = self._sender  # never a new sender from here: finalize may have closed this one
            if spec is None or sender is None or (spec.name, spec.digest) in self._datasets_logged:
                return
            self._datasets_logged.add((spec.name, spec.digest))
            sender.add("inputs", [spec])

        self._dataset_thread = threading.Thread(target=describe, name="mlflow-dataset", daemon=True)
        self._dataset_thread.start()


def _await_logger_run(ref: weakref.ReferenceType[MLFlowLogger]) -> None:
    logger = ref()
    if logger is not None:
        logger._await_run()


def _run_client(tracking_uri: str, logger: weakref.ReferenceType[MLFlowLogger]) -> MlflowClient:
    """An ``MlflowClient`` whose public attributes wait for ``logger``'s run (being created by its sender
    thread) before they are used: what a user does with ``experiment`` happens once the run exists."""
    client = _run_client_class()(tracking_uri)
    setattr(client, "_lightning_lib_wait", functools.partial(_await_logger_run, logger))  # noqa: B010
    return client


@functools.cache
def _run_client_class() -> type[MlflowClient]:
    from mlflow.tracking import MlflowClient

    class _RunClient(MlflowClient):  # type: ignore[misc,unused-ignore]
        _lightning_lib_wait: Callable[[], None] | None = None

        def __getattribute__(self, name: str) -> Any:
            if not name.startswith("_"):
                wait = object.__getattribute__(self, "_lightning_lib_wait")
                if wait is not None:
                    wait()  # raises why the run could not be created
                    self._lightning_lib_wait = None
            return super().__getattribute__(name)

    return _RunClient


def _close_at_exit(ref: weakref.ReferenceType[MLFlowLogger]) -> None:
    """At interpreter exit, give a still-open sender a few seconds to deliver (the status is left as is)."""
    logger = ref()
    if logger is None or logger._sender is None:
        return
    with contextlib.suppress(Exception):  # at exit, a failing report must not add a traceback
        report = logger._sender.close(min(5.0, logger._finalize_timeout))
        if not report.ok:
            log.warning(report.summary())
