"""Trainer arguments: every bad value is refused up front, naming the argument, the expectation and the value."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import pytest
import torch

import lightning_lib as pl
from lightning_lib.trainer.arguments import (
    MAX_DEVICES_PER_NODE,
    batch_limit,
    check_choice,
    check_int,
    parse_devices,
    parse_duration,
    resolve_accelerator,
)
from tests.support import CountingModel, trainer_kwargs

BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"accumulate_grad_batches": 0}, "accumulate_grad_batches >= 1, received 0"),
    ({"accumulate_grad_batches": 1.5}, "accumulate_grad_batches .*received 1.5"),
    ({"max_epochs": -2}, "max_epochs >= -1, received -2"),
    ({"max_epochs": 1.5}, "max_epochs .*int.*received 1.5"),
    ({"min_epochs": -1}, "min_epochs >= 0, received -1"),
    ({"max_steps": -5}, "max_steps >= -1, received -5"),
    ({"min_steps": -1}, "min_steps >= 0, received -1"),
    ({"max_time": "abc"}, "max_time .*DD:HH:MM:SS.*received 'abc'"),
    ({"max_time": {"weeks_": 1}}, "max_time .*timedelta.*received"),
    ({"limit_train_batches": 1.5}, r"limit_train_batches .*\[0.0, 1.0\].*received 1.5"),
    ({"limit_val_batches": -1}, "limit_val_batches .*received -1"),
    ({"limit_test_batches": "a"}, "limit_test_batches .*received 'a'"),
    ({"limit_predict_batches": True}, "limit_predict_batches .*received True"),
    ({"overfit_batches": 1.5}, "overfit_batches .*received 1.5"),
    ({"val_check_interval": 0}, "val_check_interval > 0, received 0"),
    ({"val_check_interval": 1.5}, "val_check_interval .*received 1.5"),
    ({"check_val_every_n_epoch": 0}, "check_val_every_n_epoch >= 1, received 0"),
    ({"num_sanity_val_steps": -2}, "num_sanity_val_steps >= -1, received -2"),
    ({"log_every_n_steps": -1}, "log_every_n_steps >= 0, received -1"),
    ({"gradient_clip_val": -1.0}, "gradient_clip_val .*>= 0.*received -1.0"),
    ({"gradient_clip_val": "1"}, "gradient_clip_val .*received '1'"),
    ({"gradient_clip_algorithm": "foo"}, "gradient_clip_algorithm .*'norm', 'value'.*received 'foo'"),
    ({"precision": "8-bit"}, "precision .*'32-true'.*received '8-bit'"),
    ({"precision": 8}, "precision .*received 8"),
    ({"accelerator": "tpu"}, "accelerator .*\"cpu\".*received 'tpu'"),
    ({"accelerator": 5}, "accelerator .*received 5"),
    ({"devices": 0}, "devices .*received 0"),
    ({"devices": -2}, "devices .*received -2"),
    ({"devices": "two"}, "devices .*received 'two'"),
    ({"devices": [0, 0]}, r"devices to list each device index once, received \[0, 0\]"),
    ({"devices": 2, "strategy": "single_device"}, "one device on one node for strategy='single_device'"),
    ({"strategy": "ddp_foo"}, "strategy .*'ddp'.*received 'ddp_foo'"),
    ({"strategy": "ddp_fork"}, "strategy .*received 'ddp_fork'"),
    ({"num_nodes": 0}, "num_nodes >= 1, received 0"),
    ({"num_nodes": 2, "strategy": "ddp"}, "launcher for num_nodes=2: run the script under torchrun"),
    ({"profiler": "fast"}, "profiler .*'simple'.*received 'fast'"),
    ({"plugins": ["x"]}, "plugins .*precision plugins.*received 'x'"),
    ({"logger": "x"}, "logger .*Logger.*received 'x'"),
    ({"logger": [object()]}, "logger .*Logger.*received"),
    ({"callbacks": [object()]}, "callback .*Callback, received object"),
    ({"callbacks": 3}, "callbacks .*Callback.*received int"),
    ({"deterministic": "maybe"}, "deterministic .*'warn'.*received 'maybe'"),
    ({"reload_dataloaders_every_n_epochs": -1}, "reload_dataloaders_every_n_epochs.* >= 0, received -1"),
    ({"fast_dev_run": -1}, "fast_dev_run.* >= 0, received -1"),
    ({"fast_dev_run": "yes"}, "fast_dev_run .*received 'yes'"),
    (
        {"enable_checkpointing": False, "callbacks": [pl.callbacks.ModelCheckpoint()]},
        "enable_checkpointing=False. but found .ModelCheckpoint.",
    ),
    (
        {"enable_progress_bar": False, "callbacks": [pl.callbacks.TQDMProgressBar()]},
        "progress bar .*enable_progress_bar=False",
    ),
]


@pytest.mark.parametrize(
    ("bad", "message"),
    BAD_ARGUMENTS,
    # no memory addresses in the ids: pytest-xdist's workers must collect the same names
    ids=[
        next(iter(b)) + "=" + re.sub(r" at 0x[0-9a-f]+", "", repr(b[next(iter(b))])) for b, _ in BAD_ARGUMENTS
    ],
)
def test_bad_argument_is_refused_before_training(tmp_path: Any, bad: dict[str, Any], message: str) -> None:
    model = CountingModel()
    kwargs = trainer_kwargs(tmp_path, **bad)
    with pytest.raises((ValueError, TypeError)) as info:
        pl.Trainer(**kwargs).fit(model)
    text = str(info.value)
    assert re.search(message, text), text
    assert "Expected" in text or "expected" in text
    assert model.train_steps == 0
    assert model._trainer is None  # the model was never attached


def test_gpu_accelerator_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("gpu", "cuda", "GPU"):
        with pytest.raises(ValueError, match=rf"CUDA device for accelerator={name!r}.*none"):
            pl.Trainer(accelerator=name, logger=False)


def test_val_check_interval_above_the_epoch_length_is_refused_before_training(tmp_path: Any) -> None:
    model = CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=4, val_check_interval=5))
    with pytest.raises(
        ValueError,
        match=r"`val_check_interval` \(5\) must be less than or equal to the number of the training batches \(4\)",
    ):
        trainer.fit(model)
    assert model.train_steps == 0


def test_fractional_limit_too_small_for_the_loader(tmp_path: Any) -> None:
    model = CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=0.001))
    with pytest.raises(
        ValueError, match=r"check 0.001 of the `train_dataloader` but 0.001 \* 32 < 1.*=0.03125"
    ):
        trainer.fit(model)
    assert model.train_steps == 0


@pytest.mark.parametrize(
    ("kwargs", "attribute", "expected"),
    [
        ({"limit_train_batches": 0.5}, "limit_train_batches", 0.5),
        ({"limit_train_batches": 3}, "limit_train_batches", 3),
        ({"limit_train_batches": 3.0}, "limit_train_batches", 3),
        ({"limit_val_batches": 0}, "limit_val_batches", 0),
        ({"limit_val_batches": None}, "limit_val_batches", 1.0),
        ({"val_check_interval": 10}, "val_check_interval", 10),
        ({"val_check_interval": 0.25}, "val_check_interval", 0.25),
        ({"num_sanity_val_steps": -1}, "num_sanity_val_steps", float("inf")),
        ({"num_sanity_val_steps": None}, "num_sanity_val_steps", 2),
        ({"max_epochs": None}, "max_epochs", None),
        ({"max_time": "00:01:00:00"}, "max_time", timedelta(hours=1)),
        ({"max_time": {"minutes": 2}}, "max_time", timedelta(minutes=2)),
        ({"max_time": timedelta(seconds=5)}, "max_time", timedelta(seconds=5)),
        ({"log_every_n_steps": None}, "log_every_n_steps", 50),
        ({"gradient_clip_algorithm": "value"}, "gradient_clip_algorithm", "value"),
        ({"precision": 32}, "precision", "32-true"),
        ({"precision": "64"}, "precision", "64-true"),
        ({"devices": [0]}, "num_devices", 1),
        ({"devices": "0,"}, "num_devices", 1),
        ({"devices": -1}, "num_devices", 1),
        ({"devices": 2}, "world_size", 2),
        ({"devices": [0, 1, 2]}, "num_devices", 3),
        ({"devices": "2"}, "world_size", 2),
        ({"devices": 2}, "is_global_zero", True),
        ({"strategy": "ddp"}, "world_size", 1),
        ({"fast_dev_run": True}, "fast_dev_run", 1),
    ],
)
def test_good_arguments_are_normalised(
    tmp_path: Any, kwargs: dict[str, Any], attribute: str, expected: Any
) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, **kwargs))
    assert getattr(trainer, attribute) == expected


def test_val_check_interval_as_a_duration_checks_by_time(tmp_path: Any) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, val_check_interval="00:00:00:30"))
    assert trainer._val_check_time_interval == 30.0
    assert trainer.val_check_interval == 1.0


def test_fast_dev_run_replaces_a_logger_with_a_dummy(tmp_path: Any) -> None:
    from lightning_lib.loggers.logger import DummyLogger

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, fast_dev_run=2, logger=True))
    assert [type(lg) for lg in trainer.loggers] == [DummyLogger]
    assert trainer.limit_train_batches == trainer.limit_val_batches == 2
    assert trainer.max_steps == 2 and trainer.num_sanity_val_steps == 0


def test_default_callbacks_and_logger(tmp_path: Any) -> None:
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu")
    names = [type(cb).__name__ for cb in trainer.callbacks]
    assert names == [
        "ModelSummary",
        "TQDMProgressBar",
        "ModelCheckpoint",
    ]  # checkpoints last, as in Lightning
    assert type(trainer.logger).__name__ == "CSVLogger"
    trainer = pl.Trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, max_time={"seconds": 5}
    )
    assert trainer.logger is None and trainer.checkpoint_callback is None
    assert "Timer" in [type(cb).__name__ for cb in trainer.callbacks]


def test_deterministic_sets_torch_flags(tmp_path: Any) -> None:
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        trainer = pl.Trainer(**trainer_kwargs(tmp_path, deterministic=True))
        assert torch.are_deterministic_algorithms_enabled()
        assert trainer.benchmark is False
        pl.Trainer(**trainer_kwargs(tmp_path, deterministic="warn"))
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        pl.Trainer(**trainer_kwargs(tmp_path, deterministic=False))
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(previous)


# ---- the validation helpers themselves --------------------------------------------------------------
def test_check_int() -> None:
    assert check_int("n", 3, 1) == 3
    assert check_int("n", None, 1, allow_none=True) is None
    with pytest.raises(ValueError, match=r"Expected n to be an int or None >= 1, received True"):
        check_int("n", True, 1, allow_none=True)
    with pytest.raises(ValueError, match=r"Expected n to be an int >= 0, received None"):
        check_int("n", None, 0)


def test_batch_limit_and_duration() -> None:
    assert batch_limit("x", 0) == 0
    assert batch_limit("x", 1) == 1 and isinstance(batch_limit("x", 1), int)
    assert batch_limit("x", 1.0) == 1.0 and isinstance(batch_limit("x", 1.0), float)
    with pytest.raises(ValueError, match=r"x .*received 2.5"):
        batch_limit("x", 2.5)
    assert parse_duration("d", None) is None
    assert parse_duration("d", " 01:02:03:04 ") == timedelta(days=1, hours=2, minutes=3, seconds=4)
    with pytest.raises(ValueError, match=r"Expected d .*received 5"):
        parse_duration("d", 5)


def test_check_choice() -> None:
    assert check_choice("c", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"Expected c to be one of \('a', 'b'\), received 'z'"):
        check_choice("c", "z", ("a", "b"))


def test_device_resolution_with_a_mocked_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_accelerator("auto") == "cuda"
    assert resolve_accelerator("gpu") == "cuda"
    cuda = [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert parse_devices("cuda", "auto") == cuda  # Lightning: every GPU
    assert parse_devices("cuda", -1) == cuda
    assert parse_devices("cuda", 1) == cuda[:1]
    assert parse_devices("cuda", [1]) == cuda[1:]
    assert parse_devices("cuda", "1,") == cuda[1:]
    assert parse_devices("cuda", "0,1") == cuda
    with pytest.raises(ValueError, match=r"CUDA device index < 2, received 5"):
        parse_devices("cuda", [5])
    with pytest.raises(
        ValueError, match=r"Expected devices <= 2 \(the CUDA devices torch finds\), received 3"
    ):
        parse_devices("cuda", 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_accelerator("auto") == "cpu"
    assert parse_devices("cpu", [3]) == [torch.device("cpu")]
    assert parse_devices("cpu", "auto") == [torch.device("cpu")]
    assert parse_devices("cpu", 3) == [torch.device("cpu")] * 3


@pytest.mark.parametrize("devices", [100_000, 10**11, "100000000000", [0] * 10**6])
def test_a_huge_device_count_is_refused_before_any_list_is_built(
    devices: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 14: devices=10**11 made the check itself build a list that size (out of memory); the bound
    # is checked first, so this fails at once, on CPU and on CUDA alike
    monkeypatch.setattr(torch, "device", lambda *a: pytest.fail("a device list was built"))
    for device_type in ("cpu", "cuda"):
        with pytest.raises(
            ValueError, match=rf"devices per node\)? <= {MAX_DEVICES_PER_NODE}|at most {MAX_DEVICES_PER_NODE}"
        ):
            parse_devices(device_type, devices)


def test_cpu_processes_may_outnumber_the_cpus_as_in_lightning() -> None:
    # the library keeps Lightning's semantics (oversubscription is the user's choice); the pipeline,
    # whose counts come from parameters, bounds them by the worker's CPUs (tests/tasks/test_bounds.py)
    many = os.cpu_count() or 1
    assert len(parse_devices("cpu", many + 2)) == many + 2
    assert len(parse_devices("cpu", [0, 5, 7])) == 3


def test_num_nodes_and_durations_are_bounded() -> None:
    with pytest.raises(ValueError, match=r"Expected num_nodes <= 1024, received 100000\."):
        pl.Trainer(accelerator="cpu", num_nodes=100_000, logger=False)
    # beyond ten years a limit means nothing, and far beyond it timedelta overflows (an OverflowError
    # escaped every caller's ``except ValueError``)
    for value in ("9999999999:00:00:00", "3651:00:00:00", {"days": 10**12}):
        with pytest.raises(ValueError, match=r"Expected max_time to be at most 3650 days"):
            parse_duration("max_time", value)
    assert parse_duration("max_time", "3650:00:00:00") == timedelta(days=3650)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_clip_value_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match=r"Expected gradient_clip_val to be a finite number >= 0 or None"):
        pl.Trainer(accelerator="cpu", gradient_clip_val=value, logger=False)


def test_bad_arguments_raise_misconfiguration_with_lightning_s_wording() -> None:
    from lightning_lib.utilities.exceptions import MisconfigurationException

    with pytest.raises(
        MisconfigurationException, match=r"limit_test_batches .*received 1.2: you passed invalid value 1.2"
    ):
        pl.Trainer(limit_test_batches=1.2, logger=False)
    with pytest.raises(MisconfigurationException, match=r"should be an integer or a time-based duration"):
        pl.Trainer(val_check_interval=0.5, check_val_every_n_epoch=None, logger=False)
    with pytest.raises(MisconfigurationException, match=r"barebones=True, detect_anomaly=True\)` was passed"):
        pl.Trainer(barebones=True, detect_anomaly=True)


def test_an_explicit_one_batch_limit_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="lightning_lib"):
        pl.Trainer(limit_train_batches=1, val_check_interval=1.0, logger=False)
    assert "`Trainer(limit_train_batches=1)` was configured so 1 batch per epoch will be used." in caplog.text
    assert "`Trainer(val_check_interval=1.0)` was configured so validation will run at the end" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="lightning_lib"):
        pl.Trainer(logger=False)
    assert "was configured so" not in caplog.text


def test_barebones_turns_everything_off_and_says_so(caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    with caplog.at_level("INFO", logger="lightning_lib"):
        trainer = pl.Trainer(barebones=True, default_root_dir=tmp_path, max_steps=2)
    assert "running in `Trainer(barebones=True)` mode" in caplog.text
    assert trainer.callbacks == [] and trainer.loggers == [] and trainer.num_sanity_val_steps == 0

    class Logs(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("ignored", 1.0)
            return super().training_step(batch, batch_idx)

    with pytest.warns(UserWarning, match=r"`Trainer\(barebones=True\)` is configured"):
        trainer.fit(Logs())
    assert trainer.global_step == 2 and "ignored" not in trainer.callback_metrics


def test_environment_defaults_parse_literals_and_lose_to_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_TRAINER_LIMIT_TRAIN_BATCHES", "0.5")
    monkeypatch.setenv("PL_TRAINER_PRECISION", "bf16-mixed")  # not a literal: kept as text
    monkeypatch.setenv("PL_TRAINER_DETECT_ANOMALY", "True")
    monkeypatch.setenv("PL_TRAINER_NOT_AN_ARGUMENT", "1")
    trainer = pl.Trainer(logger=False, detect_anomaly=False)
    assert trainer.limit_train_batches == 0.5 and trainer.precision == "bf16-mixed"
    assert trainer.detect_anomaly is False


def test_default_root_dir_keeps_uris_and_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert (
        pl.Trainer(default_root_dir="s3://bucket/~runs", logger=False).default_root_dir == "s3://bucket/~runs"
    )
    trainer = pl.Trainer(default_root_dir="~/runs")
    assert trainer.default_root_dir == str(tmp_path / "runs")
    assert trainer.logger.save_dir == str(tmp_path / "runs")  # the default logger writes there, not to "~"


def test_a_fitted_trainer_pickles_with_a_fresh_checkpoint_writer(tmp_path: Any) -> None:
    import pickle

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, enable_checkpointing=True))
    trainer.fit(CountingModel())
    copy = pickle.loads(pickle.dumps(trainer))
    assert copy.global_step == trainer.global_step == 2
    assert copy._checkpoint_writer is not trainer._checkpoint_writer
    assert [type(cb).__name__ for cb in copy.callbacks] == [type(cb).__name__ for cb in trainer.callbacks]


def test_ctrl_c_restores_the_sigint_handler_and_ends_loggers_failed(tmp_path: Any) -> None:
    import signal

    class Interrupt(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            raise KeyboardInterrupt

    class Recording(pl.loggers.CSVLogger):
        status = ""

        def finalize(self, status: str) -> None:
            Recording.status = status
            super().finalize(status)

    before = signal.getsignal(signal.SIGINT)
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, callbacks=[Interrupt()], logger=Recording(tmp_path))  # type: ignore[arg-type]
    )
    with pytest.raises(SystemExit) as info:
        trainer.fit(CountingModel())
    assert info.value.code == 1 and isinstance(info.value.__cause__, KeyboardInterrupt)
    assert trainer.interrupted and Recording.status == "failed"
    assert signal.getsignal(signal.SIGINT) is before
