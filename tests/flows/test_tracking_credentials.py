"""Issue 14, point 1: a tracking URI from a parameter cannot send the worker's MLflow credentials away.

A capturing HTTP listener on 127.0.0.1 stands for the attacker's host. The worker holds credentials for
its own server; the training flow (a config's ``mlflow.tracking_uri``), ``predict`` and ``reproduce``
(their ``tracking_uri`` parameter) name the listener: each is refused with one clear error before any
request, and the listener never sees a request, let alone an ``Authorization`` header.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.predict import predict_flow
from flows.reproduce import reproduce
from flows.training import training
from tasks.config import TrainConfig
from tasks.tracking import ALLOWED_TRACKING_HOSTS_ENV, CREDENTIAL_ENV_VARS, UntrustedTrackingURI
from tests.flows.conftest import DIGITS_CSV
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("prefect_harness")

PASSWORD = "worker-Secret-3Hq8"


class Listener:
    """Answers every request with 200 and records its method, path and headers."""

    def __init__(self) -> None:
        requests: list[tuple[str, str, dict[str, str]]] = []

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                requests.append((self.command, self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PATCH = do_DELETE = _record

            def log_message(self, *args: object) -> None:
                pass

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def listener() -> Iterator[Listener]:
    capture = Listener()
    capture.thread.start()
    try:
        yield capture
    finally:
        capture.server.shutdown()
        capture.server.server_close()


@pytest.fixture
def worker_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worker's own server (nothing listens there: no test request may go anywhere) and its login."""
    for name in CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(ALLOWED_TRACKING_HOSTS_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)


def _assert_refused(info: pytest.ExceptionInfo[UntrustedTrackingURI], listener: Listener) -> None:
    message = str(info.value)
    assert listener.url.removeprefix("http://") in message and ALLOWED_TRACKING_HOSTS_ENV in message
    assert PASSWORD not in message
    assert listener.requests == []  # not one request, so no Authorization header either


@pytest.mark.usefixtures("worker_credentials")
def test_training_refuses_a_config_naming_another_tracking_server(
    make_config: Callable[..., TrainConfig], listener: Listener, tmp_path: Path
) -> None:
    config = make_config(**{"mlflow.tracking_uri": listener.url})
    with pytest.raises(UntrustedTrackingURI) as info:
        training(config)
    _assert_refused(info, listener)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "data").exists()  # no work done


@pytest.mark.usefixtures("worker_credentials")
def test_predict_refuses_a_tracking_uri_naming_another_server(listener: Listener, tmp_path: Path) -> None:
    output = tmp_path / "scores.parquet"
    with pytest.raises(UntrustedTrackingURI) as info:
        predict_flow(str(DIGITS_CSV), "digits-test", output_uri=str(output), tracking_uri=listener.url)
    _assert_refused(info, listener)
    assert not output.exists()


@pytest.mark.usefixtures("worker_credentials")
def test_reproduce_refuses_a_tracking_uri_naming_another_server(listener: Listener) -> None:
    with pytest.raises(UntrustedTrackingURI) as info:
        reproduce("0123456789abcdef0123456789abcdef", tracking_uri=listener.url)
    _assert_refused(info, listener)


def test_an_allow_listed_host_receives_the_credentials(
    worker_credentials: None, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counter-check: the listener does see the credentials once the deployment allows its host, so
    the tests above would notice a leak."""
    monkeypatch.setenv(ALLOWED_TRACKING_HOSTS_ENV, listener.url.removeprefix("http://"))
    with pytest.raises(Exception):  # noqa: B017 - the listener is no MLflow server; what it saw matters
        reproduce("0123456789abcdef0123456789abcdef", tracking_uri=listener.url)
    assert listener.requests and all("Authorization" in headers for _, _, headers in listener.requests)
