"""The Logger base module: DummyLogger / DummyExperiment, merge_dicts, the params helpers, checkpoint
scanning for artifact loggers, and the sender thread the W&B and Comet loggers queue their calls to."""

from __future__ import annotations

import copy
import pickle
import statistics
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lightning_lib.loggers._sender import CallSender
from lightning_lib.loggers.logger import (
    DummyExperiment,
    DummyLogger,
    _convert_json_serializable,
    _sanitize_callable_params,
    merge_dicts,
)
from lightning_lib.loggers.utilities import _scan_checkpoints
from tests.helpers import reference_lightning


def test_dummy_logger_takes_any_call() -> None:
    logger = DummyLogger()
    assert logger.log_hyperparams("1", 2, three="three") is None
    assert logger.log_metrics("1", 2, three="three") is None
    assert callable(logger.log_text) and logger.log_text("k", columns=[]) is None
    assert logger[0] is logger and isinstance(logger.experiment, DummyExperiment)
    assert logger.experiment.add_image("x") is None and logger.experiment[3] is logger.experiment
    logger.experiment["key"] = "value"  # a config assignment on a dummy is accepted and forgotten
    assert logger.experiment["key"] is logger.experiment
    assert (logger.name, logger.version) == ("", "")
    # the catch-all does not answer for dunders: copy and pickle work on the real object
    assert isinstance(copy.deepcopy(logger), DummyLogger)
    assert isinstance(pickle.loads(pickle.dumps(logger)), DummyLogger)
    with pytest.raises(AttributeError):
        logger.__fancy_dunder__  # noqa: B018


def test_merge_dicts_matches_lightning() -> None:
    reference = reference_lightning().loggers.logger.merge_dicts
    d1 = {"a": 1.7, "b": 2.0, "c": 1, "d": {"d1": 1, "d3": 3}}
    d2 = {"a": 1.1, "b": 2.2, "v": 1, "d": {"d1": 2, "d2": 3}}
    d3 = {"a": 1.1, "v": 2.3, "d": {"d3": 3, "d4": {"d5": 1}}}
    funcs = {"a": statistics.mean, "v": max, "d": {"d1": sum}}
    dicts = [d1, d2, d3]
    assert merge_dicts(dicts, funcs, min) == reference(dicts, funcs, min)
    assert merge_dicts(dicts[:2]) == reference(dicts[:2])
    assert merge_dicts(dicts, funcs, min)["d"] == {"d1": 3, "d2": 3, "d3": 3, "d4": {"d5": 1}}


def test_params_helpers() -> None:
    def factory() -> int:
        return 7

    def needs_argument(x: int) -> int:
        return x

    params = {"f": factory, "g": needs_argument, "cls": dict, "n": 1}
    assert _sanitize_callable_params(params) == {"f": 7, "g": "needs_argument", "cls": {}, "n": 1}

    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    nested = {"p": Path("a/b"), "d": {"x": Opaque()}, "l": [1, 2], "none": None}
    converted = _convert_json_serializable(nested)
    assert converted == {"p": "a/b", "d": {"x": "opaque"}, "l": [1, 2], "none": None}


def test_scan_checkpoints_picks_new_and_rewritten_files(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.ckpt" for i in range(3)]
    for path in paths:
        path.write_text("x")
    callback = SimpleNamespace(
        last_model_path=str(paths[2]),
        current_score=0.5,
        best_model_path=str(paths[0]),
        best_model_score=0.1,
        best_k_models={str(paths[0]): 0.1, str(paths[1]): 0.2, str(tmp_path / "gone.ckpt"): 0.3},
    )
    found = _scan_checkpoints(callback, {})
    assert sorted((p, s, tag) for _, p, s, tag in found) == [
        (str(paths[0]), 0.1, "best_k"),
        (str(paths[1]), 0.2, "best_k"),
        (str(paths[2]), 0.5, "latest"),
    ]
    logged = {path: mtime for mtime, path, _, _ in found}
    assert _scan_checkpoints(callback, logged) == []
    logged[str(paths[2])] -= 10  # rewritten since it was logged (last.ckpt keeps its name)
    assert [p for _, p, _, _ in _scan_checkpoints(callback, logged)] == [str(paths[2])]


def test_sender_makes_calls_in_order_and_survives_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    sender = CallSender("test-sender")
    made: list[int] = []

    def fail() -> None:
        raise RuntimeError("boom password=hunter22")

    sender.submit(made.append, 1)
    sender.submit(fail)
    sender.submit(made.append, 2)
    assert sender.flush(30)
    assert made == [1, 2] and sender.failures == 1
    assert "hunter22" not in caplog.text and "***" in (sender.last_error or "")
    assert sender.close(30) == 0
    assert not [t for t in threading.enumerate() if t.name == "test-sender"]
    sender.submit(made.append, 3)  # a call after close starts a new thread
    assert sender.close(30) == 0 and made == [1, 2, 3]


def test_sender_waits_for_room_instead_of_dropping() -> None:
    sender = CallSender("test-sender", max_pending=1)
    gate = threading.Event()
    made: list[Any] = []
    sender.submit(lambda: gate.wait(30))
    sender.submit(made.append, "a")  # the first call is being made: "a" waits in the queue
    submitted = threading.Event()

    def third() -> None:
        sender.submit(made.append, "b")
        submitted.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not submitted.wait(0.2)  # the queue is full: the caller waits for room
    gate.set()
    assert submitted.wait(30)
    thread.join()
    sender.close(30)
    assert made == ["a", "b"]
    with pytest.raises(ValueError, match="Expected max_pending >= 1, received 0"):
        CallSender("x", max_pending=0)


def test_close_gives_up_on_a_stuck_call() -> None:
    sender = CallSender("test-sender")
    gate = threading.Event()
    sender.submit(lambda: gate.wait(30))
    sender.submit(print, "never")
    assert sender.close(0.1) == 2
    gate.set()


def test_experiments_start_before_the_setup_hooks(tmp_path: Path) -> None:
    import lightning_lib
    from lightning_lib.demos.boring_classes import BoringModel
    from tests.helpers import quiet_trainer_kwargs

    events: list[str] = []

    class Recording(DummyLogger):
        @property
        def experiment(self) -> Any:
            events.append("experiment")
            return super().experiment

    class SetupSpy(lightning_lib.Callback):
        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            events.append("setup")

    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(
            tmp_path, logger=Recording(), callbacks=[SetupSpy()], max_steps=1, limit_val_batches=0
        )
    )
    trainer.fit(BoringModel())
    # as Lightning: the logger's name and version are known when ModelCheckpoint resolves its folder
    assert events[:2] == ["experiment", "setup"]
