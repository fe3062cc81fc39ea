"""Lightning's loop progress counters: the same program gives pytorch_lightning's ``trainer.fit_loop`` counts,
``checkpoint["loops"]``, restart semantics, and evaluation iterator lifetimes."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest.mock import patch

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from tests.helpers import RandomDataset, make_classes, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


class _Boom(Exception):
    pass


def _libs() -> list[ModuleType]:
    return [reference_lightning(), lightning_lib]


def _scheduled(pl: ModuleType, fail_at: tuple[int, int] | None = None, manual: bool = False) -> Any:
    base = make_classes(pl)["BoringModel"]

    class Model(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = not manual
            self.outputs: list[Any] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if fail_at == (self.current_epoch, batch_idx):
                raise _Boom
            if manual:
                opt = self.optimizers()
                loss = self(batch).sum()
                self.manual_backward(loss)
                opt.step()
                opt.zero_grad()
                return None if batch_idx == 0 else loss
            return None if batch_idx == 3 else super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.outputs.append(sorted(outputs) if isinstance(outputs, dict) else outputs)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.layer.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1)]

    return Model()


def _fit(pl: ModuleType, tmp_path: Path, model: Any, **kwargs: Any) -> Any:
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, **kwargs))
    with contextlib.suppress(_Boom):
        trainer.fit(model)
    return trainer


@pytest.mark.parametrize("accumulate", [1, 3])
def test_checkpoint_loops_match_lightning(tmp_path: Path, accumulate: int) -> None:
    """Every counter of checkpoint["loops"] (fit, validate, test, predict), saved at the end of training."""
    loops = []
    for pl in _libs():
        torch.manual_seed(0)
        out = tmp_path / pl.__name__
        trainer = _fit(
            pl,
            out,
            _scheduled(pl),
            max_epochs=2,
            limit_train_batches=5,
            limit_val_batches=2,
            val_check_interval=2,
            accumulate_grad_batches=accumulate,
            enable_checkpointing=True,
        )
        checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
        loops.append(checkpoint["loops"])
        trainer.validate(trainer.lightning_module, verbose=False)
        trainer.predict(trainer.lightning_module)
        loops.append(
            {
                name: getattr(trainer, name).batch_progress.state_dict()
                for name in ("validate_loop", "test_loop", "predict_loop")
            }
        )
    reference_checkpoint, reference_eval, checkpoint_loops, eval_counts = loops
    assert checkpoint_loops == reference_checkpoint
    assert eval_counts == reference_eval


@pytest.mark.parametrize("fail_at", [(0, 2), (1, 1)])
def test_counters_after_a_failure_and_after_reset_match_lightning(
    tmp_path: Path, fail_at: tuple[int, int]
) -> None:
    """What a failed step leaves in the counters, and what load_state_dict + reset makes of it."""
    states = []
    for pl in _libs():
        trainer = _fit(
            pl,
            tmp_path / pl.__name__,
            _scheduled(pl, fail_at=fail_at),
            max_epochs=3,
            limit_train_batches=4,
            limit_val_batches=0,
            accumulate_grad_batches=2,
        )
        fit_loop = trainer.fit_loop
        saved = fit_loop.state_dict()
        fit_loop.load_state_dict(saved)
        restarting = (fit_loop.restarting, fit_loop.epoch_loop.restarting)
        fit_loop.reset()
        fit_loop.epoch_loop.reset()
        states.append((saved, restarting, fit_loop.state_dict()))
    assert states[1] == states[0]


def test_manual_optimization_counters_and_outputs_match_lightning(tmp_path: Path) -> None:
    seen = []
    for pl in _libs():
        model = _scheduled(pl, manual=True)
        trainer = _fit(
            pl, tmp_path / pl.__name__, model, max_epochs=1, limit_train_batches=3, limit_val_batches=0
        )
        seen.append((trainer.fit_loop.state_dict(), trainer.global_step, model.outputs))
    assert seen[1] == seen[0]


def test_skipped_automatic_step_gives_hooks_an_empty_dict(tmp_path: Path) -> None:
    seen = []
    for pl in _libs():
        model = _scheduled(pl)
        if pl is lightning_lib:
            with pytest.warns(UserWarning, match="returned `None`"):
                trainer = _fit(pl, tmp_path / pl.__name__, model, max_epochs=1, limit_train_batches=4)
        else:
            trainer = _fit(pl, tmp_path / pl.__name__, model, max_epochs=1, limit_train_batches=4)
        seen.append((trainer.fit_loop.state_dict(), model.outputs))
    assert seen[1] == seen[0]


def _failing_validation(pl: ModuleType, fail: bool) -> Any:
    base = make_classes(pl)["BoringModel"]

    class Model(base):  # type: ignore[misc, valid-type]
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            if fail and (dataloader_idx, batch_idx) == (1, 1):
                raise _Boom
            return super().validation_step(batch, batch_idx)

        def val_dataloader(self) -> Any:
            return [DataLoader(RandomDataset(32, 8), batch_size=2) for _ in range(2)]

    return Model()


def test_resume_from_a_failed_validation_continues_its_counts(tmp_path: Path) -> None:
    """A checkpoint taken when a validation step failed: the resumed fit finishes that validation's
    remaining batches and ends with Lightning's counters."""
    states = []
    for pl in _libs():
        out = tmp_path / pl.__name__
        kwargs = {
            "max_epochs": 1,
            "limit_train_batches": 4,
            "val_check_interval": 0.5,
            "num_sanity_val_steps": 0,
        }
        callbacks = [pl.callbacks.OnExceptionCheckpoint(str(out))]
        _fit(
            pl,
            out,
            _failing_validation(pl, fail=True),
            callbacks=callbacks,
            enable_checkpointing=True,
            **kwargs,
        )
        trainer = pl.Trainer(**quiet_trainer_kwargs(out, **kwargs))
        trainer.fit(_failing_validation(pl, fail=False), ckpt_path=str(out / "on_exception.ckpt"))
        states.append((trainer.fit_loop.state_dict(), trainer.global_step))
    assert states[1] == states[0]


def _val_counts_per_epoch(
    pl: ModuleType, tmp_path: Path, every_n: int | None, interval: str, steps: int
) -> list[int]:
    counts: list[int] = []
    ticks = iter(range(10_000))

    class Model(make_classes(pl)["BoringModel"]):  # type: ignore[misc]
        def on_train_epoch_end(self) -> None:
            counts.append(self.trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed)

    with patch("time.monotonic", side_effect=lambda: next(ticks)):
        _fit(
            pl,
            tmp_path / pl.__name__,
            Model(),
            max_epochs=4,
            limit_train_batches=steps,
            limit_val_batches=1,
            val_check_interval=interval,
            check_val_every_n_epoch=every_n,
        )
    return counts


@pytest.mark.parametrize(("every_n", "interval", "steps"), [(None, "00:00:00:04", 2), (2, "00:00:00:03", 5)])
def test_time_based_validation_reads_the_clock_where_lightning_does(
    tmp_path: Path, every_n: int | None, interval: str, steps: int
) -> None:
    reference, ours = (_val_counts_per_epoch(pl, tmp_path, every_n, interval, steps) for pl in _libs())
    assert ours == reference


def test_empty_train_loader_list_stops_the_fit(tmp_path: Path) -> None:
    seen = []
    for pl in _libs():
        base = make_classes(pl)["BoringModel"]

        class Model(base):  # type: ignore[misc, valid-type]
            def train_dataloader(self) -> Any:
                return []

        trainer = _fit(pl, tmp_path / pl.__name__, Model(), max_epochs=1, num_sanity_val_steps=0)
        seen.append((trainer.num_training_batches, trainer.global_step, trainer.fit_loop.state_dict()))
    assert seen[1] == seen[0]


def _worker_shutdown_epochs(pl: ModuleType, tmp_path: Path, persistent: bool) -> dict[str, list[int]]:
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path / pl.__name__, max_epochs=2, limit_train_batches=2))
    epochs: dict[str, list[int]] = {"train": [], "val": []}

    class _Iter(_MultiProcessingDataLoaderIter):
        def __init__(self, loader: Any, name: str) -> None:
            super().__init__(loader)
            self.name = name

        def _shutdown_workers(self) -> None:
            epochs[self.name].append(trainer.current_epoch)
            super()._shutdown_workers()

    class _Loader(DataLoader):
        def __init__(self, name: str) -> None:
            super().__init__(RandomDataset(32, 16), num_workers=1, persistent_workers=persistent)
            self.name = name

        def _get_iterator(self) -> Any:
            return _Iter(self, self.name)

    trainer.fit(make_classes(pl)["BoringModel"](), _Loader("train"), _Loader("val"))
    return epochs


@pytest.mark.parametrize("persistent", [False, True])
def test_loader_workers_are_shut_down_when_lightning_shuts_them_down(
    tmp_path: Path, persistent: bool
) -> None:
    """Evaluation iterators live until the loop runs again; teardown stops persistent workers."""
    reference, ours = (_worker_shutdown_epochs(pl, tmp_path, persistent) for pl in _libs())
    assert ours == reference
