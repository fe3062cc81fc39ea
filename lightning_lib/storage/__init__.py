"""Object storage: the ``ObjectStore`` protocol over a local folder or S3, and URIs that name either.

Importing this package does not import boto3; only constructing an ``S3Store`` does. The checkpoint
commit protocol built on these stores lives in ``lightning_lib.checkpoint``.
"""

from lightning_lib.storage._hashing import GrowingFile, HashingWriter, PrehashedFile
from lightning_lib.storage._store import (
    AccessDeniedError,
    BucketNotFound,
    LocalStore,
    MissingCredentialsError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    S3Store,
    StorageError,
    is_remote,
    join_uri,
    open_store,
    split_uri,
)

__all__ = [
    "AccessDeniedError",
    "BucketNotFound",
    "GrowingFile",
    "HashingWriter",
    "LocalStore",
    "MissingCredentialsError",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "PrehashedFile",
    "S3Store",
    "StorageError",
    "is_remote",
    "join_uri",
    "open_store",
    "split_uri",
]
