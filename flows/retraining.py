"""The ``retraining`` flow: the scheduled one. A challenger is trained on the newest data window and
takes the ``champion`` alias only if it beats the champion on the same test data.

The flow runs on a cron schedule (the window is then the scheduled day) or when an upstream stage reports
that a day's data has landed: the deployment's trigger on the ``lightning-lib.data.landed`` event of the
registered model (resource ``lightning-lib.data.<model>``, label ``lightning-lib.partition``: see
``tasks.events``) passes that day as ``partition``, and the window is that partition.

Two retrainings of one registered model never overlap: the flow holds a Prefect global concurrency
limit of one slot (named after the model) for its whole work, and its deployment has a concurrency limit
of one as well (a schedule that fires while a run is still going queues behind it).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from pydantic import BaseModel, ConfigDict, Field

from flows.summary import metrics_table, mlflow_lines
from tasks.config import TrainConfig
from tasks.events import PARTITION_PATTERN, parse_partition
from tasks.follow import say
from tasks.naming import as_config, flow_parameter, name_or_fallback, run_name
from tasks.registry import CHAMPION, ModelVersionRef, PromotionDecision, decide, get_alias, promote, register
from tasks.run_data import run_data_task
from tasks.run_key import derive_run_key
from tasks.runs import read_run
from tasks.tracking import tracking_uri
from tasks.training import EvalResult, FitResult, fit, require_evaluation_steps, test

WINDOW_START = "{window_start}"
WINDOW_END = "{window_end}"


class RetrainingResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_key: str
    source: str
    fit: FitResult
    challenger: ModelVersionRef
    challenger_metrics: dict[str, float]
    champion_before: ModelVersionRef | None
    champion_metrics: dict[str, float] | None
    decision: PromotionDecision
    champion_after: ModelVersionRef | None


def lock_name(model_name: str) -> str:
    return f"retraining-{model_name}"


def ensure_lock(name: str) -> None:
    """Create the one-slot global concurrency limit if it does not exist yet (idempotent)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)


def window_source(source: str, window_end: dt.date, window_days: int) -> str:
    """``source`` with ``{window_start}`` / ``{window_end}`` replaced by ISO dates (end exclusive)."""
    if window_days < 1:
        raise ValueError(f"Expected window_days >= 1, received {window_days}.")
    start = window_end - dt.timedelta(days=window_days)
    return source.replace(WINDOW_START, start.isoformat()).replace(WINDOW_END, window_end.isoformat())


def scheduled_date() -> dt.date:
    """The day the flow run was scheduled for (a late or retried run still takes its own window)."""
    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time
    return dt.date(when.year, when.month, when.day) if when is not None else dt.datetime.now(dt.UTC).date()


def partition_window_end(partition: str | dt.date | None, window_end: dt.date | None) -> dt.date | None:
    """The window's end for ``partition`` (the day after it, the end being exclusive), else ``window_end``.

    Both at once are refused: they would name two windows."""
    if partition is None:
        return window_end
    day = parse_partition(partition)
    if window_end is not None:
        raise ValueError(
            f"Expected either partition or window_end, received both (partition={day.isoformat()!r}, "
            f"window_end={window_end.isoformat()!r})."
        )
    return day + dt.timedelta(days=1)


def with_window(config: TrainConfig, window_end: dt.date | None, window_days: int) -> TrainConfig:
    """The config with the window's dates in ``data.source`` and in the string values of
    ``datamodule_kwargs`` (at any depth), where they hold ``{window_start}`` / ``{window_end}``."""
    dumped = config.model_dump(mode="json")
    table = dumped.get("data")
    text = json.dumps([dumped["datamodule_kwargs"], table["source"] if table else None])
    if WINDOW_START not in text and WINDOW_END not in text:
        return config
    end = window_end or scheduled_date()
    if table:
        table["source"] = window_source(table["source"], end, window_days)
    dumped["datamodule_kwargs"] = _fill_window(dumped["datamodule_kwargs"], end, window_days)
    return TrainConfig.model_validate(dumped)


def _fill_window(value: Any, end: dt.date, days: int) -> Any:
    if isinstance(value, str):
        return window_source(value, end, days)
    if isinstance(value, dict):
        return {k: _fill_window(v, end, days) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_window(v, end, days) for v in value]
    return value


def data_description(config: TrainConfig) -> str:
    """What the run trains on, for results and summaries: the table, or the data module's arguments."""
    if config.data is not None:
        return config.data.source
    return f"{config.datamodule} {json.dumps(config.datamodule_kwargs, sort_keys=True)}"


@task(name="find_champion", cache_policy=NO_CACHE)
def find_champion(config: TrainConfig, name: str) -> ModelVersionRef | None:
    return get_alias(tracking_uri(config), name, CHAMPION)


@task(name="champion_config", cache_policy=NO_CACHE)
def champion_config(config: TrainConfig, champion: ModelVersionRef) -> TrainConfig:
    """The champion's own config (model class, data module arguments), from its MLflow run.

    With a project's own data module, the data module and its arguments are the challenger's (its window):
    both models are tested on the same data, each with the data module state of its own checkpoint."""
    own = read_run(tracking_uri(config), champion.run_id).config
    if config.data is not None:
        return own
    return own.model_copy(
        update={"datamodule": config.datamodule, "datamodule_kwargs": config.datamodule_kwargs, "data": None}
    )


def retraining_run_name() -> str:
    """``flow_run_name`` of the retraining flow: the model, the data window and the date."""

    def make() -> str:
        config = as_config(flow_parameter("config"))
        window_end = flow_parameter("window_end")
        if isinstance(window_end, str):
            window_end = dt.date.fromisoformat(window_end)
        window_end = partition_window_end(flow_parameter("partition"), window_end)
        return run_name(with_window(config, window_end, flow_parameter("window_days") or 1))

    return name_or_fallback("retraining", make)


@flow(
    name="retraining",
    flow_run_name=retraining_run_name,
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def retraining(
    config: TrainConfig,
    metric: str = "test_loss",
    mode: Literal["min", "max"] = "min",
    warm_start: bool = False,
    window_end: dt.date | None = None,
    window_days: Annotated[int, Field(ge=1)] = 1,
    lock_timeout_s: Annotated[float, Field(ge=0.0)] | None = None,
    # the pattern lets the form and the API refuse a garbled day up front; the flow still checks the date
    # itself (2024-02-30 matches the pattern) with a message naming the parameter
    partition: Annotated[str | None, Field(json_schema_extra={"pattern": PARTITION_PATTERN})] = None,
) -> RetrainingResult:
    """Train a challenger on the current data window and promote it only if it beats the champion.

    ``data.source`` and the string values of ``datamodule_kwargs`` may contain ``{window_start}`` and
    ``{window_end}`` (ISO dates): the window ends on
    ``window_end`` (default: the day the run was scheduled for) and spans ``window_days``. A ``partition``
    (set by the ``lightning-lib.data.landed`` trigger) makes the window end with that day: with
    ``window_days=1``, ``{window_start}`` is the partition and ``{window_end}`` the day after. With
    ``warm_start`` the challenger starts from the champion's weights. ``lock_timeout_s`` bounds the wait
    for a running retraining of the same model (default: wait).

    Args:
        config: The challenger's training run; `mlflow.registered_model_name` names the champion.
        metric: The test metric that decides the promotion, compared on the same test data.
        mode: Whether a lower (`min`) or higher (`max`) metric wins.
        warm_start: Start the challenger from the champion's weights instead of from scratch.
        window_end: The day the data window ends (exclusive); `None` means the day the run was scheduled
            for.
        window_days: Days the data window spans, at least 1.
        lock_timeout_s: Seconds to wait for a running retraining of the same model; `None` means wait
            as long as it takes.
        partition: The day whose data landed (YYYY-MM-DD), set by the data-landed event; the window ends
            with it (window_start is that day when window_days is 1). `None` means use window_end.
    """
    name = config.mlflow.registered_model_name
    if not name:
        raise ValueError("Expected mlflow.registered_model_name for retraining: the champion is found by it.")
    require_evaluation_steps(config, "retraining")
    window_end = partition_window_end(partition, window_end)
    if partition is not None:
        say("Retraining %s on partition %s (the data-landed event's day).", name, partition)
    ensure_lock(lock_name(name))
    with concurrency(lock_name(name), occupy=1, timeout_seconds=lock_timeout_s, strict=True):
        config = with_window(config, window_end, window_days)
        run_key = derive_run_key(config, "retraining")
        champion = find_champion(config, name)
        prepared = run_data_task(config)
        init_from = champion.checkpoint_uri if warm_start and champion is not None else None
        fitted = fit(config, prepared, run_key, init_from)
        challenger_eval = test(config, prepared, fitted.best_checkpoint_uri, run_key, fitted.mlflow_run_id)
        champion_eval: EvalResult | None = None
        if champion is not None:
            # the champion on the challenger's test split, with its own preprocessing; not logged to any run
            champion_eval = test(champion_config(config, champion), prepared, champion.checkpoint_uri)
        decision = decide(
            metric, mode, challenger_eval.metrics, champion_eval.metrics if champion_eval else None
        )
        challenger = register(config, fitted, challenger_eval.metrics, prepared=prepared)
        say("Registered %s version %s from MLflow run %s.", challenger.name, challenger.version,
            challenger.run_id)  # fmt: skip
        champion_after = promote(config, challenger, decision)
    if decision.promote:
        say(
            "Promoted %s version %s to %s: %s.",
            challenger.name,
            challenger.version,
            CHAMPION,
            decision.reason,
        )
    else:
        kept = f"version {champion_after.version}" if champion_after is not None else "no version"
        say("Kept %s %s as %s (challenger version %s not promoted): %s.", challenger.name, kept, CHAMPION,
            challenger.version, decision.reason)  # fmt: skip
    result = RetrainingResult(
        run_key=run_key,
        source=data_description(config),
        fit=fitted,
        challenger=challenger,
        challenger_metrics=challenger_eval.metrics,
        champion_before=champion,
        champion_metrics=champion_eval.metrics if champion_eval else None,
        decision=decision,
        champion_after=champion_after,
    )
    columns = {"challenger": challenger_eval.metrics}
    if champion_eval is not None:
        columns["champion"] = champion_eval.metrics
    create_markdown_artifact(
        "\n".join(
            [
                f"# Retraining `{name}` on `{data_description(config)}`",
                "",
                f"**{'Promoted' if decision.promote else 'Not promoted'}**: {decision.reason}.",
                "",
                metrics_table(columns),
                "",
                f"- Challenger: version {challenger.version}, checkpoint `{challenger.checkpoint_uri}`",
                *mlflow_lines(fitted.tracking_uri, fitted.mlflow_experiment_id, fitted.mlflow_run_id),
            ]
        ),
        key="retraining-summary",
    )
    return result


__all__ = [
    "RetrainingResult",
    "ensure_lock",
    "lock_name",
    "partition_window_end",
    "retraining",
    "retraining_run_name",
    "window_source",
    "with_window",
]
