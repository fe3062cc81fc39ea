"""ModelCheckpoint and resuming behave as pytorch_lightning's: the same configuration errors, every save
made through ``trainer.save_checkpoint``, a local file there as soon as its save returns, step-triggered
saves of a validation metric deferred to validation, "last" at the end of a fit that never saved, and the
same resume errors and warnings. Each program runs on both libraries and the results are compared."""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from inspect import signature
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest.mock import patch

import pytest
import torch
import yaml

import lightning_lib
from lightning_lib.utilities.exceptions import MisconfigurationException
from tests.helpers import make_classes, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


def _libraries() -> list[tuple[str, ModuleType]]:
    return [("theirs", reference_lightning()), ("ours", lightning_lib)]


def _error(pl: ModuleType, **kwargs: Any) -> tuple[str, str] | None:
    """The exception type's name and message ``ModelCheckpoint(**kwargs)`` raises, or None."""
    try:
        pl.callbacks.ModelCheckpoint(**kwargs)
    except Exception as err:  # the type's name is compared: each library has its own class
        return type(err).__name__, str(err)
    return None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"save_top_k": -3},
        {"every_n_epochs": -3},
        {"every_n_train_steps": -3},
        {"every_n_train_steps": 1, "every_n_epochs": 2},
        {"train_time_interval": timedelta(minutes=1), "every_n_epochs": 2},
        {"save_top_k": 3},
        {"mode": "unknown_option"},
        # a trigger set to 0 is off: these combinations are valid
        {"every_n_train_steps": 4, "every_n_epochs": 0},
        {"every_n_train_steps": 0, "every_n_epochs": 0, "train_time_interval": timedelta(minutes=1)},
        {"save_top_k": 3, "monitor": "val_loss"},
    ],
)
def test_configuration_errors_are_lightnings(kwargs: dict[str, Any]) -> None:
    theirs, ours = (_error(pl, **kwargs) for _, pl in _libraries())
    assert ours == theirs
    if ours is not None:
        with pytest.raises(MisconfigurationException):
            lightning_lib.callbacks.ModelCheckpoint(**kwargs)


def test_every_n_epochs_defaults_like_lightnings() -> None:
    for _, pl in _libraries():
        assert pl.callbacks.ModelCheckpoint().every_n_epochs == 1
        assert pl.callbacks.ModelCheckpoint(every_n_train_steps=3).every_n_epochs == 0


@pytest.mark.parametrize("value", ["yes", "false", "link"])
def test_save_last_annotation_parses_in_jsonargparse(value: str) -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parsed = []
    for _, pl in _libraries():
        parser = jsonargparse.ArgumentParser()
        parser.add_argument(
            "--a", type=signature(pl.callbacks.ModelCheckpoint).parameters["save_last"].annotation
        )
        parsed.append(parser.parse_args(["--a", value]).a)
    assert parsed[0] == parsed[1]


def _kwargs(root: Path, **overrides: Any) -> dict[str, Any]:
    return quiet_trainer_kwargs(root, **{"enable_checkpointing": True, **overrides})


def _boring(pl: ModuleType) -> Any:
    return make_classes(pl)["BoringModel"]()


def test_every_save_goes_through_trainer_save_checkpoint(tmp_path: Path) -> None:
    calls = {}
    for name, pl in _libraries():
        dirpath = tmp_path / name
        callback = pl.callbacks.ModelCheckpoint(
            dirpath=dirpath, monitor="val_loss", save_top_k=2, save_last=True
        )
        trainer = pl.Trainer(
            **_kwargs(
                tmp_path, max_epochs=3, limit_train_batches=3, limit_val_batches=2, callbacks=[callback]
            )
        )
        with patch.object(trainer, "save_checkpoint", wraps=trainer.save_checkpoint) as saved:
            trainer.fit(_boring(pl))
        calls[name] = [(Path(c.args[0]).name, *c.args[1:]) for c in saved.call_args_list]
    assert calls["ours"] == calls["theirs"]


def test_a_mocked_save_checkpoint_writes_nothing_and_counts_like_lightnings(tmp_path: Path) -> None:
    counts = {}
    for name, pl in _libraries():
        scores = [float("nan"), 8.0, 7.0, 5.0]

        class Model(make_classes(pl)["BoringModel"]):  # type: ignore[misc]
            def on_validation_epoch_end(self, scores: list[float] = scores) -> None:
                self.log("abc", scores[self.current_epoch])

        callback = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / name, monitor="abc", save_top_k=1)
        trainer = pl.Trainer(
            **_kwargs(
                tmp_path, max_epochs=4, limit_train_batches=2, limit_val_batches=1, callbacks=[callback]
            )
        )
        with patch.object(trainer, "save_checkpoint") as saved:
            trainer.fit(Model())
        counts[name] = (saved.call_count, float(callback.best_model_score))
        assert not (tmp_path / name).exists()
    assert counts["ours"] == counts["theirs"] == (4, 5.0)


def test_a_local_checkpoint_is_there_when_its_save_returns(tmp_path: Path) -> None:
    seen = {}
    for name, pl in _libraries():
        dirpath = tmp_path / name
        listings: list[list[str]] = []

        class Lister(pl.Callback):  # type: ignore[name-defined]
            def on_train_epoch_start(
                self, trainer: Any, pl_module: Any, found: list[list[str]] = listings, dirpath: Path = dirpath
            ) -> None:
                found.append(sorted(os.listdir(dirpath)) if dirpath.exists() else [])

        callback = pl.callbacks.ModelCheckpoint(dirpath=dirpath, filename="model", save_top_k=1)
        trainer = pl.Trainer(
            **_kwargs(
                tmp_path,
                max_epochs=3,
                limit_train_batches=1,
                limit_val_batches=0,
                callbacks=[Lister(), callback],
            )
        )
        trainer.fit(_boring(pl))
        seen[name] = listings
    assert seen["ours"] == seen["theirs"] == [[], ["model.ckpt"], ["model.ckpt"]]


class _ValScores:
    """A module whose monitored metric only validation logs, validated every other epoch."""

    @staticmethod
    def build(pl: ModuleType, scores: list[float]) -> Any:
        class Model(make_classes(pl)["BoringModel"]):  # type: ignore[misc]
            def validation_step(self, batch: Any, batch_idx: int) -> None:
                return None

            def on_validation_epoch_end(self) -> None:
                self.log("auroc", torch.tensor(scores[self.current_epoch]))

        return Model()


@pytest.mark.parametrize(
    "trigger",
    [{"every_n_train_steps": 2}, {"train_time_interval": timedelta(seconds=0)}],
    ids=["steps", "time"],
)
def test_step_and_time_saves_of_a_validation_metric_wait_for_validation(
    tmp_path: Path, trigger: dict[str, Any]
) -> None:
    results = {}
    scores = [0.1, 0.5, 1.0, 3.0]
    for name, pl in _libraries():
        pl.seed_everything(3)
        callback = pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / name,
            monitor="auroc",
            mode="max",
            save_top_k=2,
            every_n_epochs=0,
            save_on_train_epoch_end=False,
            **trigger,
        )
        trainer = pl.Trainer(
            **_kwargs(
                tmp_path,
                max_epochs=len(scores),
                limit_train_batches=2,
                limit_val_batches=1,
                num_sanity_val_steps=0,
                check_val_every_n_epoch=2,
                callbacks=[callback],
            )
        )
        trainer.fit(_ValScores.build(pl, scores))
        results[name] = (
            float(callback.best_model_score),
            sorted(Path(p).name for p in callback.best_k_models),
            sorted(os.listdir(tmp_path / name)),
        )
    assert results["ours"] == results["theirs"]
    assert results["ours"][0] == 3.0


def test_last_is_saved_at_the_end_of_a_fit_that_never_checkpointed(tmp_path: Path) -> None:
    found = {}
    for name, pl in _libraries():
        model = _boring(pl)
        model.validation_step = None
        model.val_dataloader = None
        callback = pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / name, save_last=True, save_on_train_epoch_end=False
        )
        trainer = pl.Trainer(**_kwargs(tmp_path, max_epochs=2, limit_train_batches=2, callbacks=[callback]))
        trainer.fit(model)
        found[name] = sorted(os.listdir(tmp_path / name))
        checkpoint = torch.load(tmp_path / name / "last.ckpt", weights_only=True)
        assert checkpoint["global_step"] == 4
    assert found["ours"] == found["theirs"] == ["last.ckpt"]


def test_fast_dev_run_saves_only_last_at_train_end(tmp_path: Path) -> None:
    found = {}
    for name, pl in _libraries():
        folders = [tmp_path / name / "last", tmp_path / name / "default"]
        callbacks = [
            pl.callbacks.ModelCheckpoint(dirpath=folders[0], save_last=True),
            pl.callbacks.ModelCheckpoint(dirpath=folders[1], monitor="val_loss"),
        ]
        trainer = pl.Trainer(**_kwargs(tmp_path, fast_dev_run=True, callbacks=callbacks))
        trainer.fit(_boring(pl))
        found[name] = [sorted(os.listdir(f)) if f.exists() else [] for f in folders]
    assert found["ours"] == found["theirs"] == [["last.ckpt"], []]


def test_to_yaml_writes_the_best_k_scores(tmp_path: Path) -> None:
    written = {}
    for name, pl in _libraries():
        callback = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / name, monitor="val_loss", save_top_k=2)
        trainer = pl.Trainer(
            **_kwargs(
                tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=2, callbacks=[callback]
            )
        )
        pl.seed_everything(1)
        trainer.fit(_boring(pl))
        callback.to_yaml()
        with open(tmp_path / name / "best_k_models.yaml", encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
        assert loaded == {path: score.item() for path, score in callback.best_k_models.items()}
        written[name] = sorted(Path(path).name for path in loaded)
    assert written["ours"] == written["theirs"]


def test_a_changed_dirpath_warns_and_restores_only_best_model_path(tmp_path: Path) -> None:
    restored = {}
    for name, pl in _libraries():
        state = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "a", save_last=True).state_dict()
        state.update(
            best_model_path="best.ckpt", last_model_path="last.ckpt", best_model_score=torch.tensor(1.0)
        )
        callback = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "b", save_last=True)
        with pytest.warns(UserWarning, match="The dirpath has changed from"):
            callback.load_state_dict(state)
        restored[name] = (callback.best_model_path, callback.last_model_path, callback.best_model_score)
    assert restored["ours"] == restored["theirs"] == ("best.ckpt", "", None)


def test_save_last_link_is_refused_off_local_paths() -> None:
    for _, pl in _libraries():
        callback = pl.callbacks.ModelCheckpoint(dirpath="memory://not-a-filesystem-path", save_last="link")
        with pytest.raises(ValueError, match=r"save_last='link'.* is only supported for local file paths"):
            callback.setup(trainer=pl.Trainer(logger=False), pl_module=_boring(pl), stage="fit")


def _epoch_checkpoint(pl: ModuleType, folder: Path, callbacks: list[Any]) -> str:
    callback = pl.callbacks.ModelCheckpoint(dirpath=folder, save_top_k=-1, filename="{epoch}")
    trainer = pl.Trainer(
        **_kwargs(
            folder, max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[callback, *callbacks]
        )
    )
    trainer.fit(_boring(pl))
    return str(folder / "epoch=2.ckpt")


def test_resume_errors_and_warnings_are_lightnings(tmp_path: Path) -> None:
    outcomes = {}
    for name, pl in _libraries():
        early = pl.callbacks.EarlyStopping(monitor="val_loss", patience=100)
        ckpt = _epoch_checkpoint(pl, tmp_path / name, [early])
        seen: list[str] = []
        # a checkpoint past max_epochs
        trainer = pl.Trainer(**_kwargs(tmp_path, max_epochs=1, limit_train_batches=2))
        with pytest.raises(Exception) as past:
            trainer.fit(_boring(pl), ckpt_path=ckpt)
        seen.append(f"{type(past.value).__name__}: {past.value}")
        # a checkpoint whose EarlyStopping state has no callback to go to
        trainer = pl.Trainer(**_kwargs(tmp_path, max_epochs=4, limit_train_batches=2, limit_val_batches=1))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(_boring(pl), ckpt_path=ckpt)
        seen.extend(str(w.message) for w in caught if "Please add the following callbacks" in str(w.message))
        # no such file
        trainer = pl.Trainer(**_kwargs(tmp_path, max_epochs=1))
        with pytest.raises(FileNotFoundError, match="Checkpoint file not found"):
            trainer.fit(_boring(pl), ckpt_path=str(tmp_path / "missing.ckpt"))
        outcomes[name] = seen
    assert outcomes["ours"] == outcomes["theirs"]
    assert len(outcomes["ours"]) == 2
