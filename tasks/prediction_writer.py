"""``ParquetPredictionWriter``: a project's ``predict_step`` outputs streamed to one Parquet file.

A Lightning ``BasePredictionWriter`` (``write_interval="batch"``): each batch's predictions become a row group
of a Parquet file in a private temporary folder as they come, so ``Trainer.predict(...,
return_predictions=False)`` holds one batch at a time whatever the dataset's size; at the end of the predict
run the file goes to its output URI (a local path or ``s3://``, through the object store's upload). What
``predict_step`` may return, per batch:

- a tensor (or numpy array) of N rows: one column ``prediction`` for shape (N,) or (N, 1), else
  ``prediction_0`` ... ``prediction_{k-1}`` (shape (N, k); more dimensions are flattened per row);
- a mapping of such, one column (or group of columns) per key, named by the key;
- a list or tuple of scalars (N rows, one column).

When the loader's sampler gives the rows' dataset indices (Lightning's ``batch_indices``), they are kept in an
``index`` column. The footer carries the predict marker and the provenance (model version, checkpoint) as
:func:`tasks.prediction.written_by_predict` expects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lightning_lib.callbacks import BasePredictionWriter
from lightning_lib.storage import open_store, split_uri

PREDICTION_COLUMN = "prediction"
INDEX_COLUMN = "index"


def _as_rows(value: Any, name: str) -> dict[str, np.ndarray]:
    """Columns of one prediction value: a 1-D column, or one column per trailing feature."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, list | tuple) and all(isinstance(v, int | float | bool) for v in value):
        array = np.asarray(value)
    else:
        raise TypeError(
            f"Expected predict_step to return tensors, numpy arrays, lists of numbers or a mapping of them "
            f"(one row per sample), received {type(value).__name__} for {name!r}."
        )
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim > 2:
        array = array.reshape(len(array), -1)
    if array.ndim == 1 or array.shape[1] == 1:
        return {name: array.reshape(-1)}
    return {f"{name}_{i}": array[:, i] for i in range(array.shape[1])}


def prediction_columns(prediction: Any) -> dict[str, np.ndarray]:
    """The columns of one batch's ``predict_step`` output (see the module docstring), all of one length."""
    if isinstance(prediction, Mapping):
        columns: dict[str, np.ndarray] = {}
        for key, value in prediction.items():
            columns.update(_as_rows(value, str(key)))
    else:
        columns = _as_rows(prediction, PREDICTION_COLUMN)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        sizes = {k: len(v) for k, v in columns.items()}
        raise ValueError(f"Expected every prediction column to have one row per sample, received {sizes}.")
    return columns


class ParquetPredictionWriter(BasePredictionWriter):
    """Stream predictions to ``output_uri`` (``.parquet``, local or ``s3://``) batch by batch.

    ``footer`` is added to the Parquet footer's key-value metadata (bytes keys and values).
    ``before_upload(uri)`` runs just before the file is moved to its output (predict re-checks there that
    it may still write the output). After the run, ``uri``, ``rows`` and ``sha256`` say what was written."""

    def __init__(
        self,
        output_uri: str,
        footer: Mapping[bytes, bytes] | None = None,
        before_upload: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_uri = output_uri
        self.footer = dict(footer or {})
        self.before_upload = before_upload
        self.rows = 0
        self.sha256: str | None = None
        self.uri: str | None = None
        self._scratch: str | None = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._scratch = tempfile.mkdtemp(prefix="lightning-lib-predictions-")
        self.rows, self.sha256, self.uri = 0, None, None

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        columns = prediction_columns(prediction)
        rows = len(next(iter(columns.values()))) if columns else 0
        arrays = dict(columns)
        if batch_indices is not None and len(batch_indices) == rows:
            arrays = {INDEX_COLUMN: np.asarray(list(batch_indices), dtype=np.int64), **arrays}
        table = pa.table(arrays)
        if self._writer is None:
            assert self._scratch is not None, "on_predict_start opens the scratch folder"
            metadata = {**(table.schema.metadata or {}), **self.footer}
            self._schema = table.schema.with_metadata(metadata)
            self._writer = pq.ParquetWriter(os.path.join(self._scratch, "predictions.parquet"), self._schema)
        elif table.schema.remove_metadata() != self._schema.remove_metadata():  # type: ignore[union-attr]
            raise ValueError(
                f"Expected every batch's predictions to have the columns {self._schema}, batch {batch_idx} "
                f"has {table.schema}."
            )
        self._writer.write_table(table.replace_schema_metadata(self._schema.metadata))  # type: ignore[union-attr]
        self.rows += rows

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the file and move it to its output; an empty run writes an empty file with no columns."""
        assert self._scratch is not None, "on_predict_start opens the scratch folder"
        path = os.path.join(self._scratch, "predictions.parquet")
        try:
            if self._writer is None:
                pq.write_table(pa.table({}).replace_schema_metadata(self.footer), path)
            else:
                self._writer.close()
                self._writer = None
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            if self.before_upload is not None:
                self.before_upload(self.output_uri)
            root, name = split_uri(self.output_uri)
            open_store(root).put_file(name, path)
            self.sha256, self.uri = digest.hexdigest(), self.output_uri
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """A failed run writes nothing: the partial file is removed, the output left as it was."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def provenance_footer(marker: bytes, provenance: Mapping[str, str]) -> dict[bytes, bytes]:
    """The footer entry that marks a file as predict's, with what produced it."""
    return {marker: json.dumps(dict(provenance), sort_keys=True).encode()}


__all__ = [
    "INDEX_COLUMN",
    "PREDICTION_COLUMN",
    "ParquetPredictionWriter",
    "prediction_columns",
    "provenance_footer",
]
