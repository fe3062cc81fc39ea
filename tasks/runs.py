"""A past MLflow run of the pipeline, read back: its config, code version, data digest and metrics.

``reproduce`` compares these with what would run now; ``retraining`` rebuilds the champion's config to
evaluate it exactly as it was trained.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from lightning_lib.loggers.mlflow import TAG_GIT_COMMIT, TAG_GIT_DIRTY, git_tags
from tasks.config import TrainConfig
from tasks.training import TAG_INPUT_SHA256


class RunRecord(BaseModel):
    """What reproduction needs from a past run."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str
    config: TrainConfig
    git_commit: str | None
    git_dirty: bool | None
    input_sha256: str | None
    metrics: dict[str, float]
    status: str = "FINISHED"  # MLflow's: FINISHED, FAILED, KILLED, RUNNING, SCHEDULED


class CodeVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    git_commit: str | None
    git_dirty: bool | None


def _dirty(value: str | None) -> bool | None:
    return None if value is None else value == "true"


def read_run(tracking_uri: str, run_id: str) -> RunRecord:
    """Read the run; its ``config.*`` params must rebuild a valid ``TrainConfig`` (allowed prefixes too)."""
    from mlflow import MlflowClient

    run: Any = MlflowClient(tracking_uri).get_run(run_id)
    params = dict(run.data.params)
    if not any(name.startswith("config.") for name in params):
        raise LookupError(
            f"MLflow run {run_id} has no 'config.*' params: it was not started by this pipeline, so there "
            "is no configuration to reproduce it from."
        )
    tags = dict(run.data.tags)
    return RunRecord(
        run_id=run_id,
        experiment_id=str(run.info.experiment_id),
        config=TrainConfig.from_flat_params(params),
        git_commit=tags.get(TAG_GIT_COMMIT),
        git_dirty=_dirty(tags.get(TAG_GIT_DIRTY)),
        input_sha256=tags.get(TAG_INPUT_SHA256),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        status=str(run.info.status),
    )


def current_code_version() -> CodeVersion:
    """The commit and dirty flag of the project in the working directory (as the logger tags them)."""
    tags = git_tags()
    return CodeVersion(git_commit=tags.get(TAG_GIT_COMMIT), git_dirty=_dirty(tags.get(TAG_GIT_DIRTY)))


def run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    from mlflow import MlflowClient

    return {k: float(v) for k, v in MlflowClient(tracking_uri).get_run(run_id).data.metrics.items()}


__all__ = ["CodeVersion", "RunRecord", "current_code_version", "read_run", "run_metrics"]
