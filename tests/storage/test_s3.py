"""S3-only behaviour against moto's server over HTTP: configuration, multipart, clear errors."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from lightning_lib.checkpoint import (
    CheckpointExistsError,
    cleanup_orphans,
    latest_valid,
    list_committed,
    write_checkpoint,
)
from lightning_lib.storage import (
    AccessDeniedError,
    BucketNotFound,
    MissingCredentialsError,
    S3Store,
    StorageError,
)
from tests.support import archive

pytestmark = pytest.mark.services
MiB = 1024 * 1024
SECRET = "test-secret-access-key"  # the dummy value the s3_endpoint fixture exports


def small_parts(uri: str, **kwargs: Any) -> S3Store:
    return S3Store(uri, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, **kwargs)


def count_calls(store: S3Store) -> dict[str, int]:
    """Count API operations as the client makes them (a real hook, nothing mocked)."""
    counts: dict[str, int] = {}

    def on_call(model: Any, **_: Any) -> None:
        counts[model.name] = counts.get(model.name, 0) + 1

    store.client.meta.events.register("before-call.s3", on_call)
    return counts


def assert_no_secret(exc: BaseException) -> None:
    while exc is not None:
        assert SECRET not in str(exc) and SECRET not in repr(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def test_client_uses_standard_retries_and_the_environment_endpoint(s3_root: str) -> None:
    store = S3Store(s3_root, max_attempts=7)
    # botocore keeps max_attempts as retries after the first try: 7 retries, 8 attempts in all.
    assert store.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 8}
    assert store.client.meta.endpoint_url == os.environ["AWS_ENDPOINT_URL"]
    with pytest.raises(ValueError, match="max_attempts"):
        S3Store(s3_root, max_attempts=0)


def test_conditional_put_sends_if_none_match(s3_root: str) -> None:
    store = S3Store(s3_root)
    seen: list[bytes | str | None] = []
    store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: seen.append(request.headers.get("If-None-Match"))
    )
    write_checkpoint(store, "ck.ckpt", archive("weights"), step=1)
    write_checkpoint(store, "ck.ckpt", archive("again"), step=2, overwrite=True)
    # a new name is published conditionally, an overwrite plainly
    assert [v.decode() if isinstance(v, bytes) else v for v in seen] == ["*", None]


def test_a_multipart_commit_completes_conditionally(s3_root: str, tmp_path) -> None:
    store = small_parts(s3_root)
    seen: list[bytes | str | None] = []
    store.client.meta.events.register(
        "before-send.s3.CompleteMultipartUpload",
        lambda request, **_: seen.append(request.headers.get("If-None-Match")),
    )
    path = tmp_path / "big.ckpt"
    path.write_bytes(archive("big", 6 * MiB))
    write_checkpoint(store, "big.ckpt", str(path), step=1)
    with pytest.raises(CheckpointExistsError):  # a second writer racing past the existence check
        store_without_check = small_parts(s3_root)
        store_without_check.exists = lambda key: False  # type: ignore[method-assign]
        write_checkpoint(store_without_check, "big.ckpt", str(path), step=2)
    assert [v.decode() if isinstance(v, bytes) else v for v in seen] == ["*"]
    assert store.abort_incomplete_uploads(0) == 0  # the refused upload was aborted


def test_large_put_file_goes_multipart(s3_root: str, tmp_path) -> None:
    store = small_parts(s3_root)
    path = tmp_path / "big.ckpt"
    path.write_bytes(archive("big", 12 * MiB))
    counts = count_calls(store)
    ckpt = write_checkpoint(store, "big.ckpt", str(path), step=1)
    data = store.get_bytes("big.ckpt")
    assert counts.get("CreateMultipartUpload") == 1 and counts.get("UploadPart") == 3
    assert counts.get("CompleteMultipartUpload") == 1
    bucket, prefix = s3_root[len("s3://") :].split("/", 1)
    head = store.client.head_object(Bucket=bucket, Key=f"{prefix}/big.ckpt")
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part object
    counts.clear()
    result = latest_valid(store)
    assert result is not None and result[0] == ckpt and result[1] == data
    assert counts.get("GetObject", 0) >= 4  # the marker (the file's end), then three ranged reads


def test_large_put_bytes_goes_multipart_without_copying(s3_root: str) -> None:
    store = small_parts(s3_root)
    data = bytearray(os.urandom(11 * MiB))
    counts = count_calls(store)
    store.put_bytes("blob", memoryview(data))
    assert counts.get("UploadPart") == 3
    assert store.get_bytes("blob") == data


def test_abort_incomplete_multipart_upload(s3_root: str) -> None:
    store = S3Store(s3_root)
    bucket, prefix = s3_root[len("s3://") :].split("/", 1)
    client = store.client
    mine = client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/ck-9.ckpt")
    client.upload_part(
        Bucket=bucket,
        Key=f"{prefix}/ck-9.ckpt",
        UploadId=mine["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    other = client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}-elsewhere/model.ckpt")

    def pending() -> set[str]:
        return {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}

    assert mine["UploadId"] in pending()
    # (The grace period for uploads cannot be checked here: moto reports a fixed 2010 Initiated date.)
    assert cleanup_orphans(store, grace_seconds=0) == 1  # the upload a killed writer left
    assert mine["UploadId"] not in pending()
    assert other["UploadId"] in pending()  # outside this store's prefix: not ours to abort
    client.abort_multipart_upload(
        Bucket=bucket, Key=f"{prefix}-elsewhere/model.ckpt", UploadId=other["UploadId"]
    )


def test_bucket_that_does_not_exist(s3_endpoint: str, tmp_path) -> None:
    store = small_parts("s3://no-such-bucket-for-lightning/run")
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"1")
    large.write_bytes(b"1" * 6 * MiB)
    for action in (
        lambda: store.put_bytes("k", b"1"),
        lambda: store.put_file("k", str(small)),  # boto3 re-wraps this one as S3UploadFailedError
        lambda: store.put_file("k", str(large)),  # and this one fails at CreateMultipartUpload
        lambda: store.list(),
        lambda: write_checkpoint(store, "ck.ckpt", archive("1"), step=0),
        lambda: latest_valid(store),
    ):
        with pytest.raises(
            BucketNotFound, match=r"bucket 'no-such-bucket-for-lightning' does not exist"
        ) as err:
            action()
        assert "s3://no-such-bucket-for-lightning/run" in str(err.value)
        assert_no_secret(err.value)


def test_missing_credentials(s3_root: str, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(s3_root)
    with pytest.raises(MissingCredentialsError, match="No usable AWS credentials") as err:
        store.put_bytes("k", b"1")
    assert s3_root in str(err.value) and "AWS_PROFILE" in str(err.value)
    (tmp_path / "f").write_bytes(b"1")
    with pytest.raises(MissingCredentialsError):
        store.put_file("k", str(tmp_path / "f"))
    # A reader must not mistake "cannot authenticate" for "no checkpoint yet".
    with pytest.raises(MissingCredentialsError):
        list_committed(store)
    with pytest.raises(MissingCredentialsError):
        latest_valid(store)


def test_access_denied(s3_root: str, make_aws_error: Any) -> None:
    store = S3Store(s3_root)
    store.client.meta.events.register(
        "before-send.s3", lambda request, **_: make_aws_error(request, 403, "AccessDenied", "Access Denied")
    )
    with pytest.raises(
        AccessDeniedError, match=r"Access denied to check .*/ck\.ckpt \(AccessDenied\)"
    ) as err:
        write_checkpoint(store, "ck.ckpt", archive("1"), step=0)
    assert_no_secret(err.value)
    with pytest.raises(AccessDeniedError, match="Access denied to write"):
        store.put_bytes("k", b"1")
    with pytest.raises(AccessDeniedError, match="Access denied to list"):
        latest_valid(store)


def test_other_errors_name_the_uri(s3_root: str, make_aws_error: Any) -> None:
    store = S3Store(s3_root, max_attempts=1)
    store.client.meta.events.register(
        "before-send.s3", lambda request, **_: make_aws_error(request, 400, "InvalidRequest", "nope")
    )
    with pytest.raises(StorageError, match=rf"{s3_root}/k failed: InvalidRequest: nope"):
        store.put_bytes("k", b"1")


def test_prefixes_isolate_stores(s3_root: str) -> None:
    a, b = S3Store(f"{s3_root}/a"), S3Store(f"{s3_root}/ab")
    a.put_bytes("x", b"1")
    b.put_bytes("x", b"2")
    assert [i.key for i in a.list()] == ["x"] and a.get_bytes("x") == b"1"
    assert [i.key for i in S3Store(s3_root).list()] == ["a/x", "ab/x"]


def test_incomplete_uploads_younger_than_the_grace_period_are_kept(s3_root: str) -> None:
    # moto always reports Initiated=2010, so the listing is answered here with real ages, through the
    # client's normal parsing; the aborts it leads to are observed, not sent.
    store = S3Store(s3_root)
    bucket, prefix = s3_root[len("s3://") :].split("/", 1)
    now = datetime.now(UTC)
    uploads = "".join(
        f"<Upload><Key>{prefix}/ck/{name}</Key><UploadId>{name}</UploadId>"
        f"<Initiated>{(now - age).strftime('%Y-%m-%dT%H:%M:%S.000Z')}</Initiated></Upload>"
        for name, age in (("young", timedelta(minutes=5)), ("old", timedelta(hours=2)))
    )
    listing = (
        f'<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>{bucket}</Bucket>'
        f"<IsTruncated>false</IsTruncated>{uploads}</ListMultipartUploadsResult>"
    ).encode()
    aborted: list[str] = []

    class Raw:
        def __init__(self, body: bytes) -> None:
            self.body = body

        def stream(self, **_: Any) -> Any:
            yield self.body

    def answer(request: Any, **_: Any) -> Any:
        if request.method == "GET" and "uploads" in request.url:
            return AWSResponse(request.url, 200, {"Content-Type": "application/xml"}, Raw(listing))
        if request.method == "DELETE" and "uploadId=" in request.url:
            aborted.append(request.url.rsplit("uploadId=", 1)[1])
            return AWSResponse(request.url, 204, {}, Raw(b""))
        return None

    store.client.meta.events.register("before-send.s3", answer)
    assert store.abort_incomplete_uploads(older_than_seconds=3600) == 1
    assert aborted == ["old"]
