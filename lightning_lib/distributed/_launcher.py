"""The local launcher: ``Trainer(strategy="ddp", devices=N)`` run as a plain script starts N-1 more processes.

As Lightning's default launcher does, the other ranks run the same command line again with the rank in
their environment; this process becomes rank zero. Two watchdogs keep a failure from turning into a
hang: rank zero watches its children (a child that dies stops the run, and the error names it), and
each child watches rank zero (a child whose parent died exits instead of waiting in a collective).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from lightning_lib.distributed._cluster import LAUNCHED_BY_TRAINER, free_port
from lightning_lib.utilities.orchestration import orchestrator_of_module

log = logging.getLogger("lightning_lib")

PARENT_PID = "LIGHTNING_LIB_PARENT_PID"
# how long rank zero may go on after a child died (saving what it can) before the launcher ends it
FAILURE_GRACE_S = float(os.environ.get("LIGHTNING_LIB_DDP_FAILURE_GRACE_S", "60"))
_NOT_A_SCRIPT = ("pytest", "py.test", "ipykernel_launcher.py", "")
_NOT_A_PROGRAM = ("pytest", "py.test", "ipykernel_launcher", "IPython")


class RankFailedError(RuntimeError):
    """Another process of the distributed run failed, so this one stopped."""


@dataclass(frozen=True)
class ChildFailure:
    rank: int
    pid: int
    returncode: int

    def describe(self) -> str:
        how = (
            f"was killed by signal {-self.returncode}"
            if self.returncode < 0
            else f"exited with code {self.returncode}"
        )
        return f"rank {self.rank} (pid {self.pid}) {how}"


def script_command() -> list[str]:
    """The command line that started this process, to start the other ranks with.

    Refuses test runners and interactive sessions, and the programs of a registered orchestrator
    (:mod:`lightning_lib.utilities.orchestration`): running those again would run a second copy of the
    orchestrator's run, so their ranks are launched with torchrun instead.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    module = name[: -len(".__main__")] if name and name.endswith(".__main__") else name
    if module and module not in _NOT_A_PROGRAM and orchestrator_of_module(module) is None:
        return [sys.executable, "-m", module, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if module or os.path.basename(script) in _NOT_A_SCRIPT or not getattr(main, "__file__", None):
        raise RuntimeError(
            "Expected a script for Trainer(strategy='ddp', devices>1): the other processes are started by"
            f" running the same command again, but this process was started as {module or script!r} (an"
            " interactive session, a notebook, a test runner or an orchestrator). Run the training from a"
            " script, or launch it with `torchrun --nproc-per-node=N script.py`."
        )
    return [sys.executable, script, *sys.argv[1:]]


class LocalLauncher:
    """Starts ranks 1..N-1 on this machine; this process is rank zero."""

    def __init__(self, num_processes: int) -> None:
        self.num_processes = num_processes
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.failure: ChildFailure | None = None
        self._stop = threading.Event()
        self._main_done = threading.Event()

    def launch(self) -> None:
        """Give this process the rank-zero environment and start the others (once per process)."""
        command = script_command()
        os.environ.update(
            {
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(free_port()),
                "WORLD_SIZE": str(self.num_processes),
                "LOCAL_WORLD_SIZE": str(self.num_processes),
                "GROUP_RANK": "0",
                "NODE_RANK": "0",
                "RANK": "0",
                "LOCAL_RANK": "0",
                LAUNCHED_BY_TRAINER: "1",
                PARENT_PID: str(os.getpid()),
            }
        )
        for rank in range(1, self.num_processes):
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            self.children[rank] = subprocess.Popen(command, env=env)
        threading.Thread(target=self._watch, name="ddp-children-watchdog", daemon=True).start()
        atexit.register(self.shutdown)

    def check_children(self) -> ChildFailure | None:
        """The first child found dead with a failure (polled now), if any."""
        if self.failure is None:
            for rank, proc in self.children.items():
                code = proc.poll()
                if code is not None and code != 0:
                    self.failure = ChildFailure(rank, proc.pid, code)
                    break
        return self.failure

    def wait_for_failure(self, timeout: float) -> ChildFailure | None:
        """After an error in a collective: give a dying child a moment to be reaped, and name it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.check_children()
            if found is not None:
                return found
            time.sleep(0.05)
        return self.check_children()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            failure = self.check_children()
            if failure is None:
                continue
            print(
                f"[lightning_lib] {failure.describe()}: stopping the distributed run.",
                file=sys.stderr,
                flush=True,
            )
            self._terminate_children()
            # rank zero normally fails at its next collective within a second; if it is stuck elsewhere,
            # end it after the grace period rather than let the run hang
            if not self._main_done.wait(FAILURE_GRACE_S):
                print(
                    f"[lightning_lib] rank 0 did not stop within {FAILURE_GRACE_S:.0f}s after {failure.describe()};"
                    " exiting.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(1)
            return

    def stop_children(self) -> None:
        """Rank zero failed by itself: end the other ranks now (they would wait for it in a collective)."""
        self._terminate_children(grace=2.0)

    def _terminate_children(self, grace: float = 10.0) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def finished(self) -> None:
        """Rank zero handled the failure itself: the grace-period exit is not needed."""
        self._main_done.set()

    def shutdown(self) -> None:
        """At exit: wait for the children to finish their own copy of the script, then make sure they are gone."""
        self._main_done.set()
        self._stop.set()
        deadline = time.monotonic() + 60
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def watch_parent() -> None:
    """In a child rank: exit when rank zero (our parent) is gone, instead of waiting in a collective."""
    expected = os.environ.get(PARENT_PID)
    if not expected:
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if str(os.getppid()) != expected:
                print(
                    f"[lightning_lib] rank {os.environ.get('RANK')}: rank 0 (pid {expected}) is gone; exiting.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(1)

    threading.Thread(target=watch, name="ddp-parent-watchdog", daemon=True).start()


__all__ = ["ChildFailure", "LocalLauncher", "RankFailedError", "script_command", "watch_parent"]
