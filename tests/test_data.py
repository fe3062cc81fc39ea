"""Data plumbing: batch counting, LimitedFetcher, moving batches, datamodule hooks."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

import lightning_lib as pl
from lightning_lib.loop.loaders import (
    INF,
    LimitedFetcher,
    check_iterable,
    flatten_loaders,
    num_batches,
    sized_len,
    with_sequential_sampler,
)
from lightning_lib.utilities.apply_func import apply_to_tensors, move_to_device
from tests.support import CountingModel, loader, trainer_kwargs


class _Stream(IterableDataset):
    """An iterable dataset without a length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(torch.arange(float(self.n)).unsqueeze(1).repeat(1, 32))


def _drain(fetcher: LimitedFetcher) -> list[tuple[Any, bool]]:
    out = []
    while True:
        try:
            batch = next(fetcher)
        except StopIteration:
            return out
        out.append((batch, fetcher.done))


# ---- counting batches ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("length", "limit", "expected"),
    [
        (10, 1.0, 10),
        (10, 0.5, 5),
        (10, 3, 3),
        (10, 20, 10),
        (10, 0, 0),
        (10, 0.0, 0),
        (None, 1.0, INF),
        (None, 4, 4),
    ],
)
def test_num_batches(length: int | None, limit: Any, expected: Any) -> None:
    source: Any = list(range(length)) if length is not None else iter(range(3))
    assert num_batches(source, limit, "train") == expected


def test_num_batches_errors() -> None:
    with pytest.raises(
        ValueError,
        match=r"`IterableDataset`, `Trainer\(limit_val_batches\)` must be `1.0` or an int.*received 0.5",
    ):
        num_batches(iter(range(3)), 0.5, "val")
    with pytest.raises(ValueError, match=r"check 0.05 of the `test_dataloader` but 0.05 \* 10 < 1"):
        num_batches(list(range(10)), 0.05, "test")


def test_flatten_and_check_iterable() -> None:
    a, b = [1], [2]
    single = loader()
    assert flatten_loaders(None) == []
    assert flatten_loaders(single) == [single]
    assert flatten_loaders([a, b]) == [1, 2]  # lists are structure at every level, as in Lightning
    assert flatten_loaders({"x": single, "y": (single, [single])}) == [single, single, single]
    check_iterable(loader(), "train_dataloader")
    for bad in ("abc", 3, {"a": 1}):
        with pytest.raises(TypeError, match=r"`train_dataloader` to return an iterable"):
            check_iterable(bad, "train_dataloader")


def test_sized_len() -> None:
    assert sized_len([1, 2]) == 2
    assert sized_len(iter([1])) is None
    assert sized_len(DataLoader(_Stream(3))) is None


# ---- LimitedFetcher ----------------------------------------------------------------------------------------
def test_fetcher_sized_knows_the_last_batch() -> None:
    fetcher = LimitedFetcher([10, 11, 12], 3)
    fetcher.start()
    assert _drain(fetcher) == [(10, False), (11, False), (12, True)]
    assert fetcher.done and fetcher.fetched == 3


def test_fetcher_sized_with_a_limit_and_restart() -> None:
    fetcher = LimitedFetcher([10, 11, 12], 2)
    fetcher.start()
    assert _drain(fetcher) == [(10, False), (11, True)]
    fetcher.start()
    assert _drain(fetcher) == [(10, False), (11, True)]


def test_fetcher_skip_resumes_mid_epoch() -> None:
    fetcher = LimitedFetcher([10, 11, 12, 13], 4)
    fetcher.start(skip=2)
    # the skipped batches are counted; the iterator is fresh (resumable samplers skip themselves)
    assert fetcher.fetched == 2
    assert [b for b, _ in _drain(fetcher)] == [10, 11]
    fetcher.start(skip=4)
    assert fetcher.done and _drain(fetcher) == []


def test_fetcher_unsized_prefetches_one_batch() -> None:
    pulled: list[int] = []

    def generate() -> Iterator[int]:
        for i in range(3):
            pulled.append(i)
            yield i

    class Once:
        def __iter__(self) -> Iterator[int]:
            return generate()

    fetcher = LimitedFetcher(Once(), INF)
    fetcher.start()
    assert pulled == [0]  # look-ahead of one
    assert next(fetcher) == 0 and pulled == [0, 1] and not fetcher.done
    assert next(fetcher) == 1 and not fetcher.done
    assert next(fetcher) == 2 and fetcher.done
    with pytest.raises(StopIteration):
        next(fetcher)


def test_fetcher_unsized_empty_and_shorter_than_the_limit() -> None:
    fetcher = LimitedFetcher([], INF)
    fetcher.start()
    assert _drain(fetcher) == []
    fetcher = LimitedFetcher([1, 2], 5)  # the loader runs out before the limit
    fetcher.start()
    assert _drain(fetcher) == [(1, False), (2, False)]
    assert fetcher.done


def test_fetcher_not_started_and_closed() -> None:
    fetcher = LimitedFetcher([1], 1)
    with pytest.raises(StopIteration):
        next(fetcher)
    fetcher.start()
    fetcher.close()
    with pytest.raises(StopIteration):
        next(fetcher)


def test_is_last_batch_is_visible_to_the_step(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.seen.setdefault("last", []).append(self.trainer.is_last_batch)
            return super().training_step(batch, batch_idx)

    for data in (loader(6), DataLoader(_Stream(3))):
        model = Model()
        pl.Trainer(**trainer_kwargs(tmp_path, limit_train_batches=None, limit_val_batches=0)).fit(model, data)
        assert model.seen["last"] == [False, False, True]


# ---- overfit_batches' loader --------------------------------------------------------------------------------
def test_with_sequential_sampler() -> None:
    shuffled = DataLoader(list(range(8)), batch_size=2, shuffle=True, drop_last=True)
    plain = with_sequential_sampler(shuffled)
    assert isinstance(plain.sampler, SequentialSampler) and plain.drop_last and plain.batch_size == 2
    assert [b.tolist() for b in plain] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    already = DataLoader(list(range(4)))
    assert with_sequential_sampler(already) is already
    assert with_sequential_sampler([1, 2]) == [1, 2]

    class Custom(DataLoader):
        pass

    with pytest.raises(ValueError, match=r"plain torch DataLoader .*received Custom"):
        with_sequential_sampler(Custom(list(range(4)), shuffle=True))


# ---- moving batches -----------------------------------------------------------------------------------------
Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    meta: str
    extra: list[torch.Tensor]
    cached: torch.Tensor = dataclasses.field(init=False, default_factory=lambda: torch.zeros(1))


def test_apply_to_tensors_on_nested_structures() -> None:
    data = {
        "a": [torch.ones(1), (torch.ones(2), "text")],
        "pair": Pair(torch.ones(3), 5),
        "batch": Batch(torch.ones(4), "m", [torch.ones(5)]),
        "ordered": OrderedDict(z=torch.ones(6)),
    }
    out = apply_to_tensors(data, lambda t: t * 2)
    assert out["a"][0].tolist() == [2.0] and isinstance(out["a"][1], tuple) and out["a"][1][1] == "text"
    assert isinstance(out["pair"], Pair) and out["pair"].x.tolist() == [2.0] * 3 and out["pair"].y == 5
    assert (
        isinstance(out["batch"], Batch) and out["batch"].x.tolist() == [2.0] * 4 and out["batch"].meta == "m"
    )
    assert out["batch"].extra[0].tolist() == [2.0] * 5
    assert isinstance(out["ordered"], OrderedDict) and out["ordered"]["z"].tolist() == [2.0] * 6
    assert data["a"][0].tolist() == [1.0]  # the input is not modified


def test_move_to_device_uses_to_with_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[tuple[str, bool]] = []
    original = torch.Tensor.to

    def fake_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, torch.device) and target.type == "cuda":
            moved.append((str(target), bool(kwargs.get("non_blocking"))))
            return self.clone()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    batch = {"x": torch.ones(2), "pair": Pair(torch.ones(1), torch.zeros(1)), "n": 3}
    out = move_to_device(batch, torch.device("cuda", 0))
    assert moved == [("cuda:0", True)] * 3  # CUDA copies do not block
    assert out["n"] == 3 and isinstance(out["pair"], Pair)


def test_move_to_device_on_cpu_returns_the_same_tensors() -> None:
    tensor = torch.ones(2)
    assert move_to_device(tensor, "cpu") is tensor
    batch = [tensor, {"k": tensor}]
    out = move_to_device(batch, torch.device("cpu"))
    assert out[0] is tensor and out[1]["k"] is tensor


def test_move_to_device_calls_a_custom_to() -> None:
    class Custom:
        def __init__(self) -> None:
            self.device: Any = None

        def to(self, device: Any) -> Custom:
            self.device = device
            return self

    class Broken:
        def to(self, *args: Any) -> Any:
            raise TypeError("no")

    custom = move_to_device(Custom(), "cpu")
    assert custom.device == torch.device("cpu")
    broken = Broken()
    assert move_to_device(broken, "cpu") is broken


# ---- datamodule hooks ------------------------------------------------------------------------------------------
def test_datamodule_hooks_and_stages(tmp_path: Any) -> None:
    calls: list[str] = []

    class DataModule(pl.LightningDataModule):
        def prepare_data(self) -> None:
            calls.append("prepare_data")

        def setup(self, stage: str) -> None:
            calls.append("setup:" + stage)  # a TrainerFn, as in Lightning: a str

        def teardown(self, stage: str) -> None:
            calls.append("teardown:" + stage)

        def train_dataloader(self) -> Any:
            return loader(8)

        def val_dataloader(self) -> Any:
            return loader(4)

        def test_dataloader(self) -> Any:
            return loader(4)

        def predict_dataloader(self) -> Any:
            return loader(4)

    trainer = pl.Trainer(**trainer_kwargs(tmp_path))
    model = CountingModel()
    datamodule = DataModule()
    trainer.fit(model, datamodule=datamodule)
    assert datamodule.trainer is trainer and trainer.datamodule is datamodule
    trainer.validate(model, datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    trainer.predict(model, datamodule=datamodule)
    assert calls == [
        "prepare_data", "setup:fit", "teardown:fit",
        "prepare_data", "setup:validate", "teardown:validate",
        "prepare_data", "setup:test", "teardown:test",
        "prepare_data", "setup:predict", "teardown:predict",
    ]  # fmt: skip


def test_datamodule_transfer_hooks_replace_the_modules(tmp_path: Any) -> None:
    calls: list[Any] = []

    class DataModule(pl.LightningDataModule):
        def train_dataloader(self) -> Any:
            return loader(4)

        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            calls.append("dm_before")
            return batch * 0

        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            calls.append("dm_after")
            return batch + 1

    class Model(CountingModel):
        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            calls.append("module_before")
            return batch

        def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
            calls.append("module_transfer")
            return batch

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            calls.append(float(batch.sum()))
            return super().training_step(batch, batch_idx)

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    with pytest.warns(UserWarning, match=r"`on_before_batch_transfer` is overridden in both"):
        trainer.fit(Model(), datamodule=DataModule())
    # Lightning's rule: a hook the datamodule overrides replaces the module's; others stay the module's
    assert calls == ["dm_before", "module_transfer", "dm_after", 64.0]


def test_module_transfer_hooks_see_the_batch(tmp_path: Any) -> None:
    class Model(CountingModel):
        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            return {"x": batch, "idx": dataloader_idx}

        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            return batch["x"] * 0 + 1

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            assert float(batch.min()) == 1.0
            return super().validation_step(batch, batch_idx)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            assert float(batch.min()) == 1.0
            return super().training_step(batch, batch_idx)

    model = Model()
    pl.Trainer(**trainer_kwargs(tmp_path)).fit(model)
    assert model.train_steps == 2 and model.val_steps == 1


def test_datamodule_state_and_hparams_in_checkpoints(tmp_path: Any) -> None:
    class DataModule(pl.LightningDataModule):
        def __init__(self, batch_size: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.cursor = 0

        def train_dataloader(self) -> Any:
            return loader(8, batch_size=self.hparams.batch_size)

        def state_dict(self) -> dict[str, Any]:
            return {"cursor": 7}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.cursor = state_dict["cursor"]

    trainer = pl.Trainer(**trainer_kwargs(tmp_path, limit_val_batches=0))
    trainer.fit(CountingModel(), datamodule=DataModule(batch_size=4))
    path = tmp_path / "dm.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 4}
    assert checkpoint[DataModule.__qualname__] == {"cursor": 7}
    restored = DataModule()
    pl.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, limit_val_batches=0)).fit(
        CountingModel(), datamodule=restored, ckpt_path=path
    )
    assert restored.cursor == 7
