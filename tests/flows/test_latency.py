"""Issue 13, "Latency": the CLI starts Prefect's temporary API at once and shows its progress, embedded runs
send no telemetry, and ``serve`` polls for submitted runs every second."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest

from flows import cli, deploy, embedded
from flows.defaults import POLL_VARIABLE, SERVE_POLL_SECONDS, serve_poll_seconds


class _SlowServer:
    """Stands for Prefect's SubprocessASGIServer: ``start`` blocks until released, then succeeds or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.release = threading.Event()
        self.error = error
        self.timeouts: list[float | None] = []

    def start(self, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)
        assert self.release.wait(10), "the test never released the server"
        if self.error is not None:
            raise self.error


def test_telemetry_is_off_by_default_and_a_user_s_choice_wins() -> None:
    env = {"DO_NOT_TRACK": "0"}
    embedded.quiet_telemetry(env)
    assert env == {
        "DO_NOT_TRACK": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    assert embedded.is_embedded({}) and not embedded.is_embedded({"PREFECT_API_URL": "http://x/api"})


def test_the_start_limit_is_long_by_default_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.TIMEOUT_VARIABLE, raising=False)
    assert embedded.start_timeout() == embedded.DEFAULT_START_TIMEOUT_S > 20  # Prefect's own is 20 s
    monkeypatch.setenv(embedded.TIMEOUT_VARIABLE, "45")
    assert embedded.start_timeout() == 45.0
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(embedded.TIMEOUT_VARIABLE, bad)
        with pytest.raises(ValueError, match=embedded.TIMEOUT_VARIABLE) as caught:
            embedded.start_timeout()
        assert repr(bad) in str(caught.value)


def test_a_slow_start_shows_its_progress_then_the_time_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_PROGRESS_EVERY_S", 0.05)
    server = _SlowServer()
    api = embedded.TemporaryApi(77.0, server)
    timer = threading.Timer(0.3, server.release.set)
    timer.start()
    out = io.StringIO()
    took = api.wait(out)
    timer.join()
    lines = out.getvalue().splitlines()
    assert server.timeouts == [77.0]  # the limit is ours, not Prefect's 20 s
    assert took >= 0.25
    progress = [line for line in lines if line.startswith("Starting Prefect's temporary local API:")]
    assert progress and all("limit 77 s" in line and embedded.TIMEOUT_VARIABLE in line for line in progress)
    assert lines[-1].startswith("Prefect's temporary local API is up after")


def test_a_quick_start_prints_nothing() -> None:
    server = _SlowServer()
    server.release.set()
    out = io.StringIO()
    embedded.TemporaryApi(5.0, server).wait(out)
    assert out.getvalue() == ""


def test_a_failed_start_is_one_error_naming_the_limit_and_the_way_out() -> None:
    server = _SlowServer(
        RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    )
    server.release.set()
    with pytest.raises(RuntimeError) as caught:
        embedded.TemporaryApi(9.0, server).wait(io.StringIO())
    message = str(caught.value)
    assert "within 9 s" in message and embedded.TIMEOUT_VARIABLE in message and "PREFECT_API_URL" in message
    assert "Timed out while attempting" in message


def test_nothing_is_started_where_a_server_is_configured(
    monkeypatch: pytest.MonkeyPatch, prefect_harness: Path
) -> None:
    # the harness sets the API URL in Prefect's settings (as a profile would), not in the environment
    assert embedded.start_temporary_api() is None
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert cli._start_embedded("train") is None
    monkeypatch.delenv("PREFECT_API_URL")
    assert cli._start_embedded("config") is None  # no flow: no server, no telemetry settings


def test_the_local_mlflow_store_is_created_ahead_of_the_run(tmp_path: Path) -> None:
    from tests.flows.conftest import digits_config

    config = digits_config(tmp_path)
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()
    embedded.warm_tracking(config)
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()


def test_serve_polls_every_second_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLL_VARIABLE, raising=False)
    assert serve_poll_seconds() == SERVE_POLL_SECONDS == 1.0
    monkeypatch.setenv(POLL_VARIABLE, "5")
    assert serve_poll_seconds() == 5.0
    monkeypatch.setenv(POLL_VARIABLE, "often")
    with pytest.raises(ValueError, match=POLL_VARIABLE):
        serve_poll_seconds()


def test_serve_hands_the_polling_interval_to_prefect_s_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect

    seen: dict[str, Any] = {}
    monkeypatch.delenv(POLL_VARIABLE, raising=False)
    monkeypatch.setattr(deploy, "build_deployments", lambda *args, **kwargs: ["a deployment"])
    monkeypatch.setattr(deploy, "ensure_crash_recovery", lambda recovery: None)
    monkeypatch.setattr(deploy, "install_forkserver_starts", lambda preload: None)  # no server in the tests
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **kwargs: seen.update(kwargs, d=deployments))
    deploy.serve(limit=2)
    assert seen == {"limit": 2, "query_seconds": 1.0, "d": ("a deployment",)}
