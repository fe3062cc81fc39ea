"""seed_everything, worker seeding and RNG state capture/restore."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from lightning_lib.loop.loaders import add_worker_init_fn
from lightning_lib.utilities.seed import (
    capture_rng_states,
    reset_seed,
    restore_rng_states,
    worker_init_function,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_same_seed_gives_the_same_numbers() -> None:
    assert pl.seed_everything(7) == 7
    first = _draw()
    pl.seed_everything(7)
    assert _draw() == first
    pl.seed_everything(8)
    assert _draw() != first


def test_env_vars_and_workers_flag() -> None:
    pl.seed_everything(7, workers=True)
    assert os.environ["PL_GLOBAL_SEED"] == "7" and os.environ["PL_SEED_WORKERS"] == "1"
    pl.seed_everything(9)
    assert os.environ["PL_GLOBAL_SEED"] == "9" and os.environ["PL_SEED_WORKERS"] == "0"


def test_seed_from_env_or_zero(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        assert pl.seed_everything() == 0
    assert "No seed found" in caplog.text
    os.environ["PL_GLOBAL_SEED"] = "42"
    assert pl.seed_everything() == 42


@pytest.mark.parametrize(("seed", "message"), [(-1, "received -1"), (2**32, "received 4294967296")])
def test_out_of_range_seed(seed: int, message: str) -> None:
    with pytest.raises(ValueError, match=r"Expected seed in \[0, 4294967295\], " + message):
        pl.seed_everything(seed)


def test_bad_env_seed_is_named() -> None:
    os.environ["PL_GLOBAL_SEED"] = "xyz"
    with pytest.raises(ValueError, match=r"PL_GLOBAL_SEED to be an integer, received 'xyz'"):
        pl.seed_everything()


def test_float_seed_is_truncated() -> None:
    assert pl.seed_everything(1.5) == 1  # type: ignore[arg-type]


def test_reset_seed_reapplies_the_last_seed() -> None:
    pl.seed_everything(5, workers=True)
    first = _draw()
    reset_seed()
    assert _draw() == first
    assert os.environ["PL_SEED_WORKERS"] == "1"


def test_capture_and_restore_round_trip() -> None:
    pl.seed_everything(3)
    states = capture_rng_states()
    first = _draw()
    _draw()
    restore_rng_states(states)
    assert _draw() == first


def test_captured_states_survive_a_weights_only_checkpoint(tmp_path: Any) -> None:
    pl.seed_everything(4)
    path = tmp_path / "rng.pt"
    torch.save({"rng": capture_rng_states()}, path)
    first = _draw()
    restore_rng_states(torch.load(path, weights_only=True)["rng"])
    assert _draw() == first


def test_restore_accepts_partial_states() -> None:
    pl.seed_everything(6)
    only_torch = {"torch": torch.get_rng_state()}
    expected = torch.rand(1).item()
    restore_rng_states(only_torch)
    assert torch.rand(1).item() == expected


def test_worker_init_function_gives_distinct_reproducible_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    def seeds_for(worker_id: int, rank: int) -> tuple[float, float, float]:
        torch.manual_seed(1000 + worker_id)  # what DataLoader does: base seed + worker id
        worker_init_function(worker_id, rank=rank)
        return _draw()

    assert seeds_for(0, 0) == seeds_for(0, 0)
    assert seeds_for(0, 0) != seeds_for(1, 0)
    assert seeds_for(0, 0) != seeds_for(0, 1)


def test_worker_init_fn_is_added_only_when_asked() -> None:
    dataset = list(range(4))
    loader = DataLoader(dataset, num_workers=2)
    add_worker_init_fn(loader)
    assert loader.worker_init_fn is None
    pl.seed_everything(1, workers=True)
    add_worker_init_fn(loader)
    assert loader.worker_init_fn is not None
    no_workers = DataLoader(dataset)
    add_worker_init_fn(no_workers)
    assert no_workers.worker_init_fn is None

    def own(worker_id: int) -> None: ...

    custom = DataLoader(dataset, num_workers=2, worker_init_fn=own)
    add_worker_init_fn(custom)
    assert custom.worker_init_fn is own


def test_seeded_fits_are_identical(tmp_path: Any) -> None:
    from tests.helpers import ClassifierDataModule, ClassifierModel
    from tests.support import trainer_kwargs

    def run() -> list[float]:
        pl.seed_everything(11)
        model = ClassifierModel()
        pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=3)).fit(
            model, datamodule=ClassifierDataModule()
        )
        return model.losses

    assert run() == run()
