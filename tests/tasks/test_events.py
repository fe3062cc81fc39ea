"""The data-landed event: its shape, the partition it names, and the helper upstream stages call."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tasks.events import (
    DATA_LANDED,
    PARTITION_LABEL,
    data_landed_event,
    data_resource_id,
    emit_data_landed,
    parse_partition,
)


def test_a_partition_is_an_extended_iso_day() -> None:
    assert parse_partition("2024-05-01") == dt.date(2024, 5, 1)
    assert parse_partition(dt.date(2024, 5, 1)) == dt.date(2024, 5, 1)
    for bad in ("20240501", "2024/05/01", "2024-W18-3", "", " 2024-05-01", "yesterday", None, 20240501):
        with pytest.raises(ValueError, match=r"Expected partition as an ISO date \(YYYY-MM-DD\), received"):
            parse_partition(bad)  # type: ignore[arg-type]
    # the right shape, but no such day: the reason is kept
    with pytest.raises(ValueError, match=r"received '2024-02-30' \(day is out of range"):
        parse_partition("2024-02-30")
    with pytest.raises(ValueError, match=r"Expected window_end as an ISO date"):
        parse_partition(dt.datetime(2024, 5, 1, 12), argument="window_end")


def test_the_event_names_the_model_and_the_partition() -> None:
    event = data_landed_event("digits", dt.date(2024, 5, 1), source="s3://lake/digits/date=2024-05-01/")
    assert event["event"] == DATA_LANDED == "lightning-lib.data.landed"
    assert event["resource"] == {
        "prefect.resource.id": "lightning-lib.data.digits",
        "prefect.resource.name": "digits data",
        "lightning-lib.model": "digits",
        PARTITION_LABEL: "2024-05-01",
        "lightning-lib.source": "s3://lake/digits/date=2024-05-01/",
    }
    assert event["payload"] == {"partition": "2024-05-01", "source": "s3://lake/digits/date=2024-05-01/"}
    assert "lightning-lib.source" not in data_landed_event("digits", "2024-05-01")["resource"]


def test_a_bad_event_is_refused_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.events

    sent: list[Any] = []

    async def record(event: Any) -> None:
        sent.append(event)

    monkeypatch.setattr(tasks.events, "_send_confirmed", record)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with pytest.raises(ValueError, match="Expected model_name to be a registered model's name, received ''"):
        emit_data_landed("", "2024-05-01")
    with pytest.raises(ValueError, match="Expected partition as an ISO date"):
        emit_data_landed("digits", "May 1st")
    with pytest.raises(ValueError, match="Expected source to be a non-empty URI or path, received ''"):
        emit_data_landed("digits", "2024-05-01", source="")
    assert sent == []
    event = emit_data_landed("digits", "2024-05-01")
    assert sent == [event]
    assert event.event == DATA_LANDED and event.resource.id == data_resource_id("digits")
    assert event.resource[PARTITION_LABEL] == "2024-05-01"


def test_without_a_server_nothing_is_sent_and_the_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(RuntimeError, match="Expected PREFECT_API_URL to name the Prefect server"),
    ):
        emit_data_landed("digits", "2024-05-01")


def test_a_server_that_cannot_be_reached_is_an_error_naming_it() -> None:
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    # the stage must not believe it retrained
    with (
        temporary_settings(updates={PREFECT_API_URL: url}),
        pytest.raises(RuntimeError, match=f"Expected the Prefect server at {url} to accept"),
    ):
        emit_data_landed("digits", "2024-05-01")


def test_an_event_is_sent_from_inside_a_running_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import tasks.events

    threads: list[bool] = []

    async def record(event: Any) -> None:
        threads.append(True)

    monkeypatch.setattr(tasks.events, "_send_confirmed", record)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")

    async def caller() -> Any:  # e.g. an async flow calling the sync helper
        return emit_data_landed("digits", "2024-05-01")

    assert asyncio.run(caller()).event == DATA_LANDED and threads == [True]
