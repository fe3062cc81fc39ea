"""LearningRateMonitor: names, intervals and the log_every_n_steps rule, on a fake trainer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from lightning_lib.callbacks.lr_monitor import LearningRateMonitor


class _Logger:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append((dict(metrics), step))


def _config(scheduler: Any, name: str | None = None, interval: str = "epoch") -> SimpleNamespace:
    return SimpleNamespace(scheduler=scheduler, name=name, interval=interval, frequency=1)


def fake_trainer(optimizers: list[Any], configs: list[Any], log_every_n_steps: int = 1) -> SimpleNamespace:
    logger = _Logger()
    trainer = SimpleNamespace(
        loggers=[logger],
        optimizers=optimizers,
        lr_scheduler_configs=configs,
        log_every_n_steps=log_every_n_steps,
        should_stop=False,
        callback_metrics={},
        progress=SimpleNamespace(batches_that_stepped=0),
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    # What Lightning's own callback reads, so the parity tests can drive both with one object.
    trainer.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=0))
    trainer._logger_connector = SimpleNamespace(should_update_logs=True)
    return trainer


def _params(n: int = 1) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(1)) for _ in range(n)]


def _setups() -> dict[str, Any]:
    """Optimizer/scheduler layouts that exercise every naming rule."""

    def single() -> tuple[list[Any], list[Any]]:
        return [torch.optim.Adam(_params(), lr=0.1)], []

    def two_same_type() -> tuple[list[Any], list[Any]]:
        return [torch.optim.Adam(_params(), lr=0.1), torch.optim.Adam(_params(), lr=0.2)], []

    def param_groups() -> tuple[list[Any], list[Any]]:
        opt = torch.optim.SGD([{"params": _params()}, {"params": _params(), "lr": 0.5}], lr=0.1, momentum=0.9)
        return [opt], [_config(torch.optim.lr_scheduler.StepLR(opt, 1), interval="step")]

    def named() -> tuple[list[Any], list[Any]]:
        opt1 = torch.optim.Adam([{"params": _params(), "name": "enc"}], lr=0.1, weight_decay=0.01)
        opt2 = torch.optim.Adam(_params(), lr=0.3)
        opt3 = torch.optim.SGD(_params(), lr=0.2)
        configs = [
            _config(torch.optim.lr_scheduler.StepLR(opt1, 1), name="my_lr"),
            _config(torch.optim.lr_scheduler.StepLR(opt2, 1), interval="step"),
        ]
        return [opt1, opt2, opt3], configs

    def mixed() -> tuple[list[Any], list[Any]]:
        opts = [torch.optim.Adam(_params(), lr=0.1), torch.optim.Adam(_params(), lr=0.2)]
        opts.append(torch.optim.Adam(_params(), lr=0.3))
        configs = [
            _config(torch.optim.lr_scheduler.StepLR(opts[1], 1)),
            _config(torch.optim.lr_scheduler.StepLR(opts[2], 1), "n"),
        ]
        return opts, configs

    return {
        "single": single,
        "two_same_type": two_same_type,
        "param_groups": param_groups,
        "named": named,
        "mixed": mixed,
    }


def _drive(cb: Any, trainer: Any) -> list[tuple[dict[str, float], int]]:
    cb.on_train_start(trainer, None)
    cb.on_train_epoch_start(trainer, None)
    for step in range(3):
        trainer.progress.batches_that_stepped = trainer.fit_loop.epoch_loop._batches_that_stepped = step
        cb.on_train_batch_start(trainer, None, None, step)
    return trainer.loggers[0].calls


def test_names_and_values() -> None:
    opts, configs = _setups()["named"]()
    trainer = fake_trainer(opts, configs)
    cb = LearningRateMonitor(log_weight_decay=True)
    calls = _drive(cb, trainer)
    assert set(cb.lrs) == {"my_lr/enc", "lr-Adam", "lr-SGD"}
    # epoch start: the epoch-interval scheduler and the unscheduled optimizer
    assert calls[0] == (
        {"my_lr/enc": 0.1, "my_lr/enc-weight_decay": 0.01, "lr-SGD": 0.2, "lr-SGD-weight_decay": 0},
        0,
    )
    # steps: the step-interval scheduler and the unscheduled optimizer
    assert calls[1] == (
        {"lr-Adam": 0.3, "lr-Adam-weight_decay": 0, "lr-SGD": 0.2, "lr-SGD-weight_decay": 0},
        0,
    )
    assert [step for _, step in calls[1:]] == [0, 1, 2]
    assert trainer.callback_metrics["lr-SGD"].item() == pytest.approx(0.2)


def test_param_groups_and_momentum() -> None:
    opts, configs = _setups()["param_groups"]()
    cb = LearningRateMonitor(logging_interval="step", log_momentum=True)
    calls = _drive(cb, fake_trainer(opts, configs))
    assert calls[0][0] == {
        "lr-SGD/pg1": 0.1,
        "lr-SGD/pg1-momentum": 0.9,
        "lr-SGD/pg2": 0.5,
        "lr-SGD/pg2-momentum": 0.9,
    }
    assert len(calls) == 3  # "step" interval: nothing at epoch start
    assert cb.lrs["lr-SGD/pg2"] == [0.5, 0.5, 0.5]


def test_momentum_uses_betas_and_warns_without_momentum() -> None:
    opts, _ = _setups()["two_same_type"]()
    cb = LearningRateMonitor(logging_interval="epoch", log_momentum=True)
    calls = _drive(cb, fake_trainer(opts, []))
    assert calls == [
        ({"lr-Adam": 0.1, "lr-Adam-momentum": 0.9, "lr-Adam-1": 0.2, "lr-Adam-1-momentum": 0.9}, 0)
    ]
    with pytest.warns(RuntimeWarning, match="some optimizers do not have momentum"):
        LearningRateMonitor(log_momentum=True).on_train_start(
            fake_trainer([torch.optim.Adagrad(_params())], []), None
        )


def test_log_every_n_steps_rule() -> None:
    opts, _ = _setups()["single"]()
    trainer = fake_trainer(opts, [], log_every_n_steps=2)
    cb = LearningRateMonitor(logging_interval="step")
    cb.on_train_start(trainer, None)
    for step in range(6):
        trainer.progress.batches_that_stepped = step
        cb.on_train_batch_start(trainer, None, None, step)
    # logged when (batches_that_stepped + 1) % 2 == 0
    assert [step for _, step in trainer.loggers[0].calls] == [1, 3, 5]
    trainer.should_stop = True
    trainer.progress.batches_that_stepped = 6
    cb.on_train_batch_start(trainer, None, None, 6)
    assert trainer.loggers[0].calls[-1][1] == 6
    trainer.log_every_n_steps = 0
    cb.on_train_batch_start(trainer, None, None, 7)
    assert len(trainer.loggers[0].calls) == 4


def test_errors() -> None:
    with pytest.raises(ValueError, match="logging_interval should be `step` or `epoch` or `None`"):
        LearningRateMonitor(logging_interval="batch")  # type: ignore[arg-type]
    trainer = fake_trainer([], [])
    trainer.loggers = []
    with pytest.raises(
        ValueError, match="Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger"
    ):
        LearningRateMonitor().on_train_start(trainer, None)
    opt = torch.optim.SGD([{"params": _params(), "name": "a"}, {"params": _params(), "name": "a"}], lr=0.1)
    with pytest.raises(ValueError, match="duplicated parameter group names"):
        LearningRateMonitor().on_train_start(fake_trainer([opt], []), None)


def test_param_group_added_mid_training_keeps_history() -> None:
    opt = torch.optim.SGD(_params(), lr=0.1)
    trainer = fake_trainer([opt], [])
    cb = LearningRateMonitor(logging_interval="epoch")
    cb.on_train_start(trainer, None)
    cb.on_train_epoch_start(trainer, None)
    opt.add_param_group({"params": _params(), "lr": 0.2})
    cb.on_train_epoch_start(trainer, None)
    assert cb.lrs == {"lr-SGD/pg1": [0.1, 0.1], "lr-SGD/pg2": [0.2]}


@pytest.mark.parity
@pytest.mark.parametrize("layout", sorted(_setups()))
@pytest.mark.parametrize("interval", [None, "step", "epoch"])
def test_parity_with_lightning(layout: str, interval: str | None) -> None:
    pl_callbacks = pytest.importorskip("pytorch_lightning.callbacks")
    results = []
    for cls in (LearningRateMonitor, pl_callbacks.LearningRateMonitor):
        opts, configs = _setups()[layout]()
        cb = cls(logging_interval=interval, log_momentum=True, log_weight_decay=True)
        calls = _drive(cb, fake_trainer(opts, configs))
        results.append((calls, dict(cb.lrs), dict(cb.last_momentum_values)))
    assert results[0] == results[1]


# ---- with the real Trainer ------------------------------------------------------------------------------


def _recording_logger(pl: Any) -> Any:
    class RecordingLogger(pl.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[int | None, dict[str, float]]] = []

        @property
        def name(self) -> str:
            return "rec"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.calls.append((step, dict(metrics)))

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    return RecordingLogger()


def _scheduled_model(pl: Any) -> Any:
    from tests.helpers import make_classes

    base = make_classes(pl)["ClassifierModel"]

    class Scheduled(base):  # type: ignore[misc, valid-type]
        def configure_optimizers(self) -> Any:
            first = torch.optim.SGD(
                [{"params": self.net[0].parameters()}, {"params": self.net[3].parameters(), "lr": 0.05}],
                lr=0.1,
                momentum=0.9,
            )
            second = torch.optim.Adam(self.net[3].parameters(), lr=0.01)
            return [first, second], [
                {"scheduler": torch.optim.lr_scheduler.StepLR(first, 3, gamma=0.5), "interval": "step"},
                {"scheduler": torch.optim.lr_scheduler.ExponentialLR(second, 0.9), "name": "head_lr"},
            ]

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            opt_a, opt_b = self.optimizers()
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y)
            opt_a.zero_grad()
            opt_b.zero_grad()
            self.manual_backward(loss)
            opt_a.step()
            opt_b.step()
            sched_a, sched_b = self.lr_schedulers()
            sched_a.step()
            if self.trainer.is_last_batch:
                sched_b.step()
            return loss

        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

    return Scheduled()


def _simple_model(pl: Any) -> Any:
    from tests.helpers import make_classes

    base = make_classes(pl)["ClassifierModel"]

    class Simple(base):  # type: ignore[misc, valid-type]
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.5)
            sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Simple()


def _fit_lr(pl: Any, tmp_path: Any, model_fn: Any, interval: str | None) -> tuple[Any, list[Any]]:
    from tests.helpers import make_classes, quiet_trainer_kwargs

    pl.seed_everything(3)
    logger = _recording_logger(pl)
    monitor = pl.callbacks.LearningRateMonitor(
        logging_interval=interval, log_momentum=True, log_weight_decay=True
    )
    kwargs = quiet_trainer_kwargs(
        tmp_path, max_epochs=2, logger=logger, log_every_n_steps=3, callbacks=[monitor], limit_train_batches=7
    )
    trainer = pl.Trainer(**kwargs)
    trainer.fit(model_fn(pl), datamodule=make_classes(pl)["ClassifierDataModule"]())
    lr_calls = [(step, m) for step, m in logger.calls if any(k.startswith(("lr-", "head_lr")) for k in m)]
    return monitor, lr_calls


def test_fit_logs_learning_rates(tmp_path: Any) -> None:
    import lightning_lib

    monitor, calls = _fit_lr(lightning_lib, tmp_path, _simple_model, "step")
    assert set(monitor.lrs) == {"lr-SGD"}
    # 7 batches per epoch, log_every_n_steps=3: logged before the 3rd and 6th batch of each epoch
    assert [step for step, _ in calls] == [2, 5, 8, 11]
    assert calls[0][1] == {
        "lr-SGD": pytest.approx(0.1 * 0.5**2),
        "lr-SGD-momentum": 0.5,
        "lr-SGD-weight_decay": 0,
    }


def test_fit_without_logger_raises(tmp_path: Any) -> None:
    import lightning_lib
    from tests.helpers import make_classes, quiet_trainer_kwargs

    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, callbacks=[LearningRateMonitor()])
    )
    classes = make_classes(lightning_lib)
    with pytest.raises(ValueError, match="that has no logger"):
        trainer.fit(classes["ClassifierModel"](), datamodule=classes["ClassifierDataModule"]())


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:You have set log_momentum=True")  # Adam + SGD: both libraries warn
@pytest.mark.parametrize("model", ["simple", "scheduled"])
@pytest.mark.parametrize("interval", [None, "step", "epoch"])
def test_fit_parity_with_lightning(tmp_path: Any, model: str, interval: str | None) -> None:
    import lightning_lib

    reference = pytest.importorskip("pytorch_lightning")
    model_fn = _simple_model if model == "simple" else _scheduled_model
    ours, our_calls = _fit_lr(lightning_lib, tmp_path / "ours", model_fn, interval)
    theirs, their_calls = _fit_lr(reference, tmp_path / "theirs", model_fn, interval)
    assert our_calls == their_calls
    assert ours.lrs == theirs.lrs
    assert ours.last_momentum_values == theirs.last_momentum_values
