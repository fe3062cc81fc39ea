"""``prepare_data``: raw CSV/Parquet -> checked, deterministic train/val/test Parquet in the object store.

The work is in plain functions (:func:`prepare`, :func:`input_digest`, :func:`prepare_cache_key`), so it
is tested without Prefect; the Prefect task at the bottom only adds caching and retries.

Outputs are content-addressed: ``<data_root>/<dataset_id>/{train,val,test}.parquet`` and, written last,
``PREPARED.json`` (what a reader needs to trust the folder, like a checkpoint's manifest). The
``dataset_id`` is a digest of the input bytes and the split parameters, so the same input always lands in
the same place with the same bytes, and a re-run after a crash simply rewrites identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

from prefect import task
from pydantic import BaseModel, ConfigDict

from lightning_lib.storage import ObjectNotFound, is_remote, join_uri, local_path, open_store, split_uri
from tasks.config import TrainConfig
from tasks.retry import retrying
from tasks.tabular import (
    DataValidationError,
    check_labels,
    check_schema,
    parse_table,
    split_indices,
    to_parquet_bytes,
)

# Bump when the prepared output changes for the same input (columns kept, dtypes, split rule): it is
# part of the dataset id and the cache key, so older prepared data and cache entries are not reused.
PREPARE_VERSION = 1
MANIFEST_NAME = "PREPARED.json"
SPLITS = ("train", "val", "test")


class PreparedSplit(BaseModel):
    """One written split: where it is, its sha256 and its row count."""

    model_config = ConfigDict(frozen=True)

    uri: str
    sha256: str
    rows: int


class PreparedData(BaseModel):
    """The small result passed on to ``fit``/``validate``/``test``: URIs and digests, never the data."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["table"] = "table"  # tells it from a project's own data module's (tasks.run_data)
    dataset_id: str
    source: str
    input_sha256: str
    features: list[str]
    target: str
    split_seed: int
    val_fraction: float
    test_fraction: float
    train: PreparedSplit
    val: PreparedSplit
    test: PreparedSplit
    manifest_uri: str

    @property
    def digest(self) -> str:
        """The data's identity: the sha256 of the source table's bytes."""
        return self.input_sha256

    def describe(self) -> str:
        """One line for logs and summaries."""
        return f"{self.source} (sha256 {self.input_sha256}; prepared as {self.manifest_uri})"

    def datamodule_kwargs(self) -> dict[str, Any]:
        """What a pipeline data module (``examples.tabular.TabularDataModule``) takes from this result."""
        return {
            "train_uri": self.train.uri,
            "val_uri": self.val.uri,
            "test_uri": self.test.uri,
            "features": list(self.features),
            "target": self.target,
            "sha256": {name: getattr(self, name).sha256 for name in SPLITS},
        }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_uri(uri: str) -> bytes:
    """The bytes of one object: a local path or ``s3://bucket/key`` (through boto3's own config chain)."""
    root, name = split_uri(uri)
    return open_store(root).get_bytes(name)


def read_source(uri: str, name: str) -> bytes:
    """:func:`read_uri` of a source the user named; a missing one is refused naming ``name`` (the key or
    flag it came from), as an input error."""
    try:
        return read_uri(uri)
    except ObjectNotFound:
        raise ObjectNotFound(
            f"Expected {name} to name an existing file, received {uri!r}: there is none."
        ) from None


def input_digest(config: TrainConfig) -> str:
    """sha256 of the source file's bytes."""
    return sha256_hex(read_source(config.table().source, "data.source"))


def _split_spec(config: TrainConfig, input_sha256: str) -> dict[str, Any]:
    data = config.table()
    return {
        "version": PREPARE_VERSION,
        "input_sha256": input_sha256,
        "format": data.source_format(),
        "features": data.features,
        "target": data.target,
        "val_fraction": data.val_fraction,
        "test_fraction": data.test_fraction,
        "split_seed": config.split_seed(),
    }


def _digest_of(obj: Any) -> str:
    return sha256_hex(json.dumps(obj, sort_keys=True).encode())


def data_root(config: TrainConfig) -> str:
    """Where prepared data goes; a local root made absolute, because the URIs in a (cached) result are read
    from other working directories: a later run elsewhere, the ranks torchrun starts."""
    root = config.prepared_data_root()
    return root if is_remote(root) else os.path.abspath(local_path(root))


def prepared_folder(config: TrainConfig, input_sha256: str | None = None) -> str:
    """The content-addressed folder the prepared splits of ``config`` go to (hashing the source if needed)."""
    digest = input_sha256 if input_sha256 is not None else input_digest(config)
    return join_uri(data_root(config), dataset_id(config, digest))


def dataset_id(config: TrainConfig, input_sha256: str) -> str:
    """The content address of the prepared data: input bytes + split parameters (not where it is written)."""
    return _digest_of(_split_spec(config, input_sha256))[:24]


def prepare(config: TrainConfig, raw: bytes | None = None) -> PreparedData:
    """Read, check, split and write; return the URIs and digests. ``raw`` skips reading the source."""
    data = config.table()
    if raw is None:
        raw = read_source(data.source, "data.source")
    digest = sha256_hex(raw)
    fmt = data.source_format()
    assert fmt is not None  # DataConfig refuses a source without a known format
    frame = parse_table(raw, fmt, data.source)
    features = check_schema(frame, data.features, data.target, data.source)
    num_classes = config.class_count()
    if num_classes is not None:
        check_labels(frame[data.target], num_classes, data.source)
    table = frame[[*features, data.target]]
    parts = split_indices(len(table), data.val_fraction, data.test_fraction, config.split_seed())

    ident = dataset_id(config, digest)
    folder = prepared_folder(config, digest)
    store = open_store(folder)
    written: dict[str, PreparedSplit] = {}
    for name, rows in zip(SPLITS, parts, strict=True):
        payload = to_parquet_bytes(table.iloc[rows].reset_index(drop=True))
        key = f"{name}.parquet"
        store.put_bytes(key, payload)
        written[name] = PreparedSplit(uri=join_uri(folder, key), sha256=sha256_hex(payload), rows=len(rows))
    result = PreparedData(
        dataset_id=ident,
        source=data.source,
        input_sha256=digest,
        features=features,
        target=data.target,
        split_seed=config.split_seed(),
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        manifest_uri=join_uri(folder, MANIFEST_NAME),
        train=written["train"],
        val=written["val"],
        test=written["test"],
    )
    # Written last: a folder without it was interrupted, and its splits are not to be trusted.
    store.put_bytes(MANIFEST_NAME, result.model_dump_json(indent=2).encode())
    return result


def load_prepared(manifest_uri: str) -> PreparedData:
    """Read a ``PREPARED.json`` back, e.g. to check that a cached result's files are still there."""
    return PreparedData.model_validate_json(read_uri(manifest_uri))


def prepare_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: ``(task_run_context, parameters) -> key``.

    The key is the input digest plus the split parameters plus where the output goes, as an absolute
    path (the cached result holds URIs, so another data_root, or the same relative one in another working
    directory, must not reuse it). Computing it reads the source once more, which is the price of keying
    on content rather than on a name or a modification time.
    """
    config: TrainConfig = parameters["config"]
    spec = _split_spec(config, input_digest(config))
    spec["data_root"] = data_root(config)
    # the labels were checked against this many classes: another model must not reuse an unchecked result
    spec["num_classes"] = config.class_count()
    return f"prepare-data-{_digest_of(spec)}"


@task(
    name="prepare_data",
    cache_key_fn=prepare_cache_key,
    persist_result=True,
    **retrying(result_serializer="json"),  # PreparedData is plain data: no pickle in the result store
)
def prepare_data(config: TrainConfig) -> PreparedData:
    """Prefect task around :func:`prepare`: cached by input content, retried on transient storage faults."""
    return prepare(config)


def run_prepare_data(config: TrainConfig) -> PreparedData:
    """In a flow: the ``prepare_data`` task, from the cache unless the cached output folder is gone (a
    cleaned ``runs/`` folder, an expired bucket): then it prepares again and refreshes the cache."""
    present = open_store(prepared_folder(config)).exists(MANIFEST_NAME)
    return prepare_data.with_options(refresh_cache=not present)(config)


__all__ = [
    "MANIFEST_NAME",
    "PREPARE_VERSION",
    "DataValidationError",
    "PreparedData",
    "PreparedSplit",
    "data_root",
    "dataset_id",
    "input_digest",
    "load_prepared",
    "prepare",
    "prepare_cache_key",
    "prepare_data",
    "prepared_folder",
    "read_source",
    "read_uri",
    "run_prepare_data",
]
