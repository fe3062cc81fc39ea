"""A small Hive-partitioned, multi-shard Parquet dataset for the data module's tests (and its crash job).

Every row has a unique ``id`` (its position in file order), so tests can see which rows a loader served.
Shards differ in row count and row-group size, so streams, windows and batches cut through row groups.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = [f"f{i}" for i in range(32)]
DAYS = ["2026-12-01", "2026-12-02", "2026-12-03"]
PARTS = 4


def shard_table(first_id: int, rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {"id": np.arange(first_id, first_id + rows, dtype=np.int64)}
    for j, name in enumerate(FEATURES):
        columns[name] = (rng.standard_normal(rows) * (j + 1) + j).astype(np.float32)
    columns["label"] = rng.integers(0, 10, rows).astype(np.int64)
    return pa.table(columns)


def write_dataset(root: str | os.PathLike[str], days: list[str] = DAYS, parts: int = PARTS) -> int:
    """Write ``root/dt=DAY/part-K.parquet`` shards; returns the number of rows."""
    rows_written = 0
    for d, day in enumerate(days):
        folder = Path(root) / f"dt={day}"
        folder.mkdir(parents=True, exist_ok=True)
        for part in range(parts):
            rows = 37 + 11 * part + 5 * d
            table = shard_table(rows_written, rows, seed=100 * d + part)
            pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=8 + 5 * part)
            rows_written += rows
    return rows_written
