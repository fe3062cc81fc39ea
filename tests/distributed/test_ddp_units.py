"""The DDP pieces that need no second process: sampler injection, rank-zero loggers, the environment."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, Sampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import lightning_lib as pl
from lightning_lib.distributed import _cluster as cluster
from lightning_lib.distributed._ddp import DDPStrategy, _reduce_name
from lightning_lib.distributed._launcher import script_command
from lightning_lib.distributed.strategy import SingleDeviceStrategy
from lightning_lib.loggers import CSVLogger, Logger, MLFlowLogger
from lightning_lib.loop.loaders import ShardedSampler, with_distributed_sampler
from lightning_lib.utilities.rank_zero import DummyExperiment, rank_zero_only

DATA = TensorDataset(torch.arange(10).float())


class _Stream(IterableDataset[Any]):
    def __iter__(self) -> Any:
        return iter(range(4))


class _EveryOther(Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Any:
        return iter(range(0, self.n, 2))

    def __len__(self) -> int:
        return len(range(0, self.n, 2))


def shard(loader: DataLoader, rank: int, hook: str = "train_dataloader") -> list[int]:
    out = with_distributed_sampler(loader, 2, rank, hook)
    return [int(i) for batch in out for i in batch[0]]


def test_sequential_and_random_samplers_become_distributed_samplers(monkeypatch: pytest.MonkeyPatch) -> None:
    sequential = DataLoader(DATA, batch_size=2)
    wrapped = with_distributed_sampler(sequential, 2, 1, "train_dataloader")
    assert isinstance(wrapped.sampler, DistributedSampler) and not wrapped.sampler.shuffle
    assert wrapped.batch_size == 2
    assert shard(sequential, 0) == [0, 2, 4, 6, 8] and shard(sequential, 1) == [1, 3, 5, 7, 9]

    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    shuffled = DataLoader(DATA, batch_size=2, shuffle=True)
    sampler = with_distributed_sampler(shuffled, 2, 0, "train_dataloader").sampler
    assert isinstance(sampler, DistributedSampler) and sampler.shuffle and sampler.seed == 11
    # both ranks draw the same permutation, so together they see every sample once per epoch
    assert sorted(shard(shuffled, 0) + shard(shuffled, 1)) == list(range(10))


def test_other_samplers_are_sharded_and_prediction_repeats_nothing() -> None:
    odd = DataLoader(TensorDataset(torch.arange(7).float()), batch_size=1, sampler=_EveryOther(7))
    assert shard(odd, 0) == [0, 4] and shard(odd, 1) == [2, 6]
    padded = with_distributed_sampler(
        DataLoader(TensorDataset(torch.arange(5).float())), 2, 1, "val_dataloader"
    )
    assert [int(b[0]) for b in padded] == [1, 3, 0]  # padded with the head: both ranks take 3 batches
    predict = DataLoader(TensorDataset(torch.arange(5).float()))
    assert shard(predict, 0, "predict_dataloader") == [0, 2, 4]
    assert shard(predict, 1, "predict_dataloader") == [1, 3]
    assert isinstance(with_distributed_sampler(predict, 2, 1, "predict_dataloader").sampler, ShardedSampler)


def test_loaders_that_cannot_or_need_not_be_sharded() -> None:
    stream = DataLoader(_Stream(), batch_size=2)
    assert with_distributed_sampler(stream, 2, 0, "train_dataloader") is stream
    done = DataLoader(DATA, sampler=DistributedSampler(DATA, num_replicas=2, rank=0))
    assert with_distributed_sampler(done, 2, 0, "train_dataloader") is done

    class MyLoader(DataLoader):  # type: ignore[type-arg]
        pass

    with pytest.raises(
        ValueError, match=r"plain torch DataLoader .*`train_dataloader`.*use_distributed_sampler=False"
    ):
        with_distributed_sampler(MyLoader(DATA), 2, 0, "train_dataloader")


def test_the_trainer_injects_the_sampler_only_for_several_processes(tmp_path: Path) -> None:
    loader = DataLoader(DATA, batch_size=2, sampler=RandomSampler(DATA))
    two = pl.Trainer(accelerator="cpu", devices=2, default_root_dir=tmp_path)
    assert isinstance(two.strategy, DDPStrategy) and two.world_size == 2 and two.is_global_zero
    assert isinstance(two._data.prepare(loader, "train_dataloader").sampler, DistributedSampler)
    off = pl.Trainer(accelerator="cpu", devices=2, use_distributed_sampler=False, default_root_dir=tmp_path)
    assert off._data.prepare(loader, "train_dataloader").sampler is loader.sampler
    one = pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path)
    assert isinstance(one.strategy, SingleDeviceStrategy)
    assert one._data.prepare(loader, "train_dataloader") is loader


def test_loggers_do_nothing_on_other_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    csv = CSVLogger(tmp_path / "csv")
    csv.log_hyperparams({"a": 1})
    csv.log_metrics({"loss": 1.0}, step=0)
    csv.finalize("success")
    assert isinstance(csv.experiment, DummyExperiment)
    assert not (tmp_path / "csv").exists()

    mlflow = MLFlowLogger(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="x")
    assert isinstance(mlflow.experiment, DummyExperiment) and mlflow.run_id is None
    mlflow.log_hyperparams({"a": 1})
    mlflow.log_metrics({"loss": 1.0}, step=0)
    mlflow.finalize("success")
    assert not (tmp_path / "mlflow.db").exists()

    class Recording(Logger):
        calls: list[str] = []

        @property
        def name(self) -> str:
            return "r"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.calls.append("metrics")

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            self.calls.append("hparams")

    Recording().log_metrics({"x": 1.0})
    assert Recording.calls == []
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    Recording().log_metrics({"x": 1.0})
    assert Recording.calls == ["metrics"]


def test_torchrun_environment_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}
    env |= {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "job"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(cluster.LAUNCHED_BY_TRAINER, raising=False)
    assert cluster.launched_externally()
    found = cluster.from_environment(devices=2, num_nodes=2)
    assert (found.global_rank, found.local_rank, found.node_rank, found.world_size) == (3, 1, 1, 4)
    assert found.external and found.main_address == "10.0.0.1"
    with pytest.raises(ValueError, match=r"devices=1, num_nodes=2.*WORLD_SIZE=4, LOCAL_WORLD_SIZE=2"):
        cluster.from_environment(devices=1, num_nodes=2)
    trainer = pl.Trainer(accelerator="cpu", devices=2, num_nodes=2, logger=False)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert not trainer.is_global_zero
    with pytest.raises(ValueError, match="WORLD_SIZE=4"):
        pl.Trainer(accelerator="cpu", devices=1, logger=False)  # "auto" under torchrun is DDP
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK to be an integer, received 'x'"):
        cluster.from_environment(devices=2, num_nodes=2)


def test_the_local_launcher_needs_a_script_and_reductions_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # under pytest there is no script to run again for the other ranks: say so instead of re-running pytest
    with pytest.raises(
        RuntimeError, match=r"Expected a script for Trainer\(strategy='ddp', devices>1\).*torchrun"
    ):
        script_command()
    assert _reduce_name("mean") == _reduce_name(torch.mean) == "mean"
    assert _reduce_name("max") == "max" and _reduce_name(torch.sum) == "sum"
    with pytest.raises(ValueError, match=r"'mean', 'sum', 'max' or 'min' .*received 'median'"):
        _reduce_name("median")
    assert os.environ.get(cluster.LAUNCHED_BY_TRAINER) is None


def test_the_local_launcher_never_relaunches_a_registered_orchestrators_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_lib.utilities.orchestration import (
        Orchestrator,
        register_orchestrator,
        unregister_orchestrator,
    )

    main = types.ModuleType("__main__")  # as `python -m sched_jobs.train --epochs 2` would leave it
    main.__spec__ = types.SimpleNamespace(name="sched_jobs.train")  # type: ignore[assignment]
    main.__file__ = "/project/sched_jobs/train.py"
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [main.__file__, "--epochs", "2"])
    # `python -m package.module` is relaunched as such while no orchestrator claims the module
    assert script_command() == [sys.executable, "-m", "sched_jobs.train", "--epochs", "2"]
    register_orchestrator(Orchestrator("test-scheduler", entry_modules=("sched_jobs",)))
    try:
        with pytest.raises(
            RuntimeError, match=r"started as 'sched_jobs.train' \(.*an orchestrator\).*torchrun"
        ):
            script_command()
    finally:
        unregister_orchestrator("test-scheduler")
    assert script_command()[:3] == [sys.executable, "-m", "sched_jobs.train"]
