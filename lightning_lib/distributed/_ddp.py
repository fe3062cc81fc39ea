"""DDP over torch.distributed: one process per device, gradients averaged by DistributedDataParallel.

The processes come from torchrun (or any launcher that sets its environment) or from the Trainer's
local launcher for ``devices=N``. The LightningModule itself stays what users and callbacks see;
``training_step`` runs through the DDP wrapper so its backward is all-reduced.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lightning_lib.distributed import _cluster as cluster
from lightning_lib.distributed._launcher import LocalLauncher, RankFailedError, watch_parent
from lightning_lib.distributed._spawn import SpawnLauncher
from lightning_lib.distributed.strategy import ParallelStrategy
from lightning_lib.utilities.apply_func import apply_to_tensors
from lightning_lib.utilities.rank_zero import rank_zero_only

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

    from lightning_lib.trainer import Trainer

_T = TypeVar("_T")
log = logging.getLogger("lightning_lib")

_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
# one launcher per process: a second Trainer in the same script reuses the ranks already started
_launcher: LocalLauncher | None = None
_watching = [False]  # a child's parent watchdog, started once per process
# decisions and small objects (stop? which file?) go through a gloo group on the host: with NCCL they
# would need a device tensor and a host-device sync at every step
_control_group: list[ProcessGroup | None] = [None]
_START_METHODS = ("popen", "spawn")


class _TrainingStep(nn.Module):
    """What DDP wraps: its forward is the LightningModule's ``training_step``, dispatched as a hook."""

    def __init__(self, module: nn.Module, trainer: Trainer) -> None:
        super().__init__()
        self.module = module
        self._trainer = [trainer]  # a list, so nn.Module does not register the trainer as a child

    def forward(self, *args: Any) -> Any:
        return self._trainer[0]._hooks.module("training_step", *args)


class DDPStrategy(ParallelStrategy):
    """``Trainer(strategy="ddp")``; keyword arguments go to ``DistributedDataParallel``.

    ``start_method="popen"`` (the default) starts the other ranks by running the script again;
    ``"spawn"`` (``strategy="ddp_spawn"``) runs each entry point in new processes instead (``SpawnLauncher``).
    """

    strategy_name = "ddp"

    def __init__(
        self,
        process_group_backend: str | None = None,
        timeout: timedelta = timedelta(minutes=30),
        start_method: str = "popen",
        **ddp_kwargs: Any,
    ) -> None:
        if start_method not in _START_METHODS:
            raise ValueError(
                f"Expected start_method to be one of {_START_METHODS}, received {start_method!r}."
            )
        super().__init__()
        self._start_method = start_method
        # set in the processes the spawn launcher started: there the entry points run, not launch
        self._spawned = False
        self.launcher: SpawnLauncher | None = None
        self.process_group_backend = process_group_backend
        self.timeout = timeout
        self.ddp_kwargs = ddp_kwargs
        self.env: cluster.ClusterEnvironment | None = None
        self.parallel_devices: list[torch.device] = []
        self._ddp: DistributedDataParallel | None = None

    # ---- configuration (Trainer.__init__) -----------------------------------------------------------
    def configure(self, trainer: Trainer, devices: list[torch.device], num_nodes: int) -> None:
        """Bind to the trainer; ranks come from torchrun's environment or, for a plain script, from us."""
        self.trainer = trainer
        self.parallel_devices = devices
        self.num_nodes = num_nodes
        if cluster.launched_externally() or cluster.launched_by_trainer():
            self.env = cluster.from_environment(len(devices), num_nodes)
        elif self._start_method == "spawn":
            if num_nodes > 1:
                raise ValueError(
                    f"Expected num_nodes=1 for strategy='ddp_spawn', received {num_nodes}; launch each node's"
                    " processes with torchrun and strategy='ddp'."
                )
            self.launcher = SpawnLauncher(len(devices))
        elif num_nodes > 1:
            raise ValueError(
                f"Expected a launcher for num_nodes={num_nodes}: run the script under torchrun on every node"
                " (--nnodes, --nproc-per-node, --rdzv-endpoint), which sets the ranks this Trainer reads."
            )
        self.root_device = self._device_for(self.local_rank)

    def _device_for(self, local_rank: int) -> torch.device:
        device = self.parallel_devices[local_rank] if local_rank < len(self.parallel_devices) else None
        if device is None:
            raise ValueError(
                f"Expected a device for local rank {local_rank}, received {self.parallel_devices}."
            )
        return device

    @property
    def world_size(self) -> int:
        return self.env.world_size if self.env is not None else len(self.parallel_devices) * self.num_nodes

    @world_size.setter
    def world_size(self, value: int) -> None:
        raise AttributeError(
            f"DDPStrategy.world_size comes from the launched processes and cannot be set (received {value})."
        )

    @property
    def global_rank(self) -> int:
        return self.env.global_rank if self.env is not None else 0

    @property
    def local_rank(self) -> int:
        return self.env.local_rank if self.env is not None else 0

    @property
    def node_rank(self) -> int:
        return self.env.node_rank if self.env is not None else 0

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    # ---- process group (start of every Trainer run) -------------------------------------------------
    def setup_environment(self) -> None:
        """Start the other local ranks if nobody did, then join the process group (once per process)."""
        global _launcher
        if self.env is None:
            if self._start_method == "spawn":
                raise RuntimeError(
                    "Expected the spawn launcher to start this run's processes: call trainer.fit, validate, test"
                    " or predict, which launch them for strategy='ddp_spawn'."
                )
            if _launcher is None:
                _launcher = LocalLauncher(self.world_size)
                _launcher.launch()
            self.env = cluster.from_environment(len(self.parallel_devices), self.num_nodes)
        elif self.env.global_rank != 0 and not self.env.external and not _watching[0]:
            watch_parent()
            _watching[0] = True
        rank_zero_only.rank = self.global_rank
        if self.root_device.type == "cuda":
            torch.cuda.set_device(self.root_device)
        if not dist.is_initialized():
            backend = self.process_group_backend or ("nccl" if self.root_device.type == "cuda" else "gloo")
            if backend == "nccl":
                # a collective that times out aborts the communicator (and raises) instead of hanging on
                os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
            dist.init_process_group(
                backend,
                rank=self.global_rank,
                world_size=self.world_size,
                timeout=self.timeout,
                device_id=self.root_device if backend == "nccl" else None,
            )
            # NCCL warns (and some versions hang at exit) when the group is not destroyed
            atexit.register(_destroy_process_group)
            _control_group[0] = dist.new_group(backend="gloo") if backend != "gloo" else None
            log.info(
                "Initialized %s process group: rank %d of %d", backend, self.global_rank, self.world_size
            )

    def explain_failure(self, exc: BaseException) -> BaseException | None:
        """On rank zero of a locally launched run: the error that names the child whose death caused ``exc``."""
        if _launcher is None or not self.is_global_zero:
            return None
        if isinstance(exc, SystemExit | KeyboardInterrupt):  # a stop every rank took part in (SIGTERM)
            _launcher.finished()
            return None
        failure = _launcher.wait_for_failure(timeout=2.0)
        _launcher.finished()
        if failure is None:
            # rank zero failed on its own: the children would wait for it in a collective until the timeout
            _launcher.stop_children()
            return None
        return RankFailedError(
            f"The distributed run stopped: {failure.describe()} ({type(exc).__name__}: {exc})."
        )

    # ---- the model ----------------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> None:
        if getattr(self.trainer, "sync_batchnorm", False):
            # Trainer(sync_batchnorm=True): batch statistics over every process's batch, as in Lightning
            # (the module's own BatchNorm children are replaced in place)
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        super().setup_module(module)
        from lightning_lib.trainer.states import TrainerFn

        self._ddp = None
        if self.trainer.state.fn != TrainerFn.FITTING or not any(
            p.requires_grad for p in module.parameters()
        ):
            return
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        # construction broadcasts rank zero's parameters and buffers, so every rank starts identical
        self._ddp = DistributedDataParallel(
            _TrainingStep(module, self.trainer), device_ids=device_ids, **self.ddp_kwargs
        )

    def teardown(self) -> None:
        self._ddp = None

    def training_step(self, *args: Any) -> Any:
        if self._ddp is None:
            return super().training_step(*args)
        return self._ddp(*args)

    def block_backward_sync(self) -> AbstractContextManager[object]:
        """While accumulating gradients: no all-reduce until the window's last backward."""
        return self._ddp.no_sync() if self._ddp is not None else nullcontext()

    # ---- collectives ----------------------------------------------------------------------------------
    def reduce(self, tensor: torch.Tensor, reduce_op: str | Callable[..., Any] = "mean") -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor):  # as in Lightning, anything else is returned as it is
            return tensor
        name = _reduce_name(reduce_op)
        out = tensor.detach().to(self.root_device, copy=True)  # NCCL reduces device tensors only
        if not out.is_floating_point() and name == "mean":
            out = out.float()
        dist.all_reduce(out, op=_REDUCE_OPS.get(name, dist.ReduceOp.SUM))
        if name == "mean":
            out = out / self.world_size
        return out

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        votes = torch.tensor(int(decision))  # on the host, through the control group: no device sync
        dist.all_reduce(votes, op=dist.ReduceOp.SUM, group=_control_group[0])
        count = int(votes.item())
        return count == self.world_size if all else count > 0

    def broadcast(self, obj: _T, src: int = 0) -> _T:
        holder = [obj]
        dist.broadcast_object_list(holder, src=src, group=_control_group[0])
        return holder[0]

    def all_gather_object(self, obj: _T) -> list[_T]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=_control_group[0])
        return gathered

    def barrier(self, name: str | None = None) -> None:
        if dist.is_initialized():
            if self.root_device.type == "cuda":
                dist.barrier(device_ids=[self.root_device.index])
            else:
                dist.barrier()

    def all_gather(self, data: Any, group: ProcessGroup | None = None, sync_grads: bool = False) -> Any:
        size = dist.get_world_size(group) if group is not None else self.world_size

        def gather(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.root_device).contiguous()  # NCCL gathers device tensors only
            if sync_grads:
                import torch.distributed.nn.functional as dist_fn

                return torch.stack(dist_fn.all_gather(tensor, group=group))
            parts = [torch.empty_like(tensor) for _ in range(size)]
            dist.all_gather(parts, tensor, group=group)
            return torch.stack(parts)

        return apply_to_tensors(data, gather)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _reduce_name(reduce_op: str | Callable[..., Any]) -> str:
    if isinstance(reduce_op, str):
        name = reduce_op.lower()
    else:
        name = getattr(reduce_op, "__name__", str(reduce_op)).lower()
    if name in ("mean", "avg"):
        return "mean"
    if name in _REDUCE_OPS:
        return name
    raise ValueError(
        f"Expected a reduce_op of 'mean', 'sum', 'max' or 'min' to sync across processes, received {reduce_op!r}."
    )


__all__ = ["DDPStrategy"]
