"""Checkpoints cross between pytorch_lightning and lightning_lib in both directions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from tests.helpers import classification_data, make_classes, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


def _train(pl: Any, root: Path, epochs: int, ckpt_path: Any = None, model: Any = None) -> tuple[Any, Any]:
    pl.seed_everything(3)
    if model is None:
        model = make_classes(pl)["ClassifierModel"](lr=0.02, hidden=48)
    trainer = pl.Trainer(**quiet_trainer_kwargs(root, max_epochs=epochs, num_sanity_val_steps=0))
    train = DataLoader(classification_data(64, seed=0), batch_size=16)
    trainer.fit(model, train, ckpt_path=ckpt_path)
    return model, trainer


def test_lightning_loads_our_checkpoint(tmp_path: Path) -> None:
    pl = reference_lightning()
    ours, trainer = _train(lightning_lib, tmp_path, 2)
    path = tmp_path / "ours.ckpt"
    trainer.save_checkpoint(path)
    theirs_cls = make_classes(pl)["ClassifierModel"]
    loaded = theirs_cls.load_from_checkpoint(path)
    assert loaded.hparams.hidden == 48 and loaded.hparams.lr == 0.02
    x = torch.randn(5, 32)
    ours.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(x), ours(x))


def test_we_load_and_resume_a_lightning_checkpoint(tmp_path: Path) -> None:
    pl = reference_lightning()
    theirs, their_trainer = _train(pl, tmp_path / "pl", 2)
    path = tmp_path / "theirs.ckpt"
    their_trainer.save_checkpoint(path)
    ours_cls = make_classes(lightning_lib)["ClassifierModel"]
    loaded = ours_cls.load_from_checkpoint(path)
    assert loaded.hparams.hidden == 48
    x = torch.randn(5, 32)
    theirs.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(x), theirs(x))

    # resuming continues from its epoch, global step and optimizer state
    resumed, trainer = _train(
        lightning_lib, tmp_path / "ours", 3, ckpt_path=path, model=ours_cls(lr=0.02, hidden=48)
    )
    assert trainer.current_epoch == 3
    assert trainer.global_step == their_trainer.global_step + 4
    state = torch.load(path, weights_only=True)["optimizer_states"][0]["state"]
    assert state, "the Lightning checkpoint carries Adam moments"
    # the same third epoch run by pytorch_lightning itself from its own checkpoint
    continued, _ = _train(
        pl, tmp_path / "pl2", 3, ckpt_path=path, model=make_classes(pl)["ClassifierModel"](lr=0.02, hidden=48)
    )
    for ours_p, their_p in zip(resumed.parameters(), continued.parameters()):
        torch.testing.assert_close(ours_p, their_p, rtol=1e-5, atol=1e-6)
