"""Where a run is tracked, and how a person opens it.

One rule for every task and flow, so that ``fit``, ``register`` and ``reproduce`` always talk to the
same store: the config's ``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file
beside the checkpoint root (the embedded default: no server needed).
"""

from __future__ import annotations

import os
from urllib.parse import quote

from lightning_lib.storage import is_remote, local_path
from tasks.config import TrainConfig

EMBEDDED_MLFLOW_DIR = "mlflow"


DEFAULT_CHECKPOINT_ROOT = "runs/checkpoints"


def embedded_mlflow_dir(checkpoint_root: str = DEFAULT_CHECKPOINT_ROOT) -> str:
    """The local folder of the embedded MLflow store: ``mlflow`` beside a local checkpoint root, else
    ``runs/mlflow`` under the working directory (checkpoints in S3 still track locally by default)."""
    root = checkpoint_root.rstrip("/")
    if is_remote(root):
        return os.path.abspath(os.path.join("runs", EMBEDDED_MLFLOW_DIR))
    parent = os.path.dirname(os.path.abspath(local_path(root)))
    return os.path.join(parent, EMBEDDED_MLFLOW_DIR)


def resolve_tracking_uri(explicit: str | None = None, checkpoint_root: str = DEFAULT_CHECKPOINT_ROOT) -> str:
    """``explicit``, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store."""
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{embedded_mlflow_dir(checkpoint_root)}/mlflow.db"


def tracking_uri(config: TrainConfig) -> str:
    """The tracking URI every task of this run uses."""
    return resolve_tracking_uri(config.mlflow.tracking_uri, config.checkpoint_root)


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def run_url(uri: str, experiment_id: str, run_id: str, ui_address: str = "http://127.0.0.1:5000") -> str:
    """The run's page: on the tracking server itself, or on ``mlflow ui`` for a local store."""
    base = uri.rstrip("/") if is_http(uri) else ui_address
    return f"{base}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"


def ui_command(uri: str) -> str | None:
    """The command that opens the MLflow UI on a local store (None for a server: it has its own UI)."""
    if is_http(uri):
        return None
    return f"mlflow ui --backend-store-uri {uri}"


__all__ = [
    "DEFAULT_CHECKPOINT_ROOT",
    "embedded_mlflow_dir",
    "is_http",
    "resolve_tracking_uri",
    "run_url",
    "tracking_uri",
    "ui_command",
]
