"""The tracking-URI policy: the worker's MLflow credentials only ever reach the configured server."""

from __future__ import annotations

import pytest

from tasks.tracking import (
    ALLOWED_TRACKING_HOSTS_ENV,
    CREDENTIAL_ENV_VARS,
    UntrustedTrackingURI,
    check_tracking_uri,
    resolve_tracking_uri,
)

OWN = "http://mlflow.internal:5000"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A worker of the production stack: its server in MLFLOW_TRACKING_URI, a password beside it."""
    for name in CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(ALLOWED_TRACKING_HOSTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials of the developer's
    monkeypatch.setenv("MLFLOW_TRACKING_URI", OWN)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "test-password")


@pytest.mark.usefixtures("credentials")
@pytest.mark.parametrize(
    "uri",
    [
        OWN,
        "http://MLFLOW.internal.:5000/",  # the same origin, spelled differently
        f"sqlite:///{'/tmp/x/mlflow.db'}",
        "file:///tmp/mlruns",
        "./mlruns",
    ],
)
def test_the_own_server_and_local_stores_are_accepted(uri: str) -> None:
    assert resolve_tracking_uri(uri) == uri


@pytest.mark.usefixtures("credentials")
@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8080",  # another server
        "http://mlflow.internal:5001",  # another port of the same host
        "https://mlflow.internal:5000",  # another scheme
        "http://mlflow.internal",  # port 80, not 5000
        "http://evil.example@mlflow.internal:5000",  # userinfo in a parameter
        "http://mlflow.internal:5000@evil.example/",  # the host is evil.example
        "http://evil.example\\@mlflow.internal:5000",  # parsers disagree on backslashes
        "http://mlflow.internal:5000 /x",
        "databricks",
        "postgresql://db.example/mlflow",
    ],
)
def test_other_servers_are_refused_while_credentials_are_set(uri: str) -> None:
    with pytest.raises(UntrustedTrackingURI, match=r"mlflow\.tracking_uri") as info:
        resolve_tracking_uri(uri)
    assert "test-password" not in str(info.value)
    assert isinstance(info.value, ValueError)  # never retried


def test_the_refusal_names_the_credentials_the_host_and_the_way_out(credentials: None) -> None:
    with pytest.raises(UntrustedTrackingURI) as info:
        check_tracking_uri("http://127.0.0.1:8080/x", "tracking_uri")
    message = str(info.value)
    for part in ("tracking_uri='http://127.0.0.1:8080/x'", "MLFLOW_TRACKING_PASSWORD", OWN, "127.0.0.1:8080"):
        assert part in message
    assert ALLOWED_TRACKING_HOSTS_ENV in message


def test_the_allow_list_admits_a_host_or_a_host_and_port(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOWED_TRACKING_HOSTS_ENV, " mlflow-b.internal , 127.0.0.1:8080")
    assert check_tracking_uri("https://mlflow-b.internal:8443") == "https://mlflow-b.internal:8443"
    assert check_tracking_uri("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    with pytest.raises(UntrustedTrackingURI):
        check_tracking_uri("http://127.0.0.1:8081")


@pytest.mark.parametrize("name", ["MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_CLIENT_CERT_PATH"])
def test_every_kind_of_credential_counts(monkeypatch: pytest.MonkeyPatch, tmp_path, name: str) -> None:
    for var in CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert check_tracking_uri("http://127.0.0.1:8080") == "http://127.0.0.1:8080"  # nothing to leak
    monkeypatch.setenv(name, "x")
    with pytest.raises(UntrustedTrackingURI, match=name):
        check_tracking_uri("http://127.0.0.1:8080")


def test_a_credentials_file_counts(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for var in CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text("[mlflow]\nmlflow_tracking_password = x\n")
    with pytest.raises(UntrustedTrackingURI, match="credentials"):
        check_tracking_uri("http://127.0.0.1:8080")


def test_the_environment_s_own_uri_is_trusted(credentials: None) -> None:
    assert resolve_tracking_uri(None) == OWN


def test_an_ipv6_server_of_the_environment_is_its_own(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding 8: urlsplit reads the environment's host without brackets while a parameter's keeps
    them; the one server must compare equal to itself (and still only to itself)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://[::1]:5000")
    for same in ("http://[::1]:5000", "http://[::1]:5000/", "http://[0:0:0:0:0:0:0:1]:5000"):
        assert check_tracking_uri(same, "tracking_uri") == same
    for other in ("http://[::1]:5001", "https://[::1]:5000", "http://[::2]:5000", "http://127.0.0.1:5000"):
        with pytest.raises(UntrustedTrackingURI, match="tracking_uri"):
            check_tracking_uri(other, "tracking_uri")


def test_the_allow_list_takes_ipv6_hosts(credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_TRACKING_HOSTS_ENV, "[fd00::5]:8080, ::1")
    assert check_tracking_uri("http://[fd00::5]:8080") == "http://[fd00::5]:8080"
    assert check_tracking_uri("http://[::1]:9999") == "http://[::1]:9999"  # a bare address: every port
    for refused in ("http://[fd00::5]:8081", "http://[fd00::6]:8080"):
        with pytest.raises(UntrustedTrackingURI):
            check_tracking_uri(refused)
