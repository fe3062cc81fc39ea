"""The temporary local API's process: uvicorn serving Prefect's server app, ending with the CLI.

``python -m flows._api_process PARENT_PID UVICORN_ARGS...`` runs ``python -m uvicorn UVICORN_ARGS...`` with
one addition: a thread that stops the server (SIGTERM, uvicorn's graceful shutdown) once the process
``PARENT_PID`` is gone. The CLI starts this process in a session of its own, so that a Ctrl-C at the
terminal (SIGINT to the foreground process group) reaches the CLI alone: the run it interrupts must still
be able to record its Crashed state in this API before the CLI stops it. A session of its own also means
the terminal's hang-up no longer reaches it, and a SIGKILLed CLI runs no exit handler: the watch ends the
server in both cases instead of leaving it running.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

_WATCH_EVERY_S = 1.0


def _stop_when_gone(parent: int) -> None:
    # reparented (to init or a subreaper) once the parent died: its pid is no longer our parent's
    while os.getppid() == parent:
        time.sleep(_WATCH_EVERY_S)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    """Watch the parent named by ``argv[0]``, then run uvicorn with the rest of ``argv``."""
    if not argv or not argv[0].isdigit():
        raise SystemExit(f"Expected the parent's pid and uvicorn's arguments, received {argv!r}.")
    parent = int(argv[0])
    if os.getppid() != parent:  # the CLI died before this process started
        raise SystemExit(0)
    threading.Thread(target=_stop_when_gone, args=(parent,), name="parent-watch", daemon=True).start()
    sys.argv = ["uvicorn", *argv[1:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
