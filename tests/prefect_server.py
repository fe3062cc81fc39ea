"""``prefect server start`` on 127.0.0.1 for the end-to-end tests, with its own home and SQLite database,
and processes (the server, a ``lightning-lib serve``) stopped by their whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.services import free_port, group_members


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 15.0) -> None:
    """Signal the process's whole group (it leads its own session) and wait until none of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    deadline = time.monotonic() + timeout
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_members(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def spawn(
    command: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class PrefectServer:
    """A Prefect API server with its database under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "prefect-server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self) -> dict[str, str]:
        """What a client process needs to talk to this server (and to nothing else)."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.root / "home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def start(self, timeout: float = 120.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env()}
        env.pop("PREFECT_API_URL")
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{self.root / 'prefect.db'}"
        env["PREFECT_UI_ENABLED"] = "false"
        command = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.process = spawn(command, self.log_path, env, self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"prefect server did not answer within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            kill_group(process, signal.SIGTERM)
            kill_group(process, signal.SIGKILL)
