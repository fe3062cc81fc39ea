"""Timer: duration parsing, elapsed time per stage, stopping, and state across a resume."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import lightning_lib.callbacks.timer as timer_mod
from lightning_lib.callbacks.timer import Timer


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(timer_mod.time, "monotonic", clock.monotonic)
    return clock


def fake_trainer() -> Any:
    strategy = SimpleNamespace(broadcast=lambda obj, src=0: obj)
    return SimpleNamespace(should_stop=False, strategy=strategy, is_global_zero=True)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        ("00:00:01:30", 90),
        ("1:02:00:00", 93600),
        (" 00:00:00:05 ", 5),
        (timedelta(minutes=2), 120),
        ({"hours": 1, "minutes": 1}, 3660),
        (None, None),
    ],
)
def test_duration_forms(duration: Any, seconds: float | None) -> None:
    assert Timer(duration)._duration == seconds


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"`Timer\(duration='1:00'\)` is not a valid duration"):
        Timer("1:00")
    with pytest.raises(ValueError, match=r"Unsupported parameter value `Timer\(interval=batch\)`"):
        Timer(interval="batch")


def test_elapsed_and_remaining_per_stage(clock: _Clock) -> None:
    timer, trainer = Timer(duration=timedelta(seconds=10)), fake_trainer()
    assert timer.start_time() is None and timer.time_elapsed() == 0
    timer.on_train_start(trainer, None)
    clock.now += 3
    assert timer.time_elapsed("train") == 3 and timer.time_remaining() == 7
    timer.on_validation_start(trainer, None)
    clock.now += 1
    timer.on_validation_end(trainer, None)
    timer.on_train_end(trainer, None)
    clock.now += 50
    assert timer.time_elapsed() == 4 and timer.time_elapsed("validate") == 1
    assert timer.start_time("train") == 100 and timer.end_time("train") == 104
    assert timer.time_elapsed("test") == 0 and timer.time_remaining("test") == 10
    assert Timer().time_remaining() is None


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_stops_at_interval(clock: _Clock, interval: str, caplog: pytest.LogCaptureFixture) -> None:
    timer, trainer = Timer(duration="00:00:00:05", interval=interval), fake_trainer()
    timer.on_fit_start(trainer, None)
    timer.on_train_start(trainer, None)
    clock.now += 6
    with caplog.at_level(logging.INFO, logger="lightning_lib.callbacks.timer"):
        timer.on_train_batch_end(trainer, None, None, None, 0)
        assert trainer.should_stop is (interval == "step")
        timer.on_train_epoch_end(trainer, None)
    assert trainer.should_stop
    assert "Time limit reached. Elapsed time is 0:00:06. Signaling Trainer to stop." in caplog.text


def test_state_dict_resume_counts_previous_time(clock: _Clock) -> None:
    timer, trainer = Timer(duration="00:00:00:10"), fake_trainer()
    timer.on_train_start(trainer, None)
    clock.now += 8
    state = timer.state_dict()
    assert state == {"time_elapsed": {"train": 8, "sanity_check": 0, "validate": 0, "test": 0, "predict": 0}}
    resumed = Timer(duration="00:00:00:10")
    resumed.load_state_dict(state)
    assert resumed.time_elapsed() == 8
    resumed.on_fit_start(trainer, None)
    assert not trainer.should_stop
    resumed.on_train_start(trainer, None)
    clock.now += 2
    resumed.on_train_batch_end(trainer, None, None, None, 0)
    assert trainer.should_stop and resumed.time_elapsed() == 10


def test_over_budget_resume_stops_at_fit_start() -> None:
    timer, trainer = Timer(duration={"seconds": 1}, verbose=False), fake_trainer()
    timer.load_state_dict({"time_elapsed": {"train": 5.0}})
    timer.on_fit_start(trainer, None)
    assert trainer.should_stop


@pytest.mark.parity
def test_state_dict_keys_match_lightning() -> None:
    pl_callbacks = pytest.importorskip("pytorch_lightning.callbacks")
    assert Timer().state_dict() == pl_callbacks.Timer().state_dict()


def _fit(tmp_path: Any, **kwargs: Any) -> Any:
    import lightning_lib
    from tests.helpers import make_classes, quiet_trainer_kwargs

    classes = make_classes(lightning_lib)
    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=3, **kwargs)
    )
    model = classes["ClassifierModel"]()
    trainer.fit(model, datamodule=classes["ClassifierDataModule"]())
    return trainer, model


def test_fit_measures_stages(tmp_path: Any) -> None:
    timer = Timer()
    trainer, model = _fit(tmp_path, callbacks=[timer])
    assert trainer.global_step == 6
    assert timer.time_elapsed("train") > timer.time_elapsed("validate") > 0
    assert timer.end_time("train") is not None and timer.time_remaining() is None
    trainer.test(model, datamodule=trainer.datamodule, verbose=False)
    assert timer.time_elapsed("test") > 0


def test_zero_duration_stops_before_the_first_step(tmp_path: Any) -> None:
    trainer, _ = _fit(tmp_path, callbacks=[Timer(duration={"seconds": 0}, verbose=False)])
    assert trainer.global_step == 0 and trainer.should_stop
    trainer, _ = _fit(tmp_path, max_time={"seconds": 0})  # the Trainer's own Timer
    assert trainer.global_step == 0
