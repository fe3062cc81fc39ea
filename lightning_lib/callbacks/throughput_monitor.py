"""``ThroughputMonitor``: log batches, samples (and items, FLOPs) per second of each loop, and ``Throughput``."""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.callbacks._logging import should_update_logs
from lightning_lib.callbacks.callback import Callback
from lightning_lib.trainer.states import RunningStage, TrainerFn

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


class _IncreasingWindow(list[Any]):
    """The last ``maxlen`` values of a counter; a value that does not increase is refused (a broken counter)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def append(self, value: Any) -> None:
        if self and self[-1] >= value:
            raise ValueError(f"Expected the value to increase, last: {self[-1]}, current: {value}")
        super().append(value)
        if len(self) > self.maxlen:
            del self[0]


class Throughput:
    """Throughput over a window of the most recent updates (Lightning's ``Throughput``).

    ``compute()`` returns the totals (``time``, ``batches``, ``samples``, ``lengths``) and, once the window
    is full, ``device/batches_per_sec``, ``device/samples_per_sec`` (``device/items_per_sec`` with
    lengths, ``device/flops_per_sec`` and ``device/mfu`` with FLOPs) plus the same summed over the world
    when it has more than one process.

    Args:
        available_flops: theoretical FLOPs per second of one device (for ``device/mfu``).
        world_size: number of processes.
        window_size: number of updates the rates are computed over (at least 2).
        separator: joins ``device`` and the metric name.
    """

    def __init__(
        self,
        available_flops: float | None = None,
        world_size: int = 1,
        window_size: int = 100,
        separator: str = "/",
    ) -> None:
        if world_size < 1:
            raise ValueError(f"Expected world_size >= 1, received {world_size}.")
        if window_size < 2:
            # a rate needs the first and the last value of the window
            raise ValueError(f"Expected window_size >= 2, received {window_size}.")
        self.available_flops = available_flops
        self.world_size = world_size
        self.separator = separator
        self._time = _IncreasingWindow(window_size)
        self._batches = _IncreasingWindow(window_size)
        self._samples = _IncreasingWindow(window_size)
        self._lengths = _IncreasingWindow(window_size)
        self._flops: deque[float] = deque(maxlen=window_size)

    def update(
        self, *, time: float, batches: int, samples: int, lengths: int | None = None, flops: int | None = None
    ) -> None:
        """Record the totals so far: elapsed seconds, batches, samples (and items) per device; ``flops`` of this step."""
        self._time.append(time)
        if samples < batches:
            raise ValueError(f"Expected samples ({samples}) to be greater or equal than batches ({batches})")
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            if lengths < samples:
                raise ValueError(
                    f"Expected lengths ({lengths}) to be greater or equal than samples ({samples})"
                )
            self._lengths.append(lengths)
            if len(self._samples) != len(self._lengths):
                raise RuntimeError(
                    f"If lengths are passed ({len(self._lengths)}), there needs to be the same number of samples"
                    f" ({len(self._samples)})"
                )
        if flops is not None:
            self._flops.append(flops * self.world_size)

    def compute(self) -> dict[str, int | float]:
        """The metrics described in the class docstring."""
        sep = self.separator
        metrics: dict[str, int | float] = {
            "time": self._time[-1],
            "batches": self._batches[-1],
            "samples": self._samples[-1],
        }
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        world = self.world_size > 1
        if len(self._time) == self._time.maxlen:
            elapsed = self._time[-1] - self._time[0]
            batches_per_sec = (self._batches[-1] - self._batches[0]) / elapsed
            samples_per_sec = (self._samples[-1] - self._samples[0]) / elapsed
            metrics[f"device{sep}batches_per_sec"] = batches_per_sec
            metrics[f"device{sep}samples_per_sec"] = samples_per_sec
            if world:
                metrics["batches_per_sec"] = batches_per_sec * self.world_size
                metrics["samples_per_sec"] = samples_per_sec * self.world_size
            if len(self._lengths) == self._lengths.maxlen:
                items_per_sec = (self._lengths[-1] - self._lengths[0]) / elapsed
                metrics[f"device{sep}items_per_sec"] = items_per_sec
                if world:
                    metrics["items_per_sec"] = items_per_sec * self.world_size
        if len(self._flops) == self._flops.maxlen:
            elapsed = self._time[-1] - self._time[0]
            # the first entry's FLOPs were spent before the window's first time stamp
            flops_per_sec = (sum(self._flops) - self._flops[0]) / elapsed
            if world:
                metrics["flops_per_sec"] = flops_per_sec
            device_flops_per_sec = flops_per_sec / self.world_size
            metrics[f"device{sep}flops_per_sec"] = device_flops_per_sec
            if self.available_flops:
                metrics[f"device{sep}mfu"] = device_flops_per_sec / self.available_flops
        return metrics

    def reset(self) -> None:
        """Forget every update."""
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()


class ThroughputMonitor(Callback):
    """Log the throughput of training, validation, testing and prediction (rank zero only).

    Keys are ``{stage}/{metric}`` with the metrics of :class:`Throughput`, e.g. ``train/device/samples_per_sec``;
    training logs when an optimizer step ends an accumulation window (so the step's time counts), at
    the logging steps (``log_every_n_steps``). FLOPs come from a ``flops_per_batch`` attribute of the
    LightningModule (a warning says so when it has none). Validation time during ``fit`` is not counted
    as training time. ``device/mfu`` needs the device's peak FLOPs, which this version does not know
    (a warning names the device): it is logged only on devices whose peak is known, none so far.

    Args:
        batch_size_fn: the number of samples in a batch.
        length_fn: the number of items (e.g. tokens) in a batch.
        **kwargs: ``window_size`` and ``separator`` of :class:`Throughput`.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int],
        length_fn: Callable[[Any], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.kwargs = kwargs
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        self.available_flops: int | None = None
        self._throughputs: dict[RunningStage, Throughput] = {}
        self._t0s: dict[RunningStage, float] = {}
        self._lengths: dict[RunningStage, int] = {}
        self._samples: dict[RunningStage, int] = {}
        self._batches: dict[RunningStage, int] = {}
        # per stage, the batches seen (validation in fit: in this epoch): the step of the evaluation loops' logs
        self._eval_steps: dict[RunningStage, int] = {}
        self._val_epoch: int | None = None
        # batches of the running evaluation or prediction loop (its logging steps count them)
        self._loop_batches = 0
        self._module_has_flops: bool | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.available_flops = _available_flops(
            trainer.strategy.root_device, _compute_dtype(trainer.precision)
        )
        if stage == TrainerFn.FITTING and trainer.enable_validation:
            self._throughputs[RunningStage.VALIDATING] = self._new_throughput(trainer)
        running = trainer.state.stage
        assert running is not None
        self._throughputs[running] = self._new_throughput(trainer)

    def _new_throughput(self, trainer: Trainer) -> Throughput:
        return Throughput(available_flops=self.available_flops, world_size=trainer.world_size, **self.kwargs)

    def _start(self, trainer: Trainer) -> None:
        stage = trainer.state.stage
        assert stage is not None
        self._loop_batches = 0
        if trainer.state.fn == TrainerFn.FITTING or stage not in self._samples:
            self._throughputs[stage].reset()
            self._lengths[stage] = 0
            self._samples[stage] = 0
            self._batches[stage] = 0
        self._t0s[stage] = time.perf_counter()

    @torch.inference_mode()  # batch_size_fn and length_fn must not build graphs
    def _update(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> None:
        stage = trainer.state.stage
        assert stage is not None
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the work the device still has queued
        elapsed = time.perf_counter() - self._t0s[stage]
        if self.length_fn is not None:
            self._lengths[stage] += self.length_fn(batch)
        if self._module_has_flops is None:
            self._module_has_flops = hasattr(pl_module, "flops_per_batch")
            if not self._module_has_flops:
                warnings.warn(
                    "When using the `ThroughputMonitor`, you need to define a `flops_per_batch` attribute or property"
                    f" in {type(pl_module).__name__} to compute the FLOPs.",
                    UserWarning,
                    stacklevel=3,
                )
        flops = getattr(pl_module, "flops_per_batch", None) if self._module_has_flops else None
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        self._throughputs[stage].update(
            time=elapsed,
            batches=self._batches[stage],
            samples=self._samples[stage],
            lengths=None if self.length_fn is None else self._lengths[stage],
            flops=flops,
        )

    def _compute(self, trainer: Trainer, step: int | None = None) -> None:
        if not should_update_logs(trainer, self._loop_batches):
            return
        stage = trainer.state.stage
        assert stage is not None
        throughput = self._throughputs[stage]
        metrics: dict[str, Any] = {
            f"{stage.value}{throughput.separator}{k}": v for k, v in throughput.compute().items()
        }
        trainer._logger_connector.log_metrics(metrics, step=step)

    def _eval_step(self, stage: RunningStage) -> int:
        self._loop_batches += 1
        self._eval_steps[stage] = self._eval_steps.get(stage, 0) + 1
        return self._eval_steps[stage]

    def on_train_start(self, trainer: Trainer, *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero:
            return
        self._update(trainer, pl_module, batch)
        accumulating = (batch_idx + 1) % trainer.accumulate_grad_batches != 0 and not trainer.is_last_batch
        if not accumulating:
            self._compute(trainer)

    def on_validation_start(self, trainer: Trainer, *_: Any) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        if trainer.state.fn == TrainerFn.FITTING and trainer.current_epoch != self._val_epoch:
            # Lightning counts the validation batches of a fit per epoch
            self._val_epoch = trainer.current_epoch
            self._eval_steps[RunningStage.VALIDATING] = 0
        self._start(trainer)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *_: Any, **__: Any
    ) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        self._update(trainer, pl_module, batch)
        self._compute(trainer, self._eval_step(RunningStage.VALIDATING))

    def on_validation_end(self, trainer: Trainer, *_: Any) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        train_times = self._throughputs[RunningStage.TRAINING]._time
        val_times = self._throughputs[RunningStage.VALIDATING]._time
        train_elapsed = train_times[-1] if train_times else 0.0
        val_elapsed = val_times[-1] if val_times else 0.0
        # shift the training clock past the validation (and the gap before it) so it is not counted as training
        training_finished = self._t0s[RunningStage.TRAINING] + train_elapsed
        gap = self._t0s[RunningStage.VALIDATING] - training_finished
        self._t0s[RunningStage.TRAINING] += gap + val_elapsed

    def on_test_start(self, trainer: Trainer, *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *_: Any, **__: Any
    ) -> None:
        if trainer.is_global_zero:
            self._update(trainer, pl_module, batch)
            self._compute(trainer, self._eval_step(RunningStage.TESTING))

    def on_predict_start(self, trainer: Trainer, *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *_: Any, **__: Any
    ) -> None:
        if trainer.is_global_zero:
            self._update(trainer, pl_module, batch)
            self._compute(trainer, self._eval_step(RunningStage.PREDICTING))


def _compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls of a run with ``Trainer(precision=...)`` use."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("64"):
        return torch.float64
    return torch.float32


def _available_flops(device: torch.device, dtype: torch.dtype) -> int | None:
    """The device's peak FLOPs per second for ``dtype``: unknown for every device in this version."""
    if device.type == "cuda":
        warnings.warn(
            f"FLOPs not found for {torch.cuda.get_device_name(device)!r}", UserWarning, stacklevel=3
        )
    return None
