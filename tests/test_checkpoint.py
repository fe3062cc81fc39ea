"""Checkpoints: content, load_from_checkpoint, exact resume, "best"/"last", and refusing pickled objects."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lib as pl
from lightning_lib.checkpoint._format import LIGHTNING_FORMAT_VERSION, load_file, save_file
from tests.helpers import ClassifierDataModule, ClassifierModel
from tests.support import CountingModel, trainer_kwargs


def _classifier_fit(
    tmp_path: Path, max_epochs: int, ckpt_path: Any = None, **kwargs: Any
) -> tuple[pl.Trainer, Any]:
    model = ClassifierModel(lr=0.05, dropout=0.2)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, max_epochs=max_epochs, limit_train_batches=4, **kwargs))
    trainer.fit(model, datamodule=ClassifierDataModule(batch_size=8, n=64), ckpt_path=ckpt_path)
    return trainer, model


def test_checkpoint_content_is_plain_data(tmp_path: Path) -> None:
    trainer, model = _classifier_fit(tmp_path, max_epochs=2)
    path = tmp_path / "full.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 8
    assert checkpoint["pytorch-lightning_version"] == LIGHTNING_FORMAT_VERSION
    assert checkpoint["hyper_parameters"] == {"lr": 0.05, "hidden": 64, "dropout": 0.2}
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 8, "n": 64}
    assert set(checkpoint["state_dict"]) == set(model.state_dict())
    assert len(checkpoint["optimizer_states"]) == 1 and checkpoint["lr_schedulers"] == []
    assert {"torch", "numpy", "python"} <= set(checkpoint["rng_states"])
    assert "MixedPrecision" not in checkpoint


def test_weights_only_checkpoint(tmp_path: Path) -> None:
    trainer, _ = _classifier_fit(tmp_path, max_epochs=1)
    path = tmp_path / "weights.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    checkpoint = torch.load(path, weights_only=True)
    assert "optimizer_states" not in checkpoint and "state_dict" in checkpoint
    with pytest.raises(ValueError, match=r"full checkpoint to resume training, received a weights-only one"):
        _classifier_fit(tmp_path, max_epochs=2, ckpt_path=path)


def test_save_checkpoint_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"model attached by fit/validate/test/predict"):
        pl.Trainer(**trainer_kwargs(tmp_path)).save_checkpoint(tmp_path / "x.ckpt")


def test_module_checkpoint_hooks(tmp_path: Path) -> None:
    class Model(CountingModel):
        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["extra"] = {"answer": 42}

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self.seen["extra"] = checkpoint["extra"]

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    trainer.fit(Model())
    trainer.save_checkpoint(tmp_path / "hooks.ckpt")
    loaded = Model.load_from_checkpoint(tmp_path / "hooks.ckpt")
    assert loaded.seen["extra"] == {"answer": 42}


# ---- load_from_checkpoint ------------------------------------------------------------------------------
def test_load_from_checkpoint_round_trip_with_overrides(tmp_path: Path) -> None:
    trainer, model = _classifier_fit(tmp_path, max_epochs=1)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = ClassifierModel.load_from_checkpoint(path)
    assert loaded.hparams == {"lr": 0.05, "hidden": 64, "dropout": 0.2}
    for a, b in zip(loaded.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)

    overridden = ClassifierModel.load_from_checkpoint(path, dropout=0.5, map_location="cpu")
    assert overridden.hparams.dropout == 0.5 and overridden.net[2].p == 0.5
    assert overridden.hparams.lr == 0.05

    with pytest.raises(RuntimeError, match=r"size mismatch"):
        ClassifierModel.load_from_checkpoint(path, hidden=8)


def test_load_from_checkpoint_strict_and_hparams_file(tmp_path: Path) -> None:
    trainer, _ = _classifier_fit(tmp_path, max_epochs=1)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    class Bigger(ClassifierModel):
        def __init__(self, lr: float = 0.01, hidden: int = 64, dropout: float = 0.1, extra: int = 0) -> None:
            super().__init__(lr, hidden, dropout)
            self.head = torch.nn.Linear(1, 1)

    with pytest.raises(RuntimeError, match=r"Missing key"):
        Bigger.load_from_checkpoint(path)
    hparams_file = tmp_path / "hparams.yaml"
    hparams_file.write_text("extra: 3\nlr: 0.2\n")
    loose = Bigger.load_from_checkpoint(path, strict=False, hparams_file=hparams_file)
    assert loose.hparams.extra == 3 and loose.hparams.lr == 0.2


def test_load_from_checkpoint_drops_unknown_hparams(tmp_path: Path) -> None:
    class Narrow(pl.LightningModule):
        def __init__(self, lr: float = 0.01) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(64, 10)
            )

    trainer, _ = _classifier_fit(tmp_path, max_epochs=1)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    assert Narrow.load_from_checkpoint(tmp_path / "model.ckpt").hparams == {"lr": 0.05}


# ---- resuming ----------------------------------------------------------------------------------------------
def test_resume_continues_exactly(tmp_path: Path) -> None:
    pl.seed_everything(1, verbose=False)
    _, uninterrupted = _classifier_fit(tmp_path, max_epochs=4)

    pl.seed_everything(1, verbose=False)
    first, _ = _classifier_fit(tmp_path, max_epochs=2)
    path = tmp_path / "half.ckpt"
    first.save_checkpoint(path)

    seen: dict[str, Any] = {}

    class Probe(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
            seen["start"] = (trainer.current_epoch, trainer.global_step)
            seen["optimizer_state"] = len(trainer.optimizers[0].state)

    torch.manual_seed(999)  # the checkpoint's RNG states must win over whatever the process has
    resumed, model = _classifier_fit(tmp_path, max_epochs=4, ckpt_path=path, callbacks=[Probe()])
    assert seen == {"start": (2, 8), "optimizer_state": 4}  # Adam state for every parameter restored
    assert (resumed.current_epoch, resumed.global_step) == (4, 16)
    for a, b in zip(model.parameters(), uninterrupted.parameters()):
        torch.testing.assert_close(a, b)
    assert resumed.ckpt_path == str(path)


def test_resume_restores_scheduler_and_callback_state(tmp_path: Path) -> None:
    class Scheduled(CountingModel):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)]

    class Counter(pl.Callback):
        def __init__(self) -> None:
            self.batches = 0

        def on_train_batch_end(self, *args: Any) -> None:
            self.batches += 1

        def state_dict(self) -> dict[str, Any]:
            return {"batches": self.batches}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.batches = state_dict["batches"]

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, callbacks=[Counter()]))
    trainer.fit(Scheduled())
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    counter = Counter()
    resumed = pl.Trainer(**trainer_kwargs(tmp_path, max_epochs=3, callbacks=[counter]))
    resumed.fit(Scheduled(), ckpt_path=tmp_path / "s.ckpt")
    assert counter.batches == 6
    assert resumed.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5**3)


def test_resume_from_a_missing_file(tmp_path: Path) -> None:
    model = CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(
        FileNotFoundError,
        match=r"Checkpoint file not found: .*missing\.ckpt\. Expected ckpt_path to be 'best', 'last', an existing",
    ):
        trainer.fit(model, ckpt_path=tmp_path / "missing.ckpt")
    with pytest.raises(TypeError, match=r"ckpt_path to be 'best', 'last', a path or None, received 3"):
        trainer.fit(model, ckpt_path=3)
    assert model.train_steps == 0


# ---- "best" and "last" ---------------------------------------------------------------------------------------
def test_validate_and_test_with_best_and_last(tmp_path: Path) -> None:
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer, model = _classifier_fit(
        tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint]
    )
    # Lightning's files, and only them: last.ckpt overwritten every epoch, and the best one
    last = Path(checkpoint.last_model_path).name
    assert last == "last.ckpt"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch=2-step=12.ckpt", last]
    assert torch.load(checkpoint.last_model_path, weights_only=True)["global_step"] == 12
    final = [p.detach().clone() for p in model.parameters()]
    datamodule = ClassifierDataModule(batch_size=8, n=64)

    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    trainer.validate(datamodule=datamodule, ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == checkpoint.best_model_path
    for a, b in zip(model.parameters(), final):
        torch.testing.assert_close(a, b)

    trainer.test(model, datamodule=datamodule, ckpt_path="last", verbose=False)
    assert Path(trainer.ckpt_path).name == last

    # without a model, validate defaults to the best checkpoint; with one, to the model as it is
    trainer.validate(datamodule=datamodule, verbose=False)
    assert trainer.ckpt_path == checkpoint.best_model_path
    trainer.validate(model, datamodule=datamodule, verbose=False)
    assert trainer.ckpt_path is None


def test_best_follows_the_monitored_metric(tmp_path: Path) -> None:
    class Model(CountingModel):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("score", [3.0, 1.0, 2.0, 0.0][self.current_epoch])

    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="score", filename="{epoch}")
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint])
    )
    trainer.fit(Model())
    assert Path(checkpoint.best_model_path).name == "epoch=1.ckpt"
    assert float(checkpoint.best_model_score) == 1.0
    trainer.validate(ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == checkpoint.best_model_path


def test_best_and_last_errors(tmp_path: Path) -> None:
    model = CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match='ckpt_path="best"\\)` needs a ModelCheckpoint callback'):
        trainer.validate(model, ckpt_path="best")
    checkpointing = pl.Trainer(**trainer_kwargs(tmp_path, enable_checkpointing=True))
    with pytest.raises(ValueError, match=r"found no best checkpoint"):
        checkpointing.validate(model, ckpt_path="best")
    with pytest.warns(
        UserWarning, match='ckpt_path="last"\\) is set, but no committed checkpoint verifies yet'
    ):
        checkpointing.fit(model, ckpt_path="last")
    assert model.train_steps == 2


# ---- refusing pickled objects ------------------------------------------------------------------------------
class Custom:
    """A user class: loading it would need pickle, which weights_only=True refuses."""


def test_a_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    trainer, model = _classifier_fit(tmp_path, max_epochs=1)
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["hyper_parameters"]["evil"] = Custom()
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)

    with pytest.raises(
        ValueError, match=r"Refusing to load checkpoint '.*bad.ckpt'.*not plain data.*weights_only=True"
    ):
        ClassifierModel.load_from_checkpoint(bad)
    with pytest.raises(ValueError, match=r"Refusing to load checkpoint"):
        _classifier_fit(tmp_path, max_epochs=2, ckpt_path=bad)
    with pytest.raises(ValueError, match=r"Refusing to load checkpoint"):
        trainer.validate(model, datamodule=ClassifierDataModule(), ckpt_path=bad)


def test_non_checkpoint_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage.ckpt"):
        load_file(garbage)
    not_a_dict = tmp_path / "list.ckpt"
    torch.save([1, 2], not_a_dict)
    with pytest.raises(ValueError, match=r"Lightning checkpoint dict with a 'state_dict' key"):
        load_file(not_a_dict)
    with pytest.raises(FileNotFoundError, match=r"Expected a checkpoint file at .*nope.ckpt"):
        load_file(tmp_path / "nope.ckpt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_protocol_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raw.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {}, "x": Custom()}, handle)
    with pytest.raises(ValueError, match=r"raw.ckpt"):
        load_file(path)


def test_save_file_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sub" / "a.ckpt"
    save_file({"state_dict": {}}, path)
    assert load_file(path) == {"state_dict": {}}

    def failing_save(obj: Any, handle: Any) -> None:
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match=r"disk full"):
        save_file({"state_dict": {"x": 1}}, path)
    assert load_file(path) == {"state_dict": {}}  # the previous file is intact
    assert [p.name for p in path.parent.iterdir()] == ["a.ckpt"]  # no temporary left behind
