"""ModelCheckpoint writes pytorch_lightning's files: the same names, "last.ckpt" overwritten in place, and
files that ``torch.load`` and pytorch_lightning's ``load_from_checkpoint`` open as they are.

The folder holds exactly what pytorch_lightning leaves there: each file's commit marker (what makes a
checkpoint exist for ``ckpt_path="last"`` and lets its bytes be verified) is inside the file, as the zip
archive's comment, which every zip reader (``torch.load`` included) expects.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.checkpoint import read_manifest
from lightning_lib.storage import LocalStore
from tests.helpers import classification_data, make_classes, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


def _fit(
    pl: ModuleType, root: Path, dirpath: Path, epochs: int, ckpt_path: Any = None, **checkpoint: Any
) -> tuple[Any, Any]:
    pl.seed_everything(7)
    model = make_classes(pl)["ClassifierModel"](lr=0.05, hidden=16)
    callback = pl.callbacks.ModelCheckpoint(dirpath=dirpath, **checkpoint)
    trainer = pl.Trainer(
        **quiet_trainer_kwargs(
            root,
            max_epochs=epochs,
            num_sanity_val_steps=0,
            enable_checkpointing=True,
            callbacks=[callback],
            limit_train_batches=4,
            limit_val_batches=2,
        )
    )
    train = DataLoader(classification_data(64, seed=0), batch_size=8)
    val = DataLoader(classification_data(32, seed=1), batch_size=8)
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    return trainer, callback


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _both(tmp_path: Path, **kwargs: Any) -> dict[str, tuple[Any, Any, Path]]:
    runs = {}
    for name, pl in (("theirs", reference_lightning()), ("ours", lightning_lib)):
        dirpath = tmp_path / name / "ckpt"
        trainer, callback = _fit(pl, tmp_path / name, dirpath, **kwargs)
        runs[name] = (trainer, callback, dirpath)
    return runs


def test_the_same_files_and_torch_load_opens_ours(tmp_path: Path) -> None:
    runs = _both(tmp_path, epochs=3, monitor="val_loss", save_top_k=-1, save_last=True)
    (_, theirs, their_dir), (_, ours, our_dir) = runs["theirs"], runs["ours"]
    assert _files(our_dir) == _files(their_dir)
    assert Path(ours.best_model_path).name == Path(theirs.best_model_path).name
    assert Path(ours.last_model_path).name == Path(theirs.last_model_path).name == "last.ckpt"
    assert {Path(p).name for p in ours.best_k_models} == {Path(p).name for p in theirs.best_k_models}
    assert read_manifest(LocalStore(our_dir), Path(ours.best_model_path).name) is not None  # committed
    for attr in ("best_model_path", "last_model_path"):
        mine = torch.load(getattr(ours, attr), weights_only=True)  # a file, not a folder
        reference = torch.load(getattr(theirs, attr), weights_only=False)
        assert (mine["epoch"], mine["global_step"]) == (reference["epoch"], reference["global_step"])
        assert mine["state_dict"].keys() == reference["state_dict"].keys()
        for key, value in reference["state_dict"].items():
            torch.testing.assert_close(mine["state_dict"][key], value, rtol=1e-5, atol=1e-6)


def test_pytorch_lightning_loads_our_best_model_path(tmp_path: Path) -> None:
    pl = reference_lightning()
    _, callback = _fit(lightning_lib, tmp_path, tmp_path / "ckpt", 2, monitor="val_loss")
    loaded = make_classes(pl)["ClassifierModel"].load_from_checkpoint(callback.best_model_path)
    assert loaded.hparams.hidden == 16 and loaded.hparams.lr == 0.05
    ours = make_classes(lightning_lib)["ClassifierModel"].load_from_checkpoint(callback.best_model_path)
    x = torch.randn(5, 32)
    loaded.eval()
    ours.eval()
    torch.testing.assert_close(loaded(x), ours(x))


def test_last_is_overwritten_in_place_and_a_foreign_last_is_kept(tmp_path: Path) -> None:
    seen: dict[str, list[list[str]]] = {}
    for name, pl in (("theirs", reference_lightning()), ("ours", lightning_lib)):
        dirpath = tmp_path / name / "ckpt"
        listings = seen[name] = []
        # save_top_k=0: "last.ckpt" is the run's only checkpoint, overwritten every epoch
        _fit(pl, tmp_path / name, dirpath, 3, save_top_k=0, save_last=True)
        listings.append(_files(dirpath))
        # resumed from it: the callback's own "last.ckpt" (its state names it) is overwritten again
        trainer, callback = _fit(
            pl,
            tmp_path / name,
            dirpath,
            4,
            ckpt_path=str(dirpath / "last.ckpt"),
            save_top_k=0,
            save_last=True,
        )
        listings.append(_files(dirpath))
        assert torch.load(callback.last_model_path, weights_only=True)["global_step"] == trainer.global_step
        # a new run in the same folder leaves the earlier run's "last.ckpt" alone: its own is last-v1
        trainer, callback = _fit(pl, tmp_path / name, dirpath, 1, save_top_k=0, save_last=True)
        listings.append(_files(dirpath))
        assert Path(callback.last_model_path).name == "last-v1.ckpt"
    assert seen["ours"] == seen["theirs"] == [["last.ckpt"], ["last.ckpt"], ["last-v1.ckpt", "last.ckpt"]]


def test_save_on_exception_writes_the_callbacks_own_file_then_last(tmp_path: Path) -> None:
    seen: dict[str, tuple[list[str], int]] = {}
    for name, pl in (("theirs", reference_lightning()), ("ours", lightning_lib)):
        base = make_classes(pl)["ClassifierModel"]

        class Breaks(base):  # type: ignore[misc, valid-type]
            def training_step(self, batch: Any, batch_idx: int) -> Any:
                if self.global_step == 5:
                    raise RuntimeError("Trouble!")
                return super().training_step(batch, batch_idx)

        dirpath = tmp_path / name
        callback = pl.callbacks.ModelCheckpoint(
            dirpath=dirpath, filename="exception", save_on_exception=True, save_last=True, every_n_epochs=7
        )
        pl.seed_everything(7)
        trainer = pl.Trainer(
            **quiet_trainer_kwargs(
                tmp_path / f"{name}-root",
                max_epochs=3,
                limit_train_batches=4,
                enable_checkpointing=True,
                callbacks=[callback],
            )
        )
        with pytest.raises(RuntimeError, match="Trouble!"):
            trainer.fit(Breaks(lr=0.05, hidden=16), DataLoader(classification_data(64), batch_size=8))
        step = torch.load(dirpath / "exception.ckpt", weights_only=True)["global_step"]
        seen[name] = (_files(dirpath), step)
    assert seen["ours"] == seen["theirs"] == (["exception.ckpt", "last.ckpt"], 5)
