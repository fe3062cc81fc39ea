"""SpikeDetection: which loss is a spike, the batches it records, its state; as pytorch_lightning decides."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import SpikeDetection
from lightning_lib.callbacks.spike import TrainingSpikeException
from tests.helpers import RandomDataset, make_classes, quiet_trainer_kwargs, reference_lightning

NAN, INF = math.nan, math.inf

CASES: list[tuple[list[float], dict[str, Any]]] = [
    ([1.0, 0.9, 0.95, 0.8, 5.0, 0.7], {}),  # a clear spike against the running mean
    ([1.0, 1.2, 1.1, 1.3, 1.25, 1.2], {}),  # worse, but within rtol
    ([1.0, 0.9, NAN, 0.8, 0.7, 0.6], {}),  # non-finite is a spike
    ([1.0, 0.9, NAN, 0.8, 0.7, 0.6], {"finite_only": False}),  # ... unless only finite values count
    ([1.0, 0.9, 0.8, 0.7, 0.6, 4.0], {"window": 2, "atol": 10.0}),  # big relative jump, under atol
    ([1.0, 0.9, 0.8, 0.7, 0.6, 4.0], {"window": 2, "atol": 1.0}),  # ... over it
    ([1.0, 1.1, 1.2, 0.1, 1.3, 1.4], {"mode": "max", "rtol": 0.5}),  # a drop is the spike in max mode
    ([9.0, 0.9, 0.8, 0.7, 0.6, 0.5], {"warmup": 0, "rtol": None, "atol": 0.05}),
    ([1.0, 8.0, 0.8, 0.7, 0.6, 0.5], {"warmup": 3}),  # before warmup: not checked, but averaged
    ([1.0, INF, 0.8, 0.7, 0.6, 0.5], {"warmup": 3}),
]


def _run(
    pl: ModuleType, root: Path, losses: list[float], kwargs: dict[str, Any]
) -> tuple[str | None, Any, Any]:
    class Scripted(make_classes(pl)["BoringModel"]):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.layer(batch).sum() * 0 + losses[batch_idx]

    callback = pl.callbacks.SpikeDetection(exclude_batches_path=str(root), **kwargs)
    trainer = pl.Trainer(
        callbacks=[callback], **quiet_trainer_kwargs(root, max_epochs=1, limit_train_batches=len(losses))
    )
    error = None
    try:
        trainer.fit(Scripted(), DataLoader(RandomDataset(32, 64), batch_size=2))
    except RuntimeError as err:  # TrainingSpikeException
        error = f"{type(err).__name__}: {err}"
    path = root / "skip_batches.json"
    return error, json.loads(path.read_text()) if path.exists() else None, callback


@pytest.mark.parity
@pytest.mark.parametrize(("losses", "kwargs"), CASES)
def test_detects_what_lightning_detects(tmp_path: Path, losses: list[float], kwargs: dict[str, Any]) -> None:
    pl = reference_lightning()
    pytest.importorskip("torchmetrics")  # Lightning's SpikeDetection needs it
    our_error, our_batches, ours = _run(lightning_lib, tmp_path / "ours", losses, kwargs)
    their_error, their_batches, theirs = _run(pl, tmp_path / "theirs", losses, kwargs)
    assert our_error == their_error
    assert our_batches == their_batches
    our_state, their_state = ours.state_dict(), theirs.state_dict()
    for key in ("mode", "warmup", "atol", "rtol", "bad_batches"):
        assert our_state[key] == their_state[key], key
    assert our_state["last_val"] == pytest.approx(their_state["last_val"], nan_ok=True)


def test_raises_and_records_the_batch_and_the_one_before(tmp_path: Path) -> None:
    error, batches, callback = _run(lightning_lib, tmp_path, CASES[0][0], {})
    assert error == "TrainingSpikeException: Training spike detected in batch 4"
    assert batches == callback.bad_batches == [3, 4]
    assert issubclass(TrainingSpikeException, RuntimeError)


def test_default_file_is_in_default_root_dir(tmp_path: Path) -> None:
    class Scripted(make_classes(lightning_lib)["BoringModel"]):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.layer(batch).sum() * 0 + [1.0, 0.5, 9.0][batch_idx]

    callback = SpikeDetection()
    trainer = lightning_lib.Trainer(
        callbacks=[callback], **quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3)
    )
    with pytest.raises(TrainingSpikeException):
        trainer.fit(Scripted(), DataLoader(RandomDataset(32, 8), batch_size=2))
    assert json.loads((tmp_path / "skip_batches.json").read_text()) == [1, 2]
    assert callback.exclude_batches_path == str(tmp_path / "skip_batches.json")


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    callback = SpikeDetection(window=3, atol=0.5)
    for value in (1.0, 2.0, 3.0, 4.0):
        callback._update_stats(torch.tensor(value))
    callback.bad_batches = [4, 5]
    torch.save(callback.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    restored = SpikeDetection()
    restored.load_state_dict(state)
    assert restored.state_dict() == callback.state_dict()
    assert restored._running_mean() == pytest.approx(3.0)  # the last 3 values


def test_outputs_and_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Invalid mode\. Has to be min or max, found up"):
        SpikeDetection(mode="up")  # type: ignore[arg-type]
    callback = SpikeDetection(exclude_batches_path=tmp_path)
    with pytest.raises(TypeError, match=r"outputs have to be of type torch\.Tensor or Mapping, got list"):
        callback.on_train_batch_end(None, None, [1.0], None, 0)  # type: ignore[arg-type]
