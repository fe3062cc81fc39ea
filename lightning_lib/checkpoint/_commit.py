"""The checkpoint commit protocol over any ``ObjectStore``.

A checkpoint is a folder ``NAME`` in a store: its files are written first, then ``NAME/MANIFEST.json``
(each file's size and sha256, the step, the time) is written last with a conditional put. Readers
only believe a manifest that validates, and verify every byte they read against it, so a writer
killed at any moment leaves either a complete checkpoint or one that readers do not see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, BinaryIO, TypeVar

from lightning_lib.checkpoint._manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CommittedCheckpoint,
    CorruptCheckpointError,
    FileEntry,
    InvalidManifestError,
    decode_manifest,
    encode_manifest,
    validate_filename,
)
from lightning_lib.storage._base import (
    TEMP_MARKER,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    validate_key,
)
from lightning_lib.storage._hashing import (
    FileSource,
    GrowingFile,
    PrehashedFile,
    hash_alongside,
    hash_fd,
    hash_file,
)
from lightning_lib.storage._uri import join_uri

log = logging.getLogger(__name__)
T = TypeVar("T")


def _manifest_key(name: str) -> str:
    return f"{name}/{MANIFEST_NAME}"


def _write_file(store: ObjectStore, key: str, source: FileSource) -> FileEntry:
    """Upload one file and return its manifest entry, hashing the bytes on their way out."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        digest = hash_alongside(
            lambda: hashlib.sha256(view).hexdigest(), lambda: store.put_bytes(key, source)
        )
        return {"size": view.nbytes, "sha256": digest}
    if isinstance(source, GrowingFile):
        try:
            store.put_growing_file(key, source)
        except BaseException:
            source.cancel()  # the rest of the file is not needed: stop its writer at its next write
            raise
        done = source.result()
        if os.path.getsize(done.path) != done.size:
            raise RuntimeError(f"{done.path} changed while it was uploaded to {store.uri}/{key}.")
        return {"size": done.size, "sha256": done.sha256}
    if isinstance(source, PrehashedFile):
        if os.path.getsize(source.path) != source.size:
            raise ValueError(
                f"{source.path} is {os.path.getsize(source.path)} bytes, its PrehashedFile says {source.size}."
            )
        store.put_file(key, source.path)
        return {"size": source.size, "sha256": source.sha256}
    path = os.fspath(source)
    size, digest = hash_alongside(lambda: hash_file(path), lambda: store.put_file(key, path))
    if os.path.getsize(path) != size:
        raise RuntimeError(f"{path} changed while it was uploaded to {store.uri}/{key}.")
    return {"size": size, "sha256": digest}


def write_checkpoint(
    store: ObjectStore,
    name: str,
    files: Mapping[str, FileSource],
    step: int,
    extra: dict[str, Any] | None = None,
) -> CommittedCheckpoint:
    """Write ``files`` under ``name`` and commit them with a manifest written last.

    Values are in-memory bytes, local file paths, or ``PrehashedFile``. Committed checkpoints are
    immutable: an existing manifest under ``name`` raises ``CheckpointExistsError`` before any file is
    touched. One writer per name is assumed; the conditional manifest put makes a second writer fail.
    """
    validate_key(name)
    if not files:
        raise ValueError(f"Expected at least one file for checkpoint {name!r}, received none.")
    for filename in files:
        validate_filename(filename)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"Expected step to be a non-negative int, received {step!r}.")
    extra = dict(extra or {})
    json.dumps(extra, allow_nan=False)  # refuse unserialisable extras before uploading anything
    uri = join_uri(store.uri, name)
    if name_taken(store, name):
        raise CheckpointExistsError(
            f"{uri} is already committed (a {MANIFEST_NAME} exists there, valid or not): a name whose "
            "manifest exists is never overwritten; write under a new name or delete it first."
        )

    entries = {filename: _write_file(store, f"{name}/{filename}", src) for filename, src in files.items()}
    committed_at = time.time()
    payload = encode_manifest(step, committed_at, entries, extra)
    try:
        store.put_bytes(_manifest_key(name), payload, if_none_match=True)
    except PreconditionFailed:
        # A retried put whose first attempt landed (the reply was lost) is refused too: if the stored
        # manifest is byte-for-byte ours, the commit happened.
        with suppress(ObjectNotFound):
            if store.get_bytes(_manifest_key(name)) == payload:
                return CommittedCheckpoint(name, uri, step, committed_at, entries, extra)
        raise CheckpointExistsError(f"{uri} was committed by another writer meanwhile.") from None
    log.debug("Committed checkpoint %s (step %d)", uri, step)
    return CommittedCheckpoint(name, uri, step, committed_at, entries, extra)


def name_taken(store: ObjectStore, name: str) -> bool:
    """Whether a ``MANIFEST.json`` object exists under ``name``, valid or not.

    The naming policy: such a name is taken. Readers skip an invalid manifest, but a writer never
    reuses its name (that would overwrite what is there), so a new checkpoint takes the next free name
    and the invalid folder stays for the operator to inspect.
    """
    return store.exists(_manifest_key(name))


def load_manifest(store: ObjectStore, name: str) -> CommittedCheckpoint:
    """Read and validate ``name``'s manifest, raising ``CheckpointNotFoundError`` or ``InvalidManifestError``."""
    uri = join_uri(store.uri, name)
    try:
        raw = store.get_bytes(_manifest_key(name))
    except ObjectNotFound:
        raise CheckpointNotFoundError(
            f"{uri} has no {MANIFEST_NAME}: it was never committed (or was deleted), so it does not exist."
        ) from None
    return decode_manifest(raw, name, uri)


def read_manifest(store: ObjectStore, name: str) -> CommittedCheckpoint | None:
    """The committed checkpoint ``name``, or ``None`` when its manifest is missing or invalid."""
    try:
        return load_manifest(store, name)
    except CheckpointNotFoundError:
        return None
    except InvalidManifestError as exc:
        log.warning("Ignoring checkpoint: %s", exc)
        return None


def _newest_last(checkpoints: Iterable[CommittedCheckpoint | None]) -> list[CommittedCheckpoint]:
    return sorted((c for c in checkpoints if c is not None), key=lambda c: (c.step, c.time))


def _read_manifests(store: ObjectStore, names: list[str]) -> list[CommittedCheckpoint]:
    # Each manifest is one small GET; on S3 doing them concurrently hides the round trips.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        return _newest_last(pool.map(lambda n: read_manifest(store, n), names))


def list_committed(store: ObjectStore, prefix: str = "") -> list[CommittedCheckpoint]:
    """Every committed checkpoint whose name starts with ``prefix``, newest last by (step, time)."""
    suffix = "/" + MANIFEST_NAME
    names = []
    for info in store.list(prefix):
        if not info.key.endswith(suffix):
            continue
        if info.size > MAX_MANIFEST_BYTES:  # refused without downloading it
            log.warning(
                "Ignoring checkpoint: %s is %d bytes, more than a manifest's %d.",
                join_uri(store.uri, info.key),
                info.size,
                MAX_MANIFEST_BYTES,
            )
            continue
        names.append(info.key[: -len(suffix)])
    return _read_manifests(store, names)


def _check(ckpt: CommittedCheckpoint, filename: str, size: int, digest: str) -> None:
    expected = ckpt.files[filename]
    if size != expected["size"] or digest != expected["sha256"]:
        raise CorruptCheckpointError(
            f"{ckpt.uri}/{filename} does not match its manifest: expected {expected['size']} bytes with "
            f"sha256 {expected['sha256']}, found {size} bytes with sha256 {digest}."
        )


def _entry_or_raise(ckpt: CommittedCheckpoint, filename: str) -> None:
    if filename not in ckpt.files:
        raise KeyError(f"{filename!r} is not part of checkpoint {ckpt.uri}; it holds {sorted(ckpt.files)}.")


def read_verified(store: ObjectStore, ckpt: CommittedCheckpoint, filename: str) -> bytes:
    """Read a checkpoint file and check it against the manifest; raise ``CorruptCheckpointError`` if not."""
    _entry_or_raise(ckpt, filename)
    try:
        data = store.get_bytes(f"{ckpt.name}/{filename}")
    except ObjectNotFound:
        raise CorruptCheckpointError(
            f"{ckpt.uri}/{filename} is listed in the manifest but missing."
        ) from None
    _check(ckpt, filename, len(data), hashlib.sha256(data).hexdigest())
    return data


def load_verified(
    store: ObjectStore, ckpt: CommittedCheckpoint, filename: str, load: Callable[[BinaryIO], T]
) -> T:
    """``load(file)`` a checkpoint file while its sha256 is computed on another thread; return the
    result only once the bytes match the manifest, else raise ``CorruptCheckpointError``.

    Hashing and loading read the same open file, so their costs overlap instead of adding up, and
    nothing built from unverified bytes is ever returned. When ``load`` fails on a file that does not
    match its manifest, the corruption is reported (chained to the error it caused).
    """
    _entry_or_raise(ckpt, filename)
    outcome: list[tuple[T | None, Exception | None]] = []
    try:
        with store.local_file(f"{ckpt.name}/{filename}") as path, open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size != ckpt.files[filename]["size"]:
                _check(ckpt, filename, *hash_fd(handle.fileno()))  # raises: no point in loading it
            size, digest = hash_alongside(
                lambda: hash_fd(handle.fileno()), lambda: outcome.append(_attempt(load, handle))
            )
    except ObjectNotFound:
        raise CorruptCheckpointError(
            f"{ckpt.uri}/{filename} is listed in the manifest but missing."
        ) from None
    result, error = outcome[0]
    try:
        _check(ckpt, filename, size, digest)
    except CorruptCheckpointError as corrupt:
        raise corrupt from error
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


def _attempt(load: Callable[[BinaryIO], T], handle: BinaryIO) -> tuple[T | None, Exception | None]:
    try:
        return load(handle), None
    except Exception as exc:  # judged after the hash: corruption explains it better than the parser
        return None, exc


def download_verified(store: ObjectStore, ckpt: CommittedCheckpoint, filename: str, local_path: str) -> None:
    """Download a checkpoint file to ``local_path``, which appears only once its hash has been verified."""
    _entry_or_raise(ckpt, filename)
    target = os.path.abspath(local_path)
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}{TEMP_MARKER}{uuid.uuid4().hex}")
    try:
        try:
            store.get_file(f"{ckpt.name}/{filename}", tmp)
        except ObjectNotFound:
            raise CorruptCheckpointError(
                f"{ckpt.uri}/{filename} is listed in the manifest but missing."
            ) from None
        _check(ckpt, filename, *hash_file(tmp))
        os.replace(tmp, target)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def latest_valid(
    store: ObjectStore,
    prefix: str = "",
    names: Iterable[str] | None = None,
    filename: str | None = None,
) -> tuple[CommittedCheckpoint, bytes] | None:
    """The newest committed checkpoint whose file verifies, with that file's bytes.

    Candidates are ``names`` if given, else every committed checkpoint under ``prefix``. ``filename``
    defaults to the checkpoint's only file. A candidate that fails verification is reported with a
    ``CheckpointFallbackWarning`` and the previous one is tried; storage errors (network, access) are
    raised, never mistaken for corruption. ``None`` when no candidate verifies.
    """
    candidates = _read_manifests(store, list(names)) if names is not None else list_committed(store, prefix)
    for ckpt in reversed(candidates):
        wanted = filename
        if wanted is None:
            if len(ckpt.files) != 1:
                raise ValueError(f"{ckpt.uri} holds {sorted(ckpt.files)}; pass filename= to choose one.")
            wanted = next(iter(ckpt.files))
        try:
            _entry_or_raise(ckpt, wanted)
            return ckpt, read_verified(store, ckpt, wanted)
        except (CorruptCheckpointError, KeyError) as err:
            message = err.args[0] if isinstance(err, KeyError) else str(err)
            warn_fallback(ckpt, message, stacklevel=2)
    return None


def warn_fallback(ckpt: CommittedCheckpoint, message: str, stacklevel: int) -> None:
    """Say (warning and log) that ``ckpt`` failed verification and the previous one is tried instead."""
    warnings.warn(
        f"Checkpoint {ckpt.uri} (step {ckpt.step}) cannot be used: {message} "
        "Falling back to the previous committed checkpoint.",
        CheckpointFallbackWarning,
        stacklevel=stacklevel + 1,  # where the caller would have pointed
    )
    log.warning("Checkpoint %s failed verification, falling back: %s", ckpt.uri, message)


def delete_checkpoint(store: ObjectStore, name: str) -> None:
    """Delete the manifest first (readers stop seeing the checkpoint at once), then every file under it."""
    store.delete(_manifest_key(name))
    for info in store.list(f"{name}/"):
        store.delete(info.key)


def _orphan_folders(infos: list[ObjectInfo], prefix: str) -> dict[str, list[ObjectInfo]]:
    """Group objects by the first folder below ``prefix``; loose objects directly under it are skipped."""
    folders: dict[str, list[ObjectInfo]] = {}
    for info in infos:
        cut = info.key.find("/", len(prefix))
        if cut > 0:
            folders.setdefault(info.key[:cut], []).append(info)
    return folders


def cleanup_orphans(store: ObjectStore, grace_seconds: float, prefix: str = "") -> list[str]:
    """Delete uncommitted checkpoint folders whose newest object is older than ``grace_seconds``.

    A folder is each first-level folder below ``prefix``; any folder holding a ``MANIFEST.json``
    (valid or not, at any depth) is left alone. Incomplete multipart uploads (or local temporary
    files) older than the grace period are aborted too. The grace period must exceed the longest
    write, or a checkpoint still being uploaded would be removed. Returns the deleted folder names.
    """
    if grace_seconds < 0:
        raise ValueError(f"Expected grace_seconds >= 0, received {grace_seconds}.")
    cutoff = time.time() - grace_seconds
    removed = []
    for folder, objects in sorted(_orphan_folders(store.list(prefix), prefix).items()):
        if any(o.key.rpartition("/")[2] == MANIFEST_NAME for o in objects):
            continue
        if max(o.mtime for o in objects) > cutoff:
            continue
        # Narrow the race with a writer that commits right now: look once more before deleting.
        if store.exists(_manifest_key(folder)):
            continue
        for obj in objects:
            store.delete(obj.key)
        log.info("Removed uncommitted checkpoint folder %s", join_uri(store.uri, folder))
        removed.append(folder)
    aborted = store.abort_incomplete_uploads(grace_seconds, prefix)
    if aborted:
        log.info("Aborted %d incomplete upload(s) under %s", aborted, join_uri(store.uri, prefix))
    return removed


__all__ = [
    "cleanup_orphans",
    "delete_checkpoint",
    "download_verified",
    "latest_valid",
    "list_committed",
    "load_manifest",
    "load_verified",
    "name_taken",
    "read_manifest",
    "read_verified",
    "warn_fallback",
    "write_checkpoint",
]
