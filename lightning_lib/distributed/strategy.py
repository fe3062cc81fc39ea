"""Process-level strategies: one device in one process, or DDP (lightning_lib.distributed._ddp) over several.

The Trainer talks to either through the same small surface, the ``Strategy`` protocol: set up the
process (and its group), put the module on its device, run ``training_step``, and the collectives
(identities with one process).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from lightning_lib.distributed import _cluster as cluster

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

    from lightning_lib.core.optimizer import LightningOptimizer
    from lightning_lib.distributed._ddp import DDPStrategy
    from lightning_lib.trainer import Trainer

_T = TypeVar("_T")


@runtime_checkable
class Strategy(Protocol):
    """What the Trainer, its loops, the callbacks, the checkpoint code and the LightningModule use of a strategy.

    ``SingleDeviceStrategy`` (one process) and ``DDPStrategy`` (one process per device) implement it.
    Every rank calls the collectives in the same order; with one process they are identities.
    """

    root_device: torch.device
    num_nodes: int
    trainer: Trainer
    # the LightningOptimizer wrappers of the run's optimizers, set by the Trainer once they are configured
    _lightning_optimizers: list[LightningOptimizer]

    def configure(self, trainer: Trainer, devices: list[torch.device], num_nodes: int) -> None:
        """Bind to ``trainer`` running on ``devices`` of each of ``num_nodes`` nodes (at ``Trainer.__init__``)."""
        ...

    @property
    def world_size(self) -> int:
        """How many processes take part in the run."""
        ...

    @property
    def global_rank(self) -> int:
        """This process's index among all processes."""
        ...

    @property
    def local_rank(self) -> int:
        """This process's index among the processes of its node."""
        ...

    @property
    def node_rank(self) -> int:
        """The index of this process's node."""
        ...

    @property
    def is_global_zero(self) -> bool:
        """Whether this is the process that writes checkpoints and logs."""
        ...

    def setup_environment(self) -> None:
        """Join the other processes of the run (once per process) at the start of every Trainer run."""
        ...

    def explain_failure(self, exc: BaseException) -> BaseException | None:
        """The error to raise instead of ``exc`` when another process's failure caused it, else None."""
        ...

    def setup_module(self, module: nn.Module) -> None:
        """Put ``module`` on ``root_device`` in the precision's dtype, wrapped as the run needs."""
        ...

    def teardown(self) -> None:
        """Drop what ``setup_module`` wrapped, at the end of a Trainer run."""
        ...

    def training_step(self, *args: Any) -> Any:
        """The LightningModule's ``training_step`` through whatever synchronises its gradients."""
        ...

    def block_backward_sync(self) -> AbstractContextManager[object]:
        """A context in which backward accumulates gradients locally, without synchronising them."""
        ...

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        """``tensor`` reduced across processes with ``reduce_op`` ('mean', 'sum', 'max' or 'min')."""
        ...

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """Whether every process (``all``) or any process decided True."""
        ...

    def broadcast(self, obj: _T, src: int = 0) -> _T:
        """Process ``src``'s ``obj``, on every process."""
        ...

    def all_gather_object(self, obj: _T) -> list[_T]:
        """Every process's ``obj``, in rank order."""
        ...

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point."""
        ...

    def all_gather(self, data: Any, group: ProcessGroup | None = None, sync_grads: bool = False) -> Any:
        """Every tensor in ``data`` stacked across processes on a new leading dimension."""
        ...

    # ---- shared by every strategy (what Lightning's ``Strategy`` base provides) -----------------------
    @property
    def lightning_module(self) -> Any:
        """The LightningModule the Trainer runs (None before a run or ``connect``)."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else trainer.lightning_module

    @property
    def model(self) -> Any:
        """The module the strategy runs: the LightningModule (the DDP wrapper stays internal)."""
        return self.lightning_module

    @property
    def precision_plugin(self) -> Any:
        """The Trainer's precision plugin."""
        return self.trainer.precision_plugin

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The run's optimizers, as ``configure_optimizers`` returned them."""
        return list(self.trainer.optimizers)

    def connect(self, model: nn.Module) -> None:
        """Attach ``model`` to the Trainer without running anything (what ``fit`` does first)."""
        self.trainer.lightning_module = model
        model.trainer = self.trainer  # type: ignore[assignment]

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The precision's loss scaling, then ``on_before_backward``, ``LightningModule.backward`` and
        ``on_after_backward`` (automatic optimization's closure and ``manual_backward`` both come here)."""
        hooks = self.trainer._hooks
        scaled = self.trainer.precision_plugin.scale_loss(closure_loss)
        hooks.callbacks("on_before_backward", scaled)
        if hooks.module_overrides("on_before_backward"):
            hooks.module("on_before_backward", scaled)
        hooks.module("backward", scaled, *args, **kwargs)
        hooks.callbacks("on_after_backward")
        if hooks.module_overrides("on_after_backward"):
            hooks.module("on_after_backward")
        return closure_loss

    def batch_to_device(self, batch: Any, device: torch.device | None = None, dataloader_idx: int = 0) -> Any:
        """``batch`` on ``device`` (the root device by default) through the module's batch-transfer hooks."""
        from lightning_lib.utilities.apply_func import move_to_device

        device = device or self.root_device
        if self.lightning_module is None:
            return move_to_device(batch, device)
        hooks = self.trainer._hooks
        batch = hooks.module("on_before_batch_transfer", batch, dataloader_idx)
        batch = hooks.module("transfer_batch_to_device", batch, device, dataloader_idx)
        return hooks.module("on_after_batch_transfer", batch, dataloader_idx)


class SingleDeviceStrategy(Strategy):
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
        return self.__dict__.get("_world_size", 1)

    @world_size.setter
    def world_size(self, value: int) -> None:
        # settable as in Lightning, where tests pose as a multi-process run without launching processes
        self.__dict__["_world_size"] = value

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

    def block_backward_sync(self) -> AbstractContextManager[object]:
        return nullcontext()

    # ---- collectives ----------------------------------------------------------------------------------
    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def broadcast(self, obj: _T, src: int = 0) -> _T:
        return obj

    def all_gather_object(self, obj: _T) -> list[_T]:
        return [obj]

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for with one process."""

    def all_gather(self, data: Any, group: ProcessGroup | None = None, sync_grads: bool = False) -> Any:
        if isinstance(data, torch.Tensor):
            return data.unsqueeze(0) if data.ndim == 0 else data
        return data


class ParallelStrategy(SingleDeviceStrategy):
    """The base of strategies that run one process per device (``DDPStrategy``)."""

    strategy_name = "parallel"


def build_strategy(
    strategy: str | DDPStrategy, devices: list[torch.device], num_nodes: int, trainer: Trainer
) -> Strategy:
    """The strategy for the Trainer's ``strategy`` argument; "auto" picks DDP for more than one process."""
    from lightning_lib.distributed._ddp import DDPStrategy

    # typed as the protocol, so that mypy checks both classes against it at these assignments
    chosen: Strategy
    if isinstance(strategy, DDPStrategy):
        chosen = strategy
    elif strategy == "ddp":
        chosen = DDPStrategy()
    elif strategy == "ddp_find_unused_parameters_true":
        chosen = DDPStrategy(find_unused_parameters=True)
    elif strategy == "ddp_spawn":
        chosen = DDPStrategy(start_method="spawn")
    elif strategy == "ddp_spawn_find_unused_parameters_true":
        chosen = DDPStrategy(start_method="spawn", find_unused_parameters=True)
    elif strategy == "single_device":
        chosen = SingleDeviceStrategy()
    elif len(devices) * num_nodes > 1 or cluster.launched_externally():
        chosen = DDPStrategy()
    else:
        chosen = SingleDeviceStrategy()
    chosen.configure(trainer, devices, num_nodes)
    return chosen


__all__ = ["ParallelStrategy", "SingleDeviceStrategy", "Strategy", "build_strategy"]
