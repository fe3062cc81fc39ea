"""A process worker of a work pool whose runs start from a preloaded forkserver (``lightning-lib worker``).

``prefect worker start --pool NAME`` asks the API for scheduled runs every ``PREFECT_WORKER_QUERY_SECONDS``
(10 s by default) and starts each run as ``python -m prefect.runner._workspace_supervisor CONFIG``: a fresh
interpreter that imports Prefect and runs the deployment's pull steps, then replaces itself with
``python -m prefect.engine``, a second fresh interpreter that imports Prefect, torch, MLflow and the flows
before the run is Running. :func:`run_worker` runs Prefect's own ``ProcessWorker`` in this process, polling
every second unless ``PREFECT_WORKER_QUERY_SECONDS`` is set, and starts each run's process from the
forkserver of ``flows._forkserver``, which has imported the flows once: the forked process runs the same
supervisor (pull steps, environment, working directory), then the engine in place of the exec when it
would import nothing other than what the forkserver has imported (the same checkout and site-packages);
otherwise it execs the engine as Prefect does.

Each run still has a process of its own, started in its own session: the worker reports a SIGKILLed run
Crashed (exit code -9) and the crash recovery of ``flows.recovery`` re-runs it, as with Prefect's worker.
``LIGHTNING_LIB_SERVE_START_METHOD=spawn`` gets Prefect's start back.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flows._env import seconds_env
from flows._forkserver import install_forkserver_starts, start_method
from flows.deploy import SERVE_PRELOAD

# Prefect's worker polls every 10 s: a run submitted to an idle worker waits 5 s on average before it is
# even picked up. One request a second from a worker is nothing for the server.
WORKER_POLL_SECONDS = 1.0
WORKER_POLL_VARIABLE = "PREFECT_WORKER_QUERY_SECONDS"
WORKER_TYPE = "process"


def worker_poll_seconds() -> float:
    """How often the worker asks for scheduled runs: ``PREFECT_WORKER_QUERY_SECONDS`` when the user set
    it, else :data:`WORKER_POLL_SECONDS`."""
    return seconds_env(WORKER_POLL_VARIABLE, WORKER_POLL_SECONDS)


async def _check_pool(pool: str) -> None:
    """Refuse a pool of another type before the worker starts (a missing one the worker creates)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        with contextlib.suppress(ObjectNotFound):
            found = await client.read_work_pool(pool)
            if found.type != WORKER_TYPE:
                raise ValueError(
                    f"Expected --pool to name a {WORKER_TYPE} work pool, received {pool!r} of type {found.type!r}."
                )


def run_worker(pool: str, name: str | None = None, limit: int | None = None) -> None:
    """Run a process worker of ``pool`` in this process until interrupted, its runs started from a forkserver
    that has imported the flows; ``limit`` caps the runs it runs at once."""
    import anyio
    from prefect.settings import PREFECT_API_URL, PREFECT_WORKER_QUERY_SECONDS, temporary_settings
    from prefect.workers.process import ProcessWorker

    if not pool.strip():
        raise ValueError(f"Expected --pool to name a work pool, received {pool!r}.")
    if limit is not None and limit < 1:
        raise ValueError(f"Expected --limit >= 1, received {limit}.")
    if not PREFECT_API_URL.value():
        raise ValueError(
            "Expected PREFECT_API_URL to name the Prefect server of the work pool, received none "
            "(a worker runs a server's work pool; `lightning-lib serve` needs no server)."
        )
    poll_seconds = worker_poll_seconds()
    start_method()  # a bad LIGHTNING_LIB_SERVE_START_METHOD is refused before anything starts
    anyio.run(_check_pool, pool)
    # started now, the forkserver imports the flows while the worker registers; runs picked up before it
    # is ready start Prefect's way
    starts = install_forkserver_starts(SERVE_PRELOAD)
    try:
        with temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: poll_seconds}):
            anyio.run(_work, ProcessWorker, pool, name, limit)
    finally:
        if starts is not None:
            starts.uninstall()


async def _work(worker_class: Any, pool: str, name: str | None, limit: int | None) -> None:
    # start() enters the worker itself (its client, its pool's registration) and runs its loops
    await worker_class(work_pool_name=pool, name=name, limit=limit).start()


__all__ = ["WORKER_POLL_SECONDS", "WORKER_POLL_VARIABLE", "run_worker", "worker_poll_seconds"]
