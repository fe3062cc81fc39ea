"""WandbLogger: Lightning's Weights & Biases logger, with its arguments, defaults and metric layout.

``wandb`` is an optional extra (``pip install 'lightning-lib[wandb]'``), imported when a run is first
needed, never by ``import lightning_lib``. What it adds to Lightning's logger:

- logging calls never wait for the client: ``log_metrics``, ``log_hyperparams`` and the media calls queue
  the client call for a sender thread (:mod:`lightning_lib.loggers._sender`), which makes it in order;
  reading ``experiment`` first waits for what is queued, so direct use of the run stays in order;
- checkpoints logged as artifacts (``log_model``) are staged by that thread once the background
  checkpoint writer has put the file in place, never by the training loop;
- ``finalize`` leaves nothing running: it makes the queued calls, finishes the run the logger started
  and, when no other run is active, shuts down W&B's service process. A later call (``trainer.test``
  after ``fit``) resumes the same run id;
- ``offline=True`` runs W&B offline for this logger only (Lightning sets ``WANDB_MODE`` for the whole
  process); hyper-parameters are scrubbed of credentials (:mod:`lightning_lib.loggers.redact`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from lightning_lib.loggers._sender import CallSender
from lightning_lib.loggers.logger import (
    Logger,
    _add_prefix,
    _convert_json_serializable,
    _convert_params,
    _detached_values,
    _sanitize_callable_params,
)
from lightning_lib.loggers.redact import redact_nested
from lightning_lib.loggers.utilities import _scan_checkpoints
from lightning_lib.storage import is_remote
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import rank_zero_only, rank_zero_warn

if TYPE_CHECKING:
    from lightning_lib.callbacks.model_checkpoint import ModelCheckpoint

log = logging.getLogger(__name__)

_OFFLINE_MODES = ("offline", "dryrun")
# how long finalize waits for queued calls, and the sender thread for a checkpoint file to be committed
_FINALIZE_TIMEOUT = 120.0
_CHECKPOINT_WAIT = 60.0
_CHECKPOINT_ATTRIBUTES = (
    "monitor",
    "mode",
    "save_last",
    "save_top_k",
    "save_weights_only",
    "_every_n_train_steps",
)


def _require_wandb() -> None:
    # looked up, not imported: importing wandb costs seconds and is left to the first run
    if sys.modules.get("wandb") is None and importlib.util.find_spec("wandb") is None:
        raise ModuleNotFoundError(
            "WandbLogger needs the `wandb` package: pip install 'lightning-lib[wandb]'."
        )


class WandbLogger(Logger):
    """Log to `Weights & Biases <https://wandb.ai>`_ (see the module docstring for what it adds).

    Args:
        name: Display name of the run.
        save_dir: Folder where W&B writes the run (``dir`` of ``wandb.init``).
        version: The run id, to resume a run; same as ``id``.
        offline: Run offline; ``wandb sync`` uploads the run later.
        dir: Same as ``save_dir`` (used when ``save_dir`` is ``None``).
        id: Same as ``version``.
        anonymous: Enables anonymous logging.
        project: The project of the run; default ``WANDB_PROJECT`` or ``"lightning_logs"``.
        log_model: Log the checkpoints of ``ModelCheckpoint`` as artifacts with ``latest`` / ``best``
            aliases: ``"all"`` as they are saved; ``True`` at the end of a successful fit (as they are saved
            when ``save_top_k == -1``); ``False`` never.
        experiment: A W&B run to log into instead of starting one.
        prefix: Put in front of every metric key, joined with ``"-"``.
        checkpoint_name: Name of the checkpoint artifact; default ``model-<run id>``.
        add_file_policy: ``"mutable"`` copies a checkpoint to a staging folder before upload.
        **kwargs: Passed to ``wandb.init`` (``entity``, ``group``, ``tags``, ``mode``, ...).

    Raises:
        ModuleNotFoundError: ``wandb`` is not installed.
        MisconfigurationException: ``log_model`` with ``offline=True`` (an offline run uploads nothing).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | os.PathLike[str] = ".",
        version: str | None = None,
        offline: bool = False,
        dir: str | os.PathLike[str] | None = None,
        id: str | None = None,
        anonymous: bool | None = None,
        project: str | None = None,
        log_model: Literal["all"] | bool = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: str | None = None,
        add_file_policy: Literal["mutable", "immutable"] = "mutable",
        **kwargs: Any,
    ) -> None:
        _require_wandb()
        if offline and log_model:
            raise MisconfigurationException(
                f"Providing log_model={log_model} and offline={offline} is an invalid configuration"
                " since model checkpoints cannot be uploaded in offline mode.\n"
                "Hint: Set `offline=False` to log your model."
            )
        super().__init__()
        self._offline = offline
        self._log_model = log_model
        self._prefix = prefix
        self._experiment = experiment
        self._owns_run = False  # a run this logger started (finished by finalize) or one it was given
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callbacks: dict[int, ModelCheckpoint] = {}
        self.add_file_policy = add_file_policy
        save_dir = os.fspath(save_dir) if save_dir is not None else None
        dir = os.fspath(dir) if dir is not None else None
        self._wandb_init: dict[str, Any] = {
            "name": name,
            "project": project or os.environ.get("WANDB_PROJECT", "lightning_logs"),
            "dir": save_dir or dir,
            "id": version or id,
            "resume": "allow",
            "anonymous": "allow" if anonymous else None,
        }
        self._wandb_init.update(**kwargs)
        self._project = self._wandb_init.get("project")
        self._save_dir = self._wandb_init.get("dir")
        self._name = self._wandb_init.get("name")
        self._id = self._wandb_init.get("id")
        self._checkpoint_name = checkpoint_name
        self._sender = CallSender("wandb-logger-sender")

    def __getstate__(self) -> dict[str, Any]:
        # the run and the sender thread stay in this process; an unpickled copy resumes the run by its id
        state = self.__dict__.copy()
        if self._experiment is not None:
            state["_id"] = getattr(self._experiment, "id", None)
            state["_name"] = getattr(self._experiment, "name", None)
        state["_experiment"] = None
        state["_owns_run"] = False
        del state["_sender"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._id is not None:
            self._wandb_init["id"] = self._id
        self._sender = CallSender("wandb-logger-sender")

    @property
    def experiment(self) -> Any:
        """The W&B run (``wandb.sdk.wandb_run.Run``), started on first use; a dummy on non-zero ranks.

        What the logger has queued is sent first, so calls on the run come after the logger's.
        """
        if self._experiment is None:
            self._experiment = self._start_run()
        elif self._sender.pending:
            self._sender.flush()
        return self._experiment

    def _offline_here(self) -> bool:
        """Whether the run is offline because of this logger's arguments (not the environment)."""
        return self._offline or str(self._wandb_init.get("mode", "")).lower() in _OFFLINE_MODES

    def _start_run(self) -> Any:
        import wandb

        if getattr(wandb, "run", None) is not None:
            rank_zero_warn(
                "There is a wandb run already in progress and newly created instances of `WandbLogger` will reuse"
                " this run. If this is not desired, call `wandb.finish()` before instantiating `WandbLogger`."
            )
            return wandb.run
        init = dict(self._wandb_init)
        if self._offline and "mode" not in init:
            init["mode"] = "offline"
        if self._offline_here() and callable(getattr(wandb, "setup", None)):
            # W&B's own telemetry threads follow the process-wide settings, not the run's mode
            wandb.setup(settings=wandb.Settings(mode="offline"))
        run = wandb.init(**init)
        self._owns_run = True
        define_metric = getattr(run, "define_metric", None)
        if callable(define_metric):
            if self._wandb_init.get("sync_tensorboard"):
                define_metric("*", step_metric="global_step")
            else:
                define_metric("trainer/global_step")
                define_metric("*", step_metric="trainer/global_step", step_sync=True)
        return run

    def watch(
        self,
        model: torch.nn.Module,
        log: str | None = "gradients",
        log_freq: int = 100,
        log_graph: bool = True,
    ) -> None:
        """Log the model's gradients (``log="all"``: and parameters) every ``log_freq`` steps, and its graph."""
        self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Add ``params`` to the run's config (callables resolved, values made JSON, credentials hidden)."""
        converted = _convert_json_serializable(_sanitize_callable_params(_convert_params(params)))
        self._send("config", redact_nested(converted))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log ``metrics`` with ``trainer/global_step = step`` (the x-axis the run defines)."""
        payload = _detached_values(_add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR))
        if step is not None and not self._wandb_init.get("sync_tensorboard"):
            payload["trainer/global_step"] = step
        self._send("log", payload)

    def _send(self, kind: str, payload: dict[str, Any]) -> None:
        run = self._experiment if self._experiment is not None else self.experiment
        if kind == "log":
            self._sender.submit(run.log, payload)
        else:
            self._sender.submit(run.config.update, payload, allow_val_change=True)

    @rank_zero_only
    def log_table(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """Log a ``wandb.Table`` from ``columns`` and ``data`` or from ``dataframe``."""
        import wandb

        table: Any = (
            wandb.Table
        )  # its stubs want list[str | int] columns; Lightning's signature says list[str]
        self.log_metrics({key: table(columns=columns, data=data, dataframe=dataframe)}, step)

    @rank_zero_only
    def log_text(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[str]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """Log text as a table (``columns`` and ``data``, or ``dataframe``)."""
        self.log_table(key, columns, data, dataframe, step)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        """Log images (tensors, arrays, PIL images or paths); each kwarg is a list with one item per image."""
        import wandb

        self.log_metrics({key: _media(wandb.Image, "images", images, kwargs)}, step)

    @rank_zero_only
    def log_audio(self, key: str, audios: list[Any], step: int | None = None, **kwargs: Any) -> None:
        """Log audio (arrays or paths); each kwarg (``caption``, ``sample_rate``) is a list, one per item."""
        import wandb

        self.log_metrics({key: _media(wandb.Audio, "audios", audios, kwargs)}, step)

    @rank_zero_only
    def log_video(self, key: str, videos: list[Any], step: int | None = None, **kwargs: Any) -> None:
        """Log videos (arrays or paths); each kwarg (``caption``, ``fps``, ``format``) is a list, one per item."""
        import wandb

        self.log_metrics({key: _media(wandb.Video, "videos", videos, kwargs)}, step)

    @property
    def save_dir(self) -> str | None:
        """The folder W&B writes the run to."""
        return self._save_dir

    @property
    def name(self) -> str | None:
        """The project name (the run's display name is ``experiment.name``)."""
        return self._project

    @property
    def version(self) -> str | None:
        """The run id: the run's once started, else the one given to the constructor."""
        return self._experiment.id if self._experiment else self._id

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """With ``log_model``, log the callback's new checkpoints now (``"all"``) or at the end of the fit."""
        if not self._log_model:
            return
        self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback
        if self._log_model == "all" or checkpoint_callback.save_top_k == -1:
            # what the callback names now, for the sender thread: the background checkpoint writer may not
            # have put the file in place yet, and the callback moves on while the sender waits for it
            run = self._experiment if self._experiment is not None else self.experiment
            self._sender.submit(
                self._log_named_checkpoints, run, checkpoint_callback, _named_checkpoints(checkpoint_callback)
            )

    @staticmethod
    @rank_zero_only
    def download_artifact(
        artifact: str,
        save_dir: str | os.PathLike[str] | None = None,
        artifact_type: str | None = None,
        use_artifact: bool | None = True,
    ) -> str:
        """Download an artifact (through the active run when there is one and ``use_artifact``)."""
        import wandb

        if wandb.run is not None and use_artifact:
            found = wandb.run.use_artifact(artifact)
        else:
            found = wandb.Api().artifact(artifact, type=artifact_type)
        root = None if save_dir is None else os.fspath(save_dir)
        return str(found.download(root=root))

    def use_artifact(self, artifact: str, artifact_type: str | None = None) -> Any:
        """Record that this run uses ``artifact``; returns the ``wandb.Artifact``."""
        return self.experiment.use_artifact(artifact, type=artifact_type)

    def finalize(self, status: str) -> None:
        """Send what is queued, log the checkpoints (on success), finish the run this logger started."""
        if self._experiment is None:
            return
        run = self._experiment
        if status == "success":
            # the Trainer finalizes after the checkpoint writer has committed every file
            for callback in self._checkpoint_callbacks.values():
                self._sender.submit(self._log_checkpoints, run, callback)
        self._sender.close(_FINALIZE_TIMEOUT)
        if self._owns_run:
            self._finish_run(run, 0 if status == "success" else 1)

    def _finish_run(self, run: Any, exit_code: int) -> None:
        self._id = getattr(run, "id", self._id)
        self._wandb_init["id"] = self._id  # the next use resumes this run ("resume": "allow")
        self._experiment = None
        self._owns_run = False
        finish = getattr(run, "finish", None)
        if callable(finish):
            finish(exit_code=exit_code)
        wandb = sys.modules.get("wandb")
        teardown = getattr(wandb, "teardown", None)
        if getattr(wandb, "run", None) is None and callable(teardown):
            teardown()  # W&B's service process outlives the run; nothing else uses it now

    def _log_named_checkpoints(self, run: Any, callback: ModelCheckpoint, named: _Named) -> None:
        """On the sender thread: log each checkpoint of ``named`` once its file is in place.

        A checkpoint the callback has replaced meanwhile may never be written (the writer drops a commit
        that was superseded before it started): it is skipped, not waited for.
        """
        candidates, best, settings = named
        deadline = time.monotonic() + _CHECKPOINT_WAIT
        found = []
        for path, (score, tag) in candidates.items():
            while not os.path.isfile(path) and _still_named(callback, path) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            found.append((mtime, path, score, tag))
        for mtime, path, score, _tag in sorted(found, key=lambda item: item[0]):
            if path not in self._logged_model_time or self._logged_model_time[path] < mtime:
                self._log_artifact(run, path, mtime, score, path == best, type(callback).__name__, settings)

    def _log_checkpoints(self, run: Any, callback: ModelCheckpoint) -> None:
        """On the sender thread, once every checkpoint is committed: log those not logged yet."""
        _, _, settings = _named_checkpoints(callback)
        for mtime, path, score, _tag in _scan_checkpoints(callback, self._logged_model_time):
            self._log_artifact(
                run, path, mtime, score, path == callback.best_model_path, type(callback).__name__, settings
            )

    def _log_artifact(
        self, run: Any, path: str, mtime: float, score: Any, best: bool, kind: str, settings: dict[str, Any]
    ) -> None:
        import wandb

        metadata = {
            "score": score.item() if isinstance(score, torch.Tensor) else score,
            "original_filename": Path(path).name,
            kind: settings,
        }
        if not self._checkpoint_name:
            self._checkpoint_name = f"model-{run.id}"
        artifact = wandb.Artifact(name=self._checkpoint_name, type="model", metadata=metadata)
        try:
            artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
        except (FileNotFoundError, ValueError):
            if os.path.exists(path):
                raise
            return  # replaced and deleted between the look and the copy: a newer one follows
        run.log_artifact(artifact, aliases=["latest", "best"] if best else ["latest"])
        # remembered with its time: "last.ckpt" keeps its name when rewritten
        self._logged_model_time[path] = mtime


# what the callback names at one moment: path -> (score, tag), the best path, the settings for the metadata
_Named = tuple[dict[str, tuple[Any, str]], str, dict[str, Any]]


def _named_checkpoints(callback: Any) -> _Named:
    """The local checkpoints ``callback`` names now (as ``_scan_checkpoints`` picks them), its best, its settings."""
    candidates: dict[str, tuple[Any, str]] = {}
    if hasattr(callback, "current_score"):
        candidates[getattr(callback, "last_model_path", "")] = (callback.current_score, "latest")
    if hasattr(callback, "best_model_score"):
        candidates[getattr(callback, "best_model_path", "")] = (callback.best_model_score, "best")
    for path, score in dict(getattr(callback, "best_k_models", {})).items():
        candidates[path] = (score, "best_k")
    remote = [str(path) for path in candidates if path and is_remote(str(path))]
    if remote:
        rank_zero_warn(
            f"WandbLogger logs local checkpoint files only; not logging {remote[0]!r} and the like."
        )
    local = {str(path): value for path, value in candidates.items() if path and not is_remote(str(path))}
    settings = {key: getattr(callback, key) for key in _CHECKPOINT_ATTRIBUTES if hasattr(callback, key)}
    return local, str(getattr(callback, "best_model_path", "")), settings


def _still_named(callback: Any, path: str) -> bool:
    """Whether ``callback`` still names ``path`` (read from the sender thread while training goes on)."""
    return path in (
        getattr(callback, "last_model_path", ""),
        getattr(callback, "best_model_path", ""),
    ) or path in getattr(callback, "best_k_models", {})


def _media(kind: Any, argument: str, items: list[Any], kwargs: dict[str, list[Any]]) -> list[Any]:
    """``kind(item, **per-item kwargs)`` for each item; every kwarg is a list as long as ``items``."""
    if not isinstance(items, list):
        raise TypeError(f'Expected a list as "{argument}", found {type(items)}')
    n = len(items)
    for key, values in kwargs.items():
        if len(values) != n:
            raise ValueError(f"Expected {n} items but only found {len(values)} for {key}")
    return [kind(item, **{key: values[i] for key, values in kwargs.items()}) for i, item in enumerate(items)]


__all__ = ["WandbLogger"]
