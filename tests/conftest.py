"""Fixtures shared by the whole test suite.

``s3_endpoint`` runs moto's S3 server as a real HTTP endpoint on 127.0.0.1 (no MinIO binary can be
installed here), so S3 tests exercise boto3's real signing, retries and transfers over the wire.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

# Variables through which boto3 could pick up a developer's real identity; the fixture removes them so
# S3 tests only ever talk to the local endpoint with dummy credentials.
_AWS_IDENTITY_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ENDPOINT_URL_S3",
)
TEST_BUCKET = "lightning-lib-test"

# the Prefect test harness, shared by tests/tasks and tests/flows (one temporary API per session)
pytest_plugins = ["tests.prefect_fixtures"]

# Prefect's temporary API server (the harness, and the CLI runs the tests start as subprocesses) gets 20 s
# to start; on a loaded 2-core machine it can take longer, and the tests would fail on the machine, not
# on the code. Set before any test, so subprocesses inherit it.
PREFECT_STARTUP_TIMEOUT_S = 120
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(PREFECT_STARTUP_TIMEOUT_S))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer at {url} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The server runs in its own session: signal the whole process group, then make sure it is gone.
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1, point boto3 at it, create a bucket, yield ``s3://bucket``."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    workdir = tmp_path_factory.mktemp("moto")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_serving(url + "/", proc)
        with pytest.MonkeyPatch.context() as env:
            for name in _AWS_IDENTITY_VARS:
                env.delenv(name, raising=False)
            env.setenv("AWS_ENDPOINT_URL", url)
            env.setenv("AWS_ACCESS_KEY_ID", "test-access-key-id")
            env.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-access-key")
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            # No ~/.aws files and no instance-metadata probing (slow, and not what is under test).
            env.setenv("AWS_CONFIG_FILE", str(workdir / "no-aws-config"))
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "no-aws-credentials"))
            env.setenv("AWS_EC2_METADATA_DISABLED", "true")
            boto3.session.Session().client("s3").create_bucket(Bucket=TEST_BUCKET)
            yield f"s3://{TEST_BUCKET}"
    finally:
        _stop(proc)
