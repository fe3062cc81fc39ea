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
    import prefect.events

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw) or kw)
    with pytest.raises(ValueError, match="Expected model_name to be a registered model's name, received ''"):
        emit_data_landed("", "2024-05-01")
    with pytest.raises(ValueError, match="Expected partition as an ISO date"):
        emit_data_landed("digits", "May 1st")
    with pytest.raises(ValueError, match="Expected source to be a non-empty URI or path, received ''"):
        emit_data_landed("digits", "2024-05-01", source="")
    assert sent == []
    assert emit_data_landed("digits", "2024-05-01")["resource"]["prefect.resource.id"] == data_resource_id(
        "digits"
    )


def test_an_event_prefect_does_not_send_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    # emit_event returns None when events are off or sending failed: the stage must not believe it retrained
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: None)
    with pytest.raises(RuntimeError, match="did not send it"):
        emit_data_landed("digits", "2024-05-01")
