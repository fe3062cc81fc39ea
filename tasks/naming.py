"""Names a person can read: the Prefect flow run's and the MLflow run's, from the model, the data and the date.

``DigitsClassifier-digits.csv-2026-12-06-1432``: the model class, the table's file name (or, for a
project's own data module, its class), and the minute the flow run was scheduled for, in UTC. The date is
the flow run's expected start time, which Prefect sets once: the flow run's name (given by the flows'
``flow_run_name``) and the MLflow run's name (given by the fit) come out the same, and a retry of the
flow run keeps both. A run is still found again by its ``run_key`` tag, never by its name.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from tasks.config import TrainConfig

log = logging.getLogger(__name__)

_MAX_PART = 60  # characters of one part (model, data): names stay readable when a column truncates them


def _short(text: str) -> str:
    return text if len(text) <= _MAX_PART else text[: _MAX_PART - 1] + "~"


def last_segment(uri: str) -> str:
    """The last path segment of a path or URI, without a query (``s3://b/x/digits.csv?v=1`` -> ``digits.csv``)."""
    path = uri.split("?", 1)[0].split("#", 1)[0].rstrip("/\\")
    return path.replace("\\", "/").rsplit("/", 1)[-1] or path


def data_label(config: TrainConfig) -> str:
    """The table's file name, or the class name of the project's own data module."""
    if config.data is not None:
        return last_segment(config.data.source)
    return config.datamodule.rpartition(":")[2]


def readable_name(model: str, data: str, when: dt.datetime) -> str:
    """``<model>-<data>-<YYYY-MM-DD-HHMM>`` (``when`` in UTC)."""
    stamp = when.astimezone(dt.UTC).strftime("%Y-%m-%d-%H%M")
    return f"{_short(model)}-{_short(data)}-{stamp}"


def run_name(config: TrainConfig, when: dt.datetime | None = None) -> str:
    """The readable name of a training run of ``config`` (``when``: default :func:`scheduled_time`)."""
    return readable_name(config.model.rpartition(":")[2], data_label(config), when or scheduled_time())


def scheduled_time() -> dt.datetime:
    """The expected start time of the flow run this code runs in (UTC), else now."""
    try:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        when = getattr(getattr(context, "flow_run", None), "expected_start_time", None)
    except Exception:  # no Prefect: a plain process names its run by the time it starts
        when = None
    if isinstance(when, dt.datetime):
        return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


def flow_parameter(name: str) -> Any:
    """The value of the current flow run's parameter ``name`` (None when absent)."""
    from prefect.runtime import flow_run

    return dict(flow_run.parameters).get(name)


def as_config(value: Any) -> TrainConfig:
    """A ``config`` parameter as the flow receives it (validated), or as plain data."""
    return value if isinstance(value, TrainConfig) else TrainConfig.model_validate(value)


def name_or_fallback(flow: str, make: Callable[[], str]) -> str:
    """``make()``, or ``<flow>-<date>`` if it fails: a name must never fail the flow run it names."""
    try:
        return make()
    except Exception as exc:
        log.warning("Could not build a readable name for this %s run (%s); using a plain one.", flow, exc)
        return f"{flow}-{scheduled_time().strftime('%Y-%m-%d-%H%M')}"


def training_run_name() -> str:
    """``flow_run_name`` of the training flow: the model, the data and the date."""
    return name_or_fallback("training", lambda: run_name(as_config(flow_parameter("config"))))


__all__ = [
    "as_config",
    "data_label",
    "flow_parameter",
    "last_segment",
    "name_or_fallback",
    "readable_name",
    "run_name",
    "scheduled_time",
    "training_run_name",
]
