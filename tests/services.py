"""Real servers for the service tests, started on 127.0.0.1 and stopped with all their processes.

``mlflow server`` forks a uvicorn worker (and, when job execution is on, task consumers) that survive a
plain kill of the parent; each server therefore gets its own session (process group) and is stopped by
signalling the whole group, then reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_stats(pgid: int) -> list[tuple[int, list[str]]]:
    """``(pid, fields of /proc/<pid>/stat after the name)`` of each process in group ``pgid`` (Linux)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...; utime=11, stime=12
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append((int(pid), fields))
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    return [pid for pid, fields in _group_stats(pgid) if fields[0] != "Z"]


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds used so far by the processes of group ``pgid`` that are still there."""
    ticks = os.sysconf("SC_CLK_TCK")
    return sum((int(fields[11]) + int(fields[12])) / ticks for _, fields in _group_stats(pgid))


class MlflowServer:
    """``mlflow server`` with a SQLite backend under ``root``; restartable in place.

    Artifacts are proxied by the server (clients only ever see ``mlflow-artifacts:/`` URIs) to
    ``artifacts_destination``: a local folder ``root/artifacts`` by default, or e.g. ``s3://bucket/prefix``
    with ``env`` telling the server process (and only it) where the endpoint is and which credentials to
    use.
    """

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        *,
        artifacts_destination: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None  # the last started server's process group
        self.artifacts = self.root / "artifacts"
        self.artifacts_destination = artifacts_destination or str(self.artifacts)
        self.extra_env = dict(env or {})
        self.log_path = self.root / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until ``/health`` answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # Background jobs (trace rollups, huey consumers) are not used by these tests and slow the start.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        env.pop("MLFLOW_TRACKING_URI", None)
        env.update(self.extra_env)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", self.artifacts_destination,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pgid = self.process.pid  # a new session's leader: its pid is the group id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited early; see {self.log_path}")
            if self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"mlflow server did not answer within {timeout}s; see {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL) and reap it.

        Raises ``RuntimeError`` if any process of the group is still alive afterwards: a worker left
        behind would keep the port and the database open.
        """
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
            if self._group_gone(process.pid, timeout):
                return
        survivors = group_members(process.pid)
        if survivors:
            raise RuntimeError(f"mlflow server processes {survivors} survived SIGKILL of their group")

    @staticmethod
    def _group_gone(pgid: int, timeout: float) -> bool:
        """Wait until no live process is left in the group (workers exit a moment after the leader)."""
        deadline = time.monotonic() + timeout
        while group_members(pgid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True
