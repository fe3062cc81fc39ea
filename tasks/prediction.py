"""The ``predict`` task: score a table with a checkpoint and write the predictions to Parquet.

The checkpoint describes itself: its data module's hyper-parameters name the feature columns and the
target, and its data module state holds the training statistics, so scoring applies exactly the
preprocessing the model was trained with. The output keeps every input column (ids included) and adds
``prediction``.

Where it reads and writes (issue 14): ``source`` and ``output_uri`` are parameters a UI form or an API
call sets, so the worker only reads and writes under its data roots: the comma-separated local folders
and ``s3://bucket/prefix`` URIs of ``LIGHTNING_LIB_DATA_ROOTS``, which the deployment sets; without it,
the working directory (the project, for ``lightning-lib predict data/new.csv``). Local paths are compared
after resolving ``..`` and symbolic links. A table's predictions go, without ``output_uri``, next to it
(``data/new.csv`` -> ``data/new.predictions.parquet``, local or S3), where the user looks for them; that
name passes the same checks as an ``output_uri``. The model's own data root (``data.data_root`` of its
training config, where the default output of a project's data module goes) never widens the roots: that
config was itself a parameter, and a model trained with ``data.data_root="/"`` would otherwise open the
whole machine. So that default is used only when the model's data root lies under the data roots;
otherwise predict is refused up front and asks for an ``output_uri`` (``--output``) there. The scored
columns are staged in a private temporary folder of the worker, not under the model's data root. The output must be a ``.parquet`` (or ``.pq``) name, and a
file already there is replaced only when predict wrote it (its Parquet footer carries
:data:`OUTPUT_MARKER`): a config, a data file or anything else the worker may write is never replaced.
Both are checked before the checkpoint is loaded or anything is scored, and again just before writing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

import lightning_lib as pl
from lightning_lib.checkpoint import load_file
from lightning_lib.storage import is_remote, join_uri, local_path, open_store, parse_s3_uri, split_uri
from tasks.config import TrainConfig, table_format
from tasks.data import read_source
from tasks.retry import retrying
from tasks.tabular import DataValidationError, check_features, parse_table, to_parquet_bytes

PREDICTION_COLUMN = "prediction"
DATA_ROOTS_ENV = "LIGHTNING_LIB_DATA_ROOTS"
OUTPUT_MARKER = b"lightning_lib.predictions"  # a Parquet footer key: "predict wrote this file"
_ROOTS_HINT = (
    f"The deployment allows more with {DATA_ROOTS_ENV} (comma-separated folders or s3://bucket/prefix URIs)."
)


class PredictionRefused(ValueError):
    """A source or an output outside what predict may read or replace (never retried)."""


def data_roots() -> list[str]:
    """Where predict may read and write: the deployment's ``LIGHTNING_LIB_DATA_ROOTS``, else the working
    directory. Nothing from a parameter or a model's config adds to them (see the module docstring)."""
    configured = [r.strip() for r in os.environ.get(DATA_ROOTS_ENV, "").split(",") if r.strip()]
    return configured or [os.getcwd()]


def check_default_output_root(config: TrainConfig, roots: list[str]) -> None:
    """Refuse, before any work, a default output (no ``output_uri``) whose folder, under the model's data
    root, lies outside ``roots``."""
    folder = join_uri(config.prepared_data_root(), "predictions")
    if not any(_under(folder, root) for root in roots):
        raise PredictionRefused(
            f"Refusing the default output under the model's data root {config.prepared_data_root()!r} "
            f"(from its training config): expected it under the data roots {roots}, received "
            f"{folder!r}. Give an output_uri (--output) under the data roots. {_ROOTS_HINT}"
        )


def _under(uri: str, root: str) -> bool:
    if is_remote(uri) != is_remote(root):
        return False
    if is_remote(uri):
        bucket, key = parse_s3_uri(uri)
        root_bucket, prefix = parse_s3_uri(root)
        prefix = prefix.strip("/")
        return bucket == root_bucket and (not prefix or key.startswith(prefix + "/"))
    path = os.path.realpath(local_path(uri))
    folder = os.path.realpath(local_path(root))
    return os.path.commonpath([path, folder]) == folder


def check_allowed(role: str, uri: str, roots: list[str]) -> None:
    """Refuse ``uri`` unless it lies under one of ``roots``; ``role`` names it in the error."""
    if is_remote(uri) and ".." in parse_s3_uri(uri)[1].split("/"):
        raise PredictionRefused(
            f"Expected the {role} to name an object without '..' segments, received {uri!r}."
        )
    if not any(_under(uri, root) for root in roots):
        raise PredictionRefused(
            f"Refusing the {role} {uri!r}: expected a path under the data roots {roots}. {_ROOTS_HINT}"
        )


def check_output(uri: str, roots: list[str]) -> None:
    """The output may be created, or replace a predictions file predict wrote, and nothing else."""
    if table_format(uri) != "parquet":
        raise PredictionRefused(
            f"Expected the output to be a .parquet or .pq name (predictions are Parquet), received {uri!r}."
        )
    check_allowed("output", uri, roots)
    existing: bytes | None = None
    if is_remote(uri):
        root, name = split_uri(uri)
        store = open_store(root)
        if store.exists(name):
            existing = store.get_bytes(name)
    else:
        path = local_path(uri)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            raise PredictionRefused(
                f"Refusing to write predictions to {uri!r}: it is a link or a folder, not a file predict wrote."
            )
        if os.path.exists(path):
            with open(path, "rb") as handle:
                existing = handle.read()
    if existing is not None and not written_by_predict(existing):
        raise PredictionRefused(
            f"Refusing to replace {uri!r}: a file is there that predict did not write (expected none, or a "
            "predictions Parquet file). Choose another output, or remove that file yourself."
        )


def written_by_predict(payload: bytes) -> bool:
    """Whether ``payload`` is a Parquet file whose footer carries :data:`OUTPUT_MARKER`."""
    try:
        metadata = pq.read_schema(io.BytesIO(payload)).metadata or {}
    except (pa.ArrowException, OSError, ValueError):
        return False
    return OUTPUT_MARKER in metadata


def _predictions_parquet(frame: Any, provenance: dict[str, str]) -> bytes:
    """The predictions as Parquet, without the index, marked as predict's in the footer."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), OUTPUT_MARKER: json.dumps(provenance).encode()}
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), buffer)
    return buffer.getvalue()


class PredictionResult(BaseModel):
    """Where the predictions are, their digest and row count, and what produced them."""

    model_config = ConfigDict(frozen=True)

    uri: str
    sha256: str
    rows: int
    source: str
    input_sha256: str  # the table's sha256, or the fingerprint of the data module's sources ("" if none)
    checkpoint_uri: str
    model: str | None = None  # the registered model version that scored: "name version N (alias)"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_columns(checkpoint: dict[str, Any], config: TrainConfig) -> tuple[list[str], str]:
    """The feature columns and target the checkpoint was trained on (the config's when it does not say)."""
    hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    table = config.table()
    features = hparams.get("features") or table.features
    if not features:
        raise LookupError(
            "The checkpoint does not name its feature columns (no data module hyper-parameters) and the "
            "config's data.features is empty: set data.features to score with it."
        )
    return list(features), str(hparams.get("target") or table.target)


PREDICTIONS_SUFFIX = ".predictions.parquet"


def output_beside(source: str) -> str:
    """The default output for a table: ``<source folder>/<source stem>.predictions.parquet``, local or S3
    (``s3://b/in/new.csv`` -> ``s3://b/in/new.predictions.parquet``)."""
    remote = is_remote(source)
    folder, sep, name = source.rpartition("/") if remote else source.rpartition(os.sep)
    extension = next((e for e in (".csv", ".parquet", ".pq") if name.lower().endswith(e)), "")
    return f"{folder}{sep}{name[: len(name) - len(extension)]}{PREDICTIONS_SUFFIX}"


def _scoring_trainer(config: TrainConfig, callbacks: list[Any] | None = None) -> Any:
    """The Trainer predict scores with: one process, so every row is scored once and in order (see
    evaluate_checkpoint); no logger, checkpoints or progress bar."""
    return pl.Trainer(
        accelerator=config.trainer.accelerator,
        devices=1,
        precision=config.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=callbacks or [],
    )


def score(
    config: TrainConfig, checkpoint_uri: str, source: str, output_uri: str | None = None
) -> PredictionResult:
    """Predict every row of ``source`` (CSV or Parquet, local or S3) with the checkpoint.

    ``source`` and ``output_uri`` (without it, :func:`output_beside` the source) must lie under
    :func:`data_roots`, and the output may only replace a predictions file (see the module docstring):
    checked before any scoring work."""
    fmt = table_format(source)
    if fmt is None:
        raise DataValidationError(
            f"Expected the table to score to end in .csv, .parquet or .pq, received {source!r}."
        )
    roots = data_roots()
    check_allowed("source", source, roots)
    uri = output_uri if output_uri is not None else output_beside(source)
    check_output(uri, roots)
    checkpoint = load_file(checkpoint_uri)  # verified and weights_only=True, before any scoring work
    features, target = checkpoint_columns(checkpoint, config)
    raw = read_source(source, "the source table")
    digest = _sha256(raw)
    frame = parse_table(raw, fmt, source)
    check_features(frame, features, source)

    # The data module reads URIs: the checked feature columns go to a Parquet file in a private temporary
    # folder (one process reads it, below), never under the model's data root, which is not trusted.
    with tempfile.TemporaryDirectory(prefix="lightning-lib-predict-") as scratch:
        inputs_uri = os.path.join(scratch, "inputs.parquet")
        with open(inputs_uri, "wb") as handle:
            handle.write(to_parquet_bytes(frame[features].reset_index(drop=True)))
        datamodule = config.load_datamodule_class()(
            features=features, target=target, predict_uri=inputs_uri, **config.datamodule_kwargs
        )
        model = config.load_model_class().load_from_checkpoint(checkpoint_uri)
        trainer = _scoring_trainer(config)
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
    payload = _predictions_parquet(
        out, {"source": source, "input_sha256": digest, "checkpoint": checkpoint_uri}
    )
    check_output(uri, roots)  # again: something may have appeared there while scoring
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


def score_datamodule(
    config: TrainConfig,
    checkpoint_uri: str,
    output_uri: str | None = None,
    datamodule_kwargs: dict[str, Any] | None = None,
    model: str | None = None,
) -> PredictionResult:
    """Run the model's ``predict_step`` over its project data module's ``predict_dataloader``, streaming
    the outputs to Parquet (:class:`tasks.prediction_writer.ParquetPredictionWriter`).

    ``datamodule_kwargs`` are laid over the training config's (to point the data module at new data, e.g.
    ``{"predict": "s3://bucket/new/"}``) and validated as the config validates them; the data module's
    declared sources must then lie under :func:`data_roots`. The output (``output_uri``, else a file under
    the model's data root named by the checkpoint and those arguments) follows the same rules as
    :func:`score`'s, checked before the checkpoint is loaded and again just before the upload."""
    from tasks.factory import build_project_datamodule
    from tasks.prediction_writer import ParquetPredictionWriter, provenance_footer
    from tasks.project_data import declared_sources
    from tasks.sources import fingerprint_sources

    if datamodule_kwargs:
        merged = {**config.datamodule_kwargs, **datamodule_kwargs}
        config = TrainConfig.model_validate({**config.model_dump(mode="json"), "datamodule_kwargs": merged})
    roots = data_roots()
    if output_uri is not None:
        check_output(output_uri, roots)
    else:
        check_default_output_root(config, roots)
    load_file(checkpoint_uri)  # verified and weights_only=True, before any work
    datamodule = build_project_datamodule(config)
    sources = declared_sources(datamodule) or []
    if datamodule_kwargs:
        for source in sources:
            check_allowed("source", source, roots)
    digest = fingerprint_sources(sources).fingerprint.digest if sources else ""
    if output_uri is None:
        spec = json.dumps([checkpoint_uri, config.datamodule_kwargs, digest], sort_keys=True, default=str)
        key = _sha256(spec.encode())[:24]
        output_uri = join_uri(config.prepared_data_root(), "predictions", key, "predictions.parquet")
    provenance = {"source": ", ".join(sources), "input_sha256": digest, "checkpoint": checkpoint_uri}
    if model:
        provenance["model"] = model
    writer = ParquetPredictionWriter(
        output_uri,
        footer=provenance_footer(OUTPUT_MARKER, provenance),
        before_upload=lambda uri: check_output(uri, roots),  # again: something may have appeared there
    )
    module = config.load_model_class().load_from_checkpoint(checkpoint_uri)
    trainer = _scoring_trainer(config, callbacks=[writer])
    trainer.predict(module, datamodule=datamodule, ckpt_path=checkpoint_uri, return_predictions=False)
    assert writer.uri is not None and writer.sha256 is not None, "the writer uploads at the end of predict"
    return PredictionResult(
        uri=writer.uri,
        sha256=writer.sha256,
        rows=writer.rows,
        source=provenance["source"],
        input_sha256=digest,
        checkpoint_uri=checkpoint_uri,
        model=model,
    )


@task(name="predict", **retrying(cache_policy=NO_CACHE, result_serializer="json"))
def predict(
    config: TrainConfig,
    checkpoint_uri: str,
    source: str | None = None,
    output_uri: str | None = None,
    datamodule_kwargs: dict[str, Any] | None = None,
    model: str | None = None,
) -> PredictionResult:
    """Prefect task around :func:`score` (a table ``source``) or :func:`score_datamodule` (the model's
    project data module, when the model was trained without a table)."""
    if config.data is None:
        if source is not None:
            raise ValueError(
                f"Expected no source for a model trained on its own data module ({config.datamodule}): its "
                "predict_dataloader reads the data; point it at new data with datamodule_kwargs."
            )
        return score_datamodule(config, checkpoint_uri, output_uri, datamodule_kwargs, model)
    if source is None:
        raise ValueError("Expected a source table (CSV or Parquet) to score with a model trained on a table.")
    if datamodule_kwargs:
        raise ValueError("Expected no datamodule_kwargs with a table source: the table is the data to score.")
    result = score(config, checkpoint_uri, source, output_uri)
    return result.model_copy(update={"model": model}) if model else result


__all__ = [
    "DATA_ROOTS_ENV",
    "OUTPUT_MARKER",
    "PREDICTIONS_SUFFIX",
    "PREDICTION_COLUMN",
    "PredictionRefused",
    "PredictionResult",
    "check_allowed",
    "check_default_output_root",
    "check_output",
    "checkpoint_columns",
    "data_roots",
    "output_beside",
    "predict",
    "score",
    "score_datamodule",
    "written_by_predict",
]
