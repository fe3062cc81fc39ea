"""Served runs start from a preloaded forkserver (flows._forkserver), one process per run, with the
environment a spawned process would get; Prefect's own start when opted out or when Prefect changed."""

from __future__ import annotations

import inspect
import json
import multiprocessing
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

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _prefect_start_restored() -> Any:
    import prefect.runner._starter_direct as starter

    original = starter.run_flow_in_subprocess
    yield
    starter.run_flow_in_subprocess = original
    _forkserver._installed = None


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
    import prefect.flow_engine as engine
    import prefect.runner._starter_direct as starter

    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    assert install_forkserver_starts(["flows.training"]) is None
    assert starter.run_flow_in_subprocess is engine.run_flow_in_subprocess


def test_prefect_still_starts_served_runs_the_way_the_override_relies_on() -> None:
    """Pins the Prefect internals (prefect==3.9.1 in constraints.txt): the runner's direct starter calls
    the engine's ``run_flow_in_subprocess`` through a module-level name, and that function takes its
    process from ``multiprocessing.get_context("spawn")`` of the engine's ``multiprocessing`` global. If
    this fails after an upgrade, served runs start Prefect's way (see the next test): adapt
    flows/_forkserver.py to the new Prefect."""
    import prefect.flow_engine as engine
    import prefect.runner._starter_direct as starter

    assert starter.run_flow_in_subprocess is engine.run_flow_in_subprocess
    assert engine.multiprocessing is multiprocessing
    source = inspect.getsource(engine.run_flow_in_subprocess)
    assert source.count('multiprocessing.get_context("spawn")') == 1
    assert "ctx.Process(" in source and "process.start()" in source
    assert not isinstance(_forkserver._prefect_layout(), str)


def test_a_changed_prefect_falls_back_to_its_own_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.flow_engine as engine
    import prefect.runner._starter_direct as starter

    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    if sys.platform != "linux":
        pytest.skip("forkserver starts are used on Linux only")
    # the engine no longer reaches multiprocessing through its module global: nothing is patched
    monkeypatch.setattr(engine, "multiprocessing", object())
    assert install_forkserver_starts(["flows.training"]) is None
    assert starter.run_flow_in_subprocess is engine.run_flow_in_subprocess
    monkeypatch.undo()

    # the engine's function stops asking for "spawn": the run starts Prefect's way and the rest follow
    starts = ForkserverStarts(["flows.training"])
    started = []

    def prefect_start(flow: Any, **kwargs: Any) -> str:
        started.append((flow, kwargs["env"]))
        return "prefect's process"

    monkeypatch.setattr(starts, "_original", prefect_start)
    starts._ready.set()
    assert starts("a flow", env={"K": "v"}) == "prefect's process"
    assert started == [("a flow", {"K": "v"})]
    assert not starts.ready and "no longer asks for a spawn context" in (starts.reason_off or "")
    assert engine.multiprocessing is multiprocessing  # swapped back


def test_the_run_takes_the_environment_of_its_start_not_the_servers() -> None:
    saved = dict(os.environ)
    try:
        seen = _forkserver._run_with_environ(
            {"ONLY": "this"}, lambda x, y=None: (dict(os.environ), x, y), ("a",), {"y": "b"}
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert seen == ({"ONLY": "this"}, "a", "b")


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
    assert completed["process"] == killed["process"] == "ForkServerProcess"
    assert completed["state"] == "COMPLETED" and completed["returncode"] == 0
    child = completed["child"]
    # forked by the server, which imported the flows' modules (and this one) before: the run did not
    assert child["ppid"] == child["imported_by"] == seen["server_pid"] != seen["serve_pid"]
    assert child["torch_loaded"]
    assert child["flow_run_id"] == completed["flow_run_id"]
    # the environment of serve at the start (not the server's), with Prefect's variables for the run
    assert child["env"] == {
        "PROBE_ADDED": "parent",
        "PROBE_GONE": None,
        "PREFECT_API_URL": api_url,
        "PREFECT__DEPLOYMENT_NAME": "probe/served",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }
    assert child["cwd"] == str(work)
    # one process per run: a SIGKILLed run's exit is what the runner reports Crashed
    assert killed["child"]["pid"] != child["pid"] and killed["child"]["ppid"] == seen["server_pid"]
    assert killed["returncode"] == -9
