"""``S3Store``: the ``ObjectStore`` protocol over S3 (or any S3-compatible endpoint) through boto3.

boto3 is imported only when an ``S3Store`` is built, so ``import lightning_lib`` works without it.
Credentials, region and endpoint come from boto3's own chain (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``,
``~/.aws``, container and instance roles): nothing secret is ever passed in, stored or printed here.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from lightning_lib.storage._base import (
    AccessDeniedError,
    BucketNotFound,
    MissingCredentialsError,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    validate_key,
)
from lightning_lib.storage._hashing import GrowingFile
from lightning_lib.storage._s3_upload import MemoryReader, upload_growing
from lightning_lib.storage._staging import DOWNLOAD_PREFIX, staging_dir
from lightning_lib.storage._uri import S3_SCHEME, parse_s3_uri

_ACCESS_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
# 409 ConditionalRequestConflict: another conditional write to the same key is in progress.
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
# A body that breaks off after the headers arrived is outside botocore's retry loop; we retry it here.
_BODY_READ_ATTEMPTS = 3
MiB = 1024 * 1024


_SESSIONS: dict[str, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _new_client(config: Any) -> Any:
    """An S3 client from a boto3 session shared by every store with the same AWS_* environment.

    Building a session loads botocore's service models (~0.2 s); reusing it makes opening a store
    cheap. Keying on a digest of the AWS_* variables means a changed environment (another profile or
    endpoint) gets a fresh session; the digest keeps no secret readable. Sessions are not
    thread-safe, so clients are created under a lock (the clients themselves are).
    """
    import boto3

    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
    key = hashlib.sha256(repr(env).encode()).hexdigest()
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = boto3.session.Session()
        return session.client("s3", config=config)


def _attempts_from_environment(default: int = 10) -> int:
    """``AWS_MAX_ATTEMPTS`` (boto3's own variable) as an int, else ``default``."""
    text = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Expected AWS_MAX_ATTEMPTS to be an integer >= 1, received {text!r}.") from None


class _InvalidRange(StorageError):
    """S3 refused a byte range: asking for byte 0 of an empty object does that."""


class S3Store:
    """An object store rooted at ``s3://bucket[/prefix]``.

    ``max_attempts`` feeds botocore's "standard" retry mode (exponential backoff with jitter on 5xx,
    throttling and connection errors); left out, it is boto3's own ``AWS_MAX_ATTEMPTS`` when the
    environment sets it (how an operator tunes retries for every boto3 client), else 10. The multipart
    settings feed boto3's ``TransferConfig``.
    """

    def __init__(
        self,
        uri: str,
        *,
        max_attempts: int | None = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        max_concurrency: int = 8,
    ) -> None:
        try:
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as exc:
            raise ImportError(f"{uri} needs boto3: install it with `pip install boto3`.") from exc
        if max_attempts is None:
            max_attempts = _attempts_from_environment()
        if max_attempts < 1:
            raise ValueError(f"Expected max_attempts >= 1, received {max_attempts}.")
        self._bucket, self._prefix = parse_s3_uri(uri)
        self._uri = S3_SCHEME + self._bucket + (f"/{self._prefix}" if self._prefix else "")
        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            # Transfers run max_concurrency requests at once; the pool must not be the bottleneck.
            max_pool_connections=max(10, 2 * max_concurrency),
        )
        self._client = _new_client(config)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
            # The CRT client has its own retry and signing stack; the classic one honours ours.
            preferred_transfer_client="classic",
        )

    @property
    def uri(self) -> str:
        """``s3://bucket[/prefix]``."""
        return self._uri

    @property
    def client(self) -> Any:
        """The boto3 S3 client (thread-safe); exposed for event hooks and advanced use."""
        return self._client

    def __repr__(self) -> str:
        return f"S3Store({self._uri!r})"

    def _full(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _full_prefix(self, prefix: str) -> str:
        return f"{self._prefix}/{prefix}" if self._prefix else prefix

    def _translate(self, exc: BaseException, op: str, key: str | None) -> BaseException:
        """Turn a boto3 error into a ``StorageError`` that names the URI; other errors pass through."""
        import botocore.exceptions as bce
        from boto3.exceptions import S3UploadFailedError

        where = f"{self._uri}/{key}" if key else self._uri
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, bce.ClientError):
            exc = exc.__context__  # boto3 re-wraps the real ClientError as a plain message
        if isinstance(exc, StorageError):
            return exc
        if isinstance(
            exc, bce.NoCredentialsError | bce.PartialCredentialsError | bce.CredentialRetrievalError
        ):
            return MissingCredentialsError(
                f"No usable AWS credentials to {op} {where}. boto3 looks for them in its usual chain: "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws files, SSO, and "
                "container or instance roles."
            )
        if isinstance(exc, bce.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "")) or str(
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            )
            if code == "NoSuchBucket":
                return BucketNotFound(
                    f"The S3 bucket {self._bucket!r} does not exist (while trying to {op} {where}); "
                    "create it or fix the URI."
                )
            if code in _ACCESS_CODES:
                return AccessDeniedError(
                    f"Access denied to {op} {where} ({code}): check the permissions of the credentials "
                    "boto3 found (environment, profile or role)."
                )
            if code in _NOT_FOUND_CODES:
                return ObjectNotFound(f"{where} does not exist.")
            if code == "InvalidRange":
                return _InvalidRange(f"Invalid byte range to {op} {where}.")
            if code in _PRECONDITION_CODES:
                if op == "write":
                    return PreconditionFailed(f"{where} already exists (conditional put refused, {code}).")
                return PreconditionFailed(f"{where} changed during the request to {op} it ({code}).")
            return StorageError(f"S3 request to {op} {where} failed: {code}: {error.get('Message', '')}")
        if isinstance(exc, bce.BotoCoreError):
            return StorageError(f"S3 request to {op} {where} failed after retries: {exc}")
        return exc

    def _call(self, op: str, key: str | None, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            translated = self._translate(exc, op, key)
            if translated is exc:
                raise
            raise translated from exc

    def put_bytes(
        self, key: str, data: bytes | bytearray | memoryview, *, if_none_match: bool = False
    ) -> None:
        """Store ``data``; conditional puts send ``If-None-Match: *`` so S3 itself refuses an overwrite."""
        full = self._full(validate_key(key))
        view = memoryview(data).cast("B")
        if view.nbytes >= self._transfer.multipart_threshold and not if_none_match:
            self._call(
                "write",
                key,
                self._client.upload_fileobj,
                Fileobj=MemoryReader(view),
                Bucket=self._bucket,
                Key=full,
                Config=self._transfer,
            )
            return
        body: Any = data if isinstance(data, bytes) else MemoryReader(view)
        extra = {"IfNoneMatch": "*"} if if_none_match else {}
        self._call("write", key, self._client.put_object, Bucket=self._bucket, Key=full, Body=body, **extra)

    def put_file(self, key: str, local_path: str) -> None:
        """Upload with boto3's managed transfer: multipart and parallel above the threshold."""
        full = self._full(validate_key(key))
        self._call(
            "write",
            key,
            self._client.upload_file,
            Filename=local_path,
            Bucket=self._bucket,
            Key=full,
            Config=self._transfer,
        )

    def put_growing_file(self, key: str, source: GrowingFile, *, if_none_match: bool = False) -> None:
        """Upload a file while it is being written: each multipart part goes out once it is complete.
        ``if_none_match`` sends ``If-None-Match: *`` with the request that creates the object (the PUT,
        or the completion of the multipart upload), so S3 itself refuses an existing key."""
        full = self._full(validate_key(key))
        upload_growing(
            self._client,
            lambda fn, **kwargs: self._call("write", key, fn, **kwargs),
            self._bucket,
            full,
            source,
            threshold=self._transfer.multipart_threshold,
            chunksize=self._transfer.multipart_chunksize,
            concurrency=self._transfer.max_concurrency,
            if_none_match=if_none_match,
        )

    def _read_range(self, key: str, start: int, end: int, etag: str | None) -> tuple[bytes, dict[str, Any]]:
        """GET bytes ``start..end`` (inclusive), retrying a body that breaks off mid-stream."""
        import botocore.exceptions as bce

        kwargs: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": self._full(key),
            "Range": f"bytes={start}-{end}",
        }
        if etag:
            kwargs["IfMatch"] = etag  # never stitch together parts of two different versions
        last: Exception | None = None
        for _ in range(_BODY_READ_ATTEMPTS):
            response = self._call("read", key, self._client.get_object, **kwargs)
            try:
                return response["Body"].read(), response
            except (bce.IncompleteReadError, bce.ResponseStreamingError, bce.ReadTimeoutError) as exc:
                last = exc
        raise StorageError(f"Reading {self._uri}/{key} kept breaking off: {last}")

    def get_bytes(self, key: str) -> bytes:
        """Read the object; large ones are fetched as parallel ranged GETs like boto3's downloads."""
        validate_key(key)
        chunk = self._transfer.multipart_chunksize
        try:
            head, response = self._read_range(key, 0, chunk - 1, None)
        except _InvalidRange:  # an empty object has no byte 0 to ask for
            response = self._call(
                "read", key, self._client.get_object, Bucket=self._bucket, Key=self._full(key)
            )
            return response["Body"].read()
        content_range = response.get("ContentRange") or ""
        total = int(content_range.rpartition("/")[2]) if "/" in content_range else len(head)
        if total <= len(head):
            return head
        starts = range(len(head), total, chunk)
        with ThreadPoolExecutor(self._transfer.max_concurrency) as pool:
            parts = builtins.list(
                pool.map(
                    lambda s: self._read_range(key, s, min(s + chunk, total) - 1, response["ETag"])[0], starts
                )
            )
        return b"".join([head, *parts])

    def get_file(self, key: str, local_path: str) -> None:
        """Download with boto3's managed transfer, which writes a temporary file and renames it."""
        full = self._full(validate_key(key))
        self._call(
            "read",
            key,
            self._client.download_file,
            Bucket=self._bucket,
            Key=full,
            Filename=local_path,
            Config=self._transfer,
        )

    def get_tail(self, key: str, size: int) -> tuple[bytes, int]:
        """One GET of a suffix range: the last ``size`` bytes (all of a smaller object) and the size."""
        validate_key(key)
        if size <= 0:
            raise ValueError(f"Expected size >= 1, received {size}.")
        try:
            response = self._call(
                "read",
                key,
                self._client.get_object,
                Bucket=self._bucket,
                Key=self._full(key),
                Range=f"bytes=-{size}",
            )
        except _InvalidRange:  # an empty object has no last byte to ask for
            return b"", 0
        data = response["Body"].read()
        content_range = response.get("ContentRange") or ""
        total = int(content_range.rpartition("/")[2]) if "/" in content_range else len(data)
        return data, total

    @contextmanager
    def local_file(self, key: str) -> Iterator[str]:
        """Download ``key`` to a private temporary file, removed when the context ends."""
        validate_key(key)
        with staging_dir(DOWNLOAD_PREFIX) as folder:
            path = os.path.join(folder, "object")
            self.get_file(key, path)
            yield path

    def exists(self, key: str) -> bool:
        """A HEAD request; a missing key (or bucket) is ``False``, other failures raise."""
        try:
            self._call(
                "check", key, self._client.head_object, Bucket=self._bucket, Key=self._full(validate_key(key))
            )
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object under the root whose relative key starts with ``prefix``."""
        strip = len(self._prefix) + 1 if self._prefix else 0
        infos: builtins.list[ObjectInfo] = []

        def collect() -> None:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._full_prefix(prefix)):
                for obj in page.get("Contents", []):
                    infos.append(
                        ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].timestamp())
                    )

        self._call("list", prefix or None, collect)
        return sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        """Delete the object (S3 treats deleting a missing key as success)."""
        full = self._full(validate_key(key))
        self._call("delete", key, self._client.delete_object, Bucket=self._bucket, Key=full)

    def abort_incomplete_uploads(self, older_than_seconds: float, prefix: str = "") -> int:
        """Abort multipart uploads under ``prefix`` started at least ``older_than_seconds`` ago.

        Their parts are invisible to listings but are stored (and billed) until aborted.
        """
        cutoff = time.time() - older_than_seconds
        stale: builtins.list[tuple[str, str]] = []

        def collect() -> None:
            paginator = self._client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._full_prefix(prefix)):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() <= cutoff:
                        stale.append((upload["Key"], upload["UploadId"]))

        self._call("list uploads under", prefix or None, collect)
        aborted = 0
        for full_key, upload_id in stale:
            try:
                self._call(
                    "abort upload",
                    None,
                    self._client.abort_multipart_upload,
                    Bucket=self._bucket,
                    Key=full_key,
                    UploadId=upload_id,
                )
                aborted += 1
            except ObjectNotFound:  # NoSuchUpload: completed or aborted by someone else meanwhile
                continue
        return aborted
