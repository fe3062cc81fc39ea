"""Exact resumption with train loaders that keep their own position (``state_dict``/``load_state_dict``).

torchdata's StatefulDataLoader (when installed) and a small DataLoader subclass written here (always)
are interrupted mid-epoch and at an epoch boundary; the resumed fit must end with the same weights as
an uninterrupted one, and must not load the samples of the batches it skips.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

import lightning_lib as pl
from tests.helpers import ClassifierModel, Crash, CrashAfter, classification_data, quiet_trainer_kwargs

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")  # torchdata 0.11

N, BATCH, EPOCHS = 96, 8, 3
BATCHES = N // BATCH


class CountingDataset(Dataset):
    """The classification data, counting how many samples were loaded (in worker processes too)."""

    def __init__(self) -> None:
        self.data = classification_data(N, seed=0)
        self._loaded = multiprocessing.Value("i", 0)

    @property
    def loaded(self) -> int:
        return int(self._loaded.value)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        with self._loaded.get_lock():
            self._loaded.value += 1
        return self.data[index]


class ShufflingLoader(DataLoader):
    """A DataLoader subclass that shuffles with its own generator and can resume part-way.

    Its state is the current epoch's permutation, how many batches it has handed out, and its
    generator (which draws the permutation of every later epoch).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int) -> None:
        super().__init__(dataset, batch_size=batch_size)
        self._generator = torch.Generator().manual_seed(seed)
        self._order: torch.Tensor | None = None
        self._served = 0
        self._resume: tuple[torch.Tensor, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if self._resume is not None:
            (order, start), self._resume = self._resume, None
        else:
            order, start = torch.randperm(len(self.dataset), generator=self._generator), 0  # type: ignore[arg-type]
        self._order, self._served = order, start
        for b in range(start, len(self)):
            indices = order[b * self.batch_size : (b + 1) * self.batch_size].tolist()  # type: ignore[operator]
            self._served = b + 1
            yield default_collate([self.dataset[i] for i in indices])

    def state_dict(self) -> dict[str, Any]:
        return {"order": self._order, "served": self._served, "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"])
        if state["order"] is not None and state["served"] < len(self):
            self._resume = (state["order"], state["served"])


def _stateful_dataloader(dataset: Dataset, workers: int = 0) -> DataLoader:
    torchdata = pytest.importorskip("torchdata.stateful_dataloader")
    return torchdata.StatefulDataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)


def _fit(
    root: Path, make_loader: Callable[[Dataset], DataLoader], every: int, crash_at: int | None, ckpt_path: Any
) -> tuple[list[torch.Tensor], pl.Trainer, int]:
    pl.seed_everything(21)
    model = ClassifierModel(dropout=0.3)
    dataset = CountingDataset()
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=root / "ckpt", every_n_train_steps=every, save_top_k=-1, save_last=True
    )
    callbacks: list[Any] = [checkpoint] + ([CrashAfter(crash_at)] if crash_at is not None else [])
    trainer = pl.Trainer(
        callbacks=callbacks,
        **quiet_trainer_kwargs(root, max_epochs=EPOCHS, enable_checkpointing=True, limit_val_batches=2),
    )
    val = DataLoader(classification_data(32, seed=1), batch_size=BATCH)
    if crash_at is None:
        trainer.fit(model, make_loader(dataset), val, ckpt_path=ckpt_path)
    else:
        with pytest.raises(Crash):
            trainer.fit(model, make_loader(dataset), val, ckpt_path=ckpt_path)
    return [p.detach().clone() for p in model.parameters()], trainer, dataset.loaded


def _check_resume(
    tmp_path: Path, make_loader: Callable[[Dataset], DataLoader], every: int, crash_at: int
) -> None:
    reference, ref_trainer, _ = _fit(tmp_path / "ref", make_loader, every, None, None)
    _fit(tmp_path / "run", make_loader, every, crash_at, None)
    from lightning_lib.checkpoint._format import load_file
    from lightning_lib.checkpoint._resume import select_ckpt_path as _select
    from lightning_lib.trainer.states import TrainerFn

    probe = pl.Trainer(
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "run" / "ckpt")],
        **quiet_trainer_kwargs(tmp_path, enable_checkpointing=True),
    )
    last = _select(probe, TrainerFn.FITTING, "last", True)
    assert last is not None
    # read before resuming: the resumed fit deletes the "last" it started from once it has a newer one
    resumed_from = load_file(last)["global_step"]
    weights, trainer, loaded = _fit(tmp_path / "run", make_loader, every, None, "last")
    assert resumed_from == crash_at // every * every
    assert trainer.global_step == ref_trainer.global_step == EPOCHS * BATCHES
    # only the batches still to train were loaded: the skipped ones never were
    assert loaded == (EPOCHS * BATCHES - resumed_from) * BATCH
    for ours, ref in zip(weights, reference):
        assert torch.equal(ours, ref)


def _shuffling(dataset: Dataset) -> DataLoader:
    return ShufflingLoader(dataset, batch_size=BATCH, seed=3)


@pytest.mark.parametrize(
    ("every", "crash_at"),
    [
        pytest.param(4, 10, id="mid-epoch"),
        pytest.param(4, 22, id="mid-epoch-later"),
        pytest.param(12, 13, id="epoch-boundary"),
        pytest.param(4, 26, id="epoch-boundary-later"),
    ],
)
def test_dataloader_subclass_with_state_resumes_exactly(tmp_path: Path, every: int, crash_at: int) -> None:
    _check_resume(tmp_path, _shuffling, every, crash_at)


@pytest.mark.parametrize(
    ("every", "crash_at"), [(4, 10), (4, 26), (12, 13)], ids=["mid", "later", "boundary"]
)
def test_stateful_dataloader_resumes_exactly(tmp_path: Path, every: int, crash_at: int) -> None:
    _check_resume(tmp_path, _stateful_dataloader, every, crash_at)


@pytest.mark.slow
def test_stateful_dataloader_with_workers_resumes_exactly(tmp_path: Path) -> None:
    _check_resume(tmp_path, lambda dataset: _stateful_dataloader(dataset, workers=2), 4, 10)
