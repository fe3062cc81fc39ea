"""ParquetPredictionWriter: predict_step outputs streamed to one Parquet file, locally or on S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as pl
from lightning_lib.storage import open_store, split_uri
from tasks.prediction_writer import ParquetPredictionWriter, prediction_columns


class _Scorer(pl.LightningModule):
    def __init__(self, output: str = "tensor", fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 3)
        self.output = output
        self.fail_at = fail_at

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        if batch_idx == self.fail_at:
            raise RuntimeError("scoring failed")
        logits = self.layer(batch[0])
        if self.output == "dict":
            return {"label": logits.argmax(dim=1), "score": logits}
        return logits.argmax(dim=1)


def _loader(rows: int = 10) -> DataLoader:
    return DataLoader(
        TensorDataset(torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2)), batch_size=4
    )


def _predict(module: pl.LightningModule, writer: ParquetPredictionWriter) -> None:
    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[writer]
    )
    trainer.predict(module, dataloaders=_loader(), return_predictions=False)


def test_each_batch_streams_into_one_file_with_the_row_indices(tmp_path: Path) -> None:
    output = tmp_path / "out" / "p.parquet"
    writer = ParquetPredictionWriter(str(output), footer={b"who": b"test"})
    module = _Scorer()
    _predict(module, writer)
    table = pq.read_table(output)
    assert table.column_names == ["index", "prediction"] and writer.rows == table.num_rows == 10
    assert table.column("index").to_pylist() == list(range(10))
    with torch.no_grad():
        expected = module.layer(_loader().dataset.tensors[0]).argmax(dim=1).tolist()
    assert table.column("prediction").to_pylist() == expected
    assert table.schema.metadata[b"who"] == b"test"
    assert pq.ParquetFile(output).num_row_groups == 3  # written as the batches came, not at the end


def test_a_mapping_gives_a_column_or_a_group_of_columns_per_key(tmp_path: Path) -> None:
    output = tmp_path / "p.parquet"
    _predict(_Scorer(output="dict"), ParquetPredictionWriter(str(output)))
    assert pq.read_table(output).column_names == ["index", "label", "score_0", "score_1", "score_2"]


def test_a_failed_run_leaves_the_output_as_it_was(tmp_path: Path) -> None:
    output = tmp_path / "p.parquet"
    output.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="scoring failed"):
        _predict(_Scorer(fail_at=1), ParquetPredictionWriter(str(output)))
    assert output.read_bytes() == b"previous"


def test_the_output_is_checked_again_just_before_the_upload(tmp_path: Path) -> None:
    def refuse(uri: str) -> None:
        raise PermissionError(f"not {uri}")

    output = tmp_path / "p.parquet"
    with pytest.raises(PermissionError, match="not"):
        _predict(_Scorer(), ParquetPredictionWriter(str(output), before_upload=refuse))
    assert not output.exists()


def test_outputs_that_are_not_rows_are_named() -> None:
    assert list(prediction_columns(np.zeros((3, 1)))) == ["prediction"]
    with pytest.raises(TypeError, match="received str for 'prediction'"):
        prediction_columns("text")
    with pytest.raises(ValueError, match="one row per sample"):
        prediction_columns({"a": torch.zeros(2), "b": torch.zeros(3)})


def test_predictions_go_to_s3(s3_endpoint: str) -> None:
    uri = f"{s3_endpoint}/predictions/p.parquet"
    writer = ParquetPredictionWriter(uri)
    _predict(_Scorer(), writer)
    root, name = split_uri(uri)
    assert writer.uri == uri and open_store(root).exists(name)
    import hashlib

    assert hashlib.sha256(open_store(root).get_bytes(name)).hexdigest() == writer.sha256
