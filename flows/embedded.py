"""Embedded runs of the CLI (no ``PREFECT_API_URL``): Prefect's temporary local API started first thing, its
start shown as it goes, and no telemetry.

Without an API URL, Prefect starts a temporary API itself at the first flow run (a ``uvicorn`` subprocess
serving Prefect's server app over the SQLite file in ``PREFECT_HOME``), with one notice and a 20 s limit that
a busy machine exceeds: the first start creates and migrates the database (10-16 s here), a later one
imports the server (5-6 s). The CLI starts that same server itself before it imports anything heavy
(:func:`launch_temporary_api`), so that the server's start overlaps all of the CLI's own imports and
checks, then hands its address to Prefect as the run's ``PREFECT_API_URL`` (:func:`adopt`), waits for it
with a progress line and a longer limit (:meth:`TemporaryApi.wait`) and stops it when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from flows._env import seconds_env

if TYPE_CHECKING:
    from tasks.config import TrainConfig

log = logging.getLogger(__name__)

# The temporary API's start on a busy 2-core machine took up to 40 s; Prefect's own limit is 20 s.
DEFAULT_START_TIMEOUT_S = 120.0
_PROGRESS_EVERY_S = 3.0
_POLL_S = 0.05
_STOP_WAIT_S = 5.0
# uvicorn's exit status when its port was taken between choosing it and binding it: start on another
_PORT_TAKEN_EXIT = 3
_PORT_ATTEMPTS = 5
TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

# Set (unless the user set them) before Prefect or MLflow is imported: Prefect's SDK telemetry and its
# first-run notice (DO_NOT_TRACK), the temporary server's analytics, MLflow's telemetry.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

# What Prefect sets for its own temporary server: no UI, and the server's ephemeral mode (fewer services)
_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def is_embedded(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether a run uses the temporary local API as far as the environment says: no ``PREFECT_API_URL``
    (a profile or settings file that sets one is seen by :func:`adopt`, which then stops the server)."""
    env = os.environ if environ is None else environ
    return not env.get("PREFECT_API_URL")


def quiet_telemetry(environ: dict[str, str] | os._Environ[str] | None = None) -> None:
    """No telemetry notice or traffic: :data:`TELEMETRY_OFF` as defaults of the environment (a value the
    user set wins)."""
    env = os.environ if environ is None else environ
    for name, value in TELEMETRY_OFF.items():
        env.setdefault(name, value)


def start_timeout() -> float:
    """Seconds to wait for the temporary API: ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` when
    set, else :data:`DEFAULT_START_TIMEOUT_S`."""
    return seconds_env(TIMEOUT_VARIABLE, DEFAULT_START_TIMEOUT_S)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _uvicorn(port: int) -> subprocess.Popen[bytes]:
    """Prefect's server app under uvicorn on ``127.0.0.1:port``, as Prefect runs its temporary server (the
    subprocess reads the same environment, profile and settings files as this process), in a session of
    its own that a Ctrl-C at the terminal does not reach, ending with this process (``flows._api_process``)."""
    spec = find_spec("prefect")  # located, not imported: importing Prefect costs ~2 s
    if spec is None or spec.origin is None:
        raise RuntimeError("Expected the prefect package to be installed (the `pipeline` extra).")
    return subprocess.Popen(
        [
            sys.executable, "-m", "flows._api_process", str(os.getpid()),
            "--app-dir", str(Path(spec.origin).parent.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on",
        ],
        env={**os.environ, **_SERVER_ENV},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def _answers(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class TemporaryApi:
    """Prefect's temporary local API, its subprocess started at construction; :meth:`wait` until it
    answers, :meth:`stop` (also at the process's exit) to end it.

    ``launch`` starts the server on a port and ``answers`` probes an API URL (replaced in tests)."""

    def __init__(
        self,
        timeout: float,
        launch: Callable[[int], subprocess.Popen[bytes]] = _uvicorn,
        answers: Callable[[str], bool] = _answers,
    ) -> None:
        self.timeout = timeout
        self.started_at = time.monotonic()
        self.ready_after: float | None = None
        self._launch = launch
        self._answers = answers
        self.port = _free_port()
        self._adopted = False  # this process's flow runs use it: a restart on another port must say so
        self._process: subprocess.Popen[bytes] | None = launch(self.port)
        atexit.register(self.stop)  # registered before Prefect's own exit handlers, so it runs after them

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def answers(self) -> bool:
        """Whether the API answers now (no waiting)."""
        return self.ready_after is not None or (self._process is not None and self._answers(self.api_url))

    def wait(self, out: TextIO | None = None) -> float:
        """Block until the API answers, printing a progress line to ``out`` (stderr) every few seconds
        while it starts; returns the seconds the start took. Raises ``RuntimeError`` naming the limit and
        the variable that raises it when the server did not start (and stops what was started)."""
        if self.ready_after is not None:
            return self.ready_after
        stream = sys.stderr if out is None else out
        shown, next_progress, attempts = False, self.started_at + _PROGRESS_EVERY_S, 1
        while True:
            now = time.monotonic()
            process = self._process
            status = None if process is None else process.poll()
            if status == _PORT_TAKEN_EXIT and attempts < _PORT_ATTEMPTS:
                attempts += 1
                self.port = _free_port()
                self._process = self._launch(self.port)
                if self._adopted:  # the runs must not go to the old port, which another process holds
                    self.publish()
                continue
            if status is not None or process is None:
                self._fail(f"the server's process exited with status {status}")
            if self._answers(self.api_url):
                break
            if now - self.started_at > self.timeout:
                self._fail(f"no answer from {self.api_url}/health")
            if now >= next_progress:
                stream.write(
                    f"Starting Prefect's temporary local API: {now - self.started_at:.0f} s (the first start "
                    f"creates its database; limit {self.timeout:.0f} s, set {TIMEOUT_VARIABLE} to change it)\n"
                )
                stream.flush()
                shown, next_progress = True, now + _PROGRESS_EVERY_S
            time.sleep(_POLL_S)
        self.ready_after = time.monotonic() - self.started_at
        if shown:
            stream.write(f"Prefect's temporary local API is up after {self.ready_after:.1f} s.\n")
            stream.flush()
        return self.ready_after

    def publish(self) -> None:
        """Make this API's address the Prefect API of this process's flow runs: in the environment (seen
        by Prefect's settings, by threads started later and by child processes) and in Prefect's
        process-wide settings, read again."""
        from prefect.context import refresh_global_settings_context

        os.environ["PREFECT_API_URL"] = self.api_url
        refresh_global_settings_context()
        _ADOPTED.add(self.api_url)
        self._adopted = True

    def _fail(self, why: str) -> None:
        self.stop()
        raise RuntimeError(
            f"Expected Prefect's temporary local API to start within {self.timeout:.0f} s "
            f"({TIMEOUT_VARIABLE}), received: {why}. Set PREFECT_API_URL to use a running Prefect server "
            "instead."
        )

    def stop(self, wait: bool = True) -> None:
        """End the server (politely, then by force after a few seconds; without waiting for it when
        ``wait`` is False, as after an input error); nothing when already stopped."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        if not wait:
            return
        try:
            process.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def settings_allow_temporary_api() -> bool:
    """Whether Prefect's settings (environment, profile, ``.env``, ``prefect.toml``) leave the run to a
    temporary API: they name no server and do not turn the temporary server off."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


def launch_temporary_api() -> TemporaryApi:
    """Start Prefect's temporary API now, before Prefect (or anything heavy) is imported: the caller
    decides with :func:`is_embedded` that the environment names no server, and :func:`adopt` checks
    Prefect's other settings sources later."""
    return TemporaryApi(start_timeout())


def adopt(api: TemporaryApi) -> bool:
    """Make ``api`` the API of this process's flow runs, unless Prefect's settings (a profile, ``.env``,
    ``prefect.toml``) name a server or turn the temporary server off: then stop it and return False.

    Its address is published (:meth:`TemporaryApi.publish`), again if it restarts on another port."""
    from prefect.settings import PREFECT_UI_URL

    if not settings_allow_temporary_api():
        api.stop()
        return False
    if PREFECT_UI_URL.value() is None:
        # the temporary server serves no UI and ends with the process: no "View at" links to it (Prefect
        # shows none for its own temporary server either)
        os.environ["PREFECT_UI_URL"] = ""
    api.publish()
    return True


@contextmanager
def run_settings() -> Iterator[None]:
    """Prefect's settings for a run on the temporary API: its flow runs send no heartbeats.

    Heartbeats let a server mark a run whose process died as Crashed; the temporary API ends with this
    process, so nothing could use them, and a sync flow run's end waits for its heartbeat thread, which
    sleeps in whole seconds (0-1 s more per run). Prefect's environment variable cannot express "none"."""
    from prefect.context import SettingsContext, get_settings_context

    context = get_settings_context()
    flows = context.settings.flows.model_copy(update={"heartbeat_frequency": None})
    with SettingsContext(
        profile=context.profile, settings=context.settings.model_copy(update={"flows": flows})
    ):
        yield


_ADOPTED: set[str] = set()


def is_temporary(api_url: str | None) -> bool:
    """Whether ``api_url`` is a temporary API this process adopted (it stops when the process ends)."""
    return api_url in _ADOPTED


def prepare_database(out: TextIO | None = None) -> bool:
    """Create (or bring up to date) the local SQLite database of Prefect's temporary API now, as ``make
    install`` does, instead of at the first run, where its migrations take 10-16 s of that run on this
    machine. A database Prefect's settings put elsewhere (a server's PostgreSQL) is left alone. Returns
    whether it ran; a failure is reported on ``out`` and left to the first run, which tries again."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    stream = sys.stderr if out is None else out
    url = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
    if not url.startswith("sqlite"):
        stream.write(f"Prefect's database is not a local SQLite file ({url.split(':')[0]}): left alone.\n")
        return False
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env={**os.environ, **TELEMETRY_OFF},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        stream.write(
            "Could not prepare Prefect's local database (the first run will): "
            f"{' '.join((done.stderr or done.stdout).split())[-300:]}\n"
        )
        return False
    return True


def warm_tracking(config: TrainConfig) -> None:
    """Open the run's local MLflow store (SQLite) while the temporary API starts: its first use creates
    the database and migrates its tables (1-4 s here), which the fit would otherwise wait for. A store
    that cannot be opened is left to the run, which reports it."""
    from tasks.tracking import tracking_uri

    try:
        uri = tracking_uri(config)  # a refused URI is the flow's to report, in its own log
    except Exception:
        return
    if not uri.startswith("sqlite:///"):
        return
    try:
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")) or ".", exist_ok=True)
        from mlflow import MlflowClient

        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        log.debug("Could not open the MLflow store %s ahead of the run: %s", uri, exc)


def warm_imports(api: TemporaryApi) -> None:
    """While the temporary API is still starting (the first start, which creates its database), import
    what the MLflow logger needs at the end of a fit (its model flavor, torch's export), which the logger
    otherwise imports beside the first training steps."""
    if api.answers():
        return
    from lightning_lib.loggers.mlflow import warm_end_of_fit

    warm_end_of_fit(log_model=True, curves=False, background=False)


__all__ = [
    "DEFAULT_START_TIMEOUT_S",
    "TELEMETRY_OFF",
    "TIMEOUT_VARIABLE",
    "TemporaryApi",
    "adopt",
    "is_embedded",
    "is_temporary",
    "launch_temporary_api",
    "prepare_database",
    "quiet_telemetry",
    "run_settings",
    "settings_allow_temporary_api",
    "start_timeout",
    "warm_imports",
    "warm_tracking",
]


if __name__ == "__main__":  # `python -m flows.embedded`: what `make install` runs (best effort)
    prepare_database()
