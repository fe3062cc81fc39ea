"""The ``predict`` flow: batch scoring with the registered champion (or any alias or version).

The version's tags name its checkpoint; its MLflow run's params give back the config it was trained
with (model class, data module), so scoring needs nothing but the model's name and the table.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from tasks.naming import flow_parameter, last_segment, name_or_fallback, readable_name, scheduled_time
from tasks.prediction import PredictionResult, predict
from tasks.registry import CHAMPION, ModelVersionRef, get_alias, registered_models
from tasks.runs import read_run
from tasks.tracking import resolve_tracking_uri


@task(name="resolve_model", cache_policy=NO_CACHE, result_serializer="json")
def resolve_model(tracking_uri: str, model_name: str, alias: str) -> ModelVersionRef:
    """The version ``alias`` points at; a clear error when there is none yet."""
    ref = get_alias(tracking_uri, model_name, alias)
    if ref is not None:
        return ref
    models = registered_models(tracking_uri)
    if model_name not in models:
        # a typo is the likely cause: name what does exist, nearest first
        close = difflib.get_close_matches(model_name, list(models), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        names = ", ".join(sorted(models)) if models else "none yet (train one first)"
        raise LookupError(
            f"No registered model {model_name!r} at {tracking_uri}; registered models: {names}.{hint}"
        )
    aliases = ", ".join(repr(a) for a in models[model_name]) or "none"
    raise LookupError(
        f"Registered model {model_name!r} has no {alias!r} alias at {tracking_uri} (its aliases: {aliases}): "
        "train one first (the first version registered by the training flow becomes the champion)."
    )


# model_name has no default in the schema Prefect builds, so the form marks it required and the API refuses
# a run without it up front; in Python it stays the second argument, after the optional source, and a call
# without it is refused by the flow's own check
_REQUIRED: Any = Field()


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
    model_name: Annotated[str, Field(min_length=1)] = _REQUIRED,
    alias: Annotated[str, Field(min_length=1)] = CHAMPION,
    output_uri: str | None = None,
    tracking_uri: str | None = None,
    datamodule_kwargs: dict[str, Any] | None = None,
) -> PredictionResult:
    """Score with ``model_name@alias``, writing Parquet: the table ``source`` (CSV or Parquet, local or
    ``s3://``) for a model trained on a table; for a model trained on its project's own data module, its
    ``predict_dataloader`` (``datamodule_kwargs`` laid over the training config's point it at new data).

    ``source``, the data module's declared sources when ``datamodule_kwargs`` are given, and ``output_uri``
    must lie under the worker's data roots (``LIGHTNING_LIB_DATA_ROOTS``, else the working directory; the
    model's own data root never adds to them). Without ``output_uri`` a table's predictions go next to it
    (``<source folder>/<source stem>.predictions.parquet``) and a data module's under the model's data root,
    which must then lie there too. The output never replaces a file that predict did not write (see
    ``tasks.prediction``): all refused before scoring. The model version that scored is printed
    and recorded in the result, the artifact and the output's footer.

    Args:
        source: The table to score (CSV or Parquet, a local path or an `s3://` URI); `None` for a model
            trained on its project's own data module, which scores its `predict_dataloader`.
        model_name: The registered model to score with.
        alias: The alias of the version that scores (`champion` by default).
        output_uri: Where the Parquet predictions go; `None` means next to a table source
            (`<folder>/<stem>.predictions.parquet`), or under the model's data root for a data module.
        tracking_uri: The MLflow server that has the model; `None` means `MLFLOW_TRACKING_URI`, else the
            local SQLite file.
        datamodule_kwargs: Arguments laid over the training config's `datamodule_kwargs` to point the
            project's data module at new data; `None` keeps the training config's.
    """
    if not isinstance(model_name, str) or not model_name:
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
