"""LightningModule: bad configure_optimizers / self.log / training_step outputs fail clearly; hooks see the context."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from lightning_lib.core.optimizer import LightningOptimizer
from tests.support import CountingModel, loader, sgd, trainer_kwargs


def _fit(tmp_path: Any, model: Any, **kwargs: Any) -> pl.Trainer:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, **kwargs))
    trainer.fit(model)
    return trainer


# ---- configure_optimizers ------------------------------------------------------------------------------
def _plateau_without_monitor(model: Any) -> Any:
    opt = sgd(model)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)}


def _plateau_in_lists(model: Any) -> Any:
    opt = sgd(model)
    return [opt], [torch.optim.lr_scheduler.ReduceLROnPlateau(opt)]


def _plateau_dict_without_monitor(model: Any) -> Any:
    opt = sgd(model)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)}}


def _bad_interval(model: Any) -> Any:
    opt = sgd(model)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "batch"}}


def _bad_frequency(model: Any) -> Any:
    opt = sgd(model)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "frequency": 0}}


def _scheduler_dict_without_scheduler(model: Any) -> Any:
    return {"optimizer": sgd(model), "lr_scheduler": {"interval": "step"}}


def _foreign_scheduler(model: Any) -> Any:
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return {"optimizer": sgd(model), "lr_scheduler": torch.optim.lr_scheduler.StepLR(other, 1)}


def _not_a_scheduler(model: Any) -> Any:
    return {"optimizer": sgd(model), "lr_scheduler": {"scheduler": object()}}


BAD_OPTIMIZER_CONFIGS = {
    "a string": (lambda m: "adam", "configure_optimizers` to return .*received str"),
    "a list of strings": (lambda m: ["adam"], r"configure_optimizers` to return .*received list of \[str\]"),
    "a dict without optimizer": (
        lambda m: {"lr_scheduler": None},
        r"optimizer dict to have an \"optimizer\" key, received keys \['lr_scheduler'\]",
    ),
    "a dict whose optimizer is not one": (
        lambda m: {"optimizer": "sgd"},
        "torch.optim.Optimizer.*received str",
    ),
    "a bad interval": (_bad_interval, '"interval" to be "step" or "epoch", received \'batch\''),
    "a bad frequency": (_bad_frequency, '"frequency" >= 1, received 0'),
    "a scheduler dict without scheduler": (
        _scheduler_dict_without_scheduler,
        r"\"scheduler\" key, received keys \['interval'\]",
    ),
    "ReduceLROnPlateau without monitor": (_plateau_without_monitor, "monitor for the ReduceLROnPlateau"),
    "ReduceLROnPlateau in lists": (_plateau_in_lists, "monitor for the ReduceLROnPlateau"),
    "ReduceLROnPlateau dict without monitor": (
        _plateau_dict_without_monitor,
        "monitor when a ReduceLROnPlateau",
    ),
    "two optimizers under automatic optimization": (
        lambda m: [sgd(m), sgd(m)],
        "one optimizer with automatic optimization, received 2",
    ),
    "a scheduler of a foreign optimizer": (_foreign_scheduler, "StepLR is attached to another one"),
    "a scheduler without state": (
        _not_a_scheduler,
        "lr scheduler `object` is invalid. It should have `state_dict`",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIMIZER_CONFIGS))
def test_bad_configure_optimizers_fails_before_training(tmp_path: Any, case: str) -> None:
    configure, message = BAD_OPTIMIZER_CONFIGS[case]

    class Model(CountingModel):
        def configure_optimizers(self) -> Any:
            return configure(self)

    model = Model()
    # Lightning's types: MisconfigurationException (a ValueError) or, for a scheduler without state, TypeError
    with pytest.raises((ValueError, TypeError), match=message):
        _fit(tmp_path, model)
    assert model.train_steps == 0
    assert model.trainer.global_step == 0


@pytest.mark.parametrize(
    "form",
    ["optimizer", "list", "tuple", "lists", "dict", "dict_with_config", "list_of_dicts_manual", "plateau"],
)
def test_accepted_configure_optimizers_forms(tmp_path: Any, form: str) -> None:
    class Model(CountingModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = form != "list_of_dicts_manual"

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.automatic_optimization:
                return super().training_step(batch, batch_idx)
            self.train_steps += 1
            for opt in self.optimizers():
                opt.zero_grad()
            self.manual_backward(self(batch).sum())
            for opt in self.optimizers():
                opt.step()
            return None

        def configure_optimizers(self) -> Any:
            opt = sgd(self)
            sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
            return {
                "optimizer": opt,
                "list": [opt],
                "tuple": (opt,),
                "lists": ([opt], [sched]),
                "dict": {"optimizer": opt, "lr_scheduler": sched},
                "dict_with_config": {
                    "optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1, "name": "s"},
                },
                "list_of_dicts_manual": [
                    {"optimizer": opt},
                    {"optimizer": torch.optim.Adam(self.parameters())},
                ],
                "plateau": {
                    "optimizer": opt,
                    "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
                    "monitor": "train_loss",
                },
            }[form]

    model = Model()
    trainer = _fit(tmp_path, model)
    assert model.train_steps == 2
    assert trainer.global_step == (4 if form == "list_of_dicts_manual" else 2)
    if form == "dict_with_config":
        (config,) = trainer.lr_scheduler_configs
        assert (config.interval, config.name) == ("step", "s")
        assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
    if form == "plateau":
        assert trainer.lr_scheduler_configs[0].monitor == "train_loss"
        assert trainer.lr_scheduler_configs[0].reduce_on_plateau


def test_configure_optimizers_returning_none_warns_and_trains_without_stepping(tmp_path: Any) -> None:
    class Model(CountingModel):
        def configure_optimizers(self) -> Any:
            return None

    model = Model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match=r"without an optimizer"):
        _fit(tmp_path, model)
    assert model.train_steps == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---- missing pieces ------------------------------------------------------------------------------------
def test_missing_training_step_or_configure_optimizers(tmp_path: Any) -> None:
    class NoStep(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(32, 2)

        def configure_optimizers(self) -> Any:
            return sgd(self)

    class NoOptim(CountingModel):
        configure_optimizers = pl.LightningModule.configure_optimizers

    with pytest.raises(ValueError, match=r"implement `training_step` for `trainer.fit`"):
        _fit(tmp_path, NoStep())
    no_optim = NoOptim()
    with pytest.raises(ValueError, match=r"implement `configure_optimizers` for `trainer.fit`"):
        _fit(tmp_path, no_optim)
    assert no_optim.train_steps == 0


def test_fit_without_a_train_dataloader(tmp_path: Any) -> None:
    class NoData(CountingModel):
        train_dataloader = pl.LightningModule.train_dataloader

    model = NoData()
    with pytest.raises(ValueError, match=r"Expected a train dataloader for `trainer.fit`.*received none"):
        _fit(tmp_path, model)
    assert model.train_steps == 0


def test_fit_with_a_non_iterable_train_dataloader(tmp_path: Any) -> None:
    model = CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(TypeError, match=r"iterable such as a torch DataLoader, received int"):
        trainer.fit(model, 3)
    assert model.train_steps == 0


def test_fit_with_something_that_is_not_a_lightning_module(tmp_path: Any) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(TypeError, match=r"LightningModule, received Linear"):
        trainer.fit(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kwargs", [{"accumulate_grad_batches": 2}, {"gradient_clip_val": 1.0}])
def test_manual_optimization_refuses_trainer_accumulation_and_clipping(tmp_path: Any, kwargs: Any) -> None:
    class Manual(CountingModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

    model = Manual()
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"manual optimization.*{name}={kwargs[name]}"):
        _fit(tmp_path, model, **kwargs)
    assert model.train_steps == 0


# ---- training_step outputs -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"x": 1}, r"the 'loss' key needs to be present; received keys \['x'\]"),
        ("loss", r"must return a Tensor, a dict, or None \(where the step will be skipped\); received str"),
        (3.0, "received float"),
    ],
)
def test_bad_training_step_output_fails_at_the_first_step(tmp_path: Any, output: Any, message: str) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.train_steps += 1
            self(batch).sum().backward()
            return output

    model = Model()
    with pytest.raises(ValueError, match=message):
        _fit(tmp_path, model)
    assert model.train_steps == 1
    assert model.trainer.global_step == 0


def test_training_step_returning_none_skips_the_optimizer_step(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx == 0:
                self.before = [p.detach().clone() for p in self.parameters()]
                return None
            if batch_idx == 1:
                # the skipped batch changed nothing
                assert all(torch.equal(a, b) for a, b in zip(self.before, self.parameters()))
            return super().training_step(batch, batch_idx)

    model = Model()
    trainer = _fit(tmp_path, model, limit_train_batches=3)
    assert model.train_steps == 2
    assert trainer.global_step == 3  # as in Lightning, the optimizer_step call is still counted


# ---- self.log ------------------------------------------------------------------------------------------
class _LogIn(CountingModel):
    """Logs ``value`` with ``options`` from the hook named ``hook``."""

    def __init__(self, hook: str, value: Any = 1.0, **options: Any) -> None:
        super().__init__()
        self.hook, self.value, self.options = hook, value, options

    def _maybe_log(self, hook: str) -> None:
        if hook == self.hook:
            self.log("metric", self.value, **self.options)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self._maybe_log("training_step")
        return super().training_step(batch, batch_idx)

    def on_fit_start(self) -> None:
        self._maybe_log("on_fit_start")

    def on_train_epoch_end(self) -> None:
        self._maybe_log("on_train_epoch_end")

    def configure_optimizers(self) -> Any:
        self._maybe_log("configure_optimizers")
        return super().configure_optimizers()

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self._maybe_log("predict_step")
        return self(batch)

    def on_validation_end(self) -> None:
        self._maybe_log("on_validation_end")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (torch.ones(3), r"tensor must have a single element, received shape \(3,\)"),
        (torch.ones(2, 2), r"single element, received shape \(2, 2\)"),
        ({"a": 1.0}, r"`dict` values cannot be logged: expected a number.*use `self.log_dict`"),
        ({"a": {"b": 1.0}}, "nested dictionaries cannot be logged"),
        ("abc", r"self.log\(metric, abc\)` was called, but `str` values cannot be logged: expected a number"),
        ([1.0], "`list` values cannot be logged"),
        (None, "`NoneType` values cannot be logged"),
    ],
)
def test_log_refuses_bad_values(tmp_path: Any, value: Any, message: str) -> None:
    model = _LogIn("training_step", value)
    with pytest.raises(ValueError, match=message):
        _fit(tmp_path, model)
    assert model.train_steps == 0  # the log call comes before the step counter in training_step
    assert model.trainer.global_step == 0


def test_log_accepts_scalars_of_every_shape_and_dtype(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("one_elem", torch.tensor([2.0]))
            self.log("int_tensor", torch.tensor(3))
            self.log("half", torch.tensor(1.5, dtype=torch.float16))
            self.log("py_int", 4)
            self.log("nan_tensor", torch.tensor(float("nan")))
            # Lightning logs a float NaN or infinity as it is (a diverging loss must stay visible)
            self.log("nan_float", float("nan"))
            self.log("inf_float", -math.inf)
            return super().training_step(batch, batch_idx)

    with pytest.warns(UserWarning, match=r"received a torch.int64 tensor; it is converted to torch.float32"):
        trainer = _fit(tmp_path, Model())
    metrics = trainer.callback_metrics
    assert float(metrics["one_elem"]) == 2.0 and metrics["one_elem"].shape == ()
    assert metrics["int_tensor"].dtype == torch.float32 and float(metrics["int_tensor"]) == 3.0
    assert metrics["half"].dtype == torch.float32
    assert float(metrics["py_int"]) == 4.0
    assert math.isnan(float(metrics["nan_tensor"]))
    assert math.isnan(float(metrics["nan_float"]))
    assert float(metrics["inf_float"]) == -math.inf


@pytest.mark.parametrize(
    "hook", ["on_fit_start", "configure_optimizers", "predict_step", "on_validation_end"]
)
def test_log_is_refused_where_lightning_forbids_it(tmp_path: Any, hook: str) -> None:
    model = _LogIn(hook)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=rf"You can't `self.log\('metric', ...\)` inside `{hook}`"):
        if hook == "predict_step":
            trainer.predict(model, loader(4))
        elif hook == "on_validation_end":
            trainer.validate(model, loader(4), verbose=False)
        else:
            trainer.fit(model)
    assert model.train_steps == 0


@pytest.mark.parametrize(
    ("hook", "options", "message"),
    [
        ("on_train_epoch_end", {"on_step": True}, "on_step=True\\)` inside `on_train_epoch_end`"),
        ("on_train_epoch_end", {"on_epoch": False}, "on_epoch=False\\)` inside `on_train_epoch_end`"),
        (
            "training_step",
            {"reduce_fx": "median"},
            r"reduce_fx=\{min,max,mean,sum\}\)` are supported.*'median'",
        ),
        ("training_step", {"reduce_fx": lambda x: x}, r"reduce_fx=\{min,max,mean,sum\}\)` are.*function"),
        ("training_step", {"on_step": False, "on_epoch": False}, r"on_epoch=False\)` is not useful"),
        ("training_step", {"batch_size": 0}, "batch_size=...\\)` >= 1, received 0"),
    ],
)
def test_log_refuses_bad_options(tmp_path: Any, hook: str, options: dict[str, Any], message: str) -> None:
    model = _LogIn(hook, **options)
    with pytest.raises(ValueError, match=message):
        _fit(tmp_path, model)
    # epoch-end hooks only run after the epoch's batches; step hooks fail on the first batch
    assert model.train_steps == (2 if hook == "on_train_epoch_end" else 0)


def test_log_name_with_a_dataloader_suffix_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"without '/dataloader_idx_', received 'a/dataloader_idx_0'"):

        class Model(CountingModel):
            def training_step(self, batch: Any, batch_idx: int) -> Any:
                self.log("a/dataloader_idx_0", 1.0)
                return super().training_step(batch, batch_idx)

        _fit(tmp_path, Model())


def test_log_same_name_twice_with_different_options(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("a", 1.0)
            self.log("a", 2.0, prog_bar=True)
            return super().training_step(batch, batch_idx)

    model = Model()
    with pytest.raises(
        ValueError, match=r"`self.log\(a, ...\)` twice in `training_step` with different arguments"
    ):
        _fit(tmp_path, model)
    assert model.train_steps == 0


def test_log_options_changing_between_batches_is_refused(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("a", 1.0, on_epoch=batch_idx == 0)
            return super().training_step(batch, batch_idx)

    model = Model()
    with pytest.raises(ValueError, match=r"twice in `training_step` with different arguments"):
        _fit(tmp_path, model)
    assert model.train_steps == 1


def test_log_same_name_from_two_hooks_is_allowed(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("a", 1.0)
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.log("a", 3.0, on_epoch=True)

    trainer = _fit(tmp_path, Model())
    assert float(trainer.callback_metrics["a"]) == 3.0


def test_log_without_a_trainer_warns_and_is_ignored() -> None:
    model = CountingModel()
    with pytest.warns(UserWarning, match=r"`self.trainer` reference is not registered on the model yet"):
        model.log("a", 1.0)


def test_log_dict_logs_every_item(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log_dict({"a": 1.0, "b": torch.tensor(2.0)}, prog_bar=True)
            return super().training_step(batch, batch_idx)

    trainer = _fit(tmp_path, Model())
    assert {"a", "b"} <= set(trainer.progress_bar_metrics)


# ---- what hooks can read ---------------------------------------------------------------------------------
def test_trainer_context_inside_hooks(tmp_path: Any) -> None:
    class Model(CountingModel):
        def __init__(self) -> None:
            super().__init__()
            self.record: list[tuple[str, int, int]] = []

        def on_train_epoch_start(self) -> None:
            assert self.trainer.lightning_module is self
            assert self.device == torch.device("cpu")
            assert self.trainer.training and not self.trainer.validating
            self.record.append(("epoch_start", self.current_epoch, self.global_step))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.record.append(("step", self.current_epoch, self.global_step))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            assert self.trainer.validating and not self.training
            self.record.append(("val", self.current_epoch, self.global_step))
            return super().validation_step(batch, batch_idx)

    model = Model()
    with pytest.raises(RuntimeError, match=r"not attached to a `Trainer`"):
        _ = model.trainer
    assert (model.current_epoch, model.global_step) == (0, 0)
    trainer = _fit(tmp_path, model, max_epochs=2)
    assert model.record == [
        ("epoch_start", 0, 0),
        ("step", 0, 0),
        ("step", 0, 1),
        ("val", 0, 2),
        ("epoch_start", 1, 2),
        ("step", 1, 2),
        ("step", 1, 3),
        ("val", 1, 4),
    ]
    assert model.trainer is trainer
    assert (model.current_epoch, model.global_step) == (2, 4)
    assert model.training  # back in train mode after validation


def test_print_only_on_global_zero(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    model = CountingModel()
    model.print("before attach")
    trainer = _fit(tmp_path, model)
    model.print("rank zero", end="!")
    trainer.print("trainer too")
    monkeypatch.setattr(pl.Trainer, "is_global_zero", property(lambda self: False))
    model.print("other rank")
    trainer.print("other rank")
    out = capsys.readouterr().out
    assert "before attach" in out and "rank zero!" in out and "trainer too" in out
    assert "other rank" not in out


# ---- optimizers ----------------------------------------------------------------------------------------
class _TwoOptimizers(CountingModel):
    def __init__(self) -> None:
        super().__init__()
        self.other = torch.nn.Linear(2, 2)
        self.automatic_optimization = False
        self.frozen_seen: list[tuple[bool, bool]] = []

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        opt_a, opt_b = self.optimizers()
        self.toggle_optimizer(opt_a)
        self.frozen_seen.append((self.layer.weight.requires_grad, self.other.weight.requires_grad))
        loss = self.other(self(batch)).sum()
        opt_a.zero_grad()
        self.manual_backward(loss)
        assert self.other.weight.grad is None  # frozen: no gradient for the other optimizer's params
        opt_a.step()
        self.untoggle_optimizer(opt_a)
        self.frozen_seen.append((self.layer.weight.requires_grad, self.other.weight.requires_grad))
        with self.toggled_optimizer(opt_b):
            self.frozen_seen.append((self.layer.weight.requires_grad, self.other.weight.requires_grad))
        return loss

    def configure_optimizers(self) -> Any:
        return [sgd(self.layer), sgd(self.other)]


def test_toggle_and_untoggle_optimizer(tmp_path: Any) -> None:
    model = _TwoOptimizers()
    model.other.bias.requires_grad = False  # a user's own freeze survives the toggling
    trainer = _fit(tmp_path, model, limit_train_batches=1)
    assert model.frozen_seen == [(True, False), (True, True), (False, True)]
    assert model.other.bias.requires_grad is False
    assert trainer.global_step == 1  # one manual step() call


def test_optimizers_and_lr_schedulers_accessors(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            opt = self.optimizers()
            assert isinstance(opt, LightningOptimizer)
            assert opt.optimizer is self.trainer.optimizers[0]
            assert self.optimizers(use_pl_optimizer=False) is self.trainer.optimizers[0]
            assert isinstance(self.lr_schedulers(), torch.optim.lr_scheduler.StepLR)
            return super().training_step(batch, batch_idx)

        def configure_optimizers(self) -> Any:
            opt = sgd(self)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    model = Model()
    _fit(tmp_path, model)
    assert model.train_steps == 2


def test_manual_backward_needs_manual_optimization(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.manual_backward(self(batch).sum())
            return None

    with pytest.raises(RuntimeError, match=r"manual_backward` can only be used with manual optimization"):
        _fit(tmp_path, Model())


def test_freeze_and_unfreeze() -> None:
    model = CountingModel()
    model.freeze()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.unfreeze()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_device_and_dtype_follow_the_parameters() -> None:
    model = CountingModel()
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    model.double()
    assert model.dtype == torch.float64

    class Empty(pl.LightningModule):
        pass

    assert Empty().device == torch.device("cpu")
    assert Empty().dtype == torch.get_default_dtype()


def test_predict_step_default_calls_forward(tmp_path: Any) -> None:
    model = CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    predictions = trainer.predict(model, DataLoader(torch.ones(4, 32), batch_size=2))
    assert predictions is not None and len(predictions) == 2
    torch.testing.assert_close(predictions[0], model(torch.ones(2, 32)))


def test_manual_training_step_returns_a_tensor_or_nothing(tmp_path: Any) -> None:
    from lightning_lib.demos.boring_classes import ManualOptimBoringModel

    class Returns5(ManualOptimBoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            super().training_step(batch, batch_idx)
            return 5

    with pytest.raises(ValueError, match=r"must either return a Tensor or have no return; received int"):
        _fit(tmp_path, Returns5())


def test_skipping_a_step_is_refused_with_several_processes(tmp_path: Any) -> None:
    class Skips(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return None

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    trainer.strategy.world_size = 2  # poses as a two-process run, as Lightning's own test does
    with pytest.raises(RuntimeError, match="Skipping the `training_step` by returning None in distributed"):
        trainer.fit(Skips())
