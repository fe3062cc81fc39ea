"""A split's Parquet shards: found by listing a local folder or an S3 prefix, selected by Hive partition,
and checked from their footers alone (each is Parquet, all share one schema, the needed columns exist).

Nothing here reads row data: a footer is a few kilobytes at the end of a file (one or two ranged GETs
on S3), so checking a split costs time in the number of shards, not in their bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datamodules._s3_reader import S3ObjectFile
from lightning_lib.storage import BucketNotFound, S3Store, is_remote, local_path, parse_s3_uri

PARQUET_SUFFIX = ".parquet"
# footers are small and the wait is the network's: a few in flight at once
_FOOTER_THREADS = 16


@dataclass(frozen=True)
class Shard:
    """One Parquet file: its URI, its size in bytes and (once indexed) the rows of each row group."""

    uri: str
    size: int
    row_groups: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return sum(self.row_groups)


@dataclass(frozen=True)
class SplitIndex:
    """The checked shards of one split, in URI order, and how its target column converts (if it has one)."""

    split: str
    source: str
    shards: tuple[Shard, ...]
    target_dtype: str | None

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)


def _hidden(name: str) -> bool:
    # Hive, Spark and writers' temporary files (_SUCCESS, _common_metadata, .part-0.crc, ...) are not data
    return name.startswith((".", "_"))


def _list_local(split: str, source: str) -> list[Shard]:
    root = local_path(source)
    if os.path.isfile(root):
        return [Shard(root, os.path.getsize(root))]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"The {split} source {source} does not exist.")
    found = []
    for parent, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(files):
            if name.endswith(PARQUET_SUFFIX) and not _hidden(name):
                path = os.path.join(parent, name)
                found.append(Shard(path, os.path.getsize(path)))
    return sorted(found, key=lambda shard: shard.uri)


def _list_s3(split: str, source: str) -> list[Shard]:
    bucket, prefix = parse_s3_uri(source)
    store = S3Store(f"s3://{bucket}")
    folder = f"{prefix}/" if prefix else ""
    try:
        objects = store.list(folder)
        if not objects and prefix:
            exact = [info for info in store.list(prefix) if info.key == prefix]
            if exact:
                return [Shard(f"s3://{bucket}/{prefix}", exact[0].size)]
    except BucketNotFound as exc:
        raise FileNotFoundError(f"The {split} source {source} does not exist: {exc}") from exc
    if not objects:
        raise FileNotFoundError(f"The {split} source {source} does not exist: there is no object under it.")
    found = []
    for info in objects:
        relative = info.key[len(folder) :].split("/")
        if relative[-1].endswith(PARQUET_SUFFIX) and not any(_hidden(part) for part in relative):
            found.append(Shard(f"s3://{bucket}/{info.key}", info.size))
    return found


def partition_value(uri: str, partition_key: str) -> str | None:
    """The value of the deepest ``partition_key=VALUE`` component of ``uri``'s path, if there is one."""
    marker = partition_key + "="
    parts = uri.replace(os.sep, "/").split("/")[:-1]
    values = [part[len(marker) :] for part in parts if part.startswith(marker)]
    return values[-1] if values else None


def partition_folder(uri: str, partition_key: str) -> str:
    """``uri`` cut after its deepest ``partition_key=VALUE`` component: the partition's folder or prefix."""
    marker = partition_key + "="
    parts = uri.split("/")
    last = max(i for i, part in enumerate(parts[:-1]) if part.startswith(marker))
    return "/".join(parts[: last + 1])


def list_shards(
    split: str, source: str, partition_key: str, since: str | None, until: str | None
) -> list[Shard]:
    """The Parquet files of ``source`` (recursively, hidden ones left out), inside the partition window."""
    shards = _list_s3(split, source) if is_remote(source) else _list_local(split, source)
    if not shards:
        raise ValueError(
            f"Expected Parquet files (*{PARQUET_SUFFIX}) under the {split} source {source}, found none."
        )
    if since is None and until is None:
        return shards
    selected = []
    for shard in shards:
        value = partition_value(shard.uri, partition_key)
        if value is None:
            raise ValueError(
                f"Expected a {partition_key}=VALUE folder in the path of every {split} shard to select"
                f" since/until partitions, received {shard.uri}."
            )
        if (since is None or since <= value) and (until is None or value < until):
            selected.append(shard)
    if not selected:
        window = f"{since or ''} <= {partition_key} < {until or ''}".strip()
        raise ValueError(f"Expected {split} shards with {window} under {source}, found none.")
    return selected


def open_parquet(uri: str, size: int) -> pq.ParquetFile:
    """A ``ParquetFile`` over a local file or an S3 object (read by ranged GETs, never downloaded whole)."""
    if is_remote(uri):
        bucket, key = parse_s3_uri(uri)
        return pq.ParquetFile(S3ObjectFile(bucket, key, size), pre_buffer=True)
    return pq.ParquetFile(local_path(uri), memory_map=False, pre_buffer=True)


@dataclass(frozen=True)
class _Footer:
    shard: Shard
    schema: pa.Schema
    nulls: dict[str, int]


def _read_footer(split: str, shard: Shard, columns: Sequence[str]) -> _Footer:
    try:
        with open_parquet(shard.uri, shard.size) as parquet:
            meta = parquet.metadata
            schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"The {split} shard {shard.uri} is not a readable Parquet file: {exc}") from exc
    row_groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    nulls: dict[str, int] = {}
    if meta.num_row_groups:
        first = meta.row_group(0)
        position = {first.column(j).path_in_schema: j for j in range(first.num_columns)}
        for name in columns:
            j = position.get(name)
            if j is None:
                continue
            count = 0
            for i in range(meta.num_row_groups):
                stats = meta.row_group(i).column(j).statistics
                if stats is not None and stats.has_null_count:
                    count += stats.null_count
            nulls[name] = count
    return _Footer(Shard(shard.uri, shard.size, row_groups), schema, nulls)


def _schema_difference(first: pa.Schema, other: pa.Schema) -> str | None:
    """How ``other`` differs from ``first`` (the first differing column), or None if they agree."""
    mine = {field.name: field.type for field in first}
    theirs = {field.name: field.type for field in other}
    for name, kind in mine.items():
        if name not in theirs:
            return f"column {name!r} ({kind}) is missing from the second"
        if theirs[name] != kind:
            return f"column {name!r} is {kind} in the first and {theirs[name]} in the second"
    for name, kind in theirs.items():
        if name not in mine:
            return f"column {name!r} ({kind}) is only in the second"
    return None


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind))


def index_split(
    split: str,
    source: str,
    *,
    features: Sequence[str],
    target: str | None,
    target_required: bool,
    partition_key: str,
    since: str | None,
    until: str | None,
) -> SplitIndex:
    """List and check one split before any row is read; every problem raises naming the shard or column."""
    listed = list_shards(split, source, partition_key, since, until)
    wanted = [*features, *([target] if target is not None else [])]
    workers = min(_FOOTER_THREADS, len(listed))
    with ThreadPoolExecutor(workers) as pool:
        footers = list(pool.map(lambda shard: _read_footer(split, shard, wanted), listed))
    reference = footers[0]
    for footer in footers[1:]:
        difference = _schema_difference(reference.schema, footer.schema)
        if difference is not None:
            raise ValueError(
                f"The {split} shards {reference.shard.uri} and {footer.shard.uri} have different schemas:"
                f" {difference}."
            )
    schema = reference.schema
    names = schema.names
    missing = [name for name in features if name not in names]
    if missing:
        raise ValueError(
            f"Expected feature columns {missing} in the {split} shards under {source}; they have {names}."
        )
    for name in features:
        kind = schema.field(name).type
        if not _numeric(kind):
            raise ValueError(
                f"Expected numeric feature columns, received {name!r} of type {kind} in the {split} shards"
                f" under {source}."
            )
    target_dtype: str | None = None
    if target is not None and target in names:
        kind = schema.field(target).type
        if not _numeric(kind):
            raise ValueError(
                f"Expected a numeric target column, received {target!r} of type {kind} in the {split}"
                f" shards under {source}."
            )
        target_dtype = "float32" if pa.types.is_floating(kind) else "int64"
    elif target is not None and target_required:
        raise ValueError(
            f"Expected the target column {target!r} in the {split} shards under {source}; they have {names}."
        )
    read = list(features) + ([target] if target is not None and target_dtype is not None else [])
    for footer in footers:
        for name in read:
            if footer.nulls.get(name):
                raise ValueError(
                    f"Expected no missing values, received {footer.nulls[name]} null(s) in column {name!r}"
                    f" of the {split} shard {footer.shard.uri}."
                )
    index = SplitIndex(split, source, tuple(f.shard for f in footers), target_dtype)
    if index.rows == 0:
        raise ValueError(f"Expected rows in the {split} source {source}, its shards have none.")
    return index


def read_rows(parquet: Any, row_group: int, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
    """Rows ``start:stop`` of one row group, only ``columns`` (the row group's other columns are not read)."""
    table = parquet.read_row_group(row_group, columns=list(columns))
    if start == 0 and stop == table.num_rows:
        return table
    return table.slice(start, stop - start)
