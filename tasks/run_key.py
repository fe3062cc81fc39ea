"""The run identity contract (DESIGN.md, *Run identity*): one ``run_key`` names a training run's
checkpoint folder and its MLflow run, so a retry continues both instead of starting over.

The key is the config's ``run_key`` when given. Otherwise it is derived from the *root* Prefect flow run:
a ``prefect flow-run retry`` keeps that id, and so does a retried parent pipeline whose training subflow
gets a new flow run id of its own. A digest of the config is part of the key, so two different trainings
inside one pipeline never share checkpoints, while a retry (same parameters) lands on the same key.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid

from tasks.config import TrainConfig

log = logging.getLogger(__name__)


def config_digest(config: TrainConfig) -> str:
    """A short digest of everything in the config but the run key itself."""
    payload = config.model_dump_json(exclude={"run_key"})
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def root_flow_run_id() -> str | None:
    """The id of the outermost flow run this code runs in, or None outside Prefect."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    from prefect.runtime import flow_run

    try:
        root = flow_run.root_flow_run_id
    except Exception as exc:  # an API hiccup: the own id is the next best stable choice
        log.warning("Could not look up the root flow run (%s); using this flow run's id.", exc)
        root = None
    return str(root or context.flow_run.id)


def run_key_of_flow_run(config: TrainConfig, prefix: str, root_flow_run_id: str) -> str:
    """The key :func:`derive_run_key` gives ``config`` inside the root flow run ``root_flow_run_id``
    (``config.run_key`` when given): what a caller outside the run (the CLI) names to continue it."""
    return config.run_key or f"{prefix}-{root_flow_run_id}-{config_digest(config)}"


def derive_run_key(config: TrainConfig, prefix: str = "run") -> str:
    """``config.run_key``, else ``<prefix>-<root flow run id>-<config digest>``, else a fresh unique key."""
    if config.run_key:
        return config.run_key
    root = root_flow_run_id()
    if root is not None:
        return run_key_of_flow_run(config, prefix, root)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}"


__all__ = ["config_digest", "derive_run_key", "root_flow_run_id", "run_key_of_flow_run"]
