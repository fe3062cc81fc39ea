"""Served flow runs start from a forkserver that has already imported the flows.

Prefect's runner starts each run of an in-memory flow (what ``serve`` registers) in a fresh interpreter
(``multiprocessing``'s "spawn"), which imports Prefect and then, unpickling the flow, torch, the library and
the tasks: about 5 s between the runner picking the run up and the run being Running. Here the runs start
from a "forkserver" instead: one server process, started when ``serve`` starts, imports those modules once
(``preload``) and forks a new process for every run. Each run still has a process of its own (a SIGKILLed
run is reported Crashed and re-run as before, cancelling kills that process alone); only the imports are
done before the run exists.

How: Prefect documents its override point, the module-level ``run_flow_in_subprocess`` that
``prefect.runner._starter_direct.DirectSubprocessStarter`` calls. The replacement calls Prefect's own
function, so the payload, the settings and the environment the run gets are built by Prefect, but lets it
take the forkserver context where it asks ``multiprocessing`` for "spawn". That is a Prefect internal:
``tests/flows/test_deploy_forkserver.py`` pins it, and whenever it is absent the runs start Prefect's way.

What a spawned run would get and a forked one must get too:

- the serving process's environment at the moment of the start: a forked process inherits the server's
  (from when ``serve`` started), so the run's process sets its environment to a copy taken at the start
  before Prefect's own bootstrap applies the run's variables (the API URL, the control channel, ...);
- its working directory and ``sys.path``: ``multiprocessing`` sends them with every process it starts.

Fork safety: nothing may run beside the server's main thread when it forks, or a lock held by another
thread stays held in the child. The imports start no Python thread, no torch pool, no MLflow or Prefect
worker; the checks below look at the server's threads after its first fork, and any thread other than
jemalloc's purger sends the runs back to Prefect's spawn. That purger (pyarrow's allocator starts it at
import) takes jemalloc's own locks around a fork and is absent in the child; OpenBLAS's pool (numpy, scipy)
is shut down by OpenBLAS before every fork.

``LIGHTNING_LIB_SERVE_START_METHOD=spawn`` gets Prefect's start back; forkserver is the default on Linux
only (elsewhere spawn: macOS's system libraries are not safe to use after a fork).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

START_METHOD_ENV = "LIGHTNING_LIB_SERVE_START_METHOD"
START_METHODS = ("forkserver", "spawn")
# threads allowed beside the server's main thread when it forks: their library's fork handlers keep them
# consistent (jemalloc locks its state around fork() and leaves the child without the thread)
FORK_AWARE_THREADS = frozenset({"jemalloc_bg_thd"})
# how long the server may take to import the preloaded modules (a loaded machine takes a minute)
READY_TIMEOUT_S = 600.0

# one swap of Prefect's multiprocessing reference at a time (the runner starts runs from one event loop,
# but nothing else should see the forkserver in place of spawn)
_SWAP_LOCK = threading.Lock()
_installed: ForkserverStarts | None = None


def start_method() -> str:
    """How served runs start: ``LIGHTNING_LIB_SERVE_START_METHOD`` (``forkserver`` or ``spawn``) when
    set, else forkserver on Linux and spawn elsewhere."""
    raw = os.environ.get(START_METHOD_ENV, "").strip().lower()
    if not raw:
        return "forkserver" if sys.platform == "linux" else "spawn"
    if raw not in START_METHODS:
        raise ValueError(
            f"Expected {START_METHOD_ENV} to be one of {', '.join(START_METHODS)}, received {raw!r}."
        )
    if raw == "forkserver" and sys.platform != "linux":
        raise ValueError(
            f"Expected {START_METHOD_ENV}=spawn on {sys.platform} (forkserver is used on Linux only), "
            f"received {raw!r}."
        )
    return raw


def _prefect_layout() -> tuple[Any, Any, Callable[..., Any]] | str:
    """Prefect's engine module, the runner's starter module and the function it calls; or why the
    override does not apply to this Prefect."""
    try:
        import prefect.flow_engine as engine
        import prefect.runner._starter_direct as starter
    except ImportError as exc:
        return f"Prefect's direct starter is not importable ({exc})"
    original = getattr(engine, "run_flow_in_subprocess", None)
    if not callable(original) or getattr(starter, "run_flow_in_subprocess", None) is not original:
        return "prefect.runner._starter_direct no longer calls prefect.flow_engine.run_flow_in_subprocess"
    if getattr(engine, "multiprocessing", None) is not multiprocessing:
        return "prefect.flow_engine no longer starts runs through the multiprocessing module"
    return engine, starter, cast("Callable[..., Any]", original)


class _ForkserverForSpawn:
    """Stands for the ``multiprocessing`` module inside ``prefect.flow_engine`` during one start: its
    "spawn" context is the forkserver, whose processes take ``environ`` before running Prefect's target."""

    def __init__(self, context: Any, environ: dict[str, str]) -> None:
        self._context = context
        self._environ = environ
        self.used = False

    def get_context(self, method: str | None = None) -> Any:
        if method != "spawn":
            return multiprocessing.get_context(method)
        self.used = True
        return self

    def Process(  # the name of the context method it stands for
        self,
        group: None = None,
        target: Callable[..., Any] | None = None,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> Any:
        return self._context.Process(
            group=group,
            target=_run_with_environ,
            name=name,
            args=(self._environ, target, tuple(args), dict(kwargs or {})),
            daemon=daemon,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def _run_with_environ(
    environ: dict[str, str], target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """In the run's process: the environment a spawned process would have started with, then Prefect's
    target (its bootstrap applies the run's own variables over it)."""
    os.environ.clear()
    os.environ.update(environ)
    return target(*args, **kwargs)


def _report_server_threads(writer: Any) -> None:
    """In a process forked by the server (its parent): the server's pid and the names of its threads other
    than its main one and the fork-aware ones, as they are right after a fork."""
    server = os.getppid()
    tasks = Path(f"/proc/{server}/task")
    foreign = [
        name
        for tid in sorted(os.listdir(tasks))
        if int(tid) != server
        and (name := (tasks / tid / "comm").read_text().strip()) not in FORK_AWARE_THREADS
    ]
    writer.send((server, foreign))
    writer.close()


class ForkserverStarts:
    """Prefect's served-run start replaced by a start from a preloaded forkserver, once that server is
    ready and checked; until then, and for good if the check fails, runs start Prefect's way."""

    def __init__(self, preload: Sequence[str], ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        layout = _prefect_layout()
        if isinstance(layout, str):
            raise RuntimeError(layout)
        self._engine, self._starter, self._original = layout
        self._context = multiprocessing.get_context("forkserver")
        self._preload = list(dict.fromkeys(["prefect.flow_engine", __name__, *preload]))
        self._ready_timeout_s = ready_timeout_s
        self._ready = threading.Event()
        self._done = threading.Event()
        self.reason_off: str | None = None
        self.server_pid: int | None = None

    @property
    def ready(self) -> bool:
        """Whether runs now start from the forkserver."""
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server is checked (ready or refused); whether it is ready."""
        self._done.wait(timeout)
        return self.ready

    def install(self) -> None:
        """Patch the runner's start and start the server with its imports on a background thread."""
        self._context.set_forkserver_preload(self._preload)
        self._starter.run_flow_in_subprocess = self
        threading.Thread(target=self._start_server, name="lightning-lib-forkserver", daemon=True).start()

    def uninstall(self) -> None:
        """Give the runner Prefect's own start back (the server ends with this process)."""
        if self._starter.run_flow_in_subprocess is self:
            self._starter.run_flow_in_subprocess = self._original
        self._ready.clear()

    def _turn_off(self, reason: str) -> None:
        self._ready.clear()
        if self.reason_off is None:
            self.reason_off = reason
            _logger().warning("Served runs start Prefect's way (a fresh interpreter each): %s.", reason)

    def _start_server(self) -> None:
        try:
            reader, writer = self._context.Pipe(duplex=False)
            # the first process blocks until the server has imported everything: then it checks the server
            probe = self._context.Process(
                target=_report_server_threads, args=(writer,), name="lightning-lib-forkserver-check"
            )
            probe.start()
            writer.close()
            if not reader.poll(self._ready_timeout_s):
                raise TimeoutError(f"no answer from the forkserver within {self._ready_timeout_s:.0f} s")
            self.server_pid, foreign = reader.recv()
            probe.join(self._ready_timeout_s)
        except Exception as exc:
            self._turn_off(f"the forkserver did not start ({type(exc).__name__}: {exc})")
        else:
            if foreign:
                self._turn_off(f"the forkserver runs threads besides its main one ({', '.join(foreign)})")
            elif probe.exitcode != 0:
                self._turn_off(f"the forkserver's check exited with {probe.exitcode}")
            else:
                self._ready.set()
                _logger().info("Served runs start from a forkserver that has imported the flows.")
        finally:
            self._done.set()

    def __call__(
        self,
        flow: Any,
        flow_run: Any = None,
        parameters: dict[str, Any] | None = None,
        wait_for: Any = None,
        context: dict[str, Any] | None = None,
        env: dict[str, str | None] | None = None,
    ) -> Any:
        """``run_flow_in_subprocess`` as the runner calls it: Prefect's, from the forkserver when ready."""
        call = {"flow_run": flow_run, "parameters": parameters, "wait_for": wait_for, "context": context}
        if not self._ready.is_set():
            return self._original(flow, **call, env=env)
        shim = _ForkserverForSpawn(self._context, dict(os.environ))
        try:
            with _SWAP_LOCK:
                self._engine.multiprocessing = shim
                try:
                    process = self._original(flow, **call, env=env)
                finally:
                    self._engine.multiprocessing = multiprocessing
        except (OSError, EOFError) as exc:
            if not shim.used:
                raise
            # the server is gone (killed, or failed): this run and the next start Prefect's way
            self._turn_off(f"the forkserver failed to start a run ({type(exc).__name__}: {exc})")
            return self._original(flow, **call, env=env)
        if not shim.used:
            self._turn_off("prefect.flow_engine.run_flow_in_subprocess no longer asks for a spawn context")
        return process


def _logger() -> Any:
    from prefect.logging import get_logger

    return get_logger("lightning_lib.serve")


def install_forkserver_starts(preload: Sequence[str]) -> ForkserverStarts | None:
    """Start served runs from a forkserver that imports ``preload`` first, unless
    ``LIGHTNING_LIB_SERVE_START_METHOD=spawn`` (or not on Linux) or this Prefect has no such override;
    returns the installed starts (``None``: Prefect's own). Installing again replaces the earlier one."""
    global _installed
    method = start_method()
    if _installed is not None:
        _installed.uninstall()
        _installed = None
    if method == "spawn":
        return None
    try:
        starts = ForkserverStarts(preload)
    except RuntimeError as exc:
        _logger().warning("Served runs start Prefect's way (a fresh interpreter each): %s.", exc)
        return None
    starts.install()
    _installed = starts
    return starts


__all__ = [
    "FORK_AWARE_THREADS",
    "START_METHODS",
    "START_METHOD_ENV",
    "ForkserverStarts",
    "install_forkserver_starts",
    "start_method",
]
