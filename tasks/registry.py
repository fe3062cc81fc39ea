"""``register`` and ``promote``: the MLflow Model Registry side of the pipeline.

A registered version carries, as tags, what the pipeline needs to use it again without the run: the
checkpoint it came from (for batch scoring and warm starts), its run key and its test metrics. The
``champion`` alias names the model that serves; a challenger takes it only by beating it on the same
test data (:func:`decide`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.config import TrainConfig
from tasks.retry import retrying
from tasks.run_data import RunData
from tasks.tracking import tracking_uri
from tasks.training import FitResult, deliver_pending

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_CHECKPOINT = "checkpoint_uri"
TAG_RUN_KEY = "run_key"
METRIC_TAG_PREFIX = "metric."


class ModelVersionRef(BaseModel):
    """One registered version: enough to score with it, warm-start from it, or compare against it."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str
    checkpoint_uri: str
    model_uri: str
    metrics: dict[str, float]


class PromotionDecision(BaseModel):
    """Whether the challenger becomes champion, and why, in numbers."""

    model_config = ConfigDict(frozen=True)

    promote: bool
    reason: str
    metric: str
    mode: Literal["min", "max"]
    challenger_value: float
    champion_value: float | None


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def _ref(version: Any) -> ModelVersionRef:
    tags = dict(version.tags or {})
    checkpoint = tags.get(TAG_CHECKPOINT)
    if not checkpoint:
        raise LookupError(
            f"Model {version.name!r} version {version.version} has no {TAG_CHECKPOINT!r} tag: it was not "
            "registered by this pipeline, so there is no checkpoint to score or warm-start from."
        )
    metrics = {
        k[len(METRIC_TAG_PREFIX) :]: float(v) for k, v in tags.items() if k.startswith(METRIC_TAG_PREFIX)
    }
    return ModelVersionRef(
        name=version.name,
        version=str(version.version),
        run_id=str(version.run_id),
        checkpoint_uri=checkpoint,
        model_uri=f"models:/{version.name}/{version.version}",
        metrics=metrics,
    )


def register_model(
    config: TrainConfig,
    fit_result: FitResult,
    metrics: dict[str, float],
    name: str | None = None,
    prepared: RunData | None = None,
) -> ModelVersionRef:
    """Register the model ``fit`` logged, tagged with its checkpoint, run key and ``metrics``.

    When the fit could not deliver everything to MLflow (the server was away at its end), that is
    delivered first and the model is logged from the best checkpoint (:func:`tasks.training.deliver_pending`;
    ``prepared`` gives it the input example). An MLflow outage here raises a transient error: the task
    is retried.
    """
    from mlflow.exceptions import MlflowException

    name = name or config.mlflow.registered_model_name
    if not name:
        raise ValueError("Expected mlflow.registered_model_name to register a model, received none.")
    if fit_result.pending is not None or fit_result.model_uri is None:
        fit_result = deliver_pending(config, fit_result, prepared)
    if fit_result.model_uri is None:
        raise LookupError(
            f"MLflow run {fit_result.mlflow_run_id} has no logged model to register (logging it failed; "
            "see the fit task's log)."
        )
    tags = {TAG_CHECKPOINT: fit_result.best_checkpoint_uri, TAG_RUN_KEY: fit_result.run_key}
    tags.update({f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
    client = _client(tracking_uri(config))
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    # The client, not mlflow.register_model: the fluent API works on process-wide tracking settings, and
    # each task of a flow may talk to its own store.
    # The source is given as the logged model's storage location: a "models:/" source makes a SQL store
    # look the model up through the process-wide tracking URI, which may be another store.
    source, model_id = fit_result.model_uri, None
    if source.startswith("models:/m-"):
        model_id = source.removeprefix("models:/")
        source = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(
        name, source=source, run_id=fit_result.mlflow_run_id, tags=tags, model_id=model_id
    )
    return _ref(client.get_model_version(name, version.version))


def get_alias(uri: str, name: str, alias: str = CHAMPION) -> ModelVersionRef | None:
    """The version an alias points at, or None when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        version = _client(uri).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in (
            "RESOURCE_DOES_NOT_EXIST",
            "NOT_FOUND",
            "INVALID_PARAMETER_VALUE",
        ):
            return None
        raise
    return _ref(version)


def registered_models(uri: str) -> dict[str, list[str]]:
    """Every registered model at ``uri`` with its aliases (sorted), to say what exists when a name is
    not found."""
    client = _client(uri)
    found: dict[str, list[str]] = {}
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        for model in page:
            found[model.name] = sorted(getattr(model, "aliases", None) or {})
        token = page.token
        if not token:
            return found


def set_alias(uri: str, ref: ModelVersionRef, alias: str = CHAMPION) -> None:
    """Point ``alias`` of the registered model at ``ref``."""
    _client(uri).set_registered_model_alias(ref.name, alias, ref.version)


def decide(
    metric: str,
    mode: Literal["min", "max"],
    challenger: dict[str, float],
    champion: dict[str, float] | None,
) -> PromotionDecision:
    """Promote when there is no champion or the challenger is strictly better on ``metric``; a tie keeps
    the champion (a new model must earn its place), and a non-finite challenger never wins."""
    if metric not in challenger:
        raise ValueError(
            f"Expected the challenger's metrics to include {metric!r}, received {sorted(challenger)}."
        )
    new = float(challenger[metric])
    if champion is None:
        return PromotionDecision(
            promote=math.isfinite(new),
            reason="no champion yet" if math.isfinite(new) else f"challenger {metric} is {new}",
            metric=metric,
            mode=mode,
            challenger_value=new,
            champion_value=None,
        )
    if metric not in champion:
        raise ValueError(
            f"Expected the champion's metrics to include {metric!r}, received {sorted(champion)}."
        )
    old = float(champion[metric])
    better = math.isfinite(new) and (not math.isfinite(old) or (new < old if mode == "min" else new > old))
    relation = "better" if better else "not better"
    return PromotionDecision(
        promote=better,
        reason=f"challenger {metric}={new:.6g} is {relation} than champion {metric}={old:.6g} ({mode} wins)",
        metric=metric,
        mode=mode,
        challenger_value=new,
        champion_value=old,
    )


_RETRYING = retrying(cache_policy=NO_CACHE, result_serializer="json")


@task(name="register", **_RETRYING)
def register(
    config: TrainConfig,
    fit_result: FitResult,
    metrics: dict[str, float],
    name: str | None = None,
    prepared: RunData | None = None,
) -> ModelVersionRef:
    """Prefect task around :func:`register_model`."""
    return register_model(config, fit_result, metrics, name, prepared)


@task(name="promote", **_RETRYING)
def promote(
    config: TrainConfig,
    challenger: ModelVersionRef,
    decision: PromotionDecision,
) -> ModelVersionRef | None:
    """Move ``champion`` to the challenger when the decision says so (``challenger`` always points at it).

    Returns the champion afterwards.
    """
    uri = tracking_uri(config)
    set_alias(uri, challenger, CHALLENGER)
    if decision.promote:
        set_alias(uri, challenger, CHAMPION)
        return challenger
    return get_alias(uri, challenger.name, CHAMPION)


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ModelVersionRef",
    "PromotionDecision",
    "decide",
    "get_alias",
    "promote",
    "register",
    "register_model",
    "registered_models",
    "set_alias",
]
