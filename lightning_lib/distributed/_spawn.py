"""The spawn launcher: ``Trainer(strategy="ddp_spawn", devices=N)`` runs each entry point in N new processes.

As Lightning's multiprocessing launcher does, the main process takes no part in the run: it starts N
processes with torch.multiprocessing's "spawn" start method, each unpickles the Trainer and the model and
runs the same entry point as one rank of a DDP group, and rank zero sends back what code after the call
reads in the main process: the trained weights (loaded into the user's model), the Trainer's state,
``callback_metrics`` and ``logged_metrics``, the checkpoint callback's best path and score, and the entry
point's return value (validate/test metrics, predictions). A failure in any process is raised in the main
process (torch's ``ProcessRaisedException``, with the child's traceback) after the others are stopped.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_lib.distributed import _cluster as cluster
from lightning_lib.distributed._launcher import PARENT_PID
from lightning_lib.utilities.apply_func import apply_to_tensors

if TYPE_CHECKING:
    from lightning_lib.distributed._ddp import DDPStrategy
    from lightning_lib.trainer import Trainer
    from lightning_lib.trainer.states import TrainerFn


@dataclass
class _RankZeroOutput:
    """What rank zero sends to the main process (plain pickle, tensors on the CPU)."""

    weights: bytes | None  # torch.save of the module's state_dict, after a fit only
    metrics: bytes  # torch.save of callback/logged metrics and the best checkpoint score
    best_model_path: str | None
    state: tuple[str | None, str, str | None]  # TrainerState's fn, status, stage values
    results: Any


@dataclass
class _GlobalState:
    """Process-wide settings a spawned process would otherwise start without: the deterministic-algorithm
    flags, cudnn's benchmark flag and the random generators (so seeding before fit still seeds the run)."""

    deterministic: bool
    deterministic_warn_only: bool
    cudnn_benchmark: bool
    torch_rng: torch.Tensor
    numpy_rng: Any
    python_rng: Any

    @classmethod
    def capture(cls) -> _GlobalState:
        return cls(
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            torch_rng=torch.get_rng_state(),
            numpy_rng=np.random.get_state(),
            python_rng=random.getstate(),
        )

    def restore(self) -> None:
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.set_rng_state(self.torch_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)


class SpawnLauncher:
    """Runs an entry point of the Trainer in ``num_processes`` spawned processes (one per device)."""

    def __init__(self, num_processes: int) -> None:
        self.num_processes = num_processes
        self._already_fit = False
        self.procs: list[Any] = []

    def launch(
        self, trainer: Trainer, fn: TrainerFn, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run ``function(trainer, fn, model, *args, **kwargs)`` on every rank (the Trainer's run function);
        return rank zero's result in this process."""
        from lightning_lib.trainer.states import TrainerFn

        if self._already_fit and fn == TrainerFn.FITTING:
            # the processes that fitted are gone: their optimizer and loop state cannot continue here
            raise NotImplementedError(
                "Expected one trainer.fit() per Trainer with strategy='ddp_spawn', received a second call; create"
                " a new Trainer and pass fit(ckpt_path=...) to continue from a checkpoint."
            )
        model = args[0] if args else None
        args = (trainer, fn, *args)
        context = mp.get_context("spawn")
        queue = context.SimpleQueue()
        errors = context.SimpleQueue()
        port = cluster.free_port()
        process_context = mp.start_processes(
            _run_rank,
            args=(
                trainer,
                function,
                args,
                kwargs,
                queue,
                errors,
                port,
                os.getpid(),
                self.num_processes,
                _GlobalState.capture(),
            ),
            nprocs=self.num_processes,
            start_method="spawn",
            join=False,
        )
        self.procs = list(process_context.processes)
        output: bytes | None = None
        # read while waiting: a large result would otherwise fill the pipe and block rank zero's exit
        try:
            while not process_context.join(timeout=0.05):
                if output is None and not queue.empty():
                    output = queue.get()
        except mp.ProcessRaisedException as raised:
            raise _root_cause(raised, errors) from None
        if output is None and not queue.empty():
            output = queue.get()
        queue.close()
        self.procs = []
        if output is None:
            raise RuntimeError("Expected rank 0 of the spawned run to send its results, received nothing.")
        received: _RankZeroOutput = pickle.loads(output)
        self._already_fit |= fn == TrainerFn.FITTING
        _restore_in_main_process(trainer, model, received)
        return received.results


def _run_rank(
    process_idx: int,
    trainer: Trainer,
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    queue: Any,
    errors: Any,
    port: int,
    parent_pid: int,
    num_processes: int,
    global_state: _GlobalState,
) -> None:
    """In a spawned process: become rank ``process_idx`` of the group, run the entry point, report."""
    global_state.restore()
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(num_processes),
            "LOCAL_WORLD_SIZE": str(num_processes),
            "GROUP_RANK": "0",
            "NODE_RANK": "0",
            "RANK": str(process_idx),
            "LOCAL_RANK": str(process_idx),
            cluster.LAUNCHED_BY_TRAINER: "1",
            PARENT_PID: str(parent_pid),
        }
    )
    if "OMP_NUM_THREADS" not in os.environ:
        # N processes on the machine's cores: without this each would start one thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes))
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, torch.nn.Module):
            _unshare_memory(arg)
    strategy: DDPStrategy = trainer.strategy  # type: ignore[assignment]
    strategy._spawned = True
    strategy.env = cluster.from_environment(len(strategy.parallel_devices), strategy.num_nodes)
    strategy.root_device = strategy._device_for(strategy.local_rank)
    try:
        results = function(*args, **kwargs)
        output = _collect_rank_zero_output(trainer, results) if process_idx == 0 else None
    except BaseException as error:
        # reported before this rank leaves the group: the main process names the first cause, not the
        # "connection closed" another rank saw when this one stopped
        errors.put((process_idx, os.getpid(), _is_collateral(error), traceback.format_exc()))
        raise
    finally:
        # a spawned process ends without running atexit handlers: leave the group here
        if dist.is_initialized():
            dist.destroy_process_group()
    if output is not None:
        queue.put(output)


def _is_collateral(error: BaseException) -> bool:
    """An error a rank gets because another rank stopped (gloo's closed or reset connection)."""
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "Connection closed by peer" in text or "Connection reset by peer" in text
    )


def _root_cause(raised: mp.ProcessRaisedException, errors: Any) -> mp.ProcessRaisedException:
    """``raised``, or the error of the rank that failed on its own when ``raised`` is another's collateral."""
    reports = []
    while not errors.empty():
        reports.append(errors.get())
    causes = [report for report in reports if not report[2]]
    if not causes or any(rank == raised.error_index for rank, _, collateral, _ in causes):
        return raised
    rank, pid, _, text = causes[0]
    return mp.ProcessRaisedException(
        f"\n\n-- Process {rank} terminated with the following error:\n{text}", rank, pid
    )


def _unshare_memory(module: torch.nn.Module) -> None:
    """Give this process its own copy of ``module``'s tensors.

    torch.multiprocessing hands CPU tensors to spawned processes in shared memory: every rank would step
    the same weights (N updates per step) unless each takes a private copy first.
    """
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            tensor.data = tensor.data.clone()


def _to_cpu(data: Any) -> Any:
    return apply_to_tensors(data, lambda t: t.detach().cpu())


def _collect_rank_zero_output(trainer: Trainer, results: Any) -> bytes:
    from lightning_lib.trainer.states import TrainerFn

    weights = None
    module = trainer.lightning_module
    if trainer.state.fn == TrainerFn.FITTING and module is not None:
        buffer = io.BytesIO()
        torch.save(_to_cpu(module.state_dict()), buffer)
        weights = buffer.getvalue()
    ckpt = trainer.checkpoint_callback
    score = getattr(ckpt, "best_model_score", None)
    buffer = io.BytesIO()
    torch.save(
        {
            "callback": _to_cpu(dict(trainer.callback_metrics)),
            "logged": _to_cpu(dict(trainer.logged_metrics)),
            "best_model_score": score.detach().cpu() if isinstance(score, torch.Tensor) else None,
        },
        buffer,
    )
    state = trainer.state
    output = _RankZeroOutput(
        weights=weights,
        metrics=buffer.getvalue(),
        best_model_path=getattr(ckpt, "best_model_path", None),
        state=(
            state.fn.value if state.fn is not None else None,
            state.status.value,
            state.stage.value if state.stage is not None else None,
        ),
        results=_to_cpu(results),
    )
    # plain pickle: tensors travel as bytes, not as shared memory that dies with this process
    return pickle.dumps(output)


def _restore_in_main_process(trainer: Trainer, model: Any, output: _RankZeroOutput) -> None:
    from lightning_lib.trainer.states import RunningStage, TrainerFn, TrainerStatus

    if model is not None:
        trainer.lightning_module = model
        if output.weights is not None:
            state_dict = torch.load(io.BytesIO(output.weights), weights_only=True)
            # not strict: the module may have built layers in its processes (configure_model) it lacks here
            model.load_state_dict(state_dict, strict=False)
    fn, status, stage = output.state
    trainer.state.fn = TrainerFn(fn) if fn is not None else None
    trainer.state.status = TrainerStatus(status)
    trainer.state.stage = RunningStage(stage) if stage is not None else None
    metrics = torch.load(io.BytesIO(output.metrics), weights_only=True)
    trainer.callback_metrics.update(metrics["callback"])
    trainer.logged_metrics.update(metrics["logged"])
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and hasattr(ckpt, "best_model_path"):
        ckpt.best_model_path = output.best_model_path or ""
        if metrics["best_model_score"] is not None:
            ckpt.best_model_score = metrics["best_model_score"]


__all__ = ["SpawnLauncher"]
