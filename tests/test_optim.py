"""configure_optimizers parsing, LightningOptimizer, scheduler stepping, accumulation and clipping."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import lightning_lib as pl
from lightning_lib.core.optimizer import LightningOptimizer, LRSchedulerConfig, parse_optimizers
from tests.support import CountingModel, trainer_kwargs


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(2))]


def test_parse_every_accepted_form() -> None:
    a, b = torch.optim.SGD(_params(), lr=0.1), torch.optim.Adam(_params())
    sched = torch.optim.lr_scheduler.StepLR(a, 1)
    assert parse_optimizers(a) == ([a], [])
    assert parse_optimizers([a, b]) == ([a, b], [])
    assert parse_optimizers((a,)) == ([a], [])
    opts, configs = parse_optimizers(([a], [sched]))
    assert opts == [a] and configs == [LRSchedulerConfig(sched)]
    opts, configs = parse_optimizers(([a], sched))
    assert configs[0].scheduler is sched
    opts, configs = parse_optimizers({"optimizer": a, "lr_scheduler": sched})
    assert opts == [a] and configs[0].interval == "epoch" and configs[0].frequency == 1
    opts, configs = parse_optimizers([{"optimizer": a, "lr_scheduler": sched}, {"optimizer": b}])
    assert opts == [a, b] and len(configs) == 1


def test_scheduler_config_dict_keys() -> None:
    opt = torch.optim.SGD(_params(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    _, (config,) = parse_optimizers(
        {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": plateau, "interval": "step", "frequency": 3, "strict": False},
            "monitor": "val_loss",
        }
    )
    assert config == LRSchedulerConfig(
        plateau, interval="step", frequency=3, reduce_on_plateau=True, monitor="val_loss", strict=False
    )
    _, (config,) = parse_optimizers(
        {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": plateau, "monitor": "a", "name": "p"},
            "monitor": "b",
        }
    )
    assert (config.monitor, config.name) == ("a", "p")  # the scheduler dict's own monitor wins


def test_unknown_keys_warn() -> None:
    opt = torch.optim.SGD(_params(), lr=0.1)
    with pytest.warns(RuntimeWarning, match=r"unsupported keys in the optimizer configuration: \['extra'\]"):
        parse_optimizers({"optimizer": opt, "extra": 1})
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.warns(RuntimeWarning, match=r"unsupported keys in the lr scheduler dict: \['when'\]"):
        parse_optimizers({"optimizer": opt, "lr_scheduler": {"scheduler": sched, "when": 1}})


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ("sgd", "received str"),
        ([], "received list of \\[\\]"),
        (3, "received int"),
        ({"optimizer": None}, "torch.optim.Optimizer.*received NoneType"),
    ],
)
def test_parse_rejects(conf: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_optimizers(conf)


def test_lightning_optimizer_wraps_and_forwards() -> None:
    opt = torch.optim.SGD(_params(), lr=0.1)
    wrapped = LightningOptimizer(opt, trainer=None)  # type: ignore[arg-type]
    assert wrapped.optimizer is opt
    assert wrapped.param_groups is opt.param_groups
    wrapped.defaults = {"lr": 0.5}  # attribute writes reach the optimizer
    assert opt.defaults == {"lr": 0.5}
    assert wrapped.state_dict() == opt.state_dict()
    # Lightning's wrapper derives from the optimizer's class: LightningSGD, an SGD
    assert repr(wrapped) == "Lightning" + repr(opt)
    assert isinstance(wrapped, torch.optim.SGD)


# ---- schedulers during fit -------------------------------------------------------------------------------
def _scheduled(interval: str, frequency: int) -> CountingModel:
    class Model(CountingModel):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "interval": interval, "frequency": frequency},
            }

    return Model()


@pytest.mark.parametrize(
    ("interval", "frequency", "steps"),
    [("epoch", 1, 3), ("epoch", 2, 1), ("step", 1, 12), ("step", 3, 3), ("step", 4, 3)],
)
def test_scheduler_interval_and_frequency(tmp_path: Any, interval: str, frequency: int, steps: int) -> None:
    # 3 epochs of 4 batches; a "step" scheduler counts batches within the epoch
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, max_epochs=3, limit_train_batches=4))
    trainer.fit(_scheduled(interval, frequency))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5**steps)


def test_plateau_scheduler_reads_the_monitored_metric(tmp_path: Any) -> None:
    class Model(CountingModel):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("const", 1.0)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
            return {"optimizer": opt, "lr_scheduler": sched, "monitor": "const"}

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, max_epochs=3))
    trainer.fit(Model())
    # no improvement after the first epoch: halved twice
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25)


def test_plateau_scheduler_missing_metric(tmp_path: Any) -> None:
    def model(strict: bool) -> CountingModel:
        class Model(CountingModel):
            def configure_optimizers(self) -> Any:
                opt = torch.optim.SGD(self.parameters(), lr=1.0)
                sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
                return {
                    "optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": "nope", "strict": strict},
                }

        return Model()

    with pytest.raises(ValueError, match=r"'nope' that ReduceLROnPlateau monitors to be logged.*val_loss"):
        pl.Trainer(**trainer_kwargs(tmp_path)).fit(model(strict=True))
    with pytest.warns(RuntimeWarning, match=r"monitors 'nope' which was not logged"):
        pl.Trainer(**trainer_kwargs(tmp_path)).fit(model(strict=False))


# ---- accumulation and clipping ---------------------------------------------------------------------------
def test_accumulate_grad_batches_counts_optimizer_steps(tmp_path: Any) -> None:
    steps: list[int] = []

    class Model(CountingModel):
        def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
            steps.append(self.trainer.progress.batch_idx)
            super().optimizer_step(*args, **kwargs)

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=7, accumulate_grad_batches=3))
    trainer.fit(Model())
    assert steps == [2, 5, 6]  # the last window is cut short by the end of the epoch
    assert trainer.global_step == 3


def test_accumulated_gradients_equal_one_big_batch(tmp_path: Any) -> None:
    class Model(CountingModel):
        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.seen["grad"] = self.layer.weight.grad.clone()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self(batch).sum() / batch.shape[0]

    small = Model()
    big = Model()
    big.load_state_dict(small.state_dict())
    pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=2, accumulate_grad_batches=2)).fit(small)
    from tests.support import loader

    pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=1)).fit(big, loader(4, batch_size=4))
    torch.testing.assert_close(small.seen["grad"], big.seen["grad"])


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping(tmp_path: Any, algorithm: str) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self(batch).sum() * 1000

        def optimizer_step(
            self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
        ) -> None:
            def closure() -> Any:
                out = optimizer_closure()
                grads = [p.grad for p in self.parameters()]
                if algorithm == "norm":
                    self.seen["size"] = float(
                        torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
                    )
                else:
                    self.seen["size"] = max(float(g.abs().max()) for g in grads)
                return out

            # Lightning clips after the closure, before the step; the step sees clipped gradients
            optimizer.step(closure=closure)
            grads = [p.grad for p in self.parameters()]
            if algorithm == "norm":
                self.seen["after"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            else:
                self.seen["after"] = max(float(g.abs().max()) for g in grads)

    model = Model()
    pl.Trainer(
        **trainer_kwargs(
            tmp_path, limit_train_batches=1, gradient_clip_val=0.5, gradient_clip_algorithm=algorithm
        )
    ).fit(model)
    assert model.seen["size"] > 0.5
    assert model.seen["after"] == pytest.approx(0.5, rel=1e-4)


def test_clip_gradients_conflicting_with_the_trainer(tmp_path: Any) -> None:
    class Model(CountingModel):
        def configure_gradient_clipping(
            self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
        ) -> None:
            self.clip_gradients(optimizer, gradient_clip_val=2.0, gradient_clip_algorithm="value")

    model = Model()
    with pytest.raises(
        ValueError,
        match=r"one gradient_clip_val, received Trainer\(gradient_clip_val=1.0\) and clip_gradients\(gradient_clip_val=2.0\)",
    ):
        pl.Trainer(**trainer_kwargs(tmp_path, gradient_clip_val=1.0)).fit(model)
    assert model.trainer.global_step == 0


def test_clip_gradients_bad_algorithm(tmp_path: Any) -> None:
    class Model(CountingModel):
        def configure_gradient_clipping(
            self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
        ) -> None:
            self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="l3")

    with pytest.raises(ValueError, match=r"gradient_clip_algorithm 'norm' or 'value', received 'l3'"):
        pl.Trainer(**trainer_kwargs(tmp_path)).fit(Model())


def test_manual_optimization_counts_each_step_call(tmp_path: Any) -> None:
    class Manual(CountingModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            opt = self.optimizers()
            loss = self(batch).sum()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            opt.step()
            return loss

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=3))
    trainer.fit(Manual())
    assert trainer.global_step == 6


def test_manual_optimization_keeps_its_schedulers_as_given() -> None:
    layer = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    # the user steps them: a plateau scheduler needs no monitor, and stepping keys are ignored with a warning
    _, (bare,) = parse_optimizers(([opt], [plateau]), automatic=False)
    assert bare.scheduler is plateau and not bare.reduce_on_plateau
    with pytest.warns(RuntimeWarning, match=r"\['monitor'\], but the keys will be ignored"):
        _, (config,) = parse_optimizers(
            {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "x", "interval": "step"}},
            automatic=False,
        )
    assert (config.interval, config.monitor, config.reduce_on_plateau) == ("step", None, False)


def test_schedulers_the_trainer_steps_must_follow_torch_s_api() -> None:
    class Custom:
        def __init__(self, optimizer: Any) -> None:
            self.optimizer = optimizer

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            return None

    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="`Custom` doesn't follow PyTorch's LRScheduler API"):
        parse_optimizers(([opt], [Custom(opt)]))
    # stepped by the module's own lr_scheduler_step, or by the user under manual optimization: accepted
    assert (
        parse_optimizers(([opt], [Custom(opt)]), custom_scheduler_step=True)[1][0].scheduler.optimizer is opt
    )
    assert len(parse_optimizers(([opt], [Custom(opt)]), automatic=False)[1]) == 1
    with pytest.raises(TypeError, match="should have `state_dict` and `load_state_dict`"):
        parse_optimizers(([opt], [object()]), automatic=False)
