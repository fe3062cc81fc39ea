"""Build what a task trains with from a ``TrainConfig``: the module, the data module, the logger, the Trainer.

Every task builds its own objects from the config and URIs, so nothing but small plain data crosses a
task boundary (Prefect may run the next task in another process, or retry this one elsewhere).
"""

from __future__ import annotations

import inspect
import math
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import torch

from lightning_lib.callbacks import Callback
from lightning_lib.storage import is_remote, join_uri, local_path
from tasks.config import TrainConfig
from tasks.naming import run_name
from tasks.tracking import embedded_mlflow_dir, tracking_uri

if TYPE_CHECKING:
    from tasks.run_data import RunData

# The keys the pipeline hands a data module from ``prepare_data`` (see PreparedData.datamodule_kwargs).
PIPELINE_DATAMODULE_KEYS = ("train_uri", "val_uri", "test_uri", "features", "target", "sha256")
# Seconds between two samples of the fit's system metrics (MLflow's default): a sample is a few psutil
# calls and one request on a thread of its own, never a cost of a training step.
SYSTEM_METRICS_INTERVAL_S = 10.0


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite: a retry would diverge the same way (never retried)."""


class FiniteLossGuard(Callback):
    """Stop at a non-finite training loss, naming the step, instead of training on garbage.

    On CPU every step is checked. On an accelerator the check is folded into a device-side flag and read
    every ``check_every_n_steps`` steps (and at each epoch end): reading it is a host-device sync, which
    the hot path must not pay at every step.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._flag: Any = None
        self._since: tuple[int, int] | None = None  # (global step, epoch) of the first unchecked step

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or not hasattr(loss, "detach"):
            return
        loss = loss.detach()
        if loss.device.type == "cpu":
            value = float(loss)
            if not math.isfinite(value):
                self._raise(
                    str(value), f"global step {trainer.global_step}", trainer.current_epoch, batch_idx
                )
            return
        bad = ~torch.isfinite(loss).all()
        self._flag = bad if self._flag is None else self._flag | bad
        if self._since is None:
            self._since = (trainer.global_step, trainer.current_epoch)
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check(trainer, batch_idx)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._check(trainer, None)

    def _check(self, trainer: Any, batch_idx: int | None) -> None:
        flag, since = self._flag, self._since
        self._flag, self._since = None, None
        if flag is not None and bool(flag) and since is not None:
            self._raise(
                "NaN or infinite",
                f"a step in global steps {since[0]}..{trainer.global_step}",
                since[1],
                batch_idx,
            )

    @staticmethod
    def _raise(value: str, where: str, epoch: int, batch_idx: int | None) -> None:
        batch = f", batch {batch_idx}" if batch_idx is not None else ""
        raise NonFiniteLossError(
            f"Training loss is {value} at {where} (epoch {epoch}{batch}); lower the learning rate or check "
            "the data. Not retried: it would diverge again."
        )


def checkpoint_dir(config: TrainConfig, run_key: str) -> str:
    """``<checkpoint_root>/<run_key>``: where the run's checkpoints are, found again by its key (a local
    root is made absolute: the result is read by other tasks, maybe from another working directory)."""
    root = config.checkpoint_root
    return join_uri(root if is_remote(root) else os.path.abspath(local_path(root)), run_key)


def without_userinfo(uri: str) -> str:
    """The URI without ``user:password@`` (results and artifacts must never carry credentials)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def build_model(config: TrainConfig) -> Any:
    """The LightningModule from its import path and keyword arguments."""
    return config.load_model_class()(**config.model_kwargs)


def build_datamodule(config: TrainConfig, prepared: RunData | None, **extra: Any) -> Any:
    """The run's data module: over the prepared splits of a table (plus the config's own arguments: batch
    size, ...), or the project's own from the config's arguments alone (``prepared`` is then its identity,
    or None)."""
    if config.data is None or prepared is None or prepared.kind != "table":
        return build_project_datamodule(config, **extra)
    clash = sorted(set(config.datamodule_kwargs) & set(PIPELINE_DATAMODULE_KEYS))
    if clash:
        raise ValueError(
            f"Expected datamodule_kwargs without {clash}: the pipeline sets them from the prepared data."
        )
    return _construct(config, {**prepared.datamodule_kwargs(), **config.datamodule_kwargs, **extra})


def build_project_datamodule(config: TrainConfig, **extra: Any) -> Any:
    """The project's own data module from ``datamodule_kwargs`` (plain values) alone."""
    return _construct(config, {**config.datamodule_kwargs, **extra})


def _construct(config: TrainConfig, kwargs: dict[str, Any]) -> Any:
    """A data module whose ``__init__`` takes ``seed`` gets the run's seed unless the config sets one.

    Arguments it does not take are refused here, naming them and what it takes, rather than by a
    ``TypeError`` from inside the user's ``__init__``."""
    cls = config.load_datamodule_class()
    parameters = inspect.signature(cls.__init__).parameters
    if "seed" not in kwargs and "seed" in parameters:
        kwargs["seed"] = config.seed
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(kwargs) - set(parameters)) if not takes_any else []
    if unknown:
        accepted = sorted(n for n, p in parameters.items() if n != "self" and p.kind is not p.VAR_POSITIONAL)
        raise TypeError(
            f"Expected datamodule_kwargs to be arguments of {config.datamodule}, received {unknown}; it takes "
            f"{accepted}."
        )
    return cls(**kwargs)


def build_logger(
    config: TrainConfig, run_key: str, log_model: bool = True, tags: dict[str, str] | None = None
) -> Any:
    """The MLflow logger of the run: found again by ``run_key``, so a retry continues the same run.

    The run is named for a person (the model, the data, the flow run's date: :func:`tasks.naming.run_name`,
    the flow run's own name); the ``run_key`` tag, not the name, is what finds it again. System metrics
    are sampled during the fit, every ``SYSTEM_METRICS_INTERVAL_S`` seconds on a thread of their own."""
    from lightning_lib.loggers import MLFlowLogger

    uri = tracking_uri(config)
    embedded = not config.mlflow.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI")
    return MLFlowLogger(
        experiment_name=config.mlflow.experiment_name,
        run_name=run_name(config),
        log_system_metrics=True,
        system_metrics_interval=SYSTEM_METRICS_INTERVAL_S,
        # the embedded store: the logger puts the SQLite file and the artifacts under save_dir
        tracking_uri=None if embedded else uri,
        save_dir=embedded_mlflow_dir(config.checkpoint_root),
        log_model=log_model,
        run_key=run_key,
        tags=tags,
    )


def build_trainer(config: TrainConfig, callbacks: list[Any], logger: Any) -> Any:
    """A Trainer with the config's arguments; the pipeline decides callbacks and logger."""
    import lightning_lib as pl

    kwargs = {k: v for k, v in config.trainer.to_kwargs().items() if v is not None}
    return pl.Trainer(**kwargs, callbacks=callbacks, logger=logger)


__all__ = [
    "SYSTEM_METRICS_INTERVAL_S",
    "FiniteLossGuard",
    "NonFiniteLossError",
    "build_datamodule",
    "build_logger",
    "build_model",
    "build_project_datamodule",
    "build_trainer",
    "checkpoint_dir",
    "without_userinfo",
]
