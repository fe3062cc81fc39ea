"""What an MLflow outage at the end of a fit leaves for later, and which MLflow errors are retried."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos import databricks_pb2 as pb

from lightning_lib.loggers.mlflow._worker import DeliveryReport
from tasks.retry import is_transient
from tasks.training import (
    MAX_PENDING_METRICS,
    FitResult,
    MlflowUnavailable,
    PendingDelivery,
    _pending,
    _wait_for_server,
)


def _wrapped(failure: BaseException) -> MlflowException:
    """What MLflow's http_request raises after its own retries: a plain MlflowException (INTERNAL_ERROR)
    raised while handling the failure, without ``from``."""
    try:
        raise failure
    except Exception as e:
        try:
            raise MlflowException(f"API request to http://x/api failed with exception {e}")
        except MlflowException as wrapped:
            return wrapped
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (MlflowException("server busy", error_code=pb.TEMPORARILY_UNAVAILABLE), True),
        (_wrapped(requests.ConnectionError("Max retries exceeded")), True),
        (_wrapped(requests.exceptions.RetryError("too many 503 error responses")), True),
        (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}), True),  # 503
        (RestException({"error_code": "INTERNAL_ERROR", "message": "db down"}), True),  # 500 answered
        (RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}), True),  # 429
        (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}), False),
        # review finding 9: a client-side MlflowException carries INTERNAL_ERROR (500) by default, but
        # no server answered it: retrying only repeats it
        (MlflowException("Invalid flavor 'x'"), False),
        (_wrapped(ValueError("bad input example")), False),
        (_wrapped(requests.exceptions.SSLError("certificate verify failed")), False),
        (MlflowException("no such run", error_code=pb.RESOURCE_DOES_NOT_EXIST), False),
        (MlflowException("bad param", error_code=pb.INVALID_PARAMETER_VALUE), False),
        (MlflowException("who are you", error_code=pb.UNAUTHENTICATED), False),
        (requests.ConnectionError("connection refused"), True),
        (requests.Timeout("read timed out"), True),
        (requests.exceptions.SSLError("certificate verify failed"), False),
        (MlflowUnavailable("no answer"), True),
        (LookupError("no logged model"), False),
    ],
)
def test_mlflow_outages_are_transient_and_refusals_are_not(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_the_client_s_own_wrapping_of_a_refused_connection_is_transient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real client, not a hand-made exception: MLflow's wrapping of a refused connection is
    recognised (a closed port on 127.0.0.1, MLflow's own retries off so it fails at once)."""
    from mlflow import MlflowClient

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(MlflowException) as info:
        MlflowClient(f"http://127.0.0.1:{port}").get_run("0" * 32)
    assert type(info.value) is MlflowException and is_transient(info.value)


def _report(values: int) -> DeliveryReport:
    report = DeliveryReport("run-1")
    report.lose([("loss", float(i), 1000 + i, i) for i in range(values)], keep=values)
    report.lose([("nan_metric", math.nan, 5, 3)], keep=values + 1)
    report.lost_items.append(("tags", [("checkpoint.best.uri", "s3://b/k/best.ckpt")]))
    report.failures.append("status [('FINISHED', 1)]: 503")
    return report


def test_the_newest_values_are_carried_and_the_rest_counted() -> None:
    pending = _pending(_report(MAX_PENDING_METRICS + 5))
    assert pending is not None and len(pending.metrics) == MAX_PENDING_METRICS
    assert pending.metrics_not_kept == 6  # 5 oldest "loss" values, counted with the NaN's 1 value total
    assert pending.metrics[-1][0] == "nan_metric" and pending.metrics[0][3] == 6
    assert pending.tags == [("checkpoint.best.uri", "s3://b/k/best.ckpt")] and pending.status == "FINISHED"
    assert "loss" in pending.summary
    assert _pending(DeliveryReport("run-2")) is None


def test_a_pending_delivery_survives_the_json_of_a_task_result() -> None:
    pending = PendingDelivery(metrics=[("a", math.nan, 1, 2), ("b", math.inf, 1, 2), ("c", 0.5, 1, 2)])
    result = FitResult(
        run_key="k", mlflow_run_id="r", mlflow_experiment_id="1", tracking_uri="sqlite:///x.db",
        checkpoint_dir="/c", best_checkpoint_uri="/c/b", last_checkpoint_uri="/c/l", checkpoint_uris=["/c/b"],
        model_uri=None, metrics={}, global_step=1, epochs=1, steps_this_attempt=1, resumed_from=None,
        pending=pending,
    )  # fmt: skip
    back = FitResult.model_validate_json(result.model_dump_json())
    assert back.pending is not None
    (_, a, _, _), (_, b, _, _), (_, c, _, _) = back.pending.metrics
    assert math.isnan(a) and b == math.inf and c == 0.5


class _Health(BaseHTTPRequestHandler):
    status = 503  # what /health answers; the test switches it

    def do_GET(self) -> None:
        body = b"Service Unavailable" if self.status >= 300 else b"OK"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output quiet


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    """A tiny HTTP server on 127.0.0.1 whose /health answers ``handler.status`` (503 first)."""
    handler = type("Health", (_Health,), {"status": 503})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_non_2xx_health_answer_is_unavailable(health_server: tuple[str, type[_Health]]) -> None:
    """Review finding 10: a server (or a proxy in front of it) answering 503 is not up; the delivery
    waits for a retry instead of failing half-way."""
    url, handler = health_server
    with pytest.raises(MlflowUnavailable, match=r"health check with 2xx, received HTTP 503") as info:
        _wait_for_server(url, timeout=10.0)
    assert is_transient(info.value)
    handler.status = 200
    _wait_for_server(url, timeout=10.0)  # healed
