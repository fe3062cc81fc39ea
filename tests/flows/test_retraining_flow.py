"""Champion/challenger retraining, its concurrency lock and its data window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from prefect.concurrency.sync import concurrency

from flows.retraining import (
    ensure_lock,
    lock_name,
    partition_window_end,
    retraining,
    window_source,
    with_window,
)
from flows.training import training
from tasks.config import TrainConfig
from tasks.registry import CHALLENGER, CHAMPION, decide, get_alias
from tasks.tracking import tracking_uri

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_retraining_promotes_a_better_challenger_and_keeps_the_champion_against_a_worse_one(
    make_config: Callable[..., TrainConfig],
) -> None:
    weak = {"trainer.max_epochs": 1, "trainer.limit_train_batches": 1, "model_kwargs.lr": 1e-4}
    first = training(make_config(**weak))
    assert first.champion and first.model_version is not None
    uri = tracking_uri(make_config())

    strong = retraining(make_config(**{"trainer.max_epochs": 3, "trainer.limit_train_batches": 10}))
    assert strong.decision.promote, strong.decision.reason
    assert strong.champion_before == first.model_version
    # the same test split for both: the champion was re-evaluated on the challenger's data
    assert (
        strong.champion_metrics is not None
        and strong.decision.champion_value == strong.champion_metrics["test_loss"]
    )
    assert strong.decision.challenger_value < strong.decision.champion_value
    assert get_alias(uri, "digits-test", CHAMPION) == strong.challenger

    worse = retraining(make_config(**weak, seed=1))
    assert not worse.decision.promote and "not better" in worse.decision.reason
    assert get_alias(uri, "digits-test", CHAMPION) == strong.challenger
    assert get_alias(uri, "digits-test", CHALLENGER) == worse.challenger


def test_warm_start_begins_from_the_champions_weights(make_config: Callable[..., TrainConfig]) -> None:
    training(make_config(**{"trainer.max_epochs": 2, "trainer.limit_train_batches": 10}))
    cold = retraining(make_config(**{"trainer.max_epochs": 1, "trainer.limit_train_batches": 1}, seed=3))
    warm = retraining(
        make_config(**{"trainer.max_epochs": 1, "trainer.limit_train_batches": 1}, seed=3), warm_start=True
    )
    # one step from a trained model is far better than one step from scratch
    assert warm.challenger_metrics["test_loss"] < cold.challenger_metrics["test_loss"]


def test_a_second_retraining_waits_for_the_running_one(make_config: Callable[..., TrainConfig]) -> None:
    config = make_config(**{"mlflow.registered_model_name": "locked-model"})
    ensure_lock(lock_name("locked-model"))
    # "another retraining is running": it holds the model's slot
    with concurrency(lock_name("locked-model"), occupy=1, strict=True), pytest.raises(TimeoutError):
        retraining(config, lock_timeout_s=1.0)
    assert get_alias(tracking_uri(config), "locked-model", CHALLENGER) is None  # it did no work


def test_window_placeholders_take_the_scheduled_days() -> None:
    source = "s3://lake/events/{window_start}_{window_end}.csv"
    assert window_source(source, dt.date(2026, 11, 26), 7) == "s3://lake/events/2026-11-19_2026-11-26.csv"
    with pytest.raises(ValueError, match="window_days >= 1"):
        window_source(source, dt.date(2026, 11, 26), 0)


def test_a_partition_is_the_one_day_window(make_config: Callable[..., TrainConfig]) -> None:
    end = partition_window_end("2024-05-01", None)
    assert end == dt.date(2024, 5, 2)  # the window's end is exclusive: the partition is its only day
    config = make_config(**{"data.source": "s3://lake/digits/date={window_start}/to={window_end}.csv"})
    assert with_window(config, end, 1).data.source == "s3://lake/digits/date=2024-05-01/to=2024-05-02.csv"
    assert partition_window_end(None, dt.date(2024, 5, 3)) == dt.date(2024, 5, 3)
    with pytest.raises(ValueError, match="Expected either partition or window_end, received both"):
        partition_window_end("2024-05-01", dt.date(2024, 5, 3))


@pytest.mark.parametrize("partition", ["2024-13-01", "2024/05/01", ""])
def test_a_bad_partition_is_refused_before_any_work(
    make_config: Callable[..., TrainConfig], partition: str
) -> None:
    config = make_config(**{"mlflow.registered_model_name": "partitioned-model"})
    with pytest.raises(ValueError, match=r"Expected partition as an ISO date \(YYYY-MM-DD\), received"):
        retraining(config, partition=partition)
    assert get_alias(tracking_uri(config), "partitioned-model", CHALLENGER) is None


def test_decide_rules() -> None:
    assert decide("test_loss", "min", {"test_loss": 0.5}, None).promote
    assert decide("test_loss", "min", {"test_loss": 0.4}, {"test_loss": 0.5}).promote
    assert not decide("test_loss", "min", {"test_loss": 0.5}, {"test_loss": 0.5}).promote  # a tie keeps it
    assert decide("test_acc", "max", {"test_acc": 0.9}, {"test_acc": 0.8}).promote
    assert not decide("test_loss", "min", {"test_loss": float("nan")}, {"test_loss": 0.5}).promote
    with pytest.raises(ValueError, match="'test_acc'"):
        decide("test_acc", "max", {"test_loss": 1.0}, None)
