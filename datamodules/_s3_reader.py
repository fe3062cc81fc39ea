"""A read-only, seekable file over one S3 object, fetched by ranged GETs as pyarrow asks for bytes.

pyarrow reads a Parquet footer and then only the column chunks it needs, so serving each ``read`` with
one ``Range`` request keeps a shard's unread columns and row groups off the wire and out of memory.
The client comes from ``lightning_lib.storage`` (boto3's own configuration chain: ``AWS_ENDPOINT_URL``,
profiles, roles); one is made per process, because a DataLoader worker must not share the parent's
connection pool.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Any

from lightning_lib.storage import S3Store

# A body that breaks off after the headers arrived is outside botocore's own retries.
_BODY_READ_ATTEMPTS = 3

_CLIENTS: dict[tuple[int, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(bucket: str) -> Any:
    key = (os.getpid(), bucket)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = S3Store(f"s3://{bucket}").client
        return client


class S3ObjectFile(io.RawIOBase):
    """``s3://bucket/key`` of a known ``size`` as a seekable binary file; every read is one ranged GET."""

    def __init__(self, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._bucket = bucket
        self._key = key
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"Expected whence 0, 1 or 2, received {whence}.")
        if target < 0:
            raise ValueError(
                f"Expected a position >= 0 in s3://{self._bucket}/{self._key}, received {target}."
            )
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._get(self._pos, end - 1)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def _get(self, first: int, last: int) -> bytes:
        client = _client(self._bucket)
        error: Exception | None = None
        for _ in range(_BODY_READ_ATTEMPTS):
            response = client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={first}-{last}")
            try:
                return bytes(response["Body"].read())
            except Exception as exc:  # botocore's streaming errors; the request itself is retried by boto3
                error = exc
        raise OSError(f"Reading s3://{self._bucket}/{self._key} kept breaking off: {error}")
