"""Issue 13, "Latency": ``serve`` polls for submitted runs every second (the embedded runs' latency is in
test_embedded.py)."""

from __future__ import annotations

from typing import Any

import pytest

from flows import deploy
from flows.defaults import POLL_VARIABLE, SERVE_POLL_SECONDS, serve_poll_seconds


def test_serve_polls_every_second_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLL_VARIABLE, raising=False)
    assert serve_poll_seconds() == SERVE_POLL_SECONDS == 1.0
    monkeypatch.setenv(POLL_VARIABLE, "5")
    assert serve_poll_seconds() == 5.0
    for bad in ("often", "0", "nan"):  # NaN would never compare <= 0
        monkeypatch.setenv(POLL_VARIABLE, bad)
        with pytest.raises(ValueError, match=POLL_VARIABLE):
            serve_poll_seconds()


def test_serve_hands_the_polling_interval_to_prefect_s_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect

    seen: dict[str, Any] = {}
    monkeypatch.delenv(POLL_VARIABLE, raising=False)
    monkeypatch.setattr(deploy, "build_deployments", lambda *args, **kwargs: ["a deployment"])
    monkeypatch.setattr(deploy, "ensure_crash_recovery", lambda recovery: None)
    monkeypatch.setattr(deploy, "install_forkserver_starts", lambda preload: None)  # no server in the tests
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **kwargs: seen.update(kwargs, d=deployments))
    deploy.serve(limit=2)
    assert seen == {"limit": 2, "query_seconds": 1.0, "d": ("a deployment",)}
