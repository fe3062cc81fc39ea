"""Lightning's public names and small behaviours, run on pytorch_lightning and on lightning_lib and compared.

Each test runs the same small program against both libraries (the demos, a disabled step, ``stage=``,
Ctrl-C, ``PL_TRAINER_*`` defaults, ``max_epochs`` resolution, NaN logging, the data module summary,
``MisconfigurationException``, ``grad_norm``, ``measure_flops``, ``is_overridden``, the simple profiler's
action names, pickling) and asserts they agree.
"""

from __future__ import annotations

import functools
import importlib
import math
import pickle
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from tests.helpers import quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


def _libs() -> list[ModuleType]:
    return [reference_lightning(), lightning_lib]


def _demos(pl: ModuleType) -> Any:
    return importlib.import_module(f"{pl.__name__}.demos.boring_classes")


def _misconfiguration(pl: ModuleType) -> type[BaseException]:
    exception: type[BaseException] = importlib.import_module(
        f"{pl.__name__}.utilities.exceptions"
    ).MisconfigurationException
    return exception


def _fit_boring(pl: ModuleType, tmp_path: Any, **kwargs: Any) -> Any:
    pl.seed_everything(7, verbose=False)
    model = _demos(pl).BoringModel()
    settings = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, **kwargs}
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, **settings))
    trainer.fit(model)
    return model, trainer


def test_the_demo_boring_model_trains_to_lightning_s_weights(tmp_path: Any) -> None:
    reference, _ = _fit_boring(reference_lightning(), tmp_path / "pl")
    ours, trainer = _fit_boring(lightning_lib, tmp_path / "ours")
    assert trainer.global_step == 8
    for name, expected in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], expected)


def test_the_demo_data_modules_split_like_lightning_s() -> None:
    sizes = []
    for pl in _libs():
        pl.seed_everything(3, verbose=False)
        demos = _demos(pl)
        datamodule = demos.BoringDataModule()
        datamodule.setup("fit")
        datamodule.setup("test")
        iterable = demos.IterableBoringDataModule()
        iterable.setup("fit")
        sizes.append(
            (
                datamodule.random_full.data.sum().item(),
                [len(datamodule.random_train), len(datamodule.random_val), len(datamodule.random_test)],
                [len(list(loader)) for loader in iterable.train_dataloader()],
                len(demos.RandomIterableDatasetWithLen(4, 5)),
                sorted(demos.RandomDictDataset(4, 2)[0]),
            )
        )
    assert sizes[0] == sizes[1]


def test_the_manual_optimization_demo_matches_lightning(tmp_path: Any) -> None:
    weights = []
    for pl in _libs():
        pl.seed_everything(11, verbose=False)
        model = _demos(pl).ManualOptimBoringModel()
        trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path / pl.__name__, max_steps=3, limit_val_batches=0))
        trainer.fit(model)
        weights.append((trainer.global_step, model.layer.weight.detach().clone()))
    assert weights[0][0] == weights[1][0] == 3
    torch.testing.assert_close(weights[1][1], weights[0][1])


def _validation_batches_with_step_set_to_none(pl: ModuleType, tmp_path: Any) -> list[int]:
    seen: list[int] = []

    class Spy(pl.Callback):
        def on_validation_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            seen.append(trainer.global_step)

    model = _demos(pl).BoringModel()
    model.validation_step = None
    trainer = pl.Trainer(
        callbacks=[Spy()], **quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2)
    )
    trainer.fit(model)
    seen.append(trainer.global_step)
    return seen


def test_a_step_set_to_none_is_switched_off(tmp_path: Any) -> None:
    reference = _validation_batches_with_step_set_to_none(reference_lightning(), tmp_path / "pl")
    assert _validation_batches_with_step_set_to_none(lightning_lib, tmp_path / "ours") == reference == [2]


def _stage_arguments(pl: ModuleType, tmp_path: Any) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Recorder(pl.Callback):
        def setup(self, *args: Any, **kwargs: Any) -> None:
            calls.append(("callback.setup", args[2:], kwargs))

        def teardown(self, *args: Any, **kwargs: Any) -> None:
            calls.append(("callback.teardown", args[2:], kwargs))

    class Model(_demos(pl).BoringModel):
        def setup(self, *args: Any, **kwargs: Any) -> None:
            calls.append(("module.setup", args, kwargs))

        def teardown(self, *args: Any, **kwargs: Any) -> None:
            calls.append(("module.teardown", args, kwargs))

    trainer = pl.Trainer(callbacks=[Recorder()], **quiet_trainer_kwargs(tmp_path, max_steps=1))
    trainer.fit(Model())
    trainer.validate(Model(), verbose=False)
    # Lightning passes the TrainerFn member itself: equal to "fit", printed as TrainerFn.FITTING
    return [
        (name, args, {k: (str(v), v == v.value.upper()) for k, v in kwargs.items()})
        for name, args, kwargs in calls
    ]


def test_setup_and_teardown_receive_stage_as_a_keyword(tmp_path: Any) -> None:
    reference = _stage_arguments(reference_lightning(), tmp_path / "pl")
    assert ("module.setup", (), {"stage": ("TrainerFn.FITTING", True)}) in reference
    assert _stage_arguments(lightning_lib, tmp_path / "ours") == reference


def _interrupted(pl: ModuleType, tmp_path: Any) -> tuple[Any, ...]:
    seen: list[str] = []

    class CtrlC(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            raise KeyboardInterrupt

        def on_exception(self, trainer: Any, module: Any, exception: BaseException) -> None:
            seen.append(type(exception).__name__)

    trainer = pl.Trainer(callbacks=[CtrlC()], **quiet_trainer_kwargs(tmp_path, max_epochs=1))
    with pytest.raises(SystemExit) as info:
        trainer.fit(_demos(pl).BoringModel())
    return info.value.code, trainer.interrupted, str(trainer.state.status.value), seen


def test_ctrl_c_shuts_down_gracefully_and_exits_1(tmp_path: Any) -> None:
    reference = _interrupted(reference_lightning(), tmp_path / "pl")
    assert reference == (1, True, "interrupted", ["KeyboardInterrupt"])
    assert _interrupted(lightning_lib, tmp_path / "ours") == reference


def test_pl_trainer_environment_variables_are_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("PL_TRAINER_MAX_STEPS", "7")
    monkeypatch.setenv("PL_TRAINER_LOGGER", "False")
    monkeypatch.setenv("PL_TRAINER_ACCUMULATE_GRAD_BATCHES", "")  # empty: ignored
    outcomes = []
    for pl in _libs():
        from_env = pl.Trainer(default_root_dir=tmp_path)
        explicit = pl.Trainer(default_root_dir=tmp_path, max_steps=3, logger=None)
        outcomes.append(
            (from_env.max_steps, from_env.logger, from_env.accumulate_grad_batches, explicit.max_steps)
        )
        assert explicit.logger is not None
    assert outcomes[0] == outcomes[1] == (7, None, 1, 3)


def test_default_root_dir_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    dirs = [pl.Trainer(default_root_dir="~/runs/../runs", logger=False).default_root_dir for pl in _libs()]
    assert dirs[0] == dirs[1] == str(tmp_path / "runs")


def _max_epochs(pl: ModuleType, tmp_path: Any, **kwargs: Any) -> tuple[Any, Any]:
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, limit_val_batches=0, **kwargs))
    before = trainer.max_epochs
    with mock.patch.object(
        _demos(pl).BoringModel, "on_fit_start", lambda self: self.trainer.__setattr__("should_stop", True)
    ):
        trainer.fit(_demos(pl).BoringModel())
    return before, (trainer.max_epochs, trainer.min_epochs)


@pytest.mark.parametrize("kwargs", [{}, {"max_steps": 1}, {"max_time": "00:00:01:00"}, {"min_steps": 2}])
def test_max_epochs_is_resolved_by_fit_as_in_lightning(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    with pytest.warns() if not kwargs else _no_op():
        reference = _max_epochs(reference_lightning(), tmp_path / "pl", **kwargs)
    ours = _max_epochs(lightning_lib, tmp_path / "ours", **kwargs)
    assert ours == reference


class _no_op:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: Any) -> None:
        return None


def test_fast_dev_run_reads_back_as_lightning_s() -> None:
    values = [
        [pl.Trainer(fast_dev_run=run, logger=False).fast_dev_run for run in (True, 1, 3, 0, False)]
        for pl in _libs()
    ]
    assert values[0] == values[1] == [True, True, 3, 0, False]


def _nan_metrics(pl: ModuleType, tmp_path: Any) -> list[bool]:
    class Model(_demos(pl).BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("nan", float("nan"))
            self.log("inf", math.inf)
            return super().training_step(batch, batch_idx)

    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, max_steps=2, limit_val_batches=0))
    trainer.fit(Model())
    metrics = trainer.callback_metrics
    return [math.isnan(float(metrics["nan"])), math.isinf(float(metrics["inf"]))]


def test_a_float_nan_is_logged_as_it_is(tmp_path: Any) -> None:
    reference = _nan_metrics(reference_lightning(), tmp_path / "pl")
    assert _nan_metrics(lightning_lib, tmp_path / "ours") == reference == [True, True]


def test_the_data_module_summary_is_lightning_s() -> None:
    texts = []
    for pl in _libs():
        demos = _demos(pl)
        fresh = demos.BoringDataModule()
        fitted = demos.BoringDataModule()
        fitted.setup("fit")
        no_len = demos.BoringDataModuleNoLen()
        no_len.setup("fit")
        several = pl.LightningDataModule.from_datasets(
            train_dataset=[demos.RandomDataset(2, 5), demos.RandomDataset(2, 7)], batch_size=2
        )
        texts.append([str(fresh), str(fitted), str(no_len), str(several)])
    assert texts[0] == texts[1]
    assert "{Train dataloader: size=64}" in texts[1][1]


def test_from_datasets_builds_lightning_s_loaders() -> None:
    built = []
    for pl in _libs():
        demos = _demos(pl)
        datamodule = pl.LightningDataModule.from_datasets(
            demos.RandomDataset(3, 8), val_dataset=demos.RandomIterableDataset(3, 4), batch_size=4
        )
        train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
        built.append(
            (type(train.sampler).__name__, train.batch_size, train.pin_memory, type(val.sampler).__name__)
        )
        with pytest.raises(_misconfiguration(pl), match="`test_dataloader` must be implemented"):
            datamodule.test_dataloader()
    assert built[0] == built[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limit_train_batches": 1.2}, "passed invalid value"),
        ({"overfit_batches": -0.1}, "passed invalid value"),
        ({"fast_dev_run": -1}, "should be >= 0"),
        ({"reload_dataloaders_every_n_epochs": -1}, "should be an int >"),
        (
            {"val_check_interval": 0.5, "check_val_every_n_epoch": None},
            "should be an integer or a time-based",
        ),
        ({"gradient_clip_algorithm": "foo"}, "gradient_clip_algorithm"),
        ({"profiler": "unknown"}, "profiler"),
        ({"barebones": True, "logger": True}, r"barebones=True, logger=True\)` was passed"),
        ({"barebones": True, "profiler": "simple"}, r"barebones=True, profiler='simple'\)` was passed"),
    ],
)
def test_bad_arguments_raise_misconfiguration_where_lightning_does(
    kwargs: dict[str, Any], match: str
) -> None:
    for pl in _libs():
        # Lightning raises its MisconfigurationException or (barebones) a plain ValueError; ours is both
        expected = (_misconfiguration(pl), ValueError)
        with pytest.raises(expected, match=match):
            pl.Trainer(**kwargs)
    with pytest.raises(lightning_lib.utilities.exceptions.MisconfigurationException):
        lightning_lib.Trainer(**kwargs)


def test_barebones_switches_off_what_lightning_switches_off() -> None:
    settings = []
    for pl in _libs():
        trainer = pl.Trainer(barebones=True)
        settings.append(
            (
                trainer.barebones,
                trainer.checkpoint_callbacks,
                trainer.loggers,
                trainer.progress_bar_callback,
                trainer.log_every_n_steps,
                trainer.num_sanity_val_steps,
                type(trainer.profiler).__name__,
                [type(cb).__name__ for cb in trainer.callbacks],
            )
        )
    assert settings[0] == settings[1]


def test_grad_norm_matches_lightning() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    module(torch.randn(5, 4)).sum().backward()
    results = []
    for pl in _libs():
        grads = importlib.import_module(f"{pl.__name__}.utilities")
        results.append({k: float(v) for k, v in grads.grad_norm(module, norm_type=2).items()})
        results.append({k: float(v) for k, v in grads.grad_norm(module, "inf", group_separator=".").items()})
    assert results[0] == pytest.approx(results[2])
    assert results[1] == pytest.approx(results[3])
    for pl in _libs():
        with pytest.raises(ValueError, match="norm_type"):
            importlib.import_module(f"{pl.__name__}.utilities").grad_norm(module, 0)


def test_measure_flops_matches_lightning() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    x = torch.randn(4, 8)
    counts = []
    for pl in _libs():
        utilities = importlib.import_module(f"{pl.__name__}.utilities")
        counts.append(
            (
                utilities.measure_flops(model, lambda: model(x)),
                utilities.measure_flops(model, lambda: model(x), lambda y: y.sum()),
            )
        )
    assert counts[0] == counts[1]
    assert counts[1][1] > counts[1][0] > 0


def test_is_overridden_agrees_with_lightning() -> None:
    answers = []
    for pl in _libs():
        is_overridden = importlib.import_module(f"{pl.__name__}.utilities.model_helpers").is_overridden
        demos = _demos(pl)
        disabled = demos.BoringModel()
        disabled.validation_step = None
        wrapped = demos.BoringModel()
        wrapped.training_step = functools.partial(wrapped.training_step)
        mocked = pl.LightningModule()
        mocked.training_step = mock.Mock(wraps=lambda *args: None)
        bare_mock = pl.LightningModule()
        bare_mock.training_step = mock.Mock()

        class Hooked(pl.Callback):
            def on_fit_start(self, *args: Any) -> None:
                return None

        answers.append(
            [
                is_overridden("training_step", demos.BoringModel()),
                is_overridden("on_train_start", demos.BoringModel()),
                is_overridden("validation_step", disabled),
                is_overridden("training_step", wrapped),
                is_overridden("training_step", mocked),
                is_overridden("training_step", bare_mock),
                is_overridden("setup", demos.BoringDataModule()),
                is_overridden("on_fit_start", Hooked()),
                is_overridden("on_fit_end", Hooked()),
                is_overridden("training_step", None),
            ]
        )
        with pytest.raises(ValueError):
            is_overridden("forward", object())
    assert answers[0] == answers[1]


def _profiled_actions(pl: ModuleType, tmp_path: Any) -> tuple[set[str], int]:
    demos = _demos(pl)
    trainer = pl.Trainer(
        profiler="simple",
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1),
    )
    trainer.fit(demos.BoringModel(), datamodule=demos.BoringDataModule())
    recorded = trainer.profiler.recorded_durations
    return set(recorded), len(recorded["[Strategy]SingleDeviceStrategy.training_step"])


def test_the_simple_profiler_times_hooks_under_lightning_s_names(tmp_path: Any) -> None:
    reference, reference_steps = _profiled_actions(reference_lightning(), tmp_path / "pl")
    ours, steps = _profiled_actions(lightning_lib, tmp_path / "ours")
    assert steps == reference_steps == 3
    # every action we time, Lightning times under the same name; the hooks a user writes are all there
    assert ours <= reference
    for action in (
        "[Strategy]SingleDeviceStrategy.training_step",
        "[Strategy]SingleDeviceStrategy.validation_step",
        "[Strategy]SingleDeviceStrategy.backward",
        "[_TrainingEpochLoop].train_dataloader_next",
        "[_EvaluationLoop].val_next",
        "[LightningModule]BoringModel.configure_optimizers",
        "[LightningDataModule]BoringDataModule.setup",
        "[LightningDataModule]BoringDataModule.train_dataloader",
        "run_training_epoch",
        "run_training_batch",
    ):
        assert action in ours, action


def test_a_trainer_with_loggers_pickles(tmp_path: Any) -> None:
    restored = []
    for pl in _libs():
        loggers = [
            pl.loggers.CSVLogger(tmp_path / pl.__name__, name="a"),
            pl.loggers.CSVLogger(tmp_path, name="b"),
        ]
        trainer = pickle.loads(pickle.dumps(pl.Trainer(logger=loggers, default_root_dir=tmp_path)))
        restored.append([type(logger).__name__ for logger in trainer.loggers])
    assert restored[0] == restored[1] == ["CSVLogger", "CSVLogger"]


def _logged_outside_steps(pl: ModuleType, tmp_path: Any) -> dict[str, float]:
    class Logging(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.log("from_callback", 3.0)

        def on_train_batch_start(self, trainer: Any, module: Any, *args: Any) -> None:
            module.log("batch_start", 4.0)

    class Model(_demos(pl).BoringModel):
        def on_train_start(self) -> None:
            self.log("train_start", 1.0)

        def on_train_epoch_start(self) -> None:
            self.log("epoch_start", 2.0)

    trainer = pl.Trainer(
        callbacks=[Logging()],
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1),
    )
    trainer.fit(Model())
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def test_what_start_hooks_and_callbacks_log_reaches_callback_metrics(tmp_path: Any) -> None:
    reference = _logged_outside_steps(reference_lightning(), tmp_path / "pl")
    assert reference == {"train_start": 1.0, "epoch_start": 2.0, "from_callback": 3.0, "batch_start": 4.0}
    assert _logged_outside_steps(lightning_lib, tmp_path / "ours") == reference


def _loop_counters(pl: ModuleType, tmp_path: Any) -> tuple[Any, ...]:
    seen: list[tuple[int, int, int, int]] = []

    class Spy(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            loop = trainer.fit_loop
            seen.append(
                (
                    loop.total_batch_idx,
                    loop.epoch_progress.current.completed,
                    loop.epoch_loop.val_loop.batch_progress.total.completed,
                    loop.epoch_loop.batch_progress.current.completed,
                )
            )

    loader = _demos(pl).BoringModel().train_dataloader()
    trainer = pl.Trainer(
        callbacks=[Spy()],
        **quiet_trainer_kwargs(
            tmp_path, max_epochs=2, limit_train_batches=4, limit_val_batches=1, val_check_interval=2
        ),
    )
    trainer.fit(_demos(pl).BoringModel(), train_dataloaders=loader)
    trainer.fit_loop.max_epochs = 3  # a second fit continues for one more epoch
    trainer.fit_loop.epoch_loop.max_steps = 10
    trainer.fit(_demos(pl).BoringModel(), train_dataloaders=loader)
    return tuple(seen), trainer.max_epochs, trainer.max_steps, trainer.train_dataloader is loader


def test_fit_loop_counters_and_limits_are_lightning_s(tmp_path: Any) -> None:
    reference = _loop_counters(reference_lightning(), tmp_path / "pl")
    assert reference[1:] == (3, 10, True)
    assert _loop_counters(lightning_lib, tmp_path / "ours") == reference


@pytest.mark.parametrize("mode", ["min_size", "max_size_cycle", "max_size", "sequential"])
@pytest.mark.parametrize(
    "iterables",
    [{"a": range(4), "b": range(10, 12)}, [range(3), [range(5), range(2)]], range(3), (range(2), range(3))],
)
def test_combined_loader_iterates_like_lightning_s(mode: str, iterables: Any) -> None:
    ours = lightning_lib.utilities.CombinedLoader(iterables, mode)
    reference = reference_lightning().utilities.CombinedLoader(iterables, mode)
    assert list(ours) == list(reference)
    assert len(ours) == len(reference)
    assert ours.flattened == reference.flattened


def _combined_fit(pl: ModuleType, tmp_path: Any, mode: str) -> tuple[int | float, list[tuple[int, ...]]]:
    shapes: list[tuple[int, ...]] = []
    demos = _demos(pl)

    class Model(demos.BoringModel):
        def train_dataloader(self) -> Any:
            loaders = {
                "long": DataLoader(demos.RandomDataset(32, 6), batch_size=2),
                "short": [DataLoader(demos.RandomDataset(32, 2), batch_size=2)],
            }
            return pl.utilities.CombinedLoader(loaders, mode)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            shapes.append(
                tuple(x.shape[0] if x is not None else 0 for x in (batch["long"], batch["short"][0]))
            )
            return super().training_step(batch["long"], batch_idx)

    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_val_batches=0))
    if mode == "sequential":
        with pytest.raises(ValueError, match="FitLoop` does not support the `CombinedLoader"):
            trainer.fit(Model())
    else:
        trainer.fit(Model())
    return trainer.num_training_batches, shapes


@pytest.mark.parametrize("mode", ["min_size", "max_size_cycle", "max_size", "sequential"])
def test_a_combined_loader_trains_like_lightning_s(tmp_path: Any, mode: str) -> None:
    reference = _combined_fit(reference_lightning(), tmp_path / "pl", mode)
    assert _combined_fit(lightning_lib, tmp_path / "ours", mode) == reference


def _mock_callback_calls(pl: ModuleType, tmp_path: Any) -> list[str]:
    spy = mock.Mock(spec=pl.Callback)
    trainer = pl.Trainer(callbacks=[spy], **quiet_trainer_kwargs(tmp_path, max_steps=2, limit_val_batches=1))
    trainer.fit(_demos(pl).BoringModel())
    return [call[0] for call in spy.method_calls if call[0] not in ("state_dict", "on_save_checkpoint")]


def test_every_hook_of_a_callback_spy_is_called_as_in_lightning(tmp_path: Any) -> None:
    # a Mock has no overridden hooks to find: Lightning calls every hook, so do we
    reference = _mock_callback_calls(reference_lightning(), tmp_path / "pl")
    assert "on_train_batch_end" in reference
    assert _mock_callback_calls(lightning_lib, tmp_path / "ours") == reference


def test_callbacks_are_ordered_as_in_lightning(tmp_path: Any) -> None:
    orders = []
    for pl in _libs():
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path)
        timer = pl.callbacks.Timer()
        trainer = pl.Trainer(
            callbacks=[checkpoint, timer],
            max_time="00:00:01:00",  # ignored: the callbacks already hold a Timer
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
        )
        orders.append(([type(cb).__name__ for cb in trainer.callbacks], trainer.callbacks[-1] is checkpoint))
        trainer.predict(_demos(pl).BoringModel(), return_predictions=False)
        assert trainer.predict_dataloaders is not None
    assert orders[0] == orders[1] == (["Timer", "ModelCheckpoint"], True)
