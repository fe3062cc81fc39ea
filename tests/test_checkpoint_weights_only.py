"""``weights_only`` on fit / validate / test / predict reaches ``torch.load`` (Lightning's semantics; None
and True accept plain data only, False is the caller's opt-in for a checkpoint it trusts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lib as pl
from tests.helpers import BoringModel
from tests.support import loader, trainer_kwargs


class Payload:
    """A user class pickled into a checkpoint: what weights_only=True must refuse to rebuild."""

    def __init__(self, value: int) -> None:
        self.value = value


def _checkpoint_with_a_pickled_object(tmp_path: Path) -> Path:
    model = BoringModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path / "first"))
    trainer.fit(model, loader())
    path = tmp_path / "pickled.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["user_object"] = Payload(3)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("weights_only", [None, True])
def test_a_pickled_object_is_refused_by_default_and_with_true(tmp_path: Path, weights_only: Any) -> None:
    path = _checkpoint_with_a_pickled_object(tmp_path)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path / "second", max_epochs=2))
    with pytest.raises(ValueError, match="not plain data"):
        trainer.fit(BoringModel(), loader(), ckpt_path=path, weights_only=weights_only)
    with pytest.raises(ValueError, match="not plain data"):
        trainer.validate(BoringModel(), loader(), ckpt_path=path, weights_only=weights_only, verbose=False)


def test_weights_only_false_loads_a_trusted_checkpoint_in_every_entry_point(tmp_path: Path) -> None:
    path = _checkpoint_with_a_pickled_object(tmp_path)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path / "second", max_epochs=2))
    trainer.fit(BoringModel(), loader(), ckpt_path=path, weights_only=False)
    assert trainer.current_epoch == 2 and trainer.ckpt_path == str(path)
    assert trainer.validate(BoringModel(), loader(), ckpt_path=path, weights_only=False, verbose=False)
    assert trainer.test(BoringModel(), loader(), ckpt_path=path, weights_only=False, verbose=False)
    assert trainer.predict(BoringModel(), loader(), ckpt_path=path, weights_only=False)


def test_weights_only_must_be_a_bool_or_none(tmp_path: Path) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    with pytest.raises(TypeError, match="weights_only"):
        trainer.fit(BoringModel(), loader(), weights_only="yes")  # type: ignore[arg-type]
