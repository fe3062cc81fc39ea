"""Served flow runs (and a worker's) start from a forkserver that has already imported the flows.

``prefect.serve`` runs each flow run of a served deployment as ``python -m prefect.engine`` (Prefect's
``EngineCommandStarter``): a fresh interpreter that imports Prefect, then the flow's module and with it
torch, the library, the tasks and MLflow, about 5 s between the runner picking the run up and the run
being Running. Here the run's process is forked instead from a "forkserver": one server process, started
when ``serve`` starts, imports those modules once (``preload``) and forks a process for every run, which
then does what ``python -m prefect.engine`` does. Each run still has a process of its own (a SIGKILLed run
is reported Crashed and re-run as before; cancelling kills that process alone); only the imports are done
before the run exists.

How: Prefect documents its override point, the module-level ``run_process`` that
``prefect.runner._starter_engine.EngineCommandStarter`` calls with the command, its environment and
working directory. The replacement starts exactly that command from the forkserver when it can (the
engine command, the options Prefect passes today) and hands everything else to Prefect's ``run_process``.
``tests/flows/test_deploy_forkserver.py`` pins the Prefect side; whenever it is absent the runs start
Prefect's way.

What a fresh ``python -m prefect.engine`` would get and a forked one gets too:

- the environment Prefect built for the run, exactly (a forked process starts with the server's), and
  Prefect's settings read again from it (``prefect.context.refresh_global_settings_context``);
- its working directory (``multiprocessing`` sends serve's with every start; Prefect's ``cwd`` wins),
  a new session when Prefect asks for one, and stdout/stderr as Prefect streams them (serve's own) or
  discarded when it does not;
- the exit code Prefect reads to tell a crash (a SIGKILL is -9), and the exit handlers an interpreter runs
  as it ends (Prefect's and MLflow's flushes, logging's), which a ``multiprocessing`` child skips;
- random states of its own: Python's ``random`` reseeds itself after a fork, numpy's global generator is
  reseeded by the run's process (torch's default generator has its fixed default seed either way).

Module-level state computed at import (Prefect's logging configuration, say) is the server's, i.e. that
of ``serve`` as it started: the same as a run's unless serve's environment changed since.

Fork safety: nothing may run beside the server's main thread when it forks, or a lock held by another
thread stays held in the child. The imports start no Python thread, no torch pool, no MLflow or Prefect
worker; the server's threads are checked after its first fork, and any thread other than jemalloc's
purger sends the runs back to Prefect's start. That purger (pyarrow's allocator starts it at import)
takes jemalloc's own locks around a fork and is absent in the child; OpenBLAS's pool (numpy, scipy) is
shut down by OpenBLAS before every fork.

A process worker (``lightning-lib worker``, ``flows.worker``) starts a deployment's run as ``python -m
prefect.runner._workspace_supervisor CONFIG`` through the same ``run_process``: the supervisor runs the
deployment's pull steps, builds the engine's environment and working directory, and execs ``python -m
prefect.engine``. That command is forked too: the forked process runs Prefect's own supervisor, whose
module-level ``_launch_engine`` (pinned by ``tests/flows/test_worker.py``) is replaced in that process only,
so that the engine runs in place of the exec, in the same process (the pid the worker watches, as with the
exec), with the supervisor's environment and working directory, and the ``sys.path`` that interpreter
would have (asked of it: its PYTHONPATH, its site). Only when every module the server imported is the one
that fresh interpreter would import (the same checkout of the project, the same site-packages); otherwise,
and for any other command than the engine, the process execs as Prefect's supervisor does.

``LIGHTNING_LIB_SERVE_START_METHOD=spawn`` gets Prefect's start back; forkserver is the default on Linux
only (elsewhere Prefect's: macOS's system libraries are not safe to use after a fork).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import sys
import threading
import warnings
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
# the command Prefect's EngineCommandStarter runs (after the interpreter) and the options it passes to
# run_process besides the output and the task status: what the forked start reproduces
ENGINE_ARGS = ["-m", "prefect.engine"]
# the command a process worker runs for a deployment's run (``WorkspaceResolvingEngineCommandStarter``),
# followed by the path of its config: a supervisor that runs the deployment's pull steps, then replaces
# itself (exec) with the engine
SUPERVISOR_MODULE = "prefect.runner._workspace_supervisor"
SUPERVISOR_ARGS = ["-m", SUPERVISOR_MODULE]
_SUPPORTED_OPTIONS = frozenset({"env", "cwd", "start_new_session"})

_installed: ForkserverStarts | None = None


def start_method() -> str:
    """How served runs start: ``LIGHTNING_LIB_SERVE_START_METHOD`` (``forkserver`` or ``spawn``) when
    set, else forkserver on Linux and spawn (Prefect's own start) elsewhere."""
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


def _prefect_layout() -> tuple[Any, Callable[..., Any]] | str:
    """The runner's engine-command starter module and the ``run_process`` it calls; or why the override
    does not apply to this Prefect."""
    try:
        import prefect.context
        import prefect.runner._starter_engine as starter
        from prefect.utilities.processutils import run_process
    except ImportError as exc:
        return f"Prefect's engine-command starter is not importable ({exc})"
    if getattr(starter, "run_process", None) is not run_process:
        return "prefect.runner._starter_engine no longer starts runs with a module-level run_process"
    if not callable(getattr(prefect.context, "refresh_global_settings_context", None)):
        return "prefect.context.refresh_global_settings_context is gone"
    return starter, cast("Callable[..., Any]", run_process)


def _supervisor_layout() -> Any | str:
    """The workspace supervisor's module, whose engine launch a forked supervisor replaces; or why its runs
    start Prefect's way."""
    try:
        import prefect.runner._workspace_supervisor as supervisor
    except ImportError as exc:
        return f"Prefect's workspace supervisor is not importable ({exc})"
    for name in ("main", "_launch_engine"):
        if not callable(getattr(supervisor, name, None)):
            return f"{SUPERVISOR_MODULE}.{name} is gone"
    return supervisor


class _ForkedEngine:
    """The run's process as the runner reads it (``ProcessHandle``: its pid and return code)."""

    def __init__(self, process: Any) -> None:
        self._process = process

    @property
    def pid(self) -> int | None:
        return cast("int | None", self._process.pid)

    @property
    def returncode(self) -> int | None:
        return cast("int | None", self._process.exitcode)


def _become(environ: dict[str, str], cwd: str | None, new_session: bool, quiet: bool) -> None:
    """In the run's process: the session, output, environment, working directory and random state of a
    process Prefect would have started with ``environ`` in ``cwd``, and Prefect's settings read from it."""
    if new_session:
        os.setsid()
    if quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    _enter(environ, cwd)
    # a forked process shares the server's random states: Python's random reseeds itself after a fork,
    # numpy's global generator does not (a fresh interpreter seeds it from the system)
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _enter(environ: dict[str, str], cwd: str | None) -> None:
    """Take ``environ`` as the environment and ``cwd`` as the working directory, and Prefect's settings
    from that environment (they were read at import, in the server)."""
    os.environ.clear()
    os.environ.update(environ)
    if cwd is not None:
        os.chdir(cwd)
    import prefect.context

    prefect.context.refresh_global_settings_context()


def _run_engine(environ: dict[str, str], cwd: str | None, new_session: bool, quiet: bool) -> None:
    """In the run's process: become what ``python -m prefect.engine`` with ``environ`` in ``cwd`` would
    be, and run it."""
    _become(environ, cwd, new_session, quiet)
    if cwd is not None:
        sys.path.insert(0, os.getcwd())  # as "python -m" puts its working directory first
    _engine_main()


def _engine_main() -> None:
    """``python -m prefect.engine``'s main in this process, then the exit handlers an interpreter runs."""
    # no arguments (multiprocessing gave the child serve's): the engine takes a first one as the run id;
    # run_module puts the module's file first, as "python -m" does
    sys.argv = ["-m"]
    # runpy warns that the module it runs as __main__ is imported already: the preload's point, not a fault
    warnings.filterwarnings(
        "ignore", message=r"'prefect\.engine' found in sys\.modules", category=RuntimeWarning
    )
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    finally:
        # an interpreter runs these as it ends (Prefect's and MLflow's flushes, logging's); a
        # multiprocessing child leaves with os._exit and would skip them
        atexit._run_exitfuncs()


def _fresh_sys_path(executable: str, cwd: Path, environ: dict[str, str]) -> list[str] | None:
    """The ``sys.path`` that ``executable -m MODULE`` started with ``environ`` in ``cwd`` would have (its
    PYTHONPATH, its site's entries), asked of that interpreter; None if it cannot tell."""
    import json
    import subprocess

    try:
        done = subprocess.run(
            [executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
            env=environ,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        entries = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
    # "-c" puts "" first where "-m" puts the working directory (neither does with PYTHONSAFEPATH)
    return [str(cwd) if entry == "" else entry for entry in entries] if entries[:1] == [""] else entries


def _find_top_level(name: str, sys_path: list[str]) -> Any:
    """The spec an ``import name`` would find with ``sys_path`` (this process's finders, in order)."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        try:
            if finder is PathFinder or isinstance(finder, PathFinder):
                spec = PathFinder.find_spec(name, sys_path)
            else:
                spec = finder.find_spec(name, None)
        except (ImportError, AttributeError, ValueError):
            continue
        if spec is not None:
            return spec
    return None


def _place(spec: Any) -> tuple[Any, ...] | None:
    """Where a module comes from: its file, or the folders of a namespace package."""
    if spec is None:
        return None
    if spec.origin is None:
        return (None, *sorted(spec.submodule_search_locations or ()))
    return (spec.origin,)


def _stale_modules(sys_path: list[str]) -> list[str]:
    """The top-level modules already imported here that an interpreter with ``sys_path`` would import
    from another place (another checkout of the project, another site-packages). Modules that an import
    with this process's own path would not find where they are (made by their package at run time: torch's,
    Cython's) are not compared."""
    stale = []
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if "." in name or name.startswith("__") or spec is None or spec.origin in ("built-in", "frozen"):
            continue
        here = _place(spec)
        if _place(_find_top_level(name, sys.path)) != here:
            continue
        if _place(_find_top_level(name, sys_path)) != here:
            stale.append(name)
    return stale


def engine_sys_path(command: Sequence[str], cwd: Path, environ: dict[str, str]) -> list[str] | str:
    """The ``sys.path`` with which a process forked from the server can run ``command`` (with ``environ`` in
    ``cwd``) in place of exec'ing it: when it is ``python -m prefect.engine`` with this interpreter and
    every module the server imported is the one that fresh interpreter would import. Otherwise why not."""
    if list(command) != [sys.executable, *ENGINE_ARGS]:
        return f"the engine command is {' '.join(command)!r}"
    sys_path = _fresh_sys_path(command[0], cwd, environ)
    if sys_path is None:
        return f"{command[0]} did not tell its sys.path"
    stale = _stale_modules(sys_path)
    if stale:
        return f"it would import other copies of {', '.join(sorted(stale)[:5])} than the worker's"
    return sys_path


def _run_supervisor(
    environ: dict[str, str], cwd: str | None, new_session: bool, quiet: bool, config: str
) -> None:
    """In the run's process: become what ``python -m prefect.runner._workspace_supervisor CONFIG`` would
    be and run it: the deployment's pull steps, the engine's environment and working directory. Where that
    supervisor would then exec ``python -m prefect.engine`` and this process has imported the same modules
    the engine would import, the engine runs here instead; otherwise it is exec'd, as Prefect does."""
    _become(environ, cwd, new_session, quiet)
    import prefect.runner._workspace_supervisor as supervisor

    launch_in_process: list[tuple[Path, dict[str, str], list[str]]] = []
    exec_engine = supervisor._launch_engine

    async def launch_engine(command: list[str], *, cwd: Path, environment: dict[str, str]) -> int:
        sys_path = engine_sys_path(command, cwd, environment)
        if isinstance(sys_path, str):
            _logger().warning(
                "This flow run's engine starts Prefect's way (a fresh interpreter): %s.", sys_path
            )
            return cast("int", await exec_engine(command, cwd=cwd, environment=environment))
        launch_in_process.append((cwd, environment, sys_path))
        return 0

    supervisor._launch_engine = launch_engine
    sys.argv = [supervisor.__file__ or SUPERVISOR_MODULE, config]
    try:
        code = supervisor.main([config])
        if not launch_in_process:  # the supervisor failed before its launch
            sys.exit(code)
    except BaseException:
        atexit._run_exitfuncs()
        raise
    engine_cwd, environment, sys_path = launch_in_process[0]
    _enter(environment, str(engine_cwd))
    sys.path[:] = sys_path
    _engine_main()


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
    """Prefect's ``python -m prefect.engine`` start of served runs replaced by a fork from a preloaded
    forkserver, once that server is ready and checked; until then, for anything else than that command,
    and for good if the check fails, runs start Prefect's way."""

    def __init__(self, preload: Sequence[str], ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        layout = _prefect_layout()
        if isinstance(layout, str):
            raise RuntimeError(layout)
        self._starter, self._original = layout
        self._context = multiprocessing.get_context("forkserver")
        supervisor = _supervisor_layout()
        # without it, a worker's runs start Prefect's way (serve's runs do not use it)
        self._supervisor_off: str | None = supervisor if isinstance(supervisor, str) else None
        modules = ["prefect.engine", "prefect.flow_engine", __name__, *preload]
        if self._supervisor_off is None:
            modules.insert(2, SUPERVISOR_MODULE)
        self._preload = list(dict.fromkeys(modules))
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
        self._starter.run_process = self
        threading.Thread(target=self._start_server, name="lightning-lib-forkserver", daemon=True).start()

    def uninstall(self) -> None:
        """Give the runner Prefect's own start back (the server ends with this process)."""
        if self._starter.run_process is self:
            self._starter.run_process = self._original
        self._ready.clear()

    def _turn_off(self, reason: str) -> None:
        self._ready.clear()
        if self.reason_off is None:
            self.reason_off = reason
            _logger().warning("Flow runs start Prefect's way (a fresh interpreter each): %s.", reason)

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
                _logger().info("Flow runs start from a forkserver that has imported the flows.")
        finally:
            self._done.set()

    def _target(self, command: list[str]) -> tuple[Callable[..., None], tuple[str, ...]] | None:
        """What the forked process runs for ``command`` (and its extra arguments), if it can be forked."""
        args = list(command[1:])
        if args == ENGINE_ARGS:
            return _run_engine, ()
        if len(args) == 3 and args[:2] == SUPERVISOR_ARGS and self._supervisor_off is None:
            return _run_supervisor, (args[2],)
        return None

    def _forkable(self, command: list[str], stream_output: Any, options: dict[str, Any]) -> bool:
        return (
            self._ready.is_set()
            and self._target(command) is not None
            and os.path.realpath(command[0]) == os.path.realpath(sys.executable)
            and stream_output in (True, False)
            and set(options) <= _SUPPORTED_OPTIONS
        )

    async def __call__(
        self,
        command: list[str],
        *,
        stream_output: Any = False,
        task_status: Any = None,
        task_status_handler: Callable[[Any], Any] | None = None,
        **options: Any,
    ) -> Any:
        """``run_process`` as the engine-command starter calls it: the engine forked from the server when
        ready, anything else handed to Prefect's."""
        prefect_way = {"stream_output": stream_output, "task_status": task_status}
        prefect_way |= {"task_status_handler": task_status_handler, **options}
        if not self._forkable(command, stream_output, options):
            return await self._original(command, **prefect_way)
        import anyio.to_thread

        environ = {k: v for k, v in (options.get("env") or os.environ).items() if v is not None}
        cwd = options.get("cwd")
        args = (environ, None if cwd is None else os.fspath(cwd), bool(options.get("start_new_session")))
        target, extra = cast("tuple[Callable[..., None], tuple[str, ...]]", self._target(command))
        process = self._context.Process(
            target=target, args=(*args, not stream_output, *extra), name=command[2]
        )
        try:
            process.start()
        except (OSError, EOFError) as exc:
            # the server is gone (killed, or failed): this run and the next start Prefect's way
            self._turn_off(f"the forkserver failed to start a run ({type(exc).__name__}: {exc})")
            return await self._original(command, **prefect_way)
        forked = _ForkedEngine(process)
        if task_status is not None:
            task_status.started(task_status_handler(forked) if task_status_handler else process.pid)
        try:
            await anyio.to_thread.run_sync(process.join, abandon_on_cancel=True)
        except BaseException:
            if process.exitcode is None:  # cancelled while it runs: as Prefect's open_process, end it
                process.kill()
            raise
        return forked


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
        _logger().warning("Flow runs start Prefect's way (a fresh interpreter each): %s.", exc)
        return None
    starts.install()
    _installed = starts
    return starts


__all__ = [
    "FORK_AWARE_THREADS",
    "START_METHODS",
    "START_METHOD_ENV",
    "ForkserverStarts",
    "engine_sys_path",
    "install_forkserver_starts",
    "start_method",
]
