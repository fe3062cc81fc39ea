"""Served runs start from a preloaded forkserver (flows._forkserver), one process per run, with the
environment a spawned process would get; Prefect's own start when opted out or when Prefect changed."""

from __future__ import annotations

import functools
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows import _forkserver
from flows._forkserver import (
    FORK_AWARE_THREADS,
    START_METHOD_ENV,
    ForkserverStarts,
    install_forkserver_starts,
    start_method,
)
from tests.flows.conftest import REPO

# every test leaves Prefect's engine starter as it found it (some install the forkserver's)
pytestmark = pytest.mark.usefixtures("prefect_start_restored")


def test_start_method_defaults_to_forkserver_on_linux_and_refuses_unknown_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    assert start_method() == ("forkserver" if sys.platform == "linux" else "spawn")
    monkeypatch.setenv(START_METHOD_ENV, " Spawn ")
    assert start_method() == "spawn"
    monkeypatch.setenv(START_METHOD_ENV, "fork")
    with pytest.raises(
        ValueError,
        match=r"Expected LIGHTNING_LIB_SERVE_START_METHOD to be one of forkserver, spawn, received 'fork'",
    ):
        start_method()


def test_opting_out_leaves_prefects_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.runner._starter_engine as starter
    from prefect.utilities.processutils import run_process

    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    assert install_forkserver_starts(["flows.training"]) is None
    assert starter.run_process is run_process


def test_serve_starts_runs_from_the_forkserver_while_it_serves_and_checks_the_choice_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefect

    from flows import deploy

    events: list[Any] = []

    class Starts:
        def uninstall(self) -> None:
            events.append("uninstalled")

    monkeypatch.setattr(deploy, "build_deployments", lambda *args, **kwargs: ["a deployment"])
    monkeypatch.setattr(deploy, "ensure_crash_recovery", lambda recovery: None)
    monkeypatch.setattr(
        deploy, "install_forkserver_starts", lambda preload: events.append(preload) or Starts()
    )
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **kwargs: events.append("served"))
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    deploy.serve(limit=1)
    assert events == [deploy.SERVE_PRELOAD, "served", "uninstalled"]
    # the flows' modules first, then what the MLflow logger imports at the end of a fit
    assert deploy.SERVE_PRELOAD[:5] == (
        "flows.training", "flows.retraining", "flows.reproduce", "flows.predict", "flows.pipeline"
    )  # fmt: skip
    events.clear()
    monkeypatch.setenv(START_METHOD_ENV, "threads")
    with pytest.raises(ValueError, match=START_METHOD_ENV):
        deploy.serve(limit=1)
    assert events == []


def test_prefect_still_starts_served_runs_the_way_the_override_relies_on() -> None:
    """Pins the Prefect internals (prefect==3.9.1 in constraints.txt): ``prefect.serve`` registers
    deployments, not in-memory flows, so its runner starts each run with the engine-command starter, which
    runs ``[python, "-m", "prefect.engine"]`` through its module-level ``run_process`` with only the
    options reproduced here, and the engine's main takes a first argument as the flow run id. If this
    fails after an upgrade, served runs start Prefect's way (see the next test): adapt
    flows/_forkserver.py to the new Prefect."""
    import prefect.context
    import prefect.engine
    import prefect.flows
    import prefect.runner._starter_engine as starter
    import prefect.runner.runner as runner
    from prefect.utilities.processutils import run_process

    assert starter.run_process is run_process
    assert callable(prefect.context.refresh_global_settings_context)
    assert "runner.add_deployment(deployment)" in inspect.getsource(prefect.flows.serve)
    assert "EngineCommandStarter(" in inspect.getsource(runner)
    source = inspect.getsource(starter.EngineCommandStarter.start)
    assert '[get_sys_executable(), "-m", "prefect.engine"]' in source
    call = source[source.index("await run_process(") :]
    call = call[: call.index("\n            )")]
    passed = {line.strip().split("=")[0] for line in call.splitlines()[1:] if "=" in line}
    assert passed == {"command", "stream_output", "task_status", "task_status_handler", "env", "cwd"}
    assert "**kwargs" in call and 'kwargs["start_new_session"] = True' in source
    assert "sys.argv[1] if len(sys.argv) > 1" in inspect.getsource(prefect.engine)
    assert not isinstance(_forkserver._prefect_layout(), str)


def test_a_changed_prefect_or_another_command_gets_prefects_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio
    import prefect.runner._starter_engine as starter
    from prefect.utilities.processutils import run_process

    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    if sys.platform != "linux":
        pytest.skip("forkserver starts are used on Linux only")
    # the starter no longer calls the module-level run_process: nothing is patched
    monkeypatch.setattr(starter, "run_process", lambda *args, **kwargs: None)
    assert install_forkserver_starts(["flows.training"]) is None
    monkeypatch.undo()
    assert starter.run_process is run_process

    # ready, but asked for something other than the engine as Prefect runs it today: Prefect's start
    starts = ForkserverStarts(["flows.training"])
    handed: list[Any] = []

    async def prefect_start(command: list[str], **kwargs: Any) -> str:
        handed.append((command, kwargs))
        return "prefect's process"

    monkeypatch.setattr(starts, "_original", prefect_start)
    starts._ready.set()
    engine = [sys.executable, "-m", "prefect.engine"]
    for command, options in (
        ([sys.executable, "-m", "other.module"], {}),
        (["/usr/bin/python2", "-m", "prefect.engine"], {}),
        (engine, {"stream_output": (None, None)}),
        (engine, {"creationflags": 8}),
    ):
        assert anyio.run(functools.partial(starts, command, **options)) == "prefect's process"
        assert handed.pop()[0] == command


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="forkserver starts are used on Linux only")
def test_served_runs_fork_from_a_preloaded_server_one_process_each_with_spawns_environment(
    prefect_harness: Path, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    env = {k: v for k, v in os.environ.items() if k != START_METHOD_ENV}
    env.update(PYTHONPATH=str(REPO), PREFECT_API_URL=api_url)
    out, work = tmp_path / "seen.json", tmp_path / "work"
    work.mkdir()
    script = f"from tests.flows.forkserver_probe import main; main({str(out)!r}, {str(work)!r})"
    subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, timeout=540, check=True)
    seen = json.loads(out.read_text())

    assert seen["ready"], seen["reason_off"]
    # fork safety: after its forks, the server runs nothing beside its main thread but jemalloc's purger
    for threads in (seen["server_threads"], seen["server_threads_after"]):
        assert set(threads) <= FORK_AWARE_THREADS, threads
    completed, killed = seen["completed"], seen["killed"]
    assert completed["process"] == killed["process"] == "_ForkedEngine"
    assert completed["state"] == "COMPLETED" and completed["returncode"] == 0
    child = completed["child"]
    # forked by the server, which imported the flows' modules (and this one) before: the run did not
    assert child["ppid"] == child["imported_by"] == seen["server_pid"] != seen["serve_pid"]
    assert child["torch_loaded"]
    assert child["flow_run_id"] == completed["flow_run_id"]
    # exactly the environment Prefect built for "python -m prefect.engine" (serve's now, not the
    # server's, with the run's variables), Prefect's settings read from it, no arguments, Prefect's cwd
    assert child["env"] == {
        "PREFECT__FLOW_RUN_ID": completed["flow_run_id"],
        "PROBE_ADDED": "parent",
        "PROBE_GONE": None,
        "PREFECT_API_URL": api_url,
        "PREFECT__DEPLOYMENT_NAME": "probe/served",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }
    assert child["heartbeat_setting"] == 30
    assert len(child["argv"]) == 1 and child["argv"][0].endswith("engine.py")
    assert child["cwd"] == str(work)
    # one process per run: a SIGKILLed run's exit is what the runner reports Crashed
    assert killed["child"]["pid"] != child["pid"] and killed["child"]["ppid"] == seen["server_pid"]
    assert killed["returncode"] == -9
    # each run draws its own random numbers, as fresh interpreters do (forked ones would share the server's)
    for draw in ("numpy_draw", "random_draw"):
        assert killed["child"][draw] != child[draw]
