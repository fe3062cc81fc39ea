"""Which failures a task retries: transient faults heal, bad config or bad data never do.

Retrying a ``DataValidationError`` would only repeat the same message three times later, and retrying a
missing bucket or refused credentials hides the real problem behind back-off delays. So tasks retry on
an allow-list of transient kinds, and every other error fails the task at once.
"""

from __future__ import annotations

from typing import Any

from lightning_lib.distributed import RankFailedError
from lightning_lib.storage import (
    AccessDeniedError,
    BucketNotFound,
    MissingCredentialsError,
    ObjectNotFound,
    StorageError,
)


class DistributedFitFailed(RuntimeError):
    """A process of a multi-process fit died (killed, out of memory, a lost node): a retry resumes."""


class DistributedFitRefused(ValueError):
    """A rank of a multi-process fit failed on the config, the data or the code: retrying cannot help."""


# Errors that name a problem of configuration, data or code: retrying cannot change the outcome.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes DataValidationError and pydantic's ValidationError
    TypeError,
    LookupError,
    ImportError,
    NotImplementedError,
    ObjectNotFound,
    BucketNotFound,
    AccessDeniedError,
    MissingCredentialsError,
)
# Faults of the network or of a storage service (boto3 has already retried its own retryable calls).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StorageError,
    ConnectionError,
    TimeoutError,
    DistributedFitFailed,  # a rank died (killed, lost node): the retry resumes from the last commit
    RankFailedError,  # the same, seen by rank zero of a locally launched run
)

# Back-off for tasks that talk to storage: 2 s, 4 s, 8 s (with jitter, so parallel runs spread out).
RETRIES = 3
RETRY_BACKOFF_FACTOR = 2.0
RETRY_JITTER_FACTOR = 0.5


def retrying(**options: Any) -> dict[str, Any]:
    """Keyword arguments of ``@task`` for a task that talks to storage or MLflow: retried with back-off on
    transient faults only; ``options`` add to (or override) them."""
    from prefect.tasks import exponential_backoff

    return {
        "retries": RETRIES,
        "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BACKOFF_FACTOR),
        "retry_jitter_factor": RETRY_JITTER_FACTOR,
        "retry_condition_fn": retry_on_transient,
        **options,
    }


def is_transient(exc: BaseException) -> bool:
    """Whether retrying after ``exc`` may succeed.

    An error of neither kind that was raised ``from`` another is judged by that cause: the checkpoint
    writer reports a failed background commit as ``RuntimeError("A background checkpoint commit failed:
    ...") from <the store's error>``, so an S3 outage or a reset connection there is transient (the retry
    resumes from the last commit) and a denied access or a missing bucket stays permanent, whichever
    wrapper it arrives in. Only explicit causes count (``raise ... from``), not errors that merely
    happened while another was handled (MLflow's wrapping of a failed connection is the one exception, see
    :func:`is_transient_mlflow`). An MLflow outage (unreachable, 5xx, 408/429) is transient too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if is_transient_mlflow(current):
            return True
        if isinstance(current, PERMANENT_ERRORS):
            return False
        if isinstance(current, TRANSIENT_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


# MLflow's errors that say "not now" rather than "no". Only an answer of the server (or of a proxy in
# front of it) or a failed connection counts: a RestException is the server's JSON answer, so its HTTP
# status tells; a plain MlflowException says it only through an explicit "not now" code (a non-JSON
# 503/504/429 answer gets one from MLflow), never through the default INTERNAL_ERROR (500) that every
# client-side MlflowException("...") carries (a bad argument, a missing file, a refused flavor: retrying
# repeats it). MLflow wraps a connection that failed after its own retries in such a plain exception,
# without ``from`` for most failures, so that wrapping is recognised by the requests failure it was
# raised while handling (its cause or context). A 4xx (a missing run or model, a refused parameter, bad
# credentials) never heals by waiting.
_TRANSIENT_MLFLOW_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_MLFLOW_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
)


def _is_requests_failure(exc: BaseException) -> bool:
    """requests' failed connection, timeout, cut-off body or exhausted retries on 5xx/429 answers (not a
    TLS failure: a configuration problem). These are OSErrors, not the builtin ConnectionError."""
    if not type(exc).__module__.startswith("requests"):
        return False
    from requests import exceptions as rex

    return isinstance(
        exc, rex.ConnectionError | rex.Timeout | rex.ChunkedEncodingError | rex.RetryError
    ) and not isinstance(exc, rex.SSLError)


def is_transient_mlflow(exc: BaseException) -> bool:
    """Whether ``exc`` is an MLflow outage (server unreachable, 5xx, 408/429): a retry may succeed."""
    if _is_requests_failure(exc):
        return True
    if not type(exc).__module__.startswith("mlflow"):
        return False
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException):
        return exc.get_http_status_code() in _TRANSIENT_MLFLOW_STATUS
    if not isinstance(exc, MlflowException):
        return False
    if exc.error_code in _TRANSIENT_MLFLOW_CODES:
        return True
    wrapped = exc.__cause__ or exc.__context__
    return wrapped is not None and _is_requests_failure(wrapped)


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect ``retry_condition_fn``: ``(task, task_run, state) -> bool``.

    Prefect hands the exception over as the data of a ``Failed`` state; a state without one (a task that
    returned a failed state itself) is not retried.
    """
    exc = getattr(state, "data", None)
    return isinstance(exc, BaseException) and is_transient(exc)
