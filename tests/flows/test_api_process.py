"""The temporary API's process (flows/_api_process.py): uvicorn in a session of its own, ended when the CLI
that started it is gone (a SIGKILLed CLI runs no exit handler)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows import _api_process
from tests.flows.conftest import REPO


def test_a_process_whose_parent_is_already_gone_does_not_start_the_server() -> None:
    with pytest.raises(SystemExit) as stopped:
        _api_process.main([str(os.getppid() + 1_000_000), "--port", "1"])
    assert stopped.value.code == 0


def test_arguments_without_the_parent_s_pid_are_refused() -> None:
    with pytest.raises(SystemExit, match="Expected the parent's pid"):
        _api_process.main(["--port", "1"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_server_ends_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    """A "CLI" starts the API process as flows/embedded.py does (own session), prints its pid and is
    SIGKILLed: the server notices within seconds and shuts down."""
    (tmp_path / "tiny_app.py").write_text(
        textwrap.dedent(
            """
            async def app(scope, receive, send):
                if scope["type"] == "lifespan":
                    while True:
                        message = await receive()
                        kind = message["type"].replace("startup", "startup.complete")
                        await send({"type": kind.replace("shutdown", "shutdown.complete")})
                        if message["type"] == "lifespan.shutdown":
                            return
            """
        )
    )
    cli = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen(
            [sys.executable, "-m", "flows._api_process", str(os.getpid()), "--app-dir", {str(tmp_path)!r},
             "tiny_app:app", "--host", "127.0.0.1", "--port", "0", "--log-level", "error"],
            start_new_session=True, stdin=subprocess.DEVNULL,
        )
        print(child.pid, flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", cli], stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    server = int(parent.stdout.readline())
    try:
        time.sleep(1.0)  # let it start serving (and its watch begin)
        assert _alive(server)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60  # a hang detector, not a timing claim
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the API process outlived the CLI that started it"
    finally:
        if _alive(server):
            os.kill(server, signal.SIGKILL)
