"""The ``predict`` flow: batch scoring with the registered champion (or any alias or version).

The version's tags name its checkpoint; its MLflow run's params give back the config it was trained
with (model class, data module), so scoring needs nothing but the model's name and the table.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.naming import flow_parameter, last_segment, name_or_fallback, readable_name, scheduled_time
from tasks.prediction import PredictionResult, predict
from tasks.registry import CHAMPION, ModelVersionRef, get_alias
from tasks.runs import read_run
from tasks.tracking import resolve_tracking_uri


@task(name="resolve_model", cache_policy=NO_CACHE, result_serializer="json")
def resolve_model(tracking_uri: str, model_name: str, alias: str) -> ModelVersionRef:
    """The version ``alias`` points at; a clear error when there is none yet."""
    ref = get_alias(tracking_uri, model_name, alias)
    if ref is None:
        raise LookupError(
            f"Registered model {model_name!r} has no {alias!r} alias at {tracking_uri}: train one first "
            "(the first version registered by the training flow becomes the champion)."
        )
    return ref


def predict_run_name() -> str:
    """``flow_run_name`` of the predict flow: the model and alias, the input and the date."""

    def make() -> str:
        source = flow_parameter("source")
        data = last_segment(str(source)) if source else "datamodule"
        model = f"{flow_parameter('model_name') or 'model'}@{flow_parameter('alias') or CHAMPION}"
        return readable_name(model, data, scheduled_time())

    return name_or_fallback("predict", make)


@flow(
    name="predict",
    flow_run_name=predict_run_name,
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def predict_flow(
    source: str | None = None,
    model_name: str = "",
    alias: str = CHAMPION,
    output_uri: str | None = None,
    tracking_uri: str | None = None,
    datamodule_kwargs: dict[str, Any] | None = None,
) -> PredictionResult:
    """Score with ``model_name@alias``, writing Parquet: the table ``source`` (CSV or Parquet, local or
    ``s3://``) for a model trained on a table; for a model trained on its project's own data module, its
    ``predict_dataloader`` (``datamodule_kwargs`` laid over the training config's point it at new data).

    ``source``, the data module's declared sources when ``datamodule_kwargs`` are given, and ``output_uri``
    must lie under the worker's data roots (``LIGHTNING_LIB_DATA_ROOTS``, else the working directory; the
    model's own data root never adds to them), without ``output_uri`` the model's data root must lie there
    too (the default output goes under it), and ``output_uri`` never replaces a file that predict did not
    write (see ``tasks.prediction``): all refused before scoring. The model version that scored is printed
    and recorded in the result, the artifact and the output's footer."""
    if not model_name:
        raise ValueError("Expected model_name, the registered model to score with, received none.")
    uri = resolve_tracking_uri(tracking_uri)
    model = resolve_model(uri, model_name, alias)
    config = read_run(uri, model.run_id).config
    scored_by = f"{model_name} version {model.version} ({alias})"
    print(f"Scoring with {scored_by}, checkpoint {model.checkpoint_uri}.")
    result = predict(config, model.checkpoint_uri, source, output_uri, datamodule_kwargs, scored_by)
    print(f"Wrote {result.rows} predictions to {result.uri} with {scored_by}.")
    create_markdown_artifact(
        f"# Predictions with `{model_name}@{alias}` (version {model.version})\n\n"
        f"- Input: `{result.source}` (sha256 {result.input_sha256 or 'not fingerprinted'})\n"
        f"- Output: `{result.uri}` ({result.rows} rows, sha256 {result.sha256})\n"
        f"- Checkpoint: `{model.checkpoint_uri}`",
        key="predict-summary",
    )
    return result


__all__ = ["predict_flow", "predict_run_name", "resolve_model"]
