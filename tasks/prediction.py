"""The ``predict`` task: score a table with a checkpoint and write the predictions to Parquet.

The checkpoint describes itself: its data module's hyper-parameters name the feature columns and the
target, and its data module state holds the training statistics, so scoring applies exactly the
preprocessing the model was trained with. The output keeps every input column (ids included) and adds
``prediction``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

import lightning_lib as pl
from lightning_lib.checkpoint import load_file
from lightning_lib.storage import join_uri, open_store, split_uri
from tasks.config import TrainConfig, table_format
from tasks.data import read_uri
from tasks.retry import retrying
from tasks.tabular import DataValidationError, check_features, parse_table, to_parquet_bytes

PREDICTION_COLUMN = "prediction"


class PredictionResult(BaseModel):
    """Where the predictions are, their digest and row count, and what produced them."""

    model_config = ConfigDict(frozen=True)

    uri: str
    sha256: str
    rows: int
    source: str
    input_sha256: str
    checkpoint_uri: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_columns(checkpoint: dict[str, Any], config: TrainConfig) -> tuple[list[str], str]:
    """The feature columns and target the checkpoint was trained on (the config's when it does not say)."""
    hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    features = hparams.get("features") or config.data.features
    if not features:
        raise LookupError(
            "The checkpoint does not name its feature columns (no data module hyper-parameters) and the "
            "config's data.features is empty: set data.features to score with it."
        )
    return list(features), str(hparams.get("target") or config.data.target)


def default_output_uri(config: TrainConfig, input_sha256: str, checkpoint_uri: str) -> str:
    """``<data_root>/predictions/<digest of input and model>/predictions.parquet``: one place per pair."""
    key = _sha256(f"{input_sha256}:{checkpoint_uri}".encode())[:24]
    return join_uri(config.prepared_data_root(), "predictions", key, "predictions.parquet")


def score(
    config: TrainConfig, checkpoint_uri: str, source: str, output_uri: str | None = None
) -> PredictionResult:
    """Predict every row of ``source`` (CSV or Parquet, local or S3) with the checkpoint."""
    fmt = table_format(source)
    if fmt is None:
        raise DataValidationError(
            f"Expected the table to score to end in .csv, .parquet or .pq, received {source!r}."
        )
    checkpoint = load_file(checkpoint_uri)  # verified and weights_only=True, before any scoring work
    features, target = checkpoint_columns(checkpoint, config)
    raw = read_uri(source)
    digest = _sha256(raw)
    frame = parse_table(raw, fmt, source)
    check_features(frame, features, source)

    # The data module reads URIs: the checked feature columns go to a content-addressed Parquet file.
    inputs = to_parquet_bytes(frame[features].reset_index(drop=True))
    inputs_uri = join_uri(config.prepared_data_root(), "scoring", _sha256(inputs)[:24], "inputs.parquet")
    _put(inputs_uri, inputs)

    datamodule = config.load_datamodule_class()(
        features=features, target=target, predict_uri=inputs_uri, **config.datamodule_kwargs
    )
    model = config.load_model_class().load_from_checkpoint(checkpoint_uri)
    trainer = pl.Trainer(
        accelerator=config.trainer.accelerator,
        devices=1,  # one process: every row scored once, in order (see evaluate_checkpoint)
        precision=config.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    batches = trainer.predict(model, datamodule=datamodule, ckpt_path=checkpoint_uri) or []
    predictions = (
        torch.cat([torch.as_tensor(b).reshape(len(b), -1) for b in batches]) if batches else torch.empty(0, 1)
    )
    if len(predictions) != len(frame):
        raise RuntimeError(f"Expected {len(frame)} predictions, the model returned {len(predictions)}.")
    out = frame.reset_index(drop=True).copy()
    values = predictions.cpu().numpy()
    if values.shape[1] == 1:
        out[PREDICTION_COLUMN] = values[:, 0]
    else:
        for i in range(values.shape[1]):
            out[f"{PREDICTION_COLUMN}_{i}"] = values[:, i]
    payload = to_parquet_bytes(out)
    uri = output_uri or default_output_uri(config, digest, checkpoint_uri)
    _put(uri, payload)
    return PredictionResult(
        uri=uri,
        sha256=_sha256(payload),
        rows=len(out),
        source=source,
        input_sha256=digest,
        checkpoint_uri=checkpoint_uri,
    )


def _put(uri: str, payload: bytes) -> None:
    root, name = split_uri(uri)
    open_store(root).put_bytes(name, payload)


@task(name="predict", **retrying(cache_policy=NO_CACHE, result_serializer="json"))
def predict(
    config: TrainConfig, checkpoint_uri: str, source: str, output_uri: str | None = None
) -> PredictionResult:
    """Prefect task around :func:`score`."""
    return score(config, checkpoint_uri, source, output_uri)


__all__ = [
    "PREDICTION_COLUMN",
    "PredictionResult",
    "checkpoint_columns",
    "default_output_uri",
    "predict",
    "score",
]
