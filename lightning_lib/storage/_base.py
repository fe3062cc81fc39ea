"""The ``ObjectStore`` protocol shared by the local and S3 stores, and the errors they raise.

Keys are always ``/``-separated and relative to the store's root URI, whatever the backend, so the
checkpoint commit protocol (:mod:`lightning_lib.checkpoint`) is written once for both.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from lightning_lib.storage._hashing import GrowingFile

# Every temporary object a store creates carries this marker, so listings can hide it and
# ``abort_incomplete_uploads`` can find what a killed writer left behind.
TEMP_MARKER = ".lltmp-"


class StorageError(OSError):
    """Base class of every error raised by an object store; the message names the URI involved."""


class PreconditionFailed(StorageError, FileExistsError):
    """A conditional put (``if_none_match=True``) found the key already present."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The key does not exist in the store."""


class BucketNotFound(StorageError):
    """The S3 bucket named by the URI does not exist."""


class MissingCredentialsError(StorageError):
    """boto3's configuration chain found no credentials for the S3 URI."""


class AccessDeniedError(StorageError, PermissionError):
    """The credentials boto3 found are not allowed to perform the operation."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object in a listing: its key relative to the store root, size in bytes, mtime in epoch seconds."""

    key: str
    size: int
    mtime: float


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``ValueError`` naming it.

    Rejecting ``..``, empty components and absolute keys keeps a crafted checkpoint name or manifest
    from reading or writing outside the store's root on the local backend.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"Expected a non-empty object key, received {key!r}.")
    if key.startswith("/") or "\\" in key:
        raise ValueError(f"Expected a relative '/'-separated object key, received {key!r}.")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"Expected an object key without empty, '.' or '..' parts, received {key!r}.")
    if TEMP_MARKER in key:
        raise ValueError(f"Object keys may not contain {TEMP_MARKER!r} (reserved), received {key!r}.")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key -> bytes store rooted at ``uri`` (``s3://bucket/prefix`` or a local folder).

    Implementations publish each object atomically: a reader sees either the whole object or none.
    """

    @property
    def uri(self) -> str:
        """The root URI every key is relative to."""
        ...

    def put_bytes(
        self, key: str, data: bytes | bytearray | memoryview, *, if_none_match: bool = False
    ) -> None:
        """Store ``data`` at ``key``; with ``if_none_match`` raise ``PreconditionFailed`` if it exists."""
        ...

    def put_file(self, key: str, local_path: str) -> None:
        """Upload the local file at ``local_path`` to ``key`` (multipart for large files on S3)."""
        ...

    def put_growing_file(self, key: str, source: GrowingFile, *, if_none_match: bool = False) -> None:
        """Upload a local file that another thread is still writing (see ``GrowingFile``), overlapping
        the transfer with the writing where the backend can. With ``if_none_match`` the object is
        published only if ``key`` does not exist (``PreconditionFailed`` otherwise), as one step."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Return the object's content; raise ``ObjectNotFound`` if it does not exist."""
        ...

    def get_file(self, key: str, local_path: str) -> None:
        """Download ``key`` to ``local_path``, which appears only once complete."""
        ...

    def get_tail(self, key: str, size: int) -> tuple[bytes, int]:
        """The last ``size`` bytes of the object (all of it when smaller) and the object's total size,
        in one request; raise ``ObjectNotFound`` if it does not exist."""
        ...

    def local_file(self, key: str) -> AbstractContextManager[str]:
        """A local path holding the object while the context lasts: the stored file itself for a local
        folder, a temporary download otherwise. Raises ``ObjectNotFound`` if it does not exist."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...

    def abort_incomplete_uploads(self, older_than_seconds: float, prefix: str = "") -> int:
        """Discard partial uploads under ``prefix`` started before the given age; return how many."""
        ...
