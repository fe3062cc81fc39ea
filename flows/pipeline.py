"""An example of training as one stage of a larger pipeline: land data -> train -> score.

The upstream step stands for whatever produces the table in a user's pipeline (an extract, a feature
job); here it copies the raw source into a content-addressed landing area. ``training`` runs as a
subflow and its typed result feeds batch scoring, so downstream steps use URIs, never objects.
"""

from __future__ import annotations

import hashlib

from prefect import flow, task
from pydantic import BaseModel, ConfigDict

from flows.training import TrainingResult, training
from lightning_lib.storage import join_uri, open_store, split_uri
from tasks.config import TrainConfig
from tasks.data import read_uri
from tasks.prediction import PredictionResult, predict
from tasks.retry import retrying


class PipelineResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    landed_uri: str
    training: TrainingResult
    predictions: PredictionResult


@task(name="land_data", **retrying(result_serializer="json"))
def land_data(source: str, landing_root: str) -> str:
    """Copy the source into ``<landing_root>/<sha256>/<name>``; the same bytes always land in one place."""
    raw = read_uri(source)
    name = source.rstrip("/").rsplit("/", 1)[-1]
    uri = join_uri(landing_root, hashlib.sha256(raw).hexdigest()[:24], name)
    root, key = split_uri(uri)
    open_store(root).put_bytes(key, raw)
    return uri


@flow(name="example-pipeline", persist_result=True, result_serializer="json", log_prints=True)
def example_pipeline(config: TrainConfig, score_source: str | None = None) -> PipelineResult:
    """Land the config's source, train on it (subflow), then score ``score_source`` (default: the landed
    table) with the model just trained.

    Args:
        config: The training run; its table (`data.source`) is landed first and trained on.
        score_source: The table to score with the model just trained; `None` means the landed table.
    """
    landed = land_data(config.table().source, join_uri(config.prepared_data_root(), "landing"))
    data = config.model_dump(mode="json")
    data["data"]["source"] = landed
    trained = training(TrainConfig.model_validate(data))
    scored = predict(config, trained.checkpoint_uri, score_source or landed)
    print(f"Scored {scored.rows} rows into {scored.uri} with {trained.checkpoint_uri}.")
    return PipelineResult(landed_uri=landed, training=trained, predictions=scored)


__all__ = ["PipelineResult", "example_pipeline", "land_data"]
