"""Embedded runs (issue 13, "Latency"): the CLI starts Prefect's temporary API first thing, shows its start,
hands it to the run, stops it at exit, sends no telemetry; and the CLI's quick exit keeps a normal exit's
guarantees."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from flows import cli, embedded
from tests.flows.conftest import REPO


class _Process:
    """Stands for the server's ``Popen``: running until it is given an exit status."""

    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.calls: list[str] = []

    def poll(self) -> int | None:
        return self.status

    def terminate(self) -> None:
        self.calls.append("terminate")
        self.status = -15

    def kill(self) -> None:
        self.calls.append("kill")
        self.status = -9

    def wait(self, timeout: float | None = None) -> int | None:
        self.calls.append("wait")
        return self.status


def _api(
    timeout: float, processes: list[_Process], answers: Callable[[str], bool]
) -> tuple[embedded.TemporaryApi, list[int]]:
    ports: list[int] = []

    def launch(port: int) -> _Process:
        ports.append(port)
        return processes[len(ports) - 1]

    api = embedded.TemporaryApi(timeout, launch=launch, answers=answers)  # type: ignore[arg-type]
    return api, ports


def _answers_after(calls: int) -> Callable[[str], bool]:
    seen: list[str] = []

    def answers(url: str) -> bool:
        seen.append(url)
        return len(seen) > calls

    return answers


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
    for bad in ("soon", "0", "-3", "nan"):
        monkeypatch.setenv(embedded.TIMEOUT_VARIABLE, bad)
        with pytest.raises(ValueError, match=embedded.TIMEOUT_VARIABLE) as caught:
            embedded.start_timeout()
        assert repr(bad) in str(caught.value)


def test_a_slow_start_shows_its_progress_then_the_time_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_PROGRESS_EVERY_S", 0.05)
    monkeypatch.setattr(embedded, "_POLL_S", 0.01)
    process = _Process()
    api, ports = _api(77.0, [process], _answers_after(20))
    out = io.StringIO()
    took = api.wait(out)
    lines = out.getvalue().splitlines()
    assert took >= 0.15 and api.answers()
    progress = [line for line in lines if line.startswith("Starting Prefect's temporary local API:")]
    assert progress and all("limit 77 s" in line and embedded.TIMEOUT_VARIABLE in line for line in progress)
    assert lines[-1].startswith("Prefect's temporary local API is up after")
    assert api.api_url == f"http://127.0.0.1:{ports[0]}/api"
    assert api.wait(out) == took  # once up, waiting again is free
    api.stop()
    assert process.calls == ["terminate", "wait"]
    api.stop()  # stopped once only
    assert process.calls == ["terminate", "wait"]


def test_a_quick_start_prints_nothing() -> None:
    api, _ = _api(5.0, [_Process()], _answers_after(0))
    out = io.StringIO()
    api.wait(out)
    assert out.getvalue() == ""
    api.stop(wait=False)


def test_a_taken_port_starts_the_server_on_another() -> None:
    first, second = _Process(status=3), _Process()  # uvicorn exits 3 when its port is taken
    api, ports = _api(5.0, [first, second], _answers_after(0))
    api.wait(io.StringIO())
    assert len(ports) == 2 and api.api_url.endswith(f":{ports[1]}/api")
    api.stop(wait=False)
    assert second.calls == ["terminate"]


@pytest.mark.parametrize(
    ("status", "answers", "why"),
    [(1, _answers_after(10**6), "exited with status 1"), (None, _answers_after(10**6), "no answer from")],
)
def test_a_failed_start_is_one_error_naming_the_limit_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch, status: int | None, answers: Callable[[str], bool], why: str
) -> None:
    monkeypatch.setattr(embedded, "_POLL_S", 0.01)
    process = _Process(status)
    api, _ = _api(0.2, [process], answers)
    with pytest.raises(RuntimeError) as caught:
        api.wait(io.StringIO())
    message = str(caught.value)
    assert "within 0 s" in message and embedded.TIMEOUT_VARIABLE in message and "PREFECT_API_URL" in message
    assert why in message
    assert status is not None or process.calls[0] == "terminate"  # a server that never answered is stopped


def test_a_server_that_ignores_terminate_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stubborn(_Process):
        def terminate(self) -> None:
            self.calls.append("terminate")

        def wait(self, timeout: float | None = None) -> int | None:
            self.calls.append("wait")
            if timeout is not None and self.status is None:
                raise subprocess.TimeoutExpired("uvicorn", timeout)
            return self.status

    process = Stubborn()
    api, _ = _api(5.0, [process], _answers_after(0))
    api.stop()
    assert process.calls == ["terminate", "wait", "kill", "wait"]


def test_adopting_makes_the_api_the_run_s_and_hides_links_to_it(tmp_path: Path) -> None:
    # a fresh interpreter: Prefect's settings there come from the environment alone, as in the CLI (in
    # this process an earlier test's Prefect harness may still name its server)
    program = textwrap.dedent(
        """
        import json, sys
        from flows import cli, embedded
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

        class Running:
            def __init__(self, status=None): self.status = status
            def poll(self): return self.status
            def terminate(self): pass
            def wait(self, timeout=None): return 0

        # the first start's port is taken (uvicorn exits 3) once the API was adopted: it restarts elsewhere
        processes = [Running(3), Running()]
        api = embedded.TemporaryApi(5.0, launch=lambda port: processes.pop(0), answers=lambda url: True)
        first_url = api.api_url
        adopted = embedded.adopt(api)
        api.wait()
        print(json.dumps({
            "restarted": api.api_url != first_url,
            "adopted": adopted,
            "api_url": api.api_url,
            "setting": PREFECT_API_URL.value(),
            "ui": PREFECT_UI_URL.value(),
            "temporary": [embedded.is_temporary(api.api_url), embedded.is_temporary("http://127.0.0.1:4200/api")],
            "hint": cli.prefect_ui_hint("abc"),
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    # the runs go to the port the API restarted on, not to the one another process took
    assert seen["adopted"] and seen["restarted"] and seen["setting"] == seen["api_url"]
    assert not seen["ui"]  # the temporary server has no UI and ends with the process
    assert seen["temporary"] == [True, False]
    assert seen["hint"] == "prefect server start   then http://127.0.0.1:4200/runs/flow-run/abc"


def test_runs_on_the_temporary_api_send_no_heartbeats() -> None:
    from prefect.settings import get_current_settings

    before = get_current_settings()
    assert before.flows.heartbeat_frequency is not None  # Prefect's default: 180 s
    with embedded.run_settings():
        inside = get_current_settings()
        assert inside.flows.heartbeat_frequency is None
        assert inside.api.url == before.api.url and inside.home == before.home  # everything else as it was
    assert get_current_settings().flows.heartbeat_frequency is not None


def test_nothing_is_started_or_kept_where_a_server_is_configured(
    monkeypatch: pytest.MonkeyPatch, prefect_harness: Path
) -> None:
    # the harness sets the API URL in Prefect's settings (as a profile would), not in the environment
    assert not embedded.settings_allow_temporary_api()
    assert cli._start_embedded("train") is None  # Prefect is loaded here: its settings are read first
    process = _Process()
    api, _ = _api(5.0, [process], _answers_after(0))
    assert not embedded.adopt(api) and process.calls[0] == "terminate"
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


def test_the_quick_exit_waits_for_threads_runs_exit_handlers_and_flushes(tmp_path: Path) -> None:
    program = textwrap.dedent(
        f"""
        import atexit, sys, threading, time
        from pathlib import Path
        from flows.cli import _exit_now

        root = Path({str(tmp_path)!r})
        atexit.register(lambda: (root / "handler").write_text("ran"))

        def late() -> None:
            time.sleep(0.3)
            (root / "thread").write_text("done")

        threading.Thread(target=late).start()
        sys.stdout.write("unflushed output")
        _exit_now(3)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "unflushed output"
    assert (tmp_path / "handler").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"


def _embedded_env(home: Path) -> dict[str, str]:
    """This environment as a fresh machine's: no Prefect, MLflow or AWS settings, no telemetry choice,
    Prefect's home at ``home``, this checkout importable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_")) and k not in embedded.TELEMETRY_OFF
    }
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO))
    return env


def _temporary_servers(home: Path) -> list[int]:
    """Live processes serving Prefect's API over ``home`` (the temporary servers a run left behind)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            serves = "prefect.server.api.server:create_app" in " ".join(process.info["cmdline"] or ())
            if serves and process.environ().get("PREFECT_HOME") == str(home):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.slow
def test_the_embedded_train_command_runs_on_a_fresh_machine_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    """`lightning-lib train` as `make demo` runs it (no servers), with a Prefect home that has no database
    yet: it finishes, prints where everything is, no traceback and no telemetry notice, the run is
    recorded in the temporary API's database, and the API is gone when the command returns."""
    home = tmp_path / "prefect-home"
    env = _embedded_env(home)
    command = [
        sys.executable, "-m", "flows.cli", "train",
        "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Training finished" in done.stdout and "Traceback" not in output
    assert "telemetry" not in output.lower() and "View at" not in output
    assert "prefect server start   then http://127.0.0.1:4200/runs/flow-run/" in done.stdout
    with sqlite3.connect(home / "prefect.db") as db:
        states = db.execute("SELECT state_type FROM flow_run").fetchall()
    assert states == [("COMPLETED",)]
    assert _temporary_servers(home) == []


@pytest.mark.slow
def test_ctrl_c_stops_the_embedded_run_in_one_line_and_its_run_key_continues_it(tmp_path: Path) -> None:
    """Ctrl-C at the terminal (SIGINT to the foreground process group) mid-fit: the temporary API is in a
    session of its own, so the run is recorded Crashed before the CLI stops the API; the CLI exits 130 with
    one line naming the run key, no traceback, nothing left running, each line printed once. The named
    run key then continues the fit from its last checkpoint, in the same MLflow run, without a warning."""
    import signal
    import time

    home = tmp_path / "prefect-home"
    env = _embedded_env(home)
    overrides = ["trainer.max_epochs=40"]  # the progress bar prints a line per epoch off a terminal
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "train", *overrides],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # a hang detector, not a timing claim
        while "Epoch 2:" not in log_path.read_text() and first.poll() is None:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        assert first.wait(timeout=120) == 130, log_path.read_text()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(
        "lightning-lib train: interrupted; to continue from its last checkpoint, run it again (same config and "
        "overrides) with --run-key training-"
    )
    run_key = last.rsplit(" ", 1)[1]
    assert output.count("Trainable params") == 1 and output.count("is not a git checkout") == 1, output
    assert _temporary_servers(home) == []
    with sqlite3.connect(home / "prefect.db") as db:
        assert db.execute("SELECT state_type FROM flow_run").fetchall() == [("CRASHED",)]

    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", *overrides, "--run-key", run_key],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Took over the lease" not in output and "MLflow refused" not in output, output
    steps = next(line for line in done.stdout.splitlines() if line.strip().startswith("steps"))
    total, this_attempt = (int(n) for n in re.findall(r"\d+", steps))
    assert total == 40 * 20 and 0 < this_attempt < total, steps
    assert f"run key               {run_key}" in done.stdout


@pytest.mark.slow
def test_ctrl_c_stops_an_embedded_serve_promptly_and_leaves_nothing_running(tmp_path: Path) -> None:
    """`lightning-lib serve` with no Prefect server serves on the CLI's temporary API (its own session):
    Ctrl-C pauses the deployments against it and ends the command, instead of Prefect's own temporary
    server dying with the Ctrl-C and the pause retrying against it for minutes."""
    import signal
    import time

    home = tmp_path / "prefect-home"
    env = _embedded_env(home)
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # hang detectors, not timing claims
        while "forkserver that has imported the flows" not in log_path.read_text():
            assert serve.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        os.killpg(serve.pid, signal.SIGINT)
        assert serve.wait(timeout=60) in (0, 130), log_path.read_text()
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert "All deployments have been paused" in output and "Traceback" not in output, output
    assert _temporary_servers(home) == []


def test_serving_on_a_work_pool_without_a_prefect_server_is_refused_in_one_line(tmp_path: Path) -> None:
    env = _embedded_env(tmp_path / "prefect-home")
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "--work-pool", "cpu", "--source", str(REPO)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "lightning-lib serve: Expected a Prefect server for --work-pool cpu (set PREFECT_API_URL): "
        "deployments registered on the temporary local API would be gone when this command ends."
    )
    assert "Traceback" not in done.stderr
    assert _temporary_servers(tmp_path / "prefect-home") == []
