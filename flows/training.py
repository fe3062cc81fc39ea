"""The ``training`` flow: prepare -> fit -> validate -> test -> register.

Callable on its own (CLI, deployment, UI form) and as a subflow of a user's larger pipeline: it returns a
:class:`TrainingResult` of URIs, metrics and ids that downstream steps consume. A retry of the flow run,
or a re-run with the same ``run_key``, resumes the fit from its last committed checkpoint and continues
the same MLflow run; prepared data is reused when the source and split are unchanged.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict

from flows.summary import bullet_list, metrics_table, mlflow_lines
from tasks.config import TrainConfig
from tasks.follow import say
from tasks.naming import training_run_name
from tasks.registry import CHAMPION, ModelVersionRef, get_alias, register, set_alias
from tasks.run_data import RunData, run_data_task
from tasks.run_key import derive_run_key
from tasks.tracking import tracking_uri
from tasks.training import FitResult, deliver, fit, require_evaluation_steps, test, validate

# the derived run keys of this flow's runs start with it (the CLI names them to continue an interrupted run)
RUN_KEY_PREFIX = "training"


class TrainingResult(BaseModel):
    """What the flow hands downstream; every location is a URI, never an object."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    prepared: RunData
    fit: FitResult
    validation_metrics: dict[str, float]
    test_metrics: dict[str, float]
    model_version: ModelVersionRef | None
    champion: bool
    flow_run_id: str | None = None

    @property
    def checkpoint_uri(self) -> str:
        return self.fit.best_checkpoint_uri

    @property
    def mlflow_run_id(self) -> str:
        return self.fit.mlflow_run_id


def summary_markdown(result: TrainingResult) -> str:
    fitted = result.fit
    lines = [
        f"# Training run `{result.run_key}`",
        "",
        f"{fitted.global_step} optimizer steps over {fitted.epochs} epochs"
        + (f"; this attempt resumed from `{fitted.resumed_from}`" if fitted.resumed_from else "")
        + f" and trained {fitted.steps_this_attempt} steps.",
        "",
        metrics_table(
            {"fit": fitted.metrics, "validate": result.validation_metrics, "test": result.test_metrics}
        ),
        "",
        bullet_list("Checkpoints", fitted.checkpoint_uris),
        "",
        f"- Best checkpoint: `{fitted.best_checkpoint_uri}`",
        f"- Data: {result.prepared.describe()} (dataset {result.prepared.dataset_id})",
        *mlflow_lines(fitted.tracking_uri, fitted.mlflow_experiment_id, fitted.mlflow_run_id),
    ]
    if result.model_version is not None:
        version = result.model_version
        lines.append(
            f"- Registered: `{version.name}` version {version.version}"
            + (" (champion)" if result.champion else "")
        )
    return "\n".join(lines)


@flow(
    name="training",
    flow_run_name=training_run_name,
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def training(config: TrainConfig, register_model: bool = True) -> TrainingResult:
    """Train, evaluate and register a model described by ``config``.

    The first version registered under a name also becomes its ``champion``; later ones are promoted by
    the ``retraining`` flow only when they beat it.

    Args:
        config: The training run: model, data, Trainer arguments, checkpoints and MLflow tracking.
        register_model: Register the trained model under `mlflow.registered_model_name` (when that is
            set); the first version registered under a name becomes its `champion`.
    """
    # a tracking URI the worker's MLflow credentials must not reach, or a model the flow could not evaluate,
    # is refused before any work
    tracking_uri(config)
    require_evaluation_steps(config, "training")
    run_key = derive_run_key(config, RUN_KEY_PREFIX)
    prepared = run_data_task(config)
    fitted = fit(config, prepared, run_key)
    # the metrics go straight to the fit's MLflow run (no second logger re-opening and ending it)
    validation = validate(config, prepared, fitted.best_checkpoint_uri, run_key, fitted.mlflow_run_id)
    tested = test(config, prepared, fitted.best_checkpoint_uri, run_key, fitted.mlflow_run_id)
    if fitted.pending is not None or fitted.model_uri is None:
        # MLflow was away at the end of the fit (training itself succeeded): deliver what it missed and
        # log the model from the checkpoint now, retried while the server is still away
        fitted = deliver(config, fitted, prepared)
    version: ModelVersionRef | None = None
    champion = False
    if register_model and config.mlflow.registered_model_name:
        version = register(config, fitted, tested.metrics, prepared=prepared)
        say("Registered %s version %s from MLflow run %s.", version.name, version.version, version.run_id)
        uri = tracking_uri(config)
        current = get_alias(uri, version.name, CHAMPION)
        if current is None:
            set_alias(uri, version, CHAMPION)
            champion = True
            say("Promoted %s version %s to %s: the first version of the model.", version.name,
                version.version, CHAMPION)  # fmt: skip
        else:
            say("Kept %s version %s as %s: the training flow promotes only a first version (the retraining "
                "flow compares a challenger with the champion).", current.name, current.version, CHAMPION)  # fmt: skip
    result = TrainingResult(
        run_key=run_key,
        prepared=prepared,
        fit=fitted,
        validation_metrics=validation.metrics,
        test_metrics=tested.metrics,
        model_version=version,
        champion=champion,
        flow_run_id=flow_run.get_id(),
    )
    create_markdown_artifact(
        summary_markdown(result), key="training-summary", description=f"Training {run_key}"
    )
    return result


__all__ = ["RUN_KEY_PREFIX", "TrainingResult", "summary_markdown", "training"]
