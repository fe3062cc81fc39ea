"""Hashing on the way out: a writer that hashes as it writes, and hashing that overlaps an upload."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class PrehashedFile:
    """A local file whose size and sha256 were computed while it was written (see ``HashingWriter``)."""

    path: str
    size: int
    sha256: str


class HashingWriter(io.RawIOBase):
    """A binary file for ``torch.save`` and friends that hashes bytes as they are written.

    ``finish()`` closes it and returns a ``PrehashedFile`` that ``write_checkpoint`` uploads without
    reading the file a second time to hash it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self._path = os.fspath(path)
        self._file = open(self._path, "wb")  # noqa: SIM115 - owned by this object, closed in close()
        self._hash = hashlib.sha256()
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = self._file.write(view)
        self._hash.update(view[:written])
        self._size += written
        return written

    def close(self) -> None:
        file = getattr(self, "_file", None)  # absent when open() failed in __init__
        if file is not None and not file.closed:
            file.close()
        super().close()

    def finish(self) -> PrehashedFile:
        """Close the file and return its size and digest."""
        self.close()
        return PrehashedFile(self._path, self._size, self._hash.hexdigest())


FileSource = bytes | bytearray | memoryview | str | os.PathLike[str] | PrehashedFile


def hash_file(path: str) -> tuple[int, str]:
    """Size and sha256 of a local file, read in large chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def hash_alongside(compute: Callable[[], Any], upload: Callable[[], None]) -> Any:
    """Run ``compute`` on a helper thread while ``upload`` runs here; hashlib releases the GIL, so
    hashing overlaps the network transfer instead of adding to it."""
    result: list[Any] = []
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
