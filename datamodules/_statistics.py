"""What the data module learns from its training split by streaming it: per-feature mean and std,
and a few raw rows to show a served model. One row group in memory at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datamodules._shards import SplitIndex, open_parquet


def feature_statistics(index: SplitIndex, features: Sequence[str]) -> tuple[int, np.ndarray, np.ndarray]:
    """Row count, per-feature mean and sum of squared deviations (float64), merged row group by row
    group (Chan et al.'s pairwise update, stable where a running sum of squares is not)."""
    count = 0
    mean = np.zeros(len(features), dtype=np.float64)
    m2 = np.zeros(len(features), dtype=np.float64)
    for shard in index.shards:
        with open_parquet(shard.uri, shard.size) as parquet:
            for group, rows in enumerate(shard.row_groups):
                if rows == 0:
                    continue
                table = parquet.read_row_group(group, columns=list(features))
                group_mean = np.empty(len(features), dtype=np.float64)
                group_m2 = np.empty(len(features), dtype=np.float64)
                for j, name in enumerate(features):
                    column = table.column(name).to_numpy().astype(np.float64)
                    group_mean[j] = column.mean()
                    group_m2[j] = np.square(column - group_mean[j]).sum()
                total = count + rows
                delta = group_mean - mean
                mean = mean + delta * (rows / total)
                m2 = m2 + group_m2 + np.square(delta) * (count * rows / total)
                count = total
    return count, mean, m2


def first_rows(index: SplitIndex, features: Sequence[str], limit: int) -> np.ndarray:
    """Up to ``limit`` raw feature rows from the split's first shard that has rows, as float32."""
    for shard in index.shards:
        if shard.rows == 0:
            continue
        with open_parquet(shard.uri, shard.size) as parquet:
            batch = next(parquet.iter_batches(batch_size=limit, columns=list(features)))
        rows = np.empty((min(limit, batch.num_rows), len(features)), dtype=np.float32)
        for j, name in enumerate(features):
            rows[:, j] = batch.column(name).to_numpy(zero_copy_only=False)[: len(rows)]
        return rows
    return np.empty((0, len(features)), dtype=np.float32)
