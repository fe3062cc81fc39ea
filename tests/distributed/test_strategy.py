"""The Strategy protocol: both strategies satisfy it, the Trainer holds one, and one process is the identity."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import lightning_lib as pl
from lightning_lib.distributed import DDPStrategy, SingleDeviceStrategy, Strategy


@pytest.mark.parametrize(
    "make", [SingleDeviceStrategy, DDPStrategy, lambda: DDPStrategy(find_unused_parameters=True)]
)
def test_both_strategies_satisfy_the_protocol(make: Callable[[], object]) -> None:
    assert isinstance(make(), Strategy)


def test_an_object_without_the_whole_surface_is_not_a_strategy() -> None:
    partial = SimpleNamespace(
        root_device=torch.device("cpu"), num_nodes=1, world_size=1, barrier=lambda: None
    )
    assert not isinstance(partial, Strategy)
    # the strategies derive from it, as Lightning's do from its Strategy base (mock.patch.object(Strategy, ...)
    # reaches them)
    assert issubclass(SingleDeviceStrategy, Strategy)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"devices": 1}, SingleDeviceStrategy),
        ({"devices": 1, "strategy": "single_device"}, SingleDeviceStrategy),
        ({"devices": 2}, DDPStrategy),
        ({"devices": 1, "strategy": "ddp"}, DDPStrategy),
        ({"devices": 1, "strategy": DDPStrategy(static_graph=True)}, DDPStrategy),
    ],
)
def test_the_trainer_builds_a_strategy(tmp_path: Path, kwargs: dict[str, Any], expected: type) -> None:
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, **kwargs)
    assert isinstance(trainer.strategy, Strategy) and type(trainer.strategy) is expected
    assert trainer.strategy.root_device == torch.device("cpu")
    if isinstance(kwargs.get("strategy"), DDPStrategy):
        assert trainer.strategy is kwargs["strategy"]


def test_one_process_collectives_are_identities() -> None:
    strategy = SingleDeviceStrategy()
    assert (strategy.world_size, strategy.global_rank, strategy.local_rank, strategy.node_rank) == (
        1,
        0,
        0,
        0,
    )
    assert strategy.is_global_zero and strategy.explain_failure(RuntimeError("x")) is None
    value = torch.tensor([1.0, 2.0])
    assert strategy.reduce(value, reduce_op="sum") is value
    assert strategy.reduce_boolean_decision(False, all=False) is False
    marker = object()
    assert strategy.broadcast(marker) is marker and strategy.all_gather_object(marker) == [marker]
    # Lightning's all_gather gives a scalar a leading dimension of one process; other tensors keep their shape
    assert strategy.all_gather(torch.tensor(3.0)).shape == (1,)
    assert strategy.all_gather(value) is value
    with strategy.block_backward_sync():
        strategy.barrier("test")
