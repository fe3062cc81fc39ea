"""Embedded runs of the CLI (no ``PREFECT_API_URL``): Prefect's temporary local API started at once, its
start shown as it goes, and no telemetry.

Prefect starts its temporary API (a ``uvicorn`` subprocess over a SQLite file in ``PREFECT_HOME``) at the
first flow run, with one notice and a 20 s limit that a busy machine exceeds (the first start creates and
migrates the database: 8-16 s here). :func:`start_temporary_api` starts that same server (Prefect's own
singleton, which the flow run then reuses) on a background thread right away, so that the CLI's imports
and its config checks run while the server starts, and :meth:`TemporaryApi.wait` prints the progress
and allows a longer limit.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tasks.config import TrainConfig

log = logging.getLogger(__name__)

# The temporary API's start on a busy 2-core machine took up to 40 s; Prefect's own limit is 20 s.
DEFAULT_START_TIMEOUT_S = 120.0
_PROGRESS_EVERY_S = 3.0
TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

# Set (unless the user set them) before Prefect or MLflow is imported: Prefect's SDK telemetry and its
# first-run notice (DO_NOT_TRACK), the temporary server's analytics, MLflow's telemetry.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def is_embedded(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether a run uses the temporary local API: no ``PREFECT_API_URL`` in the environment (a profile
    that sets one is seen by :func:`start_temporary_api`, which then starts nothing)."""
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
    raw = os.environ.get(TIMEOUT_VARIABLE)
    if raw is None or not raw.strip():
        return DEFAULT_START_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"Expected {TIMEOUT_VARIABLE} to be a number of seconds, received {raw!r}."
        ) from None
    if value <= 0:
        raise ValueError(f"Expected {TIMEOUT_VARIABLE} > 0, received {raw!r}.")
    return value


class TemporaryApi:
    """Prefect's temporary API starting on a background thread; :meth:`wait` until it answers."""

    def __init__(self, timeout: float, server: Any) -> None:
        self.timeout = timeout
        self.started_at = time.monotonic()
        self.ready_after: float | None = None
        self.error: BaseException | None = None
        self._server = server
        self._thread = threading.Thread(target=self._start, name="prefect-temporary-api", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._server.start(timeout=self.timeout)
            self.ready_after = time.monotonic() - self.started_at
        except BaseException as exc:  # handed to the caller by wait()
            self.error = exc

    def wait(self, out: TextIO | None = None) -> float:
        """Block until the API answers, printing a progress line to ``out`` (stderr) every few seconds
        while it starts; returns the seconds the start took. Raises ``RuntimeError`` naming the limit and
        the variable that raises it when the server did not start."""
        stream = sys.stderr if out is None else out
        shown = False
        while self._thread.is_alive():
            self._thread.join(_PROGRESS_EVERY_S)
            if self._thread.is_alive():
                elapsed = time.monotonic() - self.started_at
                stream.write(
                    f"Starting Prefect's temporary local API: {elapsed:.0f} s (the first start creates its "
                    f"database; limit {self.timeout:.0f} s, set {TIMEOUT_VARIABLE} to change it)\n"
                )
                stream.flush()
                shown = True
        if self.error is not None:
            raise RuntimeError(
                f"Expected Prefect's temporary local API to start within {self.timeout:.0f} s "
                f"({TIMEOUT_VARIABLE}), received: {' '.join(str(self.error).split())[:500]} Set "
                "PREFECT_API_URL to use a running Prefect server instead."
            ) from self.error
        assert self.ready_after is not None
        if shown:
            stream.write(f"Prefect's temporary local API is up after {self.ready_after:.1f} s.\n")
            stream.flush()
        return self.ready_after


def start_temporary_api() -> TemporaryApi | None:
    """Start Prefect's temporary API now, on a background thread, when the run will need it (no API URL
    in Prefect's settings, the temporary server allowed); None otherwise.

    Prefect is imported here, on the calling thread: two threads importing it at once break its
    circular imports."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    # Prefect's singleton: the flow run's client finds it running and connects to it
    return TemporaryApi(start_timeout(), SubprocessASGIServer())


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


def warm_imports() -> None:
    """What every embedded command imports anyway, imported while the temporary API starts: the flows,
    and what the MLflow logger needs at the end of a fit (its model flavor, matplotlib)."""
    import flows.training  # noqa: F401

    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import mlflow.pytorch  # noqa: F401
    except ImportError:  # optional: without them the run logs no model or curves, and says so
        pass


__all__ = [
    "DEFAULT_START_TIMEOUT_S",
    "TELEMETRY_OFF",
    "TIMEOUT_VARIABLE",
    "TemporaryApi",
    "is_embedded",
    "quiet_telemetry",
    "start_temporary_api",
    "start_timeout",
    "warm_imports",
    "warm_tracking",
]
