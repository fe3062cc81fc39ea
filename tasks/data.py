"""``prepare_data``: raw CSV/Parquet -> checked, deterministic train/val/test Parquet in the object store.

The work is in plain functions (:func:`prepare`, :func:`input_digest`, :func:`prepare_cache_key`), so it
is tested without Prefect; the Prefect task at the bottom only adds caching and retries.

Outputs are content-addressed: ``<data_root>/<dataset_id>/{train,val,test}.parquet`` and, written last,
``PREPARED.json`` (what a reader needs to trust the folder, like a checkpoint's manifest). The
``dataset_id`` is a digest of the input bytes and the split parameters, so the same input always lands in
the same place with the same bytes, and a re-run after a crash simply rewrites identical files.

The table is never held in memory: :func:`prepare` reads it twice in Arrow record batches. The first
pass runs the checks (:class:`tasks.tabular.TableScan`) and counts the rows while a thread hashes the same
bytes; the split then needs one byte per row (:func:`tasks.tabular.split_assignment`); the second pass
sends each row to its split's ``ParquetWriter``, whose file is hashed as it is written and uploaded while
it grows (``ObjectStore.put_growing_file``: multipart on S3), and published only once the second pass has
read the same bytes as the first. An S3 source is downloaded once to a private temporary file for the two
passes (Parquet needs random access anyway: its footer comes last); :func:`input_digest` hashes it through
a streaming GET instead, without a copy. Peak memory depends on the width of the table (a CSV block of
512 KiB, a Parquet batch, a row group of each split being written), not on its length, except for the
split's one byte per row (and four more while it is drawn). Disk is what holds the table: the splits are
staged in a private temporary folder as they are written, and an S3 source is downloaded next to them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from prefect import task
from pydantic import BaseModel, ConfigDict

from lightning_lib.storage import (
    GrowingFile,
    HashingWriter,
    ObjectNotFound,
    ObjectStore,
    PrehashedFile,
    S3Store,
    StorageError,
    is_remote,
    join_uri,
    local_path,
    open_store,
    parse_s3_uri,
    split_uri,
)
from tasks.config import TrainConfig
from tasks.retry import retrying
from tasks.tabular import (
    CSV_NULL_VALUES,
    SPLIT_CODES,
    DataValidationError,
    TableScan,
    mangle_csv_header,
    no_rows_error,
    split_assignment,
    unreadable_error,
)

# Bump when the prepared output changes for the same input (columns kept, dtypes, split rule, Parquet
# layout): it is part of the dataset id and the cache key, so older prepared data and cache entries are
# not reused. 2: splits written by streaming (row groups of bounded size, no pandas metadata).
PREPARE_VERSION = 2
MANIFEST_NAME = "PREPARED.json"
SPLITS = ("train", "val", "test")

_READ_CHUNK = 1024 * 1024  # bytes per read when hashing a stream
_CSV_BLOCK_BYTES = 512 * 1024  # CSV text per record batch
_PARQUET_BATCH_ROWS = 64 * 1024  # rows per record batch read from a Parquet source
# A prepared split's row groups hold about this many bytes of values (at least 1,024 rows, at most
# Arrow's default 1 Mi rows): each split buffers one row group before writing it.
_ROW_GROUP_BYTES = 4 * 1024 * 1024
_S3_READ_ATTEMPTS = 3  # a GET body that breaks off is resumed where it stopped, this many times


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


class SourceChangedError(StorageError):
    """The source's bytes changed while it was being prepared (between the two passes, or a new version
    on S3): nothing was published, and a retry prepares the new content."""


class StaleDigestError(ValueError):
    """The source no longer has the sha256 the flow computed for it before the task (it changed in
    between); the task's cache key was that digest, so only a new run of the flow can help."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_uri(uri: str) -> bytes:
    """The bytes of one object: a local path or ``s3://bucket/key`` (through boto3's own config chain)."""
    root, name = split_uri(uri)
    return open_store(root).get_bytes(name)


# -- sources: a local file, an S3 object or bytes --------------------------------------------------------


class _Readable:
    """The table's bytes on this machine: a file, or bytes in memory. Arrow reads them natively, never
    through a Python file object: Arrow's I/O threads release such an object when they are done with
    it, and one released while the interpreter exits aborts the process."""

    def __init__(self, path: str | None = None, raw: bytes | None = None) -> None:
        self._path, self._raw = path, raw

    def open(self) -> pa.NativeFile:
        """A new handle on the bytes, from the start."""
        return pa.OSFile(self._path) if self._path is not None else pa.BufferReader(self._raw)

    def hash_alongside(self) -> _BackgroundHash:
        """Start hashing the bytes on a thread while the caller reads them (hashlib releases the GIL)."""
        return _BackgroundHash(self._path, self._raw)


class _BackgroundHash:
    """The sha256 of a file computed by a thread of its own (of bytes in memory, at once)."""

    def __init__(self, path: str | None, raw: bytes | None) -> None:
        self._digest = hashlib.sha256()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if path is None:
            self._digest.update(raw or b"")
            return
        self._thread = threading.Thread(target=self._run, args=(path,), name="prepare-hash", daemon=True)
        self._thread.start()

    def _run(self, path: str) -> None:
        try:
            with open(path, "rb") as handle:
                while not self._stop.is_set() and (chunk := handle.read(_READ_CHUNK)):
                    self._digest.update(chunk)
        except BaseException as exc:
            self._error = exc

    def result(self) -> str:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()

    def cancel(self) -> None:
        """Stop early: the reading it went along with failed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class _Source:
    """Where the table is: hashed where it lies (:meth:`sha256`), or read from this machine (:meth:`local`)."""

    uri: str

    def sha256(self) -> str:
        """The sha256 of the bytes, read once in chunks of bounded size."""
        raise NotImplementedError

    def local(self) -> AbstractContextManager[_Readable]:
        raise NotImplementedError


class _LocalSource(_Source):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._path = local_path(uri)

    def _check(self) -> None:
        if not os.path.isfile(self._path):
            raise ObjectNotFound(_missing(self.uri))

    def sha256(self) -> str:
        self._check()
        return _BackgroundHash(self._path, None).result()

    @contextmanager
    def local(self) -> Iterator[_Readable]:
        self._check()
        yield _Readable(path=self._path)


class _BytesSource(_Source):
    def __init__(self, uri: str, raw: bytes) -> None:
        self.uri = uri
        self._raw = raw

    def sha256(self) -> str:
        return sha256_hex(self._raw)

    @contextmanager
    def local(self) -> Iterator[_Readable]:
        yield _Readable(raw=self._raw)


class _S3Source(_Source):
    """An S3 object: hashed through a streaming GET (resumed where it broke off, pinned to the first
    response's ETag), prepared from a private download (Arrow reads it twice, and Parquet at random)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        root, self._name = split_uri(uri)
        store = open_store(root)
        assert isinstance(store, S3Store)
        self._store = store
        self._bucket, self._key = parse_s3_uri(uri)

    def _get(self, start: int, etag: str | None) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key}
        if start:
            kwargs["Range"] = f"bytes={start}-"
        if etag is not None:
            kwargs["IfMatch"] = etag  # never hash parts of two versions together
        try:
            return self._store.client.get_object(**kwargs)
        except Exception as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: BaseException) -> StorageError:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "412"):
            return SourceChangedError(f"{self.uri} changed while it was being read (its ETag moved on).")
        # the store's HEAD names a missing object, bucket, credential or permission in its own terms
        if not self._store.exists(self._name):
            return ObjectNotFound(_missing(self.uri))
        return StorageError(f"S3 request to read {self.uri} failed: {exc}")

    def sha256(self) -> str:
        digest, done, failures = hashlib.sha256(), 0, 0
        response = self._get(0, None)
        etag, body = response.get("ETag"), response["Body"]
        try:
            while True:
                try:
                    chunk = body.read(_READ_CHUNK)
                except Exception as exc:  # botocore's streaming and timeout errors, urllib3's protocol errors
                    failures += 1
                    if failures >= _S3_READ_ATTEMPTS:
                        raise StorageError(f"Reading {self.uri} kept breaking off: {exc}") from exc
                    body.close()
                    body = self._get(done, etag)["Body"]
                    continue
                if not chunk:
                    return digest.hexdigest()
                digest.update(chunk)
                done += len(chunk)
        finally:
            body.close()

    @contextmanager
    def local(self) -> Iterator[_Readable]:
        with self._store.local_file(self._name) as path:
            yield _Readable(path=path)


def _missing(uri: str, name: str = "data.source") -> str:
    """A missing source the user named, as an input error naming the key or flag it came from."""
    return f"Expected {name} to name an existing file, received {uri!r}: there is none."


def read_source(uri: str, name: str) -> bytes:
    """:func:`read_uri` of a source the user named; a missing one is refused naming ``name`` (the key or
    flag it came from), as an input error."""
    try:
        return read_uri(uri)
    except ObjectNotFound:
        raise ObjectNotFound(_missing(uri, name)) from None


def _source(uri: str, raw: bytes | None = None) -> _Source:
    if raw is not None:
        return _BytesSource(uri, raw)
    return _S3Source(uri) if is_remote(uri) else _LocalSource(uri)


# -- the two passes over a table ---------------------------------------------------------------------

# builds the checks once the column names (and a Parquet file's types) are known
_ScanFor = Callable[[list[str], dict[str, pa.DataType] | None], TableScan]


class _Table:
    """A table read twice, batch by batch: :meth:`scan` checks it and hashes its bytes (:attr:`sha256`),
    :meth:`batches` reads the needed columns again."""

    sha256: str

    def scan(self, scan_for: _ScanFor) -> TableScan:
        raise NotImplementedError

    def batches(self, scan: TableScan) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError


class _CsvTable(_Table):
    def __init__(self, readable: _Readable, uri: str) -> None:
        self._readable = readable
        self._uri = uri
        self._names: list[str] = []

    def _options(self, columns: list[str]) -> dict[str, Any]:
        # every needed column as text: its type is decided over the whole file (tasks.tabular)
        return {
            "read_options": pa_csv.ReadOptions(
                block_size=_CSV_BLOCK_BYTES, column_names=self._names, skip_rows_after_names=1
            ),
            "parse_options": pa_csv.ParseOptions(newlines_in_values=True),
            "convert_options": pa_csv.ConvertOptions(
                include_columns=columns,
                column_types=dict.fromkeys(columns, pa.string()),
                null_values=CSV_NULL_VALUES,
                strings_can_be_null=True,
            ),
        }

    def _header(self) -> tuple[list[str], bool]:
        """The column names (as pandas names them) and whether a data row follows the header."""
        with self._readable.open() as handle:
            reader = pa_csv.open_csv(
                handle,
                read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(null_values=CSV_NULL_VALUES, strings_can_be_null=True),
            )
            has_rows = any(batch.num_rows for batch in reader)
            return mangle_csv_header(reader.schema.names), has_rows

    def _read(self, columns: list[str]) -> Iterator[tuple[pa.RecordBatch | None, str]]:
        """The batches of ``columns``, then ``(None, sha256 of the file)``, hashed while it is read."""
        digest = self._readable.hash_alongside()
        try:
            with self._readable.open() as handle:
                yield from ((batch, "") for batch in pa_csv.open_csv(handle, **self._options(columns)))
        except pa.ArrowInvalid as err:
            digest.cancel()
            raise unreadable_error(self._uri, "csv", err) from err
        except BaseException:
            digest.cancel()
            raise
        yield None, digest.result()

    def scan(self, scan_for: _ScanFor) -> TableScan:
        try:
            names, has_rows = self._header()
        except pa.ArrowInvalid as err:
            raise unreadable_error(self._uri, "csv", err) from err
        if not has_rows:
            raise no_rows_error(self._uri)
        self._names = names
        scan = scan_for(names, None)
        for batch, digest in self._read(scan.needed):
            if batch is None:
                self.sha256 = digest
            else:
                scan.add(batch)
        return scan

    def batches(self, scan: TableScan) -> Iterator[pa.RecordBatch]:
        for batch, digest in self._read(scan.needed):
            if batch is not None:
                yield batch
            elif digest != self.sha256:
                raise SourceChangedError(
                    f"{self._uri} changed while it was being prepared (sha256 {self.sha256} when checked, "
                    f"{digest} when split); nothing was published."
                )


class _ParquetTable(_Table):
    def __init__(self, handle: pa.NativeFile, readable: _Readable, uri: str) -> None:
        self._handle = handle  # both passes read this one handle: a file replaced meanwhile is not seen
        self._readable = readable
        self._uri = uri
        self._file: pq.ParquetFile | None = None

    def scan(self, scan_for: _ScanFor) -> TableScan:
        digest = self._readable.hash_alongside()
        try:
            scan = self._scan(scan_for)
        except BaseException:
            digest.cancel()
            raise
        self.sha256 = digest.result()
        return scan

    def _scan(self, scan_for: _ScanFor) -> TableScan:
        try:
            self._file = pq.ParquetFile(self._handle, pre_buffer=False, buffer_size=_READ_CHUNK)
        except (pa.ArrowInvalid, OSError) as err:
            raise unreadable_error(self._uri, "parquet", err) from err
        schema = self._file.schema_arrow
        # pandas reads the index a DataFrame was saved with as the index, not as a column
        index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
        names = [name for name in schema.names if name not in index]
        if self._file.metadata.num_rows == 0:
            raise no_rows_error(self._uri)
        scan = scan_for(names, {name: schema.field(name).type for name in names})
        for batch in self.batches(scan):
            scan.add(batch)
        return scan

    def batches(self, scan: TableScan) -> Iterator[pa.RecordBatch]:
        assert self._file is not None
        try:
            for batch in self._file.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=scan.needed):
                yield batch.select(scan.needed)
        except pa.ArrowInvalid as err:
            raise unreadable_error(self._uri, "parquet", err) from err


@contextmanager
def _open_table(source: _Source, fmt: Literal["csv", "parquet"]) -> Iterator[_Table]:
    with source.local() as readable:
        if fmt == "csv":
            yield _CsvTable(readable, source.uri)
            return
        with readable.open() as handle:
            yield _ParquetTable(handle, readable, source.uri)


# -- writing the splits ------------------------------------------------------------------------------


def _group_rows(schema: pa.Schema) -> int:
    """Rows per row group of a split: about ``_ROW_GROUP_BYTES`` of values (a function of the schema
    alone, so the same rows always give the same bytes)."""
    width = sum(max(1, field.type.bit_width // 8) for field in schema)
    return max(1024, min(1024 * 1024, _ROW_GROUP_BYTES // width))


class _SplitWriter:
    """One split: a Parquet file written row group by row group, hashed as it is written and uploaded
    while it grows (the upload completes only on :meth:`publish`)."""

    def __init__(self, store: ObjectStore, key: str, path: str, schema: pa.Schema) -> None:
        self.key = key
        self.rows = 0
        self.upload_error: BaseException | None = None
        self._group = _group_rows(schema)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._growing = GrowingFile(path)
        self._sink = HashingWriter(path, on_write=self._growing.advance)
        self._writer = pq.ParquetWriter(self._sink, schema)
        self._thread = threading.Thread(
            target=self._upload, args=(store,), name=f"prepare-upload-{key}", daemon=True
        )
        self._thread.start()

    def _upload(self, store: ObjectStore) -> None:
        try:
            store.put_growing_file(self.key, self._growing)
        except BaseException as exc:
            self.upload_error = exc
            self._growing.cancel()  # the writer stops at its next write

    def add(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self._pending_rows >= self._group:
            self._flush(self._group)

    def _flush(self, rows: int) -> None:
        # exactly `rows` rows in one chunk: the bytes do not depend on how the source was batched
        table = pa.Table.from_batches(self._pending)
        self._writer.write_table(table.slice(0, rows).combine_chunks(), row_group_size=rows)
        rest = table.slice(rows)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows

    def close(self) -> PrehashedFile:
        """Write what is left and the footer; the file's size and sha256."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._writer.close()
        return self._sink.finish()

    def publish(self, done: PrehashedFile) -> None:
        """Let the upload complete (a single PUT, or the multipart's last part and completion)."""
        self._growing.finish(done)

    def wait(self) -> BaseException | None:
        """Wait for the upload; its error, if it failed."""
        self._thread.join()
        return self.upload_error

    def abandon(self, error: BaseException) -> None:
        """Stop the upload (a multipart one is aborted) and close the file."""
        self._growing.fail(error)
        self._thread.join()
        self._sink.close()


def _write_splits(
    table: _Table, scan: TableScan, schema: pa.Schema, codes: np.ndarray, folder: str
) -> dict[str, PreparedSplit]:
    """The second pass: each row to its split's writer; the splits published once all are written."""
    store = open_store(folder)
    with tempfile.TemporaryDirectory(prefix="lightning-lib-prepare-") as scratch:
        writers: list[_SplitWriter] = []
        try:
            for name in SPLITS:
                key = f"{name}.parquet"
                writers.append(_SplitWriter(store, key, os.path.join(scratch, key), schema))
            offset = 0
            for batch in table.batches(scan):
                part = codes[offset : offset + batch.num_rows]
                offset += batch.num_rows
                if len(part) < batch.num_rows:
                    raise SourceChangedError(f"{scan.source} has more rows than when it was checked.")
                converted = scan.convert(batch, schema)
                for code, writer in zip(SPLIT_CODES, writers, strict=True):
                    mask = part == code
                    if mask.any():
                        writer.add(converted.filter(pa.array(mask)))
            if offset != len(codes):
                raise SourceChangedError(f"{scan.source} has fewer rows than when it was checked.")
            done = [writer.close() for writer in writers]
        except BaseException as exc:
            for writer in writers:
                writer.abandon(exc)
            failed = next((w.upload_error for w in writers if w.upload_error is not exc), None)
            if failed is not None:
                raise failed from exc  # the upload broke off first; the writer only saw the cancellation
            raise
        for writer, file in zip(writers, done, strict=True):
            writer.publish(file)
        errors = [writer.wait() for writer in writers]
        failed = next((error for error in errors if error is not None), None)
        if failed is not None:
            raise failed  # no manifest is written: the folder is not to be trusted
        return {
            name: PreparedSplit(uri=join_uri(folder, writer.key), sha256=file.sha256, rows=writer.rows)
            for name, writer, file in zip(SPLITS, writers, done, strict=True)
        }


# -- identity, folders and the preparation ------------------------------------------------------------


def input_digest(config: TrainConfig) -> str:
    """sha256 of the source file's bytes, streamed (memory does not grow with the file)."""
    return _source(config.table().source).sha256()


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
    """Read, check, split and write, streaming; return the URIs and digests. ``raw`` (the source's
    bytes) skips reading the source."""
    data = config.table()
    fmt = data.source_format()
    assert fmt is not None  # DataConfig refuses a source without a known format
    source = _source(data.source, raw)
    num_classes = config.class_count()

    def scan_for(columns: list[str], types: dict[str, pa.DataType] | None) -> TableScan:
        return TableScan(
            columns, data.features, data.target, data.source, num_classes=num_classes, types=types
        )

    with _open_table(source, fmt) as table:
        scan = table.scan(scan_for)
        schema = scan.finish()
        codes = split_assignment(scan.rows, data.val_fraction, data.test_fraction, config.split_seed())
        digest = table.sha256
        folder = prepared_folder(config, digest)
        written = _write_splits(table, scan, schema, codes, folder)
    result = PreparedData(
        dataset_id=dataset_id(config, digest),
        source=data.source,
        input_sha256=digest,
        features=scan.features,
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
    open_store(folder).put_bytes(MANIFEST_NAME, result.model_dump_json(indent=2).encode())
    return result


def load_prepared(manifest_uri: str) -> PreparedData:
    """Read a ``PREPARED.json`` back, e.g. to check that a cached result's files are still there."""
    return PreparedData.model_validate_json(read_uri(manifest_uri))


def prepare_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: ``(task_run_context, parameters) -> key``.

    The key is the input digest plus the split parameters plus where the output goes, as an absolute
    path (the cached result holds URIs, so another data_root, or the same relative one in another working
    directory, must not reuse it). The digest is the task's ``input_sha256`` parameter when the caller
    computed it already (:func:`run_prepare_data` does), else the source is hashed here, streamed: keying
    on content rather than on a name or a modification time costs one read of the source.
    """
    config: TrainConfig = parameters["config"]
    digest = parameters.get("input_sha256") or input_digest(config)
    spec = _split_spec(config, digest)
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
def prepare_data(config: TrainConfig, input_sha256: str | None = None) -> PreparedData:
    """Prefect task around :func:`prepare`: cached by input content, retried on transient storage faults.

    ``input_sha256``, when given, is the source's digest already computed by the caller: the cache key
    uses it instead of reading the source again. A source that changed since is refused after preparing
    (its folder is complete and correct, addressed by the new content), so that the result is not cached
    under the old digest's key.
    """
    result = prepare(config)
    if input_sha256 is not None and result.input_sha256 != input_sha256:
        raise StaleDigestError(
            f"{config.table().source} changed after the flow hashed it (sha256 {input_sha256}, prepared "
            f"{result.input_sha256}): run the flow again to use the new content."
        )
    return result


def run_prepare_data(config: TrainConfig) -> PreparedData:
    """In a flow: the ``prepare_data`` task, from the cache unless the cached output folder is gone (a
    cleaned ``runs/`` folder, an expired bucket): then it prepares again and refreshes the cache. The
    source is hashed once here, for both the folder and the cache key."""
    digest = input_digest(config)
    present = open_store(prepared_folder(config, digest)).exists(MANIFEST_NAME)
    return prepare_data.with_options(refresh_cache=not present)(config, input_sha256=digest)


__all__ = [
    "MANIFEST_NAME",
    "PREPARE_VERSION",
    "DataValidationError",
    "PreparedData",
    "PreparedSplit",
    "SourceChangedError",
    "StaleDigestError",
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
