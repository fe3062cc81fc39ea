"""``open_store``: the ``ObjectStore`` a URI or path names (``S3Store`` or ``LocalStore``).

boto3 itself is imported only when an ``S3Store`` is constructed.
"""

from __future__ import annotations

import os

from lightning_lib.storage._base import ObjectStore
from lightning_lib.storage._local import LocalStore
from lightning_lib.storage._s3 import S3Store
from lightning_lib.storage._uri import is_remote


def open_store(uri_or_path: str | os.PathLike[str], **s3_options: int) -> ObjectStore:
    """Return ``S3Store`` for ``s3://bucket[/prefix]`` and ``LocalStore`` for anything else.

    ``s3_options`` (``max_attempts``, ``multipart_threshold``, ``multipart_chunksize``,
    ``max_concurrency``) are passed to ``S3Store`` and refused for local paths, where they mean nothing.
    """
    if isinstance(uri_or_path, str) and is_remote(uri_or_path):
        return S3Store(uri_or_path, **s3_options)
    if s3_options:
        raise ValueError(f"S3 options {sorted(s3_options)} were given for the local path {uri_or_path!r}.")
    return LocalStore(uri_or_path)
