"""The background sender of MLFlowLogger and its transports, without a server: batching, flushing,
retries, the bounded buffer and the delivery report."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

import pytest

from lightning_lib.loggers.mlflow._transport import RestTransport, is_permanent, log_batch_body
from lightning_lib.loggers.mlflow._worker import MetricSender, RetryPolicy

mlflow = pytest.importorskip("mlflow")
from mlflow.exceptions import MlflowException, RestException  # noqa: E402

FAST_RETRY = RetryPolicy(initial=0.01, factor=2.0, maximum=0.05)


class FakeTransport:
    """Records requests; fails the first ``fail`` calls (transiently), refuses names in ``refuse``."""

    def __init__(self, fail: int = 0, refuse: set[str] | None = None, delay: float = 0.0) -> None:
        self.fail = fail
        self.refuse = refuse or set()
        self.delay = delay
        self.calls: list[tuple[str, list[Any]]] = []
        self.attempts = 0
        self.lock = threading.Lock()

    def _attempt(self, kind: str, items: list[Any]) -> None:
        with self.lock:
            self.attempts += 1
            if self.delay:
                time.sleep(self.delay)
            if self.attempts <= self.fail:
                raise MlflowException("API request failed with exception Connection refused")
            if any(item[0] in self.refuse for item in items):
                raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad name"})
            self.calls.append((kind, list(items)))

    def log_batch(self, run_id: str, metrics: Any, params: Any, tags: Any) -> None:
        kind, items = ("metrics", metrics) if metrics else ("params", params) if params else ("tags", tags)
        self._attempt(kind, list(items))

    def log_inputs(self, run_id: str, datasets: Any) -> None:
        self._attempt("inputs", [(d.name,) for d in datasets])

    def update_run(self, run_id: str, status: str, end_time: int | None) -> None:
        self._attempt("status", [(status, end_time)])

    def metrics(self) -> list[tuple[str, float, int, int]]:
        return [record for kind, items in self.calls if kind == "metrics" for record in items]


def records(n: int, key: str = "loss", start: int = 0) -> list[tuple[str, float, int, int]]:
    return [(key, float(i), 0, i) for i in range(start, start + n)]


# ---- the sender ------------------------------------------------------------------------------------------
def test_sender_batches_up_to_1000_and_flushes_on_request() -> None:
    transport = FakeTransport()
    sender = MetricSender(transport, "run", interval=60.0, retry=FAST_RETRY)
    for i in range(2500):
        sender.add_metrics([("loss", float(i), 0, i)])
    assert sender.flush(wait=True, timeout=10)
    sizes = [len(items) for kind, items in transport.calls if kind == "metrics"]
    assert sum(sizes) == 2500 and max(sizes) == 1000 and len(sizes) <= 4
    assert [r[3] for r in transport.metrics()] == list(range(2500))  # order kept
    report = sender.close(5)
    assert report.ok and report.delivered_metrics == 2500


def test_sender_sends_after_interval_without_flush() -> None:
    transport = FakeTransport()
    sender = MetricSender(transport, "run", interval=0.05, retry=FAST_RETRY)
    sender.add_metrics(records(3))
    deadline = time.monotonic() + 5
    while not transport.metrics() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(transport.metrics()) == 3
    sender.close(1)


def test_sender_retries_transient_failures_with_backoff() -> None:
    transport = FakeTransport(fail=3)
    sender = MetricSender(transport, "run", interval=0.0, retry=FAST_RETRY)
    sender.add_metrics(records(10))
    assert sender.flush(wait=True, timeout=10)
    assert transport.attempts == 4 and len(transport.metrics()) == 10
    assert sender.healthy
    assert sender.close(1).ok


def test_sender_isolates_a_refused_item_and_keeps_the_rest() -> None:
    transport = FakeTransport(refuse={"bad"})
    sender = MetricSender(transport, "run", interval=60.0, retry=FAST_RETRY)
    sender.add_metrics([*records(500), ("bad", 1.0, 0, 7), *records(499, start=500)])
    sender.add("params", [("lr", "0.1"), ("bad", "x"), ("wd", "0")])
    report = sender.close(10)
    assert len(transport.metrics()) == 999
    assert report.lost_metrics["bad"].count == 1
    params = [p for kind, items in transport.calls if kind == "params" for p in items]
    assert sorted(params) == [("lr", "0.1"), ("wd", "0")]
    assert any("bad" in failure for failure in report.failures)


def test_add_metrics_never_blocks_while_the_server_hangs() -> None:
    transport = FakeTransport(delay=0.5, fail=10**6)
    sender = MetricSender(transport, "run", interval=0.0, retry=FAST_RETRY)
    start = time.perf_counter()
    for i in range(2000):
        sender.add_metrics([("loss", float(i), 0, i)])
    assert time.perf_counter() - start < 2.0  # blocking on the server would take 0.5 s per request
    sender.close(0.1)


def test_buffer_is_bounded_and_the_report_gives_numbers() -> None:
    transport = FakeTransport(fail=10**6)  # the server never answers
    sender = MetricSender(transport, "run", max_buffer=100, interval=0.0, retry=FAST_RETRY)
    for step in range(300):
        sender.add_metrics([("train_loss", 1.0 / (step + 1), 0, step)])
    start = time.monotonic()
    report = sender.close(0.3)
    assert time.monotonic() - start < 3
    assert not report.ok and report.delivered_metrics == 0
    assert report.dropped_on_overflow >= 100
    loss = report.lost_metrics["train_loss"]
    assert loss.count == 300 and loss.first_step == 0 and loss.last_step == 299
    assert loss.last_value == pytest.approx(1 / 300)
    summary = report.summary()
    assert "train_loss: 300 values, steps 0..299" in summary and "Connection refused" in summary
    assert len(report.lost_records) == 100


def test_real_http_failure_is_transient_and_reported(tmp_path: Any) -> None:
    """A RestTransport against a port where nothing listens: the real connection-refused path."""
    from mlflow.utils.rest_utils import MlflowHostCreds

    from tests.services import free_port

    creds = MlflowHostCreds(f"http://127.0.0.1:{free_port()}")
    sender = MetricSender(RestTransport(lambda: creds, timeout=2), "run", interval=0.0, retry=FAST_RETRY)
    sender.add_metrics(records(5, key="val_loss"))
    report = sender.close(0.5)
    assert report.lost_metrics["val_loss"].count == 5 and report.last_error


def test_permanent_and_transient_errors_are_told_apart() -> None:
    assert is_permanent(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "x"}))
    assert not is_permanent(MlflowException("API request failed with exception Connection refused"))
    assert not is_permanent(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}))
    assert not is_permanent(ConnectionError("refused"))
    assert is_permanent(TypeError("a bug"))


def test_a_flush_sends_what_was_queued_not_what_arrives_during_its_request() -> None:
    # Otherwise one flush during training becomes a stream of small requests (one per request's duration),
    # each costing the server about as much as a full batch.
    transport = FakeTransport(delay=0.2)
    sender = MetricSender(transport, "run", interval=60.0, retry=FAST_RETRY)
    sender.add_metrics(records(10))
    sender.flush()
    deadline = time.monotonic() + 10
    while transport.attempts == 0:  # the flush's request is in flight
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for step in range(10, 15):
        sender.add_metrics(records(1, start=step))
    while not transport.calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)  # room for a (wrong) second request
    assert transport.attempts == 1 and [r[3] for r in transport.metrics()] == list(range(10))
    report = sender.close(5)  # the rest goes at close
    assert report.ok and [r[3] for r in transport.metrics()] == list(range(15))


def test_values_appended_while_the_sender_is_idle_are_sent_without_a_wake_up() -> None:
    # add_metrics appends without the lock; a value that lands just after the sender emptied the queue
    # (and so without a notification) must still go out at the sender's next look.
    transport = FakeTransport()
    sender = MetricSender(transport, "run", interval=0.05, retry=FAST_RETRY)
    sender.add_metrics(records(1))
    deadline = time.monotonic() + 10
    while len(transport.metrics()) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sender._metrics.extend(records(2, start=1))  # what the lock-free path does in that race
    while len(transport.metrics()) < 3:
        assert time.monotonic() < deadline, "values appended without a wake-up were never sent"
        time.sleep(0.01)
    assert sender.close(5).ok


def test_a_flush_with_wait_returns_once_its_values_are_delivered() -> None:
    transport = FakeTransport(delay=0.05)
    sender = MetricSender(transport, "run", interval=60.0, retry=FAST_RETRY)
    sender.add_metrics(records(2500))
    assert sender.flush(wait=True, timeout=10)
    assert len(transport.metrics()) == 2500
    sender.add_metrics(records(1, start=2500))
    assert not sender.flush(wait=True, timeout=0.0)  # this one is not delivered yet
    assert sender.close(5).ok and len(transport.metrics()) == 2501


def test_log_batch_body_is_the_json_mlflow_expects() -> None:
    metrics = [
        ("loss", 0.1, 1700000000000, 0),
        ('odd "name" é', 1e-300, 1, 2**40),
        ("nan", float("nan"), 2, 1),
        ("inf", float("inf"), 3, 1),
        ("-inf", float("-inf"), 4, 1),
        ("loss", -0.0, 5, 3),
        ("big", 1.5e300, 6, 4),
    ]
    params, tags = [("lr", "0.1")], [("note", 'a "quoted" tag')]
    keys: dict[str, str] = {}
    body = json.loads(log_batch_body("run-1", metrics, params, tags, keys))
    assert body.pop("run_id") == "run-1"
    spelled = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
    assert body["metrics"] == [
        {"key": k, "value": spelled.get(k, v), "timestamp": t, "step": s} for k, v, t, s in metrics
    ]
    assert body["params"] == [{"key": "lr", "value": "0.1"}]
    assert body["tags"] == [{"key": "note", "value": 'a "quoted" tag'}]
    assert set(keys) == {k for k, *_ in metrics}  # names are encoded once, then reused
    assert json.loads(log_batch_body("r", [], [("a", "b")], [])) == {
        "run_id": "r",
        "params": [{"key": "a", "value": "b"}],
    }


def test_rest_transport_honours_the_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies are read from the environment once per session, as requests would per request."""
    from mlflow.utils.rest_utils import MlflowHostCreds

    from tests.services import free_port

    seen: list[bytes] = []
    proxy = socket.create_server(("127.0.0.1", 0))
    proxy.settimeout(10)

    def accept_one() -> None:
        with contextlib.suppress(OSError):
            conn, _ = proxy.accept()
            with conn:
                seen.append(conn.recv(65536))  # then close: the request fails, which is fine here

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    target = f"http://mlflow.invalid:{free_port()}"
    transport = RestTransport(lambda: MlflowHostCreds(target), timeout=5)
    with pytest.raises(Exception):  # noqa: B017 - the proxy hangs up; only where the request went matters
        transport.log_batch("run", records(1), (), ())
    thread.join(10)
    proxy.close()
    assert seen and seen[0].startswith(f"POST {target}/api/2.0/mlflow/runs/log-batch".encode())


# ---- the run created by the sender thread; the final status sent last ---------------------------------------
def test_the_sender_creates_the_run_first_and_sends_nothing_before() -> None:
    transport = FakeTransport()
    release = threading.Event()
    seen: list[int] = []

    def opener() -> str:
        release.wait(5)
        seen.append(len(transport.calls))
        return "r-42"

    sender = MetricSender(transport, None, interval=0.0, retry=FAST_RETRY, opener=opener)
    sender.add("params", [("lr", "0.1")])
    sender.add_metrics(records(3))
    with pytest.raises(TimeoutError, match="still being created"):
        sender.wait_open(0.05)
    assert transport.calls == []
    release.set()
    assert sender.wait_open(5) == "r-42"
    assert sender.flush(wait=True, timeout=5)
    report = sender.close(5)
    assert seen == [0] and report.ok and report.run_id == "r-42" and report.delivered_metrics == 3
    assert [kind for kind, _ in transport.calls] == ["params", "metrics"]


def test_a_run_that_cannot_be_created_is_raised_to_whoever_waits_and_nothing_is_sent() -> None:
    transport = FakeTransport()

    def opener() -> str:
        raise ConnectionError("Expected an MLflow tracking server at http://x, none answered within 1s")

    sender = MetricSender(transport, None, interval=0.0, retry=FAST_RETRY, opener=opener)
    with pytest.raises(ConnectionError, match="none answered"):
        sender.wait_open(5)
    assert isinstance(sender.open_error, ConnectionError)
    sender.add_metrics(records(2))
    sender.add("tags", [("a", "b")])
    assert not sender.flush(wait=True, timeout=5)  # returns at once: nothing will ever be sent
    report = sender.close(1, final=("status", [("FINISHED", 1)]))
    assert transport.calls == [] and not report.ok and report.lost_metrics["loss"].count == 2
    assert any(
        f.startswith("tags") and "the run was not created: ConnectionError" in f for f in report.failures
    )
    assert any(f.startswith("status") for f in report.failures)


def test_exactly_one_of_run_id_and_opener() -> None:
    with pytest.raises(ValueError, match="Expected exactly one of run_id and opener"):
        MetricSender(FakeTransport(), None)
    with pytest.raises(ValueError, match="Expected exactly one of run_id and opener"):
        MetricSender(FakeTransport(), "r", opener=lambda: "r")


def test_the_final_operation_of_close_goes_after_everything_queued() -> None:
    transport = FakeTransport(delay=0.01)
    sender = MetricSender(transport, "run", interval=60.0, retry=FAST_RETRY)
    sender.add_metrics(records(2500))
    sender.add("tags", [("t", "1")])
    report = sender.close(10, final=("status", [("FINISHED", 7)]))
    assert report.ok and report.delivered_metrics == 2500
    assert transport.calls[-1] == ("status", [("FINISHED", 7)])
    assert [kind for kind, _ in transport.calls].count("status") == 1
