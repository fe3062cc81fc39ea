"""The ``retraining`` flow: the scheduled one. A challenger is trained on the newest data window and
takes the ``champion`` alias only if it beats the champion on the same test data.

Two retrainings of one registered model never overlap: the flow holds a Prefect global concurrency
limit of one slot (named after the model) for its whole work, and its deployment has a concurrency limit
of one as well (a schedule that fires while a run is still going queues behind it).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from pydantic import BaseModel, ConfigDict

from flows.summary import metrics_table, mlflow_lines
from tasks.config import TrainConfig
from tasks.data import run_prepare_data
from tasks.registry import CHAMPION, ModelVersionRef, PromotionDecision, decide, get_alias, promote, register
from tasks.run_key import derive_run_key
from tasks.runs import read_run
from tasks.tracking import tracking_uri
from tasks.training import EvalResult, FitResult, fit, test

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


def with_window(config: TrainConfig, window_end: dt.date | None, window_days: int) -> TrainConfig:
    source = config.data.source
    if WINDOW_START not in source and WINDOW_END not in source:
        return config
    resolved = window_source(source, window_end or scheduled_date(), window_days)
    data = config.model_dump(mode="json")
    data["data"]["source"] = resolved
    return TrainConfig.model_validate(data)


@task(name="find_champion", cache_policy=NO_CACHE)
def find_champion(config: TrainConfig, name: str) -> ModelVersionRef | None:
    return get_alias(tracking_uri(config), name, CHAMPION)


@task(name="champion_config", cache_policy=NO_CACHE)
def champion_config(config: TrainConfig, champion: ModelVersionRef) -> TrainConfig:
    """The champion's own config (model class, data module arguments), from its MLflow run."""
    return read_run(tracking_uri(config), champion.run_id).config


@flow(name="retraining", persist_result=True, result_serializer="json", log_prints=True)
def retraining(
    config: TrainConfig,
    metric: str = "test_loss",
    mode: Literal["min", "max"] = "min",
    warm_start: bool = False,
    window_end: dt.date | None = None,
    window_days: int = 1,
    lock_timeout_s: float | None = None,
) -> RetrainingResult:
    """Train a challenger on the current data window and promote it only if it beats the champion.

    ``data.source`` may contain ``{window_start}`` and ``{window_end}`` (ISO dates): the window ends on
    ``window_end`` (default: the day the run was scheduled for) and spans ``window_days``. With
    ``warm_start`` the challenger starts from the champion's weights. ``lock_timeout_s`` bounds the wait
    for a running retraining of the same model (default: wait).
    """
    name = config.mlflow.registered_model_name
    if not name:
        raise ValueError("Expected mlflow.registered_model_name for retraining: the champion is found by it.")
    ensure_lock(lock_name(name))
    with concurrency(lock_name(name), occupy=1, timeout_seconds=lock_timeout_s, strict=True):
        config = with_window(config, window_end, window_days)
        run_key = derive_run_key(config, "retraining")
        champion = find_champion(config, name)
        prepared = run_prepare_data(config)
        init_from = champion.checkpoint_uri if warm_start and champion is not None else None
        fitted = fit(config, prepared, run_key, init_from)
        challenger_eval = test(config, prepared, fitted.best_checkpoint_uri, run_key)
        champion_eval: EvalResult | None = None
        if champion is not None:
            # the champion on the challenger's test split, with its own preprocessing; not logged to any run
            champion_eval = test(champion_config(config, champion), prepared, champion.checkpoint_uri)
        decision = decide(
            metric, mode, challenger_eval.metrics, champion_eval.metrics if champion_eval else None
        )
        challenger = register(config, fitted, challenger_eval.metrics, prepared=prepared)
        champion_after = promote(config, challenger, decision)
    print(("Promoted" if decision.promote else "Kept the champion") + f": {decision.reason}.")
    result = RetrainingResult(
        run_key=run_key,
        source=config.data.source,
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
                f"# Retraining `{name}` on `{config.data.source}`",
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


__all__ = ["RetrainingResult", "ensure_lock", "lock_name", "retraining", "window_source", "with_window"]
