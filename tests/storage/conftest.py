"""Fixtures for the storage tests: a fresh store per test, local or on the moto S3 endpoint."""

from __future__ import annotations

import uuid

import pytest

from lightning_lib.storage import LocalStore, ObjectStore, S3Store

MiB = 1024 * 1024


@pytest.fixture
def s3_root(s3_endpoint: str) -> str:
    """A fresh ``s3://bucket/<unique prefix>`` so tests sharing the session's server never collide."""
    return f"{s3_endpoint}/{uuid.uuid4().hex}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path) -> ObjectStore:
    """The same contract tests run against a local folder and against S3."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    root = request.getfixturevalue("s3_root")
    # Small transfer sizes (S3's minimum part is 5 MiB) so multipart paths run on test-sized data.
    return S3Store(root, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


class _RawBody:
    """The minimal raw stream botocore reads an HTTP response body from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object):
        yield self._body


def aws_error(request: object, status: int, code: str, message: str = "injected by the test"):
    """An S3-style XML error response, as a ``before-send`` handler returns it instead of sending."""
    from botocore.awsrequest import AWSResponse

    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>test</RequestId></Error>"
    ).encode()
    headers = {"Content-Type": "application/xml", "Content-Length": str(len(body))}
    return AWSResponse(request.url, status, headers, _RawBody(body))  # type: ignore[attr-defined]


@pytest.fixture
def make_aws_error():
    """``make_aws_error(request, status, code)`` builds an injected S3 error response."""
    return aws_error
