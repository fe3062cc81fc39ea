"""The event an upstream stage emits when a day's data has landed, and the partition it names.

The ``retraining`` deployment of a registered model is triggered by (``flows.deploy``):

- event name ``lightning-lib.data.landed`` (:data:`DATA_LANDED`);
- resource id ``lightning-lib.data.<registered model name>`` (:func:`data_resource_id`), with the labels
  ``lightning-lib.model`` (the registered model name) and ``lightning-lib.partition`` (the partition's day,
  ``YYYY-MM-DD``), and ``lightning-lib.source`` where the stage says where it wrote the data;
- payload ``{"partition": "YYYY-MM-DD"}`` (plus ``"source"`` when given), for readers of the event feed.

The trigger passes the ``lightning-lib.partition`` label to the flow's ``partition`` parameter: the data
window is that one day (``{window_start}`` = the partition, ``{window_end}`` = the next day).
:func:`emit_data_landed` sends exactly this event, confirmed, from any process that can reach the Prefect API.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

DATA_LANDED = "lightning-lib.data.landed"
MODEL_LABEL = "lightning-lib.model"
PARTITION_LABEL = "lightning-lib.partition"
SOURCE_LABEL = "lightning-lib.source"

# the extended ISO form only: date.fromisoformat also takes "20240501" and week dates, which a partition
# name never is and which would name a different folder than the one the stage wrote
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PARTITION_PATTERN = _ISO_DAY.pattern


def data_resource_id(model_name: str) -> str:
    """The event resource whose landed data retrains ``model_name``: ``lightning-lib.data.<model_name>``."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"Expected model_name to be a registered model's name, received {model_name!r}.")
    return f"lightning-lib.data.{model_name}"


def parse_partition(partition: str | dt.date, argument: str = "partition") -> dt.date:
    """The day ``partition`` names (``YYYY-MM-DD`` or a date); anything else is refused, naming ``argument``."""
    if isinstance(partition, dt.datetime):  # a datetime is a date subclass, but not a day
        raise ValueError(f"Expected {argument} as an ISO date (YYYY-MM-DD), received {partition!r}.")
    if isinstance(partition, dt.date):
        return partition
    if isinstance(partition, str) and _ISO_DAY.match(partition):
        try:
            return dt.date.fromisoformat(partition)
        except ValueError as error:
            raise ValueError(
                f"Expected {argument} as an ISO date (YYYY-MM-DD), received {partition!r} ({error})."
            ) from None
    raise ValueError(f"Expected {argument} as an ISO date (YYYY-MM-DD), received {partition!r}.")


def data_landed_event(model_name: str, partition: str | dt.date, source: str | None = None) -> dict[str, Any]:
    """The event's fields (``event``, ``resource``, ``payload``) for ``emit_event``, checked."""
    day = parse_partition(partition).isoformat()
    resource = {
        "prefect.resource.id": data_resource_id(model_name),
        "prefect.resource.name": f"{model_name} data",
        MODEL_LABEL: model_name,
        PARTITION_LABEL: day,
    }
    payload: dict[str, Any] = {"partition": day}
    if source is not None:
        if not isinstance(source, str) or not source:
            raise ValueError(f"Expected source to be a non-empty URI or path, received {source!r}.")
        resource[SOURCE_LABEL] = source
        payload["source"] = source
    return {"event": DATA_LANDED, "resource": resource, "payload": payload}


def emit_data_landed(model_name: str, partition: str | dt.date, source: str | None = None) -> Any:
    """Tell Prefect that ``partition``'s data for ``model_name`` has landed (optionally where: ``source``).

    The ``retraining`` deployment of that registered model then runs on the partition's day. The event is
    sent to the server ``PREFECT_API_URL`` names *now*, over its own connection, and this returns (the
    ``prefect.events.Event``) only once the server has confirmed it: an upstream stage that reports a
    partition must know it was heard. Raises, naming the cause, when no server is set or it cannot be
    reached.
    """
    fields = data_landed_event(model_name, partition, source)
    from prefect.events import Event
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        # without a server, Prefect would start a throwaway one that no deployment listens to
        raise RuntimeError(
            "Expected PREFECT_API_URL to name the Prefect server whose deployments listen for landed data, "
            "but it is not set."
        )
    event = Event(**fields)
    try:
        _run_async(_send_confirmed(event))
    except Exception as error:
        raise RuntimeError(
            f"Expected the Prefect server at {api_url} to accept the data-landed event for {model_name!r} "
            f"({fields['payload']['partition']}), but sending it failed: {type(error).__name__}: {error}"
        ) from error
    return event


async def _send_confirmed(event: Any) -> None:
    from prefect.events.clients import get_events_client

    # Prefect's emit_event hands events to a process-wide worker bound to the server of its first use and
    # sends them later; a fresh client with a checkpoint after every event is sent, and pinged, now.
    async with get_events_client(reconnection_attempts=2, checkpoint_every=1) as client:
        await client.emit(event)


def _run_async(coroutine: Any) -> None:
    """Run ``coroutine`` to its end from sync code, also where this thread already runs an event loop."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


__all__ = [
    "DATA_LANDED",
    "MODEL_LABEL",
    "PARTITION_LABEL",
    "PARTITION_PATTERN",
    "SOURCE_LABEL",
    "data_landed_event",
    "data_resource_id",
    "emit_data_landed",
    "parse_partition",
]
