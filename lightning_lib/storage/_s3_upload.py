"""Uploading to S3: a file while it is still being written, and the request bodies uploads read.

boto3's managed upload needs the whole file first. Here the multipart upload starts as soon as the
first part's bytes exist and each part goes out as the writer gets past it, so serialising a
checkpoint and sending it overlap: the commit takes about as long as the upload alone.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from typing import Any

from lightning_lib.storage._hashing import GrowingFile

MAX_PART = 5 * 1024**3  # S3's largest part
# botocore reads a request body in 1 MiB pieces to checksum and sign it; with a part per thread in
# flight, the freed pieces stay in each thread's malloc arena and add up to tens of MB. Its readers
# loop until b"", so a short read is fine and keeps the pieces small enough to be reused.
_READ_MAX = 64 * 1024
_TIER = 1000  # parts per part size; 10 tiers fit S3's limit of 10,000 parts

Call = Callable[..., Any]  # S3Store._call bound to the operation and key: translates boto3 errors


def part_size(base: int, number: int) -> int:
    """Size of part ``number`` (1-based). The final size is unknown while the file grows, so the size
    doubles every 1,000 parts: small files get small parts, and 16 MiB parts still reach ~13 TB."""
    return min(MAX_PART, base << min((number - 1) // _TIER, 20))


class FileRange(io.RawIOBase):
    """``length`` bytes of a local file from ``start``: one part's request body.

    Read with ``pread`` (no shared file offset), and seekable so botocore can rewind it to sign it,
    checksum it and resend it on a retry. ``len()`` is how botocore sizes the request.
    """

    def __init__(self, path: str, start: int, length: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._start, self._length, self._pos = start, length, 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._pos
        want = left if size is None or size < 0 else min(size, left, _READ_MAX)
        if want <= 0:
            return b""
        data = os.pread(self._fd, want, self._start + self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class MemoryReader(io.RawIOBase):
    """A seekable read-only file over a buffer, so large puts stream without copying the whole buffer."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), len(self._view) - self._pos))
        buffer[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def upload_growing(
    client: Any,
    call: Call,
    bucket: str,
    key: str,
    source: GrowingFile,
    *,
    threshold: int,
    chunksize: int,
    concurrency: int,
    if_none_match: bool = False,
) -> None:
    """Upload ``source`` to ``bucket/key`` while it is written: one PUT if it ends below
    ``threshold``, else a multipart upload of parts sent as soon as they are complete. An error
    aborts the multipart upload (its parts would otherwise be stored and billed) and is raised.
    ``if_none_match`` makes the request that creates the object conditional on ``key`` being free."""
    condition = {"IfNoneMatch": "*"} if if_none_match else {}
    if source.wait_for(threshold) < threshold:  # complete, and small
        done = source.result()
        with FileRange(done.path, 0, done.size) as body:
            call(client.put_object, Bucket=bucket, Key=key, Body=body, **condition)
        return
    # What boto3's managed transfer sends too: a CRC32 per part, unless the client is told otherwise.
    extra: dict[str, Any] = {}
    if getattr(client.meta.config, "request_checksum_calculation", None) == "when_supported":
        extra["ChecksumAlgorithm"] = "CRC32"
    upload_id = call(client.create_multipart_upload, Bucket=bucket, Key=key, **extra)["UploadId"]
    try:
        parts = _send_parts(client, call, bucket, key, upload_id, source, chunksize, concurrency, extra)
        call(
            client.complete_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            **condition,
        )
    except BaseException:
        with suppress(Exception):  # the original error matters more; cleanup_orphans retries the abort
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def _send_parts(
    client: Any,
    call: Call,
    bucket: str,
    key: str,
    upload_id: str,
    source: GrowingFile,
    chunksize: int,
    concurrency: int,
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    def send(number: int, start: int, end: int) -> dict[str, Any]:
        try:
            with FileRange(source.path, start, end - start) as body:
                response = call(
                    client.upload_part,
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    **extra,
                )
        finally:
            slots.release()
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response and extra:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    # at most `concurrency` parts queued or in flight: a failed part stops the loop within a few parts
    slots = threading.Semaphore(concurrency)
    futures: list[Future[dict[str, Any]]] = []
    with ThreadPoolExecutor(concurrency, thread_name_prefix="lightning-lib-part") as pool:
        try:
            start, number = 0, 1
            while True:
                size = part_size(chunksize, number)
                end = source.wait_for(start + size)
                if end <= start:
                    break  # the file ended exactly at a part boundary
                slots.acquire()
                if any(f.done() and f.exception() for f in futures):
                    break
                futures.append(pool.submit(send, number, start, end))
                if end - start < size:
                    break  # a short part is the last one
                start, number = end, number + 1
        except BaseException:
            for future in futures:
                future.cancel()  # the ones not started yet; the pool waits for the others
            raise
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()  # a no-op unless a part failed
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    return [f.result() for f in futures]
