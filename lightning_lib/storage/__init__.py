"""Object storage: the ``ObjectStore`` protocol over a local folder (``LocalStore``) or S3 (``S3Store``),
the URIs that name either, and the helpers that hash files on their way to or from a store.

This package knows nothing of checkpoints: the commit protocol built on these stores, and the one
background writer that runs it, live in ``lightning_lib.checkpoint``. Importing it does not import
boto3; only constructing an ``S3Store`` does.
"""

from lightning_lib.storage._base import (
    AccessDeniedError,
    BucketNotFound,
    MissingCredentialsError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
)
from lightning_lib.storage._hashing import FileSource, GrowingFile, HashingWriter, PrehashedFile
from lightning_lib.storage._local import LocalStore
from lightning_lib.storage._s3 import S3Store
from lightning_lib.storage._store import open_store
from lightning_lib.storage._uri import is_remote, join_uri, local_path, parse_s3_uri, split_uri

__all__ = [
    "AccessDeniedError",
    "BucketNotFound",
    "FileSource",
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
    "local_path",
    "open_store",
    "parse_s3_uri",
    "split_uri",
]
