"""Serve's forkserver start seen from a fresh interpreter (there is one forkserver per process, and its
preload is fixed when it starts): ``tests/flows/test_deploy_forkserver.py`` runs ``main`` in a subprocess
against the test session's Prefect API and reads the JSON it writes."""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy
from prefect import flow

# set when a process imports this module: the forkserver when it is preloaded, never the run's process
IMPORTED_BY = os.getpid()
SEEN_KEYS = (
    "PREFECT__FLOW_RUN_ID",
    "PROBE_ADDED",
    "PROBE_GONE",
    "PREFECT_API_URL",
    "PREFECT__DEPLOYMENT_NAME",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
)


@flow(name="forkserver-probe")
def probe(path: str, sleep_s: float = 0.0) -> None:
    """Write what the run's process looks like, then sleep (for a kill from outside)."""
    from prefect.runtime import flow_run
    from prefect.settings import get_current_settings

    # Prefect pickles the flow's function by value, with the globals it uses: the module as imported here
    module = importlib.import_module("tests.flows.forkserver_probe")

    Path(path).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "imported_by": module.IMPORTED_BY,
                "env": {key: os.environ.get(key) for key in SEEN_KEYS},
                "cwd": os.getcwd(),
                "flow_run_id": str(flow_run.id),
                "heartbeat_setting": get_current_settings().flows.heartbeat_frequency,
                "argv": sys.argv,
                "torch_loaded": "torch" in sys.modules,
                "numpy_draw": int(numpy.random.randint(1 << 30)),
                "random_draw": random.getrandbits(30),
            }
        )
    )
    time.sleep(sleep_s)


def _threads(pid: int) -> list[str]:
    tasks = Path(f"/proc/{pid}/task")
    return [
        (tasks / tid / "comm").read_text().strip() for tid in sorted(os.listdir(tasks)) if int(tid) != pid
    ]


def _start(flow_run: Any, kill: bool) -> dict[str, Any]:
    """Start the run as serve's runner does: Prefect's engine-command starter."""
    import anyio
    from prefect.runner._starter_engine import EngineCommandStarter

    starter = EngineCommandStarter(
        entrypoint="tests.flows.forkserver_probe.probe", deployment_name="probe/served", heartbeat_seconds=30
    )

    async def start() -> dict[str, Any]:
        async with anyio.create_task_group() as group:
            handle = await group.start(starter.start, flow_run)
            if kill:
                path = Path(flow_run.parameters["path"])
                while not path.exists():
                    await anyio.sleep(0.05)
                os.kill(handle.pid, signal.SIGKILL)
        return {"process": type(handle.raw_process).__name__, "returncode": handle.returncode}

    return anyio.run(start)


def main(out: str, work: str) -> None:
    """Install serve's start with its preload (and this module), then start two runs the way the
    runner does: one to the end, one SIGKILLed mid-run; write what was seen to ``out``."""
    from prefect.client.orchestration import get_client

    from flows._forkserver import install_forkserver_starts
    from flows.deploy import SERVE_PRELOAD

    os.environ["PROBE_GONE"] = "server"  # the server inherits it; gone from serve before the run starts
    starts = install_forkserver_starts((*SERVE_PRELOAD, __name__))
    assert starts is not None
    ready = starts.wait(300)
    del os.environ["PROBE_GONE"]
    os.environ["PROBE_ADDED"] = "parent"
    os.chdir(work)
    seen: dict[str, Any] = {"ready": ready, "reason_off": starts.reason_off, "server_pid": starts.server_pid}
    seen["server_threads"] = _threads(starts.server_pid) if starts.server_pid else None
    with get_client(sync_client=True) as client:
        for name, kill in (("completed", False), ("killed", True)):
            path = Path(work) / f"{name}.json"
            flow_run = client.create_flow_run(probe, parameters={"path": str(path), "sleep_s": 60.0 * kill})
            started = _start(flow_run, kill)
            state = client.read_flow_run(flow_run.id).state
            seen[name] = {
                **started,
                "state": state.type.value if state is not None else None,
                "flow_run_id": str(flow_run.id),
                "child": json.loads(path.read_text()),
            }
    seen["server_threads_after"] = _threads(starts.server_pid) if starts.server_pid else None
    seen["serve_pid"] = os.getpid()
    starts.uninstall()
    Path(out).write_text(json.dumps(seen))
