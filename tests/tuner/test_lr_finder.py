"""The learning rate finder: the Tuner's ``lr_find`` and the ``LearningRateFinder`` callback.

The parity tests run the same range test on pytorch_lightning and on lightning_lib and compare the
learning rates tried, the losses recorded, the suggestion and what the model and Trainer look like after.
"""

from __future__ import annotations

import importlib
import logging
import math
from types import ModuleType
from typing import Any

import pytest
import torch

import lightning_lib
from lightning_lib.callbacks import LearningRateFinder
from lightning_lib.demos.boring_classes import BoringModel
from lightning_lib.tuner import Tuner
from lightning_lib.tuner.lr_finder import _LRFinder
from lightning_lib.utilities.exceptions import MisconfigurationException
from tests.helpers import quiet_trainer_kwargs, reference_lightning


def _model_class(pl: ModuleType) -> type:
    demos = importlib.import_module(f"{pl.__name__}.demos.boring_classes")

    class LrModel(demos.BoringModel):  # type: ignore[name-defined,misc]
        def __init__(self, lr: float = 0.01) -> None:
            super().__init__()
            self.save_hyperparameters()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    return LrModel


def _tuner(pl: ModuleType) -> Any:
    return importlib.import_module(f"{pl.__name__}.tuner").Tuner


def _range_test(pl: ModuleType, tmp_path: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
    pl.seed_everything(1, verbose=False)
    model = _model_class(pl)()
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=3))
    finder = _tuner(pl)(trainer).lr_find(model, **kwargs)
    return finder, model, trainer


@pytest.mark.parity
@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_training": 50},
        {"num_training": 30, "mode": "linear", "early_stop_threshold": None},
        {"min_lr": 1e-5, "max_lr": 10.0, "num_training": 40},
    ],
)
def test_lr_find_records_and_suggests_what_lightning_does(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    expected, reference_model, _ = _range_test(reference_lightning(), tmp_path / "pl", **kwargs)
    found, model, trainer = _range_test(lightning_lib, tmp_path / "ours", **kwargs)
    assert found.results["lr"] == pytest.approx(expected.results["lr"])
    assert found.results["loss"] == pytest.approx(expected.results["loss"], nan_ok=True)
    assert found.suggestion() == pytest.approx(expected.suggestion())
    assert model.hparams.lr == pytest.approx(reference_model.hparams.lr)
    assert found._total_batch_idx == expected._total_batch_idx
    assert trainer.global_step == 0 and trainer.current_epoch == 0
    # nothing written: no temporary checkpoint (the state is kept in memory)
    assert not (tmp_path / "ours").exists()


@pytest.mark.parity
def test_the_callback_applies_the_suggestion_and_trains_on_like_lightning(tmp_path: Any) -> None:
    def run(pl: ModuleType, root: Any) -> tuple[Any, Any, Any]:
        pl.seed_everything(1, verbose=False)
        model = _model_class(pl)()
        finder = pl.callbacks.LearningRateFinder(num_training_steps=20)
        trainer = pl.Trainer(
            **quiet_trainer_kwargs(root, max_epochs=2, limit_val_batches=2, callbacks=[finder])
        )
        trainer.fit(model)
        return model, trainer, finder

    reference, reference_trainer, reference_finder = run(reference_lightning(), tmp_path / "pl")
    model, trainer, finder = run(lightning_lib, tmp_path / "ours")
    assert finder.optimal_lr.suggestion() == pytest.approx(reference_finder.optimal_lr.suggestion())
    assert model.hparams.lr == pytest.approx(reference.hparams.lr)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(finder.optimal_lr.suggestion())
    assert trainer.global_step == reference_trainer.global_step
    assert trainer.num_val_batches == reference_trainer.num_val_batches == [2]
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)


def test_the_model_and_trainer_are_put_back(tmp_path: Any) -> None:
    model = BoringModel()
    model.lr = 0.1
    trainer = lightning_lib.Trainer(default_root_dir=tmp_path, max_epochs=1)
    names = [
        "accumulate_grad_batches",
        "callbacks",
        "checkpoint_callback",
        "loggers",
        "global_step",
        "max_steps",
    ]
    before = {name: getattr(trainer, name) for name in names}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    Tuner(trainer).lr_find(model, num_training=5)
    assert {name: getattr(trainer, name) for name in names} == before
    assert trainer.fit_loop.max_steps == -1 and not trainer.should_stop
    assert model.trainer is trainer
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value)
    assert trainer.state.finished
    # no temporary checkpoint: only the logger's folder, which Lightning's logger also creates at fit start
    assert {path.name for path in tmp_path.iterdir()} <= {"lightning_logs"}
    assert not [path for path in tmp_path.rglob("*") if ".ckpt" in path.name]


def test_accumulation_counts_one_learning_rate_per_optimizer_step(tmp_path: Any) -> None:
    model = BoringModel()
    model.lr = 1e-3
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, accumulate_grad_batches=2))
    finder = Tuner(trainer).lr_find(model, early_stop_threshold=None)
    assert len(finder.results["lr"]) == len(finder.results["loss"]) == 100
    assert finder._total_batch_idx == 199


def test_a_skipped_step_records_nan_and_the_suggestion_skips_it(tmp_path: Any) -> None:
    class SkippingModel(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.lr = 0.123

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.trainer.global_step in (5, 12, 17):
                return None
            return super().training_step(batch, batch_idx)

    lightning_lib.seed_everything(1, verbose=False)
    model = SkippingModel()
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path))
    finder = Tuner(trainer).lr_find(model, num_training=20, early_stop_threshold=None)
    losses = torch.tensor(finder.results["loss"])
    assert len(losses) == 20 and torch.isnan(losses[[5, 12, 17]]).all()
    assert math.isclose(model.lr, finder.suggestion())


def test_errors_are_raised_before_any_training(tmp_path: Any) -> None:
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_steps=2))
    with pytest.raises(AttributeError, match="should have one of these fields"):
        Tuner(trainer).lr_find(BoringModel())
    with pytest.raises(AttributeError, match="my_lr, but could not find"):
        Tuner(trainer).lr_find(BoringModel(), attr_name="my_lr")
    with pytest.raises(MisconfigurationException, match="only valid configuration"):
        Tuner(trainer).lr_find(BoringModel(), method="validate")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="should be either of"):
        LearningRateFinder(mode="cosine")
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, callbacks=[LearningRateFinder()]))
    with pytest.raises(ValueError, match="already configured with a `LearningRateFinder`"):
        Tuner(trainer).lr_find(BoringModel())
    assert trainer.global_step == 0


def test_several_optimizers_are_refused(tmp_path: Any) -> None:
    class TwoOptimizers(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.lr = 0.1
            self.automatic_optimization = False

        def configure_optimizers(self) -> Any:
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters(), lr=0.1)]

    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1))
    with pytest.raises(MisconfigurationException, match="only works with single optimizer"):
        Tuner(trainer).lr_find(TwoOptimizers())


def test_the_state_is_put_back_when_the_range_test_fails(tmp_path: Any) -> None:
    class Failing(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.learning_rate = 1e-3
            self.steps = 0

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.steps += 1
            if self.steps >= 2:
                raise RuntimeError("failure inside the range test")
            return super().training_step(batch, batch_idx)

    model = Failing()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    finder = LearningRateFinder(num_training_steps=5)
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1, callbacks=[finder]))
    with pytest.raises(RuntimeError, match="failure inside the range test"):
        trainer.fit(model)
    assert trainer.callbacks[0] is finder and trainer.max_steps == -1
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value)
    # no temporary checkpoint: only the logger's folder, which Lightning's logger also creates at fit start
    assert {path.name for path in tmp_path.iterdir()} <= {"lightning_logs"}
    assert not [path for path in tmp_path.rglob("*") if ".ckpt" in path.name]


def test_fast_dev_run_skips_the_range_test(tmp_path: Any) -> None:
    model = BoringModel()
    model.lr = 0.1
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, fast_dev_run=True))
    with pytest.warns(UserWarning, match="Skipping learning rate finder"):
        assert Tuner(trainer).lr_find(model) is None
    assert model.lr == 0.1


def test_the_callback_can_run_again_inside_the_fit(tmp_path: Any) -> None:
    """Called from ``on_train_epoch_start`` (a schedule of range tests), each run is put back and the fit goes on."""

    class Model(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.learning_rate = 0.123

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.learning_rate)

    class EveryEpoch(LearningRateFinder):
        runs: list[int] = []

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            return None

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            expected = trainer.global_step
            self.lr_find(trainer, pl_module)
            assert trainer.global_step == expected and not trainer.fit_loop.restarting
            self.runs.append(trainer.current_epoch)

    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(
            tmp_path, max_epochs=2, limit_train_batches=10, limit_val_batches=0, num_sanity_val_steps=0
        ),
        callbacks=[EveryEpoch(num_training_steps=8, early_stop_threshold=None)],
    )
    trainer.fit(Model())
    assert EveryEpoch.runs == [0, 1]
    assert trainer.global_step == 20 and trainer.current_epoch == 2


@pytest.mark.parametrize(
    ("skip_begin", "skip_end", "losses", "has_suggestion"),
    [
        (0, 1, [], False),
        (0, 2, [0.0, 1.0, 2.0], False),
        (0, 1, [0.0, 1.0, 2.0], True),
        (1, 1, [0.0, 1.0, 2.0, 3.0], True),
        (4, 1, [math.nan, math.nan, 0, math.inf, 1, 2, 3, math.inf, 2, math.nan, 1], True),
    ],
)
def test_a_suggestion_needs_two_finite_points(
    skip_begin: int, skip_end: int, losses: list[float], has_suggestion: bool, caplog: Any
) -> None:
    finder = _LRFinder(mode="exponential", lr_min=1e-8, lr_max=1, num_training=100)
    finder.results = {"lr": [float(i) for i in range(len(losses))], "loss": losses}
    with caplog.at_level(logging.ERROR):
        suggestion = finder.suggestion(skip_begin=skip_begin, skip_end=skip_end)
    assert (suggestion is not None) == has_suggestion
    assert ("Failed to compute suggestion" in caplog.text) != has_suggestion


def test_the_suggestion_is_the_steepest_descent_against_the_learning_rate() -> None:
    finder = _LRFinder(mode="exponential", lr_min=1e-6, lr_max=1e-1, num_training=20)
    lrs = torch.linspace(0, 2 * math.pi, steps=1000)
    finder.results = {"lr": lrs.tolist(), "loss": torch.sin(lrs).tolist()}
    suggestion = finder.suggestion(skip_begin=2, skip_end=2)
    assert suggestion is not None and abs(suggestion - math.pi) < 1e-2


def test_plot_draws_the_curve_and_marks_the_suggestion() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    finder = _LRFinder(mode="exponential", lr_min=1e-6, lr_max=1.0, num_training=30)
    lrs = [10 ** (-6 + 6 * i / 29) for i in range(30)]
    finder.results = {"lr": lrs, "loss": [1.0 / (1 + i) for i in range(30)]}
    figure = finder.plot(suggest=True)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and len(axes.lines) == 2
    assert axes.get_xlabel() == "Learning rate"
