"""The checkpoint commit protocol over any ``ObjectStore``: a sealed file per checkpoint, published whole.

A checkpoint is the object ``NAME`` (``epoch=3-step=40.ckpt``, Lightning's name): the archive
``torch.save`` wrote, sealed with its commit marker as the archive's comment (see ``_manifest``). The
marker is written last, into the local staged file, and the sealed file is then published in one step
(a rename, one S3 PUT or the completion of a multipart upload), with ``If-None-Match: *`` for a new
name so that a second writer, or a retried request, never replaces it. Readers only believe a marker
that validates and verify every byte they use against it, so a writer killed at any moment leaves
either a committed checkpoint or nothing under the name (temporary files and incomplete multipart
uploads, which ``cleanup_orphans`` removes).

Overwriting (the rotating "last.ckpt", an explicit ``Trainer.save_checkpoint`` path) publishes the new
sealed file over the old one in the same single step: a reader finds the old checkpoint or the new one,
each whole and verifiable with its own marker, never a mix; deleting is one deletion. A file without a
marker (a user's, pytorch_lightning's) is never committed, and never deleted by cleanup.
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
    EOCD_SIZE,
    TRAILER_READ,
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CommittedCheckpoint,
    CorruptCheckpointError,
    InvalidManifestError,
    check_sealable,
    decode_trailer,
    encode_trailer,
)
from lightning_lib.storage._base import (
    TEMP_MARKER,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    validate_key,
)
from lightning_lib.storage._hashing import GrowingFile, HashingWriter, PrehashedFile, hash_alongside, hash_fd
from lightning_lib.storage._staging import WRITE_PREFIX, staging_dir
from lightning_lib.storage._uri import join_uri

log = logging.getLogger(__name__)
T = TypeVar("T")
_CHUNK = 1024 * 1024

CheckpointSource = bytes | bytearray | memoryview | str | os.PathLike[str] | GrowingFile


def new_body_writer(path: str, on_write: Callable[[int], None] | None = None) -> HashingWriter:
    """A ``HashingWriter`` for ``torch.save`` whose result ``seal`` can commit: the archive's last two
    bytes (its empty comment's length, which the marker replaces) are held back from the hash and from
    any upload reading the file meanwhile."""
    return HashingWriter(path, on_write, hold_back=2)


def seal(writer: HashingWriter, step: int, extra: dict[str, Any] | None = None) -> PrehashedFile:
    """Write the commit marker into the file ``writer`` (from ``new_body_writer``) has finished: the
    returned file is the sealed checkpoint, ready to be published. ``size`` is the whole file's,
    ``sha256`` its body's (the marker records both)."""
    body = writer.finish()
    with open(body.path, "r+b") as handle:
        before = os.pread(handle.fileno(), EOCD_SIZE - 2, max(0, body.size - (EOCD_SIZE - 2)))
        check_sealable(writer.tail, before)
        trailer = encode_trailer(body.size, body.sha256, step, time.time(), dict(extra or {}))
        os.pwrite(handle.fileno(), trailer, body.size)
        handle.truncate(body.size + len(trailer))
    return PrehashedFile(body.path, body.size + len(trailer), body.sha256)


def _seal_bytes(source: bytes | bytearray | memoryview, step: int, extra: dict[str, Any]) -> bytes:
    view = memoryview(source).cast("B")
    check_sealable(bytes(view[-2:]), bytes(view[-EOCD_SIZE:-2]))
    body = view[:-2]
    trailer = encode_trailer(body.nbytes, hashlib.sha256(body).hexdigest(), step, time.time(), extra)
    return b"".join((body, trailer))


def _seal_copy(path: str, folder: str, step: int, extra: dict[str, Any]) -> GrowingFile:
    """A sealed copy of the archive at ``path`` in ``folder`` (the caller's file is left as it is)."""
    copy = os.path.join(folder, "sealed")
    writer = new_body_writer(copy)
    with writer, open(path, "rb") as src:
        while chunk := src.read(_CHUNK):
            writer.write(chunk)
    sealed = GrowingFile(copy)
    sealed.finish(seal(writer, step, extra))
    return sealed


def _read_marker(store: ObjectStore, name: str) -> CommittedCheckpoint | None:
    """The marker sealing the file ``name``: ``None`` when the file has none, ``ObjectNotFound`` when there
    is no file, ``InvalidManifestError`` when the marker cannot be trusted."""
    tail, total = store.get_tail(name, TRAILER_READ)
    return decode_trailer(tail, total, name, join_uri(store.uri, name))


def write_checkpoint(
    store: ObjectStore,
    name: str,
    source: CheckpointSource,
    step: int,
    extra: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> CommittedCheckpoint:
    """Commit the archive ``source`` as the checkpoint file ``name``: seal it, then publish it whole.

    ``source`` is what ``torch.save`` wrote: in-memory bytes or a local path (sealed here, on a copy), or
    a ``GrowingFile`` its writer seals itself (``new_body_writer`` and ``seal``; the upload overlaps the
    writing). Without ``overwrite`` a name that exists (a checkpoint or any other file) raises
    ``CheckpointExistsError`` and is never replaced; with it the file there is replaced in one step.
    """
    validate_key(name)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"Expected step to be a non-negative int, received {step!r}.")
    extra = dict(extra or {})
    json.dumps(extra, allow_nan=False)  # refuse unserialisable extras before uploading anything
    uri = join_uri(store.uri, name)
    if not overwrite and store.exists(name):
        raise _exists(uri)
    if isinstance(source, bytes | bytearray | memoryview):
        data = _seal_bytes(source, step, extra)
        tail = data[-TRAILER_READ:]
        _publish(
            store, name, uri, lambda: store.put_bytes(name, data, if_none_match=not overwrite), lambda: tail
        )
        found = decode_trailer(tail, len(data), name, uri)
    elif isinstance(source, GrowingFile):
        found = _publish_growing(store, name, uri, source, overwrite)
    else:
        with staging_dir(WRITE_PREFIX) as folder:
            found = _publish_growing(
                store, name, uri, _seal_copy(os.fspath(source), folder, step, extra), overwrite
            )
    if found is None or found.step != step:
        raise RuntimeError(f"{uri} was published without the commit marker of step {step}.")
    log.debug("Committed checkpoint %s (step %d)", uri, step)
    return found


def _publish_growing(
    store: ObjectStore, name: str, uri: str, source: GrowingFile, overwrite: bool
) -> CommittedCheckpoint | None:
    def put() -> None:
        try:
            store.put_growing_file(name, source, if_none_match=not overwrite)
        except BaseException:
            source.cancel()  # the rest of the file is not needed: stop its writer at its next write
            raise

    def sealed_tail() -> bytes:
        done = source.result()
        with open(done.path, "rb") as handle:
            return os.pread(handle.fileno(), TRAILER_READ, max(0, done.size - TRAILER_READ))

    _publish(store, name, uri, put, sealed_tail)
    done = source.result()
    if os.path.getsize(done.path) != done.size:
        raise RuntimeError(f"{done.path} changed while it was uploaded to {uri}.")
    return decode_trailer(sealed_tail(), done.size, name, uri)


def _publish(
    store: ObjectStore, name: str, uri: str, put: Callable[[], None], ours: Callable[[], bytes]
) -> None:
    """``put()`` the sealed file; a refused conditional publish is ours if the stored file ends as ours does."""
    try:
        put()
    except PreconditionFailed:
        # A retried request whose first attempt landed (the reply was lost) is refused too: if the
        # stored file ends with our own marker (its time makes it unique), the commit is ours.
        mine = ours()
        with suppress(ObjectNotFound):
            stored, _ = store.get_tail(name, len(mine))
            if stored == mine:
                return
        raise _exists(uri) from None


def _exists(uri: str) -> CheckpointExistsError:
    return CheckpointExistsError(
        f"{uri} already exists: a checkpoint never replaces a file unless asked to (overwrite); it takes"
        " a new name."
    )


def name_taken(store: ObjectStore, name: str) -> bool:
    """Whether a file exists at ``name``, a committed checkpoint or not: such a name is taken."""
    return store.exists(name)


def load_manifest(store: ObjectStore, name: str) -> CommittedCheckpoint:
    """The committed checkpoint ``name``: ``CheckpointNotFoundError`` when there is no file or it has no
    commit marker, ``InvalidManifestError`` when its marker cannot be trusted."""
    uri = join_uri(store.uri, name)
    try:
        found = _read_marker(store, name)
    except ObjectNotFound:
        raise CheckpointNotFoundError(f"{uri} does not exist.") from None
    if found is None:
        raise CheckpointNotFoundError(
            f"{uri} has no commit marker: it is not a committed checkpoint (a plain file, or one whose"
            " commit never finished)."
        )
    return found


def read_manifest(store: ObjectStore, name: str) -> CommittedCheckpoint | None:
    """The committed checkpoint ``name``, or ``None`` when the file is missing, plain or its marker invalid."""
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
    # Each marker is one small ranged GET; on S3 doing them concurrently hides the round trips.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        return _newest_last(pool.map(lambda n: read_manifest(store, n), names))


def list_committed(
    store: ObjectStore, prefix: str = "", suffix: str | None = None
) -> list[CommittedCheckpoint]:
    """Every committed checkpoint whose name starts with ``prefix`` (and ends with ``suffix``, when given:
    ".ckpt" spares reading the markers of a log folder's other files), newest last by (step, time)."""
    names = [
        info.key
        for info in store.list(prefix)
        if (suffix is None or info.key.endswith(suffix)) and info.size >= EOCD_SIZE
    ]
    return _read_manifests(store, names)


def _verify(ckpt: CommittedCheckpoint, found: CommittedCheckpoint | None, size: int, digest: str) -> None:
    """The bytes read must carry a valid marker and their body must match it. The marker they carry may be
    newer than ``ckpt`` (the file was overwritten since it was listed): it is the one that counts."""
    if found is None:
        raise CorruptCheckpointError(f"{ckpt.uri} has lost its commit marker since it was committed.")
    if size != found.size or digest != found.sha256:
        raise CorruptCheckpointError(
            f"{ckpt.uri} does not match its commit marker: expected {found.size} bytes with sha256"
            f" {found.sha256}, found {size} bytes with sha256 {digest}."
        )


def _decoded(ckpt: CommittedCheckpoint, tail: bytes, total: int) -> CommittedCheckpoint | None:
    try:
        return decode_trailer(tail, total, ckpt.name, ckpt.uri)
    except InvalidManifestError as err:
        raise CorruptCheckpointError(str(err)) from None


def _missing(ckpt: CommittedCheckpoint) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{ckpt.uri} was committed but the file is missing.")


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
    """Read a checkpoint's file and check it against its marker; raise ``CorruptCheckpointError`` if not.
    The bytes returned are the whole sealed file, which ``torch.load`` reads as it is."""
    data = _reading(ckpt, lambda: store.get_bytes(ckpt.name))
    found = _decoded(ckpt, data[-TRAILER_READ:], len(data))
    body = memoryview(data)[: found.body_found if found is not None else 0]
    _verify(ckpt, found, body.nbytes, hashlib.sha256(body).hexdigest())
    return data


def _check_file(ckpt: CommittedCheckpoint, fd: int) -> CommittedCheckpoint | None:
    total = os.fstat(fd).st_size
    return _decoded(ckpt, os.pread(fd, TRAILER_READ, max(0, total - TRAILER_READ)), total)


def load_verified(store: ObjectStore, ckpt: CommittedCheckpoint, load: Callable[[BinaryIO], T]) -> T:
    """``load(file)`` a checkpoint's file while its body's sha256 is computed on another thread; return the
    result only once the bytes match the marker, else raise ``CorruptCheckpointError``.

    Hashing and loading read the same open file, so their costs overlap instead of adding up, and
    nothing built from unverified bytes is ever returned. When ``load`` fails on a file that does not
    match its marker, the corruption is reported (chained to the error it caused).
    """

    def attempt() -> tuple[CommittedCheckpoint | None, int, str, T | None, Exception | None]:
        outcome: list[tuple[T | None, Exception | None]] = []
        with store.local_file(ckpt.name) as path, open(path, "rb") as handle:
            found = _check_file(ckpt, handle.fileno())
            if found is None:
                _verify(ckpt, None, 0, "")  # raises: no point in loading it
            assert found is not None
            if found.body_found != found.size:
                _verify(ckpt, found, found.body_found, "")  # raises: no point in loading it
            size, digest = hash_alongside(
                lambda: hash_fd(handle.fileno(), found.size), lambda: outcome.append(_attempt(load, handle))
            )
        return found, size, digest, *outcome[0]

    found, size, digest, result, error = _reading(ckpt, attempt)
    try:
        _verify(ckpt, found, size, digest)
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
        fd = os.open(tmp, os.O_RDONLY)
        try:
            found = _check_file(ckpt, fd)
            _verify(ckpt, found, *(hash_fd(fd, found.body_found) if found is not None else (0, "")))
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def latest_valid(
    store: ObjectStore, prefix: str = "", names: Iterable[str] | None = None, suffix: str | None = None
) -> tuple[CommittedCheckpoint, bytes] | None:
    """The newest committed checkpoint whose file verifies, with that file's bytes.

    Candidates are ``names`` if given, else every committed checkpoint under ``prefix`` (ending with
    ``suffix``). A candidate that fails verification is reported with a ``CheckpointFallbackWarning`` and
    the previous one is tried; storage errors (network, access) are raised, never mistaken for
    corruption. ``None`` when no candidate verifies.
    """
    if names is not None:
        candidates = _read_manifests(store, list(names))
    else:
        candidates = list_committed(store, prefix, suffix)
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
    """Delete the checkpoint file ``name`` (one step: its marker goes with it)."""
    store.delete(name)


def cleanup_orphans(store: ObjectStore, grace_seconds: float, prefix: str = "") -> int:
    """Remove what writers killed mid-commit left under ``prefix`` once older than ``grace_seconds``:
    temporary files of a local folder, incomplete multipart uploads on S3. Returns how many.

    Nothing else can be half-written (a file is published whole), so no file with a name is ever
    removed, the user's included. The grace period must exceed the longest write, or a checkpoint still
    being uploaded would be aborted.
    """
    if grace_seconds < 0:
        raise ValueError(f"Expected grace_seconds >= 0, received {grace_seconds}.")
    removed = store.abort_incomplete_uploads(grace_seconds, prefix)
    if removed:
        log.info("Removed %d unfinished upload(s) under %s", removed, join_uri(store.uri, prefix))
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
    "new_body_writer",
    "read_manifest",
    "read_verified",
    "seal",
    "warn_fallback",
    "write_checkpoint",
]
