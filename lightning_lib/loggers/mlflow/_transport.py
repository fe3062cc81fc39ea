"""The calls the background sender makes to MLflow, over REST or through ``MlflowClient``.

Why not always ``MlflowClient``: its HTTP layer retries every failed request up to 7 times with
exponential backoff (about four minutes) before it raises, configurable only through process-wide
environment variables. A sender that must notice an outage, keep training going and decide itself when
to give up needs a request that fails fast, so against an HTTP server the three calls it needs
(``runs/log-batch``, ``runs/log-inputs``, ``runs/update``, all part of MLflow's documented REST API) are
posted directly with ``max_retries=0``, reusing MLflow's own credentials and headers. Other stores (the
local SQLite default) go through ``MlflowClient``: there is no network to wait for.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlflow import MlflowClient

# (key, value, timestamp in ms, step): the cheapest shape to build on the training thread.
Record = tuple[str, float, int, int]
Pair = tuple[str, str]

_API = "/api/2.0/mlflow/runs"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset input of a run: what ``mlflow.entities.Dataset`` holds, plus its context tag."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None
    context: str = "training"
    tags: dict[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """What the sender needs from a tracking store."""

    def log_batch(
        self, run_id: str, metrics: Sequence[Record], params: Sequence[Pair], tags: Sequence[Pair]
    ) -> None: ...

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetSpec]) -> None: ...

    def update_run(self, run_id: str, status: str, end_time: int | None) -> None: ...


def _json_number(value: float) -> str:
    # Protobuf's JSON mapping spells non-finite doubles as strings; a bare NaN is not JSON. A finite
    # float's repr is a JSON number.
    value = float(value)
    if math.isfinite(value):
        return repr(value)
    if math.isnan(value):
        return '"NaN"'
    return '"Infinity"' if value > 0 else '"-Infinity"'


def log_batch_body(
    run_id: str,
    metrics: Sequence[Record],
    params: Sequence[Pair],
    tags: Sequence[Pair],
    key_cache: dict[str, str] | None = None,
) -> str:
    """The JSON of a ``runs/log-batch`` request, metrics written directly as text.

    A batch is up to 1000 metric values built on the sender thread, which holds the GIL while it does
    so: formatting each value into a string is about three times cheaper than building a dict per value
    for ``json.dumps``. ``key_cache`` keeps each metric name's JSON form between batches.
    """
    keys = {} if key_cache is None else key_cache
    parts = [f'{{"run_id":{json.dumps(run_id)}']
    if metrics:
        values = []
        for key, value, timestamp, step in metrics:
            name = keys.get(key)
            if name is None:
                name = keys[key] = json.dumps(key)
            values.append(
                f'{{"key":{name},"value":{_json_number(value)},"timestamp":{int(timestamp)},"step":{int(step)}}}'
            )
        parts.append(f',"metrics":[{",".join(values)}]')
    if params:
        parts.append(f',"params":{json.dumps([{"key": k, "value": v} for k, v in params])}')
    if tags:
        parts.append(f',"tags":{json.dumps([{"key": k, "value": v} for k, v in tags])}')
    parts.append("}")
    return "".join(parts)


def _input_tags(spec: DatasetSpec) -> list[Pair]:
    return [("mlflow.data.context", spec.context), *spec.tags.items()]


class RestTransport:
    """Posts to an MLflow tracking server's REST API with no hidden retries and a bounded timeout.

    MLflow's own ``http_request`` re-resolves its request headers on every call (probing for Databricks
    and Spark by trying imports), about 5 ms of CPU per request, held under the GIL while training waits.
    Here the headers are resolved once and one keep-alive ``requests.Session`` is reused; credentials are
    read per request (cheap, and a rotated token is picked up). What ``requests`` would otherwise read
    from the environment on every request (proxies and ``NO_PROXY``, ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE``, ``~/.netrc``; a scan of ``os.environ`` each time) is read once, the same way, when
    the session is made. Authentication that needs MLflow's own machinery (Databricks SDK, SigV4, auth
    plugins, OAuth) goes through ``http_request`` instead.
    """

    def __init__(self, get_host_creds: Callable[[], Any], timeout: float) -> None:
        self._get_host_creds = get_host_creds
        self._timeout = timeout
        self._session: Any = None
        self._headers: dict[str, str] = {}
        self._ca_bundle: str | None = None
        self._keys: dict[str, str] = {}  # metric name -> its JSON string

    @staticmethod
    def _plain(creds: Any) -> bool:
        """Whether plain basic/bearer auth over ``requests`` is all this server needs."""
        exotic = ("use_databricks_sdk", "aws_sigv4", "auth", "client_secret", "workspace_id")
        return not any(getattr(creds, name, None) for name in exotic)

    def _post(self, endpoint: str, body: dict[str, Any] | str) -> None:
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        creds = self._get_host_creds()
        if not self._plain(creds):
            response = http_request(
                creds, endpoint, "POST", max_retries=0, backoff_factor=0, backoff_jitter=0,
                timeout=self._timeout, json=json.loads(body) if isinstance(body, str) else body,
            )  # fmt: skip
            verify_rest_response(response, endpoint)
            return
        if self._session is None:
            import requests
            from mlflow.tracking.request_header.registry import resolve_request_headers

            session = requests.Session()
            session.proxies = requests.utils.get_environ_proxies(creds.host)
            session.auth = requests.utils.get_netrc_auth(creds.host)
            session.trust_env = False  # what it would re-read per request was read just above
            self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            self._session = session
            self._headers = {**resolve_request_headers(), "Content-Type": "application/json"}
        headers = self._headers
        if creds.username and creds.password:
            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            headers = {**headers, "Authorization": f"Basic {token}"}
        elif creds.token:
            headers = {**headers, "Authorization": f"Bearer {creds.token}"}
        verify = creds.verify
        if (verify is True or verify is None) and self._ca_bundle:  # as requests does
            verify = self._ca_bundle
        response = self._session.post(
            f"{creds.host.rstrip('/')}{endpoint}",
            data=body if isinstance(body, str) else json.dumps(body, allow_nan=False),
            headers=headers,
            timeout=self._timeout,
            verify=verify,
            cert=creds.client_cert_path,
        )
        verify_rest_response(response, endpoint)

    def log_batch(
        self, run_id: str, metrics: Sequence[Record], params: Sequence[Pair], tags: Sequence[Pair]
    ) -> None:
        self._post(f"{_API}/log-batch", log_batch_body(run_id, metrics, params, tags, self._keys))

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetSpec]) -> None:
        body = {
            "run_id": run_id,
            "datasets": [
                {
                    "tags": [{"key": k, "value": v} for k, v in _input_tags(spec)],
                    "dataset": {
                        key: value
                        for key, value in (
                            ("name", spec.name),
                            ("digest", spec.digest),
                            ("source_type", spec.source_type),
                            ("source", spec.source),
                            ("schema", spec.schema),
                            ("profile", spec.profile),
                        )
                        if value is not None
                    },
                }
                for spec in datasets
            ],
        }
        self._post(f"{_API}/log-inputs", body)

    def update_run(self, run_id: str, status: str, end_time: int | None) -> None:
        body: dict[str, Any] = {"run_id": run_id, "status": status}
        if end_time is not None:
            body["end_time"] = end_time
        self._post(f"{_API}/update", body)


class ClientTransport:
    """Goes through ``MlflowClient``: for local stores (SQLite, files), where requests cannot hang."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def log_batch(
        self, run_id: str, metrics: Sequence[Record], params: Sequence[Pair], tags: Sequence[Pair]
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._client.log_batch(
            run_id,
            metrics=[Metric(key=k, value=v, timestamp=t, step=s) for k, v, t, s in metrics],
            params=[Param(k, v) for k, v in params],
            tags=[RunTag(k, v) for k, v in tags],
            synchronous=True,
        )

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetSpec]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(spec.name, spec.digest, spec.source_type, spec.source, spec.schema, spec.profile),
                tags=[InputTag(k, v) for k, v in _input_tags(spec)],
            )
            for spec in datasets
        ]
        self._client.log_inputs(run_id, datasets=inputs)

    def update_run(self, run_id: str, status: str, end_time: int | None) -> None:
        if status == "RUNNING":
            self._client.update_run(run_id, status=status)
        else:
            self._client.set_terminated(run_id, status=status, end_time=end_time)


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help: the server understood the request and refused it (4xx but 408/429).

    Connection errors, timeouts, 5xx and database-lock errors are transient. Exceptions of unknown kind
    count as permanent so that a bug cannot keep the sender retrying until the end of the run.
    """
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is there whenever a transport exists
        MlflowException = ()  # type: ignore[assignment,misc]
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return 400 <= status < 500 and status not in (408, 429)
    if isinstance(exc, OSError | TimeoutError):
        return False
    module = type(exc).__module__
    return not module.startswith(("requests", "urllib3", "sqlalchemy", "sqlite3"))
