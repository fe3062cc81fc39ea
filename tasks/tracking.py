"""Where a run is tracked, and how a person opens it.

One rule for every task and flow, so that ``fit``, ``register`` and ``reproduce`` always talk to the
same store: the config's ``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file
beside the checkpoint root (the embedded default: no server needed).

Credentials only ever reach the configured tracking server. MLflow sends the worker's credentials
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, a client certificate, an auth
plugin; also ``~/.mlflow/credentials``) to whatever server the tracking URI names, and a URI that comes
from a parameter (a config submitted from the UI's form or the API, the ``predict`` and ``reproduce``
flows' ``tracking_uri``) is untrusted. So, while any such credential is set, a URI from a parameter is
accepted only when it is

- a local store (a ``sqlite:`` / ``file:`` URI or a path): nothing is sent over the network;
- on the server of the environment's ``MLFLOW_TRACKING_URI`` (same scheme, host and port: that is the
  server the deployment gave the credentials for);
- on a host the deployment lists in ``LIGHTNING_LIB_ALLOWED_TRACKING_HOSTS`` (comma-separated ``host``
  or ``host:port`` entries; a bare host allows every port of it).

Anything else is refused with :class:`UntrustedTrackingURI` before any request is made (a ``ValueError``:
never retried). A URI from a parameter that carries ``user:password@`` or characters that URL parsers
read differently (backslashes, whitespace, control characters) is refused whenever it names a server.
Without credentials in the environment a parameter may name any server: nothing secret would be sent.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import quote, urlsplit

from lightning_lib.storage import is_remote, local_path
from tasks.config import TrainConfig

EMBEDDED_MLFLOW_DIR = "mlflow"


DEFAULT_CHECKPOINT_ROOT = "runs/checkpoints"


def embedded_mlflow_dir(checkpoint_root: str = DEFAULT_CHECKPOINT_ROOT) -> str:
    """The local folder of the embedded MLflow store: ``mlflow`` beside a local checkpoint root, else
    ``runs/mlflow`` under the working directory (checkpoints in S3 still track locally by default)."""
    root = checkpoint_root.rstrip("/")
    if is_remote(root):
        return os.path.abspath(os.path.join("runs", EMBEDDED_MLFLOW_DIR))
    parent = os.path.dirname(os.path.abspath(local_path(root)))
    return os.path.join(parent, EMBEDDED_MLFLOW_DIR)


ALLOWED_TRACKING_HOSTS_ENV = "LIGHTNING_LIB_ALLOWED_TRACKING_HOSTS"
# What MLflow reads to authenticate to a tracking server (mlflow.utils.credentials.get_default_host_creds).
CREDENTIAL_ENV_VARS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
)
_LOCAL_SCHEMES = ("sqlite", "file")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme://host[:port][/path...]: a host of letters, digits, dots, dashes and underscores or a bracketed
# IPv6 address, nothing else before the path (no userinfo: what a parser reads as the host must be what
# requests connects to).
_SERVER_URI = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?(?P<rest>[/?#][!-~]*)?"
)


class UntrustedTrackingURI(ValueError):
    """A tracking URI from a parameter names a server the worker's MLflow credentials must not reach."""


def _credentials_set() -> list[str]:
    """The names of the MLflow credentials this process would send (empty when none)."""
    found = [name for name in CREDENTIAL_ENV_VARS if os.environ.get(name)]
    path = os.path.expanduser("~/.mlflow/credentials")
    if os.path.isfile(path):
        found.append(path)
    return found


def _is_local(uri: str) -> bool:
    """A SQLite or file store, or a path: nothing of it goes over the network."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if scheme is not None and len(scheme[1]) > 1:  # one letter: a Windows drive, i.e. a path
        return scheme[1].lower() in _LOCAL_SCHEMES
    return "/" in uri or "\\" in uri  # a bare word ("databricks") names a remote store


def _origin(uri: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of a strictly formed server URI (default port filled in), else None."""
    match = _SERVER_URI.fullmatch(uri)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS.get(scheme)
    return scheme, _canonical_host(match["host"]), port


def _canonical_host(host: str) -> str:
    """One spelling per host, so that origins compare equal however they were written: lower case, no
    trailing dot, and an IPv6 address bracketed and compressed as in a URL (``[::1]``, also for
    ``[0:0:0:0:0:0:0:1]`` or urlsplit's unbracketed ``::1``)."""
    bare = host.lower().rstrip(".")
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    if ":" in bare:
        try:
            return f"[{ipaddress.IPv6Address(bare).compressed}]"
        except ValueError:
            return f"[{bare}]"  # not an address: kept bracketed, so it matches only itself
    return bare


def _env_origin(uri: str) -> tuple[str, str, int | None] | None:
    """The origin of the trusted environment URI, which may carry ``user:password@`` (not a parameter)."""
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    # urlsplit's hostname drops an IPv6 address's brackets, which _origin keeps: both canonicalised
    return scheme, _canonical_host(parts.hostname), port or _DEFAULT_PORTS.get(scheme)


def allowed_tracking_hosts() -> list[tuple[str, int | None]]:
    """``(host, port or None for any port)`` from ``LIGHTNING_LIB_ALLOWED_TRACKING_HOSTS``.

    An IPv6 address is written bracketed (``[::1]`` or ``[::1]:5000``); a bare one (``::1``) is read as
    a host without a port, never as ``host:port`` split at its last colon."""
    entries: list[tuple[str, int | None]] = []
    for raw in os.environ.get(ALLOWED_TRACKING_HOSTS_ENV, "").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        bare_ipv6 = not entry.startswith("[") and entry.count(":") > 1
        host, sep, port = entry.rpartition(":") if not (entry.endswith("]") or bare_ipv6) else (entry, "", "")
        if sep and port.isdigit() and host:
            entries.append((_canonical_host(host), int(port)))
        else:
            entries.append((_canonical_host(entry), None))
    return entries


def check_tracking_uri(uri: str, what: str = "mlflow.tracking_uri") -> str:
    """``uri`` (from a parameter named ``what``) if the worker's MLflow credentials may be sent there.

    See the module docstring for the policy; raises :class:`UntrustedTrackingURI` otherwise.
    """
    if _is_local(uri):
        return uri
    shown = _redacted(uri)
    origin = _origin(uri)
    if origin is None:
        raise UntrustedTrackingURI(
            f"Expected {what} to be a local store or scheme://host[:port][/path] without user:password@, "
            f"backslashes or whitespace, received {shown}."
        )
    credentials = _credentials_set()
    if not credentials:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env and not _is_local(env) and _env_origin(env) == origin:
        return uri
    _, host, port = origin
    if any(
        host == allowed and (allowed_port is None or allowed_port == port)
        for allowed, allowed_port in allowed_tracking_hosts()
    ):
        return uri
    configured = _redacted(env) if env else "none"
    raise UntrustedTrackingURI(
        f"Refusing {what}={shown}: this worker holds MLflow credentials ({', '.join(credentials)}) for "
        f"its own tracking server (MLFLOW_TRACKING_URI={configured}) and MLflow would send them to "
        f"{host}:{port}. Expected that server, a local store, or a host listed in "
        f"{ALLOWED_TRACKING_HOSTS_ENV} (set by the deployment), received {host}:{port}."
    )


def _redacted(uri: str) -> str:
    """``uri`` for a message: without ``user:password@`` and cut short."""
    netloc_start = uri.find("://")
    if netloc_start >= 0:
        rest = uri[netloc_start + 3 :]
        end = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0] or [len(rest)])
        if "@" in rest[:end]:
            uri = uri[: netloc_start + 3] + "***@" + rest[:end].rpartition("@")[2] + rest[end:]
    return repr(uri[:200])


def resolve_tracking_uri(explicit: str | None = None, checkpoint_root: str = DEFAULT_CHECKPOINT_ROOT) -> str:
    """``explicit`` (a parameter: checked by :func:`check_tracking_uri`), else ``MLFLOW_TRACKING_URI``,
    else the embedded SQLite store."""
    if explicit:
        return check_tracking_uri(explicit)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{embedded_mlflow_dir(checkpoint_root)}/mlflow.db"


def tracking_uri(config: TrainConfig) -> str:
    """The tracking URI every task of this run uses."""
    return resolve_tracking_uri(config.mlflow.tracking_uri, config.checkpoint_root)


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def run_url(uri: str, experiment_id: str, run_id: str, ui_address: str = "http://127.0.0.1:5000") -> str:
    """The run's page: on the tracking server itself, or on ``mlflow ui`` for a local store."""
    base = uri.rstrip("/") if is_http(uri) else ui_address
    return f"{base}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"


def ui_command(uri: str) -> str | None:
    """The command that opens the MLflow UI on a local store (None for a server: it has its own UI)."""
    if is_http(uri):
        return None
    return f"mlflow ui --backend-store-uri {uri}"


__all__ = [
    "ALLOWED_TRACKING_HOSTS_ENV",
    "CREDENTIAL_ENV_VARS",
    "DEFAULT_CHECKPOINT_ROOT",
    "UntrustedTrackingURI",
    "allowed_tracking_hosts",
    "check_tracking_uri",
    "embedded_mlflow_dir",
    "is_http",
    "resolve_tracking_uri",
    "run_url",
    "tracking_uri",
    "ui_command",
]
