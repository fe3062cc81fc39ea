"""Process-level strategies: one device in one process, or DDP (lightning_lib.distributed._ddp) over several.

The Trainer talks to either through the same small surface: set up the process (and its group), put
the module on its device, run ``training_step``, and the collectives (identities with one process).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_lib.distributed import _cluster as cluster

if TYPE_CHECKING:
    from lightning_lib.core.optimizer import LightningOptimizer
    from lightning_lib.trainer import Trainer


class SingleDeviceStrategy:
    """Everything on ``root_device``: collective operations are identities."""

    strategy_name = "single_device"
    trainer: Trainer

    def __init__(self, device: torch.device | None = None) -> None:
        self.root_device = device if device is not None else torch.device("cpu")
        self.num_nodes = 1
        self._lightning_optimizers: list[LightningOptimizer] = []

    def configure(self, trainer: Trainer, devices: list[torch.device], num_nodes: int) -> None:
        """Bind to the trainer that runs on ``devices`` (one here)."""
        if len(devices) != 1 or num_nodes != 1:
            raise ValueError(
                f"Expected one device on one node for strategy='single_device', received {len(devices)} devices"
                f" and num_nodes={num_nodes}; use strategy='ddp' for more."
            )
        self.trainer = trainer
        self.root_device = devices[0]

    # ---- the process --------------------------------------------------------------------------------
    def setup_environment(self) -> None:
        """Nothing to join with one process."""

    def explain_failure(self, exc: BaseException) -> BaseException | None:
        """Only a multi-process run has other processes whose failure could explain ``exc``."""
        return None

    @property
    def world_size(self) -> int:
        return 1

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def is_global_zero(self) -> bool:
        return True

    # ---- the model ----------------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> None:
        """Apply the precision's dtype conversion, then move the module to the device."""
        self.trainer.precision_plugin.convert_module(module)
        module.to(self.root_device)

    def teardown(self) -> None:
        """Nothing was wrapped."""

    def training_step(self, *args: Any) -> Any:
        return self.trainer._hooks.module("training_step", *args)

    def block_backward_sync(self) -> Any:
        return nullcontext()

    # ---- collectives ----------------------------------------------------------------------------------
    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for with one process."""

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        if isinstance(data, torch.Tensor):
            return data.unsqueeze(0) if data.ndim == 0 else data
        return data


def build_strategy(strategy: Any, devices: list[torch.device], num_nodes: int, trainer: Trainer) -> Any:
    """The strategy for the Trainer's ``strategy`` argument; "auto" picks DDP for more than one process."""
    from lightning_lib.distributed._ddp import DDPStrategy

    if isinstance(strategy, DDPStrategy):
        chosen: Any = strategy
    elif strategy == "ddp":
        chosen = DDPStrategy()
    elif strategy == "ddp_find_unused_parameters_true":
        chosen = DDPStrategy(find_unused_parameters=True)
    elif strategy == "single_device":
        chosen = SingleDeviceStrategy()
    elif len(devices) * num_nodes > 1 or cluster.launched_externally():
        chosen = DDPStrategy()
    else:
        chosen = SingleDeviceStrategy()
    chosen.configure(trainer, devices, num_nodes)
    return chosen


__all__ = ["SingleDeviceStrategy", "build_strategy"]
