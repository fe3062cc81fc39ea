"""Hashing on the way out and on the way in.

``HashingWriter`` hashes a file while ``torch.save`` writes it; ``GrowingFile`` lets an upload read
that file while it is still being written; ``hash_alongside`` overlaps a hash with an upload or a load
(hashlib releases the GIL for large buffers, so the two really run at once).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# Small enough to stay in the CPU cache between the read and the hash, large enough that the
# per-call overhead does not show.
_CHUNK = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class PrehashedFile:
    """A local file whose size and sha256 were computed while it was written (see ``HashingWriter``)."""

    path: str
    size: int
    sha256: str


class HashingWriter(io.RawIOBase):
    """A binary file for ``torch.save`` and friends that hashes bytes as they are written.

    ``finish()`` closes it and returns a ``PrehashedFile`` that ``write_checkpoint`` uploads without
    reading the file a second time to hash it. ``on_write(total)`` is called after each write with the
    number of bytes written so far; those bytes are in the OS by then (the file is unbuffered), so
    another reader of the path sees them.

    ``hold_back`` bytes at the end of what is written are left out of the digest, the progress reports
    and ``finish()``'s size, and kept in ``tail``: a caller that rewrites them once the file is complete
    (a checkpoint's commit trailer replaces the zip archive's empty comment length) never has a reader
    or an upload see them before.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        on_write: Callable[[int], None] | None = None,
        hold_back: int = 0,
    ) -> None:
        super().__init__()
        if hold_back < 0:
            raise ValueError(f"Expected hold_back >= 0, received {hold_back}.")
        self._path = os.fspath(path)
        # unbuffered: torch.save's tensor payloads are single large writes that a buffer would only
        # copy, and a concurrent reader must not miss bytes still held in a user-space buffer
        self._file = open(self._path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._hash = hashlib.sha256()
        self._size = 0
        self._on_write = on_write
        self._hold_back = hold_back
        self.tail = b""  # the held-back bytes, not hashed (yet)

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < view.nbytes:  # a raw write may be partial; torch ignores the count, so finish it here
            step = self._file.write(view[done:])
            if not step:
                raise OSError(f"Writing {self._path} made no progress.")
            done += step
        self._digest(view)
        self._size += done
        self._written(view)
        return done

    def _digest(self, view: memoryview) -> None:
        """Hash all but the last ``hold_back`` bytes written so far, without copying large writes."""
        keep = self._hold_back
        if not keep:
            self._hash.update(view)
        elif view.nbytes >= keep:
            self._hash.update(self.tail)
            self._hash.update(view[: view.nbytes - keep])
            self.tail = bytes(view[view.nbytes - keep :])
        else:
            joined = self.tail + bytes(view)
            self._hash.update(joined[: len(joined) - keep])
            self.tail = joined[len(joined) - keep :]

    @property
    def settled(self) -> int:
        """How many bytes are written for good: all but the held-back ones."""
        return max(0, self._size - self._hold_back)

    def _written(self, view: memoryview) -> None:
        """After each write: report the progress (subclasses may report it later)."""
        if self._on_write is not None:
            self._on_write(self.settled)

    def close(self) -> None:
        file = getattr(self, "_file", None)  # absent when open() failed in __init__
        if file is not None and not file.closed:
            file.close()
        super().close()

    def finish(self) -> PrehashedFile:
        """Close the file and return its size and digest (the held-back bytes left out of both)."""
        self.close()
        return PrehashedFile(self._path, self.settled, self._hash.hexdigest())


class WriteCancelled(Exception):
    """Raised inside the writer of a ``GrowingFile`` whose reader gave up (its upload failed)."""


class GrowingFile:
    """A local file one thread is still writing while another uploads it.

    The writer reports progress (``advance``) and the outcome (``finish`` or ``fail``); the uploader
    waits for the bytes it needs (``wait_for``) and for the final size and digest (``result``), so the
    upload overlaps serialisation instead of following it. ``cancel`` stops the writer at its next
    write, for when the upload has failed and the rest of the file is not needed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._changed = threading.Condition()
        self._written = 0
        self._done: PrehashedFile | None = None
        self._error: BaseException | None = None
        self._cancelled = False

    def advance(self, written: int) -> None:
        """The writer has ``written`` bytes in the file; raises ``WriteCancelled`` once cancelled."""
        with self._changed:
            if self._cancelled:
                raise WriteCancelled(f"The upload of {self.path} was abandoned.")
            self._written = written
            self._changed.notify_all()

    def finish(self, done: PrehashedFile) -> None:
        with self._changed:
            self._written, self._done = done.size, done
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._changed:
            self._error = error
            self._changed.notify_all()

    def cancel(self) -> None:
        with self._changed:
            self._cancelled = True

    def wait_for(self, end: int) -> int:
        """Block until the file holds ``end`` bytes or is complete; return how many of them it holds.

        Raises the writer's error if it failed.
        """
        with self._changed:
            while self._written < end and self._done is None and self._error is None:
                self._changed.wait()
            if self._error is not None:
                raise self._error
            return min(end, self._written)

    def result(self) -> PrehashedFile:
        """The complete file's size and digest, once written; raises the writer's error if it failed."""
        with self._changed:
            while self._done is None and self._error is None:
                self._changed.wait()
            if self._error is not None:
                raise self._error
            assert self._done is not None
            return self._done


FileSource = bytes | bytearray | memoryview | str | os.PathLike[str] | PrehashedFile | GrowingFile


def hash_fd(fd: int, limit: int | None = None) -> tuple[int, str]:
    """Size and sha256 of an open file (of its first ``limit`` bytes when given), read with ``pread`` so
    the descriptor's offset is not moved (another thread may be reading the same descriptor meanwhile)."""
    digest, size = hashlib.sha256(), 0
    end = float("inf") if limit is None else limit
    if hasattr(os, "preadv"):  # into one reused buffer
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while size < end:
            want = int(min(_CHUNK, end - size))
            n = os.preadv(fd, [view[:want]], size)
            if not n:
                break
            digest.update(view[:n])
            size += n
    else:
        while size < end and (chunk := os.pread(fd, int(min(_CHUNK, end - size)), size)):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def hash_file(path: str) -> tuple[int, str]:
    """Size and sha256 of a local file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


def hash_alongside(compute: Callable[[], T], upload: Callable[[], None]) -> T:
    """Run ``compute`` on a helper thread while ``upload`` runs here; hashlib releases the GIL, so
    hashing overlaps the network transfer instead of adding to it."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(compute())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, name="lightning-lib-hash", daemon=True)
    worker.start()
    try:
        upload()
    finally:
        worker.join()
    if errors:
        raise errors[0]
    return result[0]
