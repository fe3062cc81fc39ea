"""The checkpoint commit protocol over any ``ObjectStore``: one file per checkpoint, one marker per file.

A checkpoint is the object ``NAME`` (``epoch=3-step=40.ckpt``: the file ``torch.load`` opens, Lightning's
name) and its marker ``manifest_key(NAME)`` (``.manifests/epoch=3-step=40.ckpt.json``, see ``_manifest``).

Writing a new name: the marker is first written in the ``writing`` state with a conditional put (the
name is claimed; a second writer fails before uploading anything), then the file is uploaded (each store
publishes an object atomically), then the marker is rewritten as ``committed`` with the file's size and
sha256, the step and the time: the commit, written last.

Overwriting a committed name (the rotating "last.ckpt"): once the new bytes are hashed, and before they
replace the old ones, the marker lists both versions; once they are in place, only the new one. A
reader therefore always finds bytes that match the marker (whichever version they are), and at no
moment does the checkpoint stop existing: a writer killed at any step leaves the old or the new
checkpoint, whole and verifiable, never a torn file or a mismatched pair that validates.

Deleting: the marker becomes ``deleting`` (readers stop seeing the checkpoint at once), the file is
deleted, then the marker. Readers only believe a committed marker that validates, and verify every byte
they use against it. ``cleanup_orphans`` finishes what a killed writer left (a claim without a commit,
a half-done deletion, temporary objects), and never touches a file it has no marker of: a file a user
put in the folder is not this protocol's to delete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, BinaryIO, TypeVar

from lightning_lib.checkpoint._manifest import (
    MAX_MANIFEST_BYTES,
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CommittedCheckpoint,
    CorruptCheckpointError,
    FileVersion,
    InvalidManifestError,
    Marker,
    decode_manifest,
    encode_manifest,
    manifest_key,
    name_of_manifest,
    validate_name,
)
from lightning_lib.storage._base import TEMP_MARKER, ObjectNotFound, ObjectStore, PreconditionFailed
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


def _digest_bytes(view: memoryview) -> tuple[int, str]:
    return view.nbytes, hashlib.sha256(view).hexdigest()


def _upload(
    store: ObjectStore, name: str, source: FileSource, before_publish: Callable[[int, str], None] | None
) -> tuple[int, str]:
    """Upload ``source`` as the object ``name``; return its size and sha256.

    ``before_publish(size, sha256)`` runs once the bytes are known and before they become visible at
    ``name``: an overwrite lists the new version in the marker there. Without it the hash is computed
    alongside the upload, so its cost hides behind the transfer.
    """
    if isinstance(source, GrowingFile):
        hook = None if before_publish is None else (lambda done: before_publish(done.size, done.sha256))
        try:
            store.put_growing_file(name, source, before_publish=hook)
        except BaseException:
            source.cancel()  # the rest of the file is not needed: stop its writer at its next write
            raise
        done = source.result()
        if os.path.getsize(done.path) != done.size:
            raise RuntimeError(f"{done.path} changed while it was uploaded to {store.uri}/{name}.")
        return done.size, done.sha256
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        if before_publish is not None:
            size, digest = _digest_bytes(view)
            before_publish(size, digest)
            store.put_bytes(name, source)
            return size, digest
        digest = hash_alongside(
            lambda: hashlib.sha256(view).hexdigest(), lambda: store.put_bytes(name, source)
        )
        return view.nbytes, digest
    if isinstance(source, PrehashedFile):
        if os.path.getsize(source.path) != source.size:
            raise ValueError(
                f"{source.path} is {os.path.getsize(source.path)} bytes, its PrehashedFile says {source.size}."
            )
        if before_publish is not None:
            before_publish(source.size, source.sha256)
        store.put_file(name, source.path)
        return source.size, source.sha256
    path = os.fspath(source)
    if before_publish is not None:
        size, digest = hash_file(path)
        before_publish(size, digest)
        store.put_file(name, path)
    else:
        size, digest = hash_alongside(lambda: hash_file(path), lambda: store.put_file(name, path))
    if os.path.getsize(path) != size:
        raise RuntimeError(f"{path} changed while it was uploaded to {store.uri}/{name}.")
    return size, digest


def _read_marker(store: ObjectStore, name: str) -> Marker:
    """The marker of ``name``: ``CheckpointNotFoundError`` when there is none, ``InvalidManifestError``
    when it cannot be trusted."""
    uri = join_uri(store.uri, name)
    try:
        raw = store.get_bytes(manifest_key(name))
    except ObjectNotFound:
        raise CheckpointNotFoundError(
            f"{uri} has no commit marker: it was never committed (or was deleted), so it does not exist."
        ) from None
    return decode_manifest(raw, name, uri)


def _claim(store: ObjectStore, name: str, claim: bytes) -> None:
    """Take ``name`` for a new checkpoint with a conditional put of its ``writing`` marker."""
    key = manifest_key(name)
    try:
        store.put_bytes(key, claim, if_none_match=True)
    except PreconditionFailed:
        # A retried put whose first attempt landed (the reply was lost) is refused too: if the stored
        # marker is byte-for-byte ours, the claim is ours.
        with suppress(ObjectNotFound):
            if store.get_bytes(key) == claim:
                return
        raise CheckpointExistsError(
            f"{join_uri(store.uri, name)} is already committed or being written (a commit marker exists"
            " there, valid or not): such a name is never overwritten; write under a new name or delete"
            " it first."
        ) from None


def write_checkpoint(
    store: ObjectStore,
    name: str,
    source: FileSource,
    step: int,
    extra: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> CommittedCheckpoint:
    """Upload ``source`` as the checkpoint file ``name`` and commit it with its marker, written last.

    ``source`` is in-memory bytes, a local file path, a ``PrehashedFile`` or a ``GrowingFile``. Without
    ``overwrite``, a name whose marker exists (valid or not) raises ``CheckpointExistsError`` before the
    file is touched. With it, a committed checkpoint there is replaced crash-safely (see the module
    docstring); anything else there (a claim, a deletion, an invalid marker) is written over.
    """
    validate_name(name)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"Expected step to be a non-negative int, received {step!r}.")
    extra = dict(extra or {})
    json.dumps(extra, allow_nan=False)  # refuse unserialisable extras before uploading anything
    uri = join_uri(store.uri, name)
    key = manifest_key(name)
    previous: tuple[FileVersion, ...] = ()
    if overwrite:
        with suppress(CheckpointNotFoundError, InvalidManifestError):
            found = _read_marker(store, name).checkpoint
            previous = found.versions if found is not None else ()
    claimed = not previous
    if claimed:
        claim = encode_manifest("writing", name, [], extra, time.time())
        if overwrite:
            store.put_bytes(key, claim)
        else:
            _claim(store, name, claim)

    def list_both(size: int, digest: str) -> None:
        new = FileVersion(size, digest, step, time.time())
        store.put_bytes(key, encode_manifest("committed", name, [new, *previous], extra, new.time))

    try:
        size, digest = _upload(store, name, source, None if claimed else list_both)
        version = FileVersion(size, digest, step, time.time())
        store.put_bytes(key, encode_manifest("committed", name, [version], extra, version.time))
    except BaseException:
        if claimed:
            _abandon(store, name)
        raise
    log.debug("Committed checkpoint %s (step %d)", uri, step)
    return CommittedCheckpoint(name, uri, (version,), extra)


def _abandon(store: ObjectStore, name: str) -> None:
    """Best effort after a failed write of a claimed name: remove its file and claim, so the name is
    free again. Whatever fails here (the store is likely unreachable) ``cleanup_orphans`` removes later."""
    try:
        store.delete(name)
        store.delete(manifest_key(name))
    except Exception as err:
        log.debug("Could not remove the abandoned checkpoint %s: %s", join_uri(store.uri, name), err)


def name_taken(store: ObjectStore, name: str) -> bool:
    """Whether a marker exists for ``name``, in any state, valid or not.

    The naming policy: such a name is taken. Readers skip an invalid marker, but a writer never reuses
    its name (that would overwrite what is there), so a new checkpoint takes the next free name and
    the invalid one stays for the operator to inspect.
    """
    return store.exists(manifest_key(name))


def load_manifest(store: ObjectStore, name: str) -> CommittedCheckpoint:
    """The committed checkpoint ``name``: ``CheckpointNotFoundError`` when it has no committed marker,
    ``InvalidManifestError`` when its marker cannot be trusted."""
    marker = _read_marker(store, name)
    if marker.checkpoint is None:
        raise CheckpointNotFoundError(
            f"{join_uri(store.uri, name)} is not committed (its marker says {marker.state!r}), so it does"
            " not exist."
        )
    return marker.checkpoint


def read_manifest(store: ObjectStore, name: str) -> CommittedCheckpoint | None:
    """The committed checkpoint ``name``, or ``None`` when its marker is missing, not committed or invalid."""
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
    # Each marker is one small GET; on S3 doing them concurrently hides the round trips.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        return _newest_last(pool.map(lambda n: read_manifest(store, n), names))


def marker_names(store: ObjectStore, prefix: str = "") -> list[str]:
    """The names under ``prefix`` that have a marker (any state, valid or not): the taken names."""
    return [name for info in store.list(prefix) if (name := name_of_manifest(info.key)) is not None]


def list_committed(store: ObjectStore, prefix: str = "") -> list[CommittedCheckpoint]:
    """Every committed checkpoint whose name starts with ``prefix``, newest last by (step, time)."""
    names = []
    for info in store.list(prefix):
        name = name_of_manifest(info.key)
        if name is None or not name.startswith(prefix):
            continue
        if info.size > MAX_MANIFEST_BYTES:  # refused without downloading it
            log.warning(
                "Ignoring checkpoint: the commit marker %s is %d bytes, more than a marker's %d.",
                join_uri(store.uri, info.key),
                info.size,
                MAX_MANIFEST_BYTES,
            )
            continue
        names.append(name)
    return _read_manifests(store, names)


def _check(store: ObjectStore, ckpt: CommittedCheckpoint, size: int, digest: str) -> FileVersion:
    """The version of ``ckpt`` these bytes are; else ``CorruptCheckpointError``.

    Bytes that match none of the versions the reader knew may be a newer version: a writer overwrote the
    file (and its marker) after the marker was read. The marker is read again once, and the bytes are
    accepted only if it now vouches for them.
    """
    found = ckpt.matching(size, digest)
    if found is None:
        fresh = read_manifest(store, ckpt.name)
        found = fresh.matching(size, digest) if fresh is not None and fresh != ckpt else None
    if found is None:
        expected = " or ".join(f"{v.size} bytes with sha256 {v.sha256}" for v in ckpt.versions)
        raise CorruptCheckpointError(
            f"{ckpt.uri} does not match its commit marker: expected {expected}, found {size} bytes with"
            f" sha256 {digest}."
        )
    return found


def _missing(ckpt: CommittedCheckpoint) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{ckpt.uri} is committed by its marker but the file is missing.")


def _reading(ckpt: CommittedCheckpoint, read: Callable[[], T]) -> T:
    """``read()`` the file of ``ckpt``, once more if it was replaced while being read (an overwrite:
    a ranged read refuses to stitch two versions together), ``CorruptCheckpointError`` if it is missing."""
    for attempt in (1, 2):
        try:
            return read()
        except ObjectNotFound:
            raise _missing(ckpt) from None
        except PreconditionFailed:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def read_verified(store: ObjectStore, ckpt: CommittedCheckpoint) -> bytes:
    """Read a checkpoint's file and check it against its marker; raise ``CorruptCheckpointError`` if not."""
    data = _reading(ckpt, lambda: store.get_bytes(ckpt.name))
    _check(store, ckpt, len(data), hashlib.sha256(data).hexdigest())
    return data


def load_verified(store: ObjectStore, ckpt: CommittedCheckpoint, load: Callable[[BinaryIO], T]) -> T:
    """``load(file)`` a checkpoint's file while its sha256 is computed on another thread; return the
    result only once the bytes match the marker, else raise ``CorruptCheckpointError``.

    Hashing and loading read the same open file, so their costs overlap instead of adding up, and
    nothing built from unverified bytes is ever returned. When ``load`` fails on a file that does not
    match its marker, the corruption is reported (chained to the error it caused).
    """

    def attempt() -> tuple[int, str, T | None, Exception | None]:
        outcome: list[tuple[T | None, Exception | None]] = []
        with store.local_file(ckpt.name) as path, open(path, "rb") as handle:
            if not any(v.size == os.fstat(handle.fileno()).st_size for v in ckpt.versions):
                _check(store, ckpt, *hash_fd(handle.fileno()))  # no point in loading it unless a newer one
            size, digest = hash_alongside(
                lambda: hash_fd(handle.fileno()), lambda: outcome.append(_attempt(load, handle))
            )
        return size, digest, *outcome[0]

    size, digest, result, error = _reading(ckpt, attempt)
    try:
        _check(store, ckpt, size, digest)
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


def download_verified(store: ObjectStore, ckpt: CommittedCheckpoint, local_path: str) -> None:
    """Download a checkpoint's file to ``local_path``, which appears only once its hash has been verified."""
    target = os.path.abspath(local_path)
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}{TEMP_MARKER}{uuid.uuid4().hex}")
    try:
        _reading(ckpt, lambda: store.get_file(ckpt.name, tmp))
        _check(store, ckpt, *hash_file(tmp))
        os.replace(tmp, target)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def latest_valid(
    store: ObjectStore, prefix: str = "", names: Iterable[str] | None = None
) -> tuple[CommittedCheckpoint, bytes] | None:
    """The newest committed checkpoint whose file verifies, with that file's bytes.

    Candidates are ``names`` if given, else every committed checkpoint under ``prefix``. A candidate that
    fails verification is reported with a ``CheckpointFallbackWarning`` and the previous one is tried;
    storage errors (network, access) are raised, never mistaken for corruption. ``None`` when no
    candidate verifies.
    """
    candidates = _read_manifests(store, list(names)) if names is not None else list_committed(store, prefix)
    for ckpt in reversed(candidates):
        try:
            return ckpt, read_verified(store, ckpt)
        except CorruptCheckpointError as err:
            warn_fallback(ckpt, str(err), stacklevel=2)
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
    """Mark ``name`` as being deleted (readers stop seeing it at once), delete its file, then its marker.

    A deletion cut short leaves the ``deleting`` marker, which ``cleanup_orphans`` finishes.
    """
    key = manifest_key(name)
    store.put_bytes(key, encode_manifest("deleting", name, [], {}, time.time()))
    store.delete(name)
    store.delete(key)


def _unfinished(store: ObjectStore, name: str) -> bool:
    """Whether the marker of ``name`` is a claim or a deletion that never finished (not committed, not
    invalid: an invalid marker is left for a human to inspect)."""
    try:
        return _read_marker(store, name).state != "committed"
    except (CheckpointNotFoundError, InvalidManifestError):
        return False


def cleanup_orphans(store: ObjectStore, grace_seconds: float, prefix: str = "") -> list[str]:
    """Finish what killed writers left under ``prefix`` once older than ``grace_seconds``; return the
    names whose file and marker were removed.

    A marker still in the ``writing`` or ``deleting`` state is a commit or deletion that never finished:
    its file (if any) and the marker are deleted. Committed and invalid markers, and files without a
    marker (they may be the user's), are left alone. Incomplete multipart uploads (or local temporary
    files) older than the grace period are aborted too. The grace period must exceed the longest write,
    or a checkpoint still being uploaded would be removed.
    """
    if grace_seconds < 0:
        raise ValueError(f"Expected grace_seconds >= 0, received {grace_seconds}.")
    cutoff = time.time() - grace_seconds
    old = [
        (name, info.key)
        for info in store.list(prefix)
        if (name := name_of_manifest(info.key)) is not None
        and info.mtime <= cutoff
        and info.size <= MAX_MANIFEST_BYTES
    ]
    # every old marker is read to know its state: concurrently, as on S3 each is a round trip
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(old)))) as pool:
        unfinished = list(pool.map(lambda found: _unfinished(store, found[0]), old))
    removed = []
    for (name, key), stale in zip(old, unfinished):
        if not stale:
            continue
        store.delete(name)  # the file first: a cleanup cut short here still has the marker to go on
        store.delete(key)
        log.info("Removed the unfinished checkpoint %s", join_uri(store.uri, name))
        removed.append(name)
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
    "marker_names",
    "name_taken",
    "read_manifest",
    "read_verified",
    "warn_fallback",
    "write_checkpoint",
]
