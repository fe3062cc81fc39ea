"""Process-level strategy. One device in one process for now; DDP lands here later."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from lightning_lib.optim import LightningOptimizer
    from lightning_lib.trainer import Trainer


class SingleDeviceStrategy:
    """Everything on ``root_device``: collective operations are identities."""

    def __init__(self, device: torch.device, trainer: Trainer) -> None:
        self.root_device = device
        self.trainer = trainer
        self._lightning_optimizers: list[LightningOptimizer] = []

    def setup_module(self, module: nn.Module) -> None:
        """Apply the precision's dtype conversion, then move the module to the device."""
        self.trainer.precision_plugin.convert_module(module)
        module.to(self.root_device)

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for with one process."""

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        if isinstance(data, torch.Tensor):
            return data.unsqueeze(0) if data.ndim == 0 else data
        return data

    @property
    def is_global_zero(self) -> bool:
        return True
