"""``DeviceStatsMonitor``: log the device's memory statistics (and the host's CPU use) around each batch."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.callbacks._logging import should_update_logs
from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

_PROC_STAT = "/proc/stat"
_PROC_MEMINFO = "/proc/meminfo"


class DeviceStatsMonitor(Callback):
    """Log device statistics at the start and end of every train, validation and test batch.

    Keys are ``DeviceStatsMonitor.{hook_name}{separator}{stat}`` (the separator is each logger's
    ``group_separator``), logged on the logging steps (``log_every_n_steps``). On a CUDA device the stats
    are ``torch.cuda.memory_stats``; the CPU stats are ``cpu_percent`` (since the previous reading),
    ``cpu_vm_percent`` and ``cpu_swap_percent``, read from ``/proc`` on Linux (psutil elsewhere).

    Args:
        cpu_stats: ``None`` logs the CPU stats only when training on the CPU; ``True`` always adds them;
            ``False`` never logs them.
    """

    def __init__(self, cpu_stats: bool | None = None) -> None:
        self._cpu_stats = cpu_stats
        self._cpu_times: tuple[float, float] | None = None
        # batches started in the running evaluation loop (its logging steps count them)
        self._loop_batches = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            # Lightning raises MisconfigurationException here
            raise ValueError("Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`.")
        device = trainer.strategy.root_device
        if (
            self._cpu_stats is not False
            and (self._cpu_stats or device.type == "cpu")
            and not _cpu_stats_available()
        ):
            raise ModuleNotFoundError(
                "`DeviceStatsMonitor` cannot log CPU stats: this system has no /proc and `psutil` is not installed."
            )

    def _get_and_log_device_stats(self, trainer: Trainer, key: str) -> None:
        if not should_update_logs(trainer, self._loop_batches):
            return
        device = trainer.strategy.root_device
        if device.type == "cpu":
            if self._cpu_stats is False:
                return
            stats = self._cpu_stats_now()
        else:
            stats = _accelerator_stats(device)
            if self._cpu_stats:
                stats.update(self._cpu_stats_now())
        step = trainer.progress.batches_that_stepped
        for logger in trainer.loggers:
            separator = logger.group_separator
            prefix = f"{self.__class__.__qualname__}.{key}{separator}"
            logger.log_metrics({prefix + name: value for name, value in stats.items()}, step=step)

    def _cpu_stats_now(self) -> dict[str, float]:
        if not os.path.exists(_PROC_STAT):
            import psutil

            return {
                "cpu_vm_percent": psutil.virtual_memory().percent,
                "cpu_percent": psutil.cpu_percent(),
                "cpu_swap_percent": psutil.swap_memory().percent,
            }
        busy, total = _read_cpu_times()
        previous, self._cpu_times = self._cpu_times, (busy, total)
        # like psutil.cpu_percent(): the share of busy time since the previous reading (0.0 at the first)
        cpu_percent = 0.0
        if previous is not None and total > previous[1]:
            cpu_percent = round(100.0 * (busy - previous[0]) / (total - previous[1]), 1)
        memory = _read_meminfo()
        return {
            "cpu_vm_percent": _used_percent(memory.get("MemTotal", 0), memory.get("MemAvailable", 0)),
            "cpu_percent": cpu_percent,
            "cpu_swap_percent": _used_percent(memory.get("SwapTotal", 0), memory.get("SwapFree", 0)),
        }

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._get_and_log_device_stats(trainer, "on_train_batch_start")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._get_and_log_device_stats(trainer, "on_train_batch_end")

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._loop_batches += 1
        self._get_and_log_device_stats(trainer, "on_validation_batch_start")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._get_and_log_device_stats(trainer, "on_validation_batch_end")

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._loop_batches += 1
        self._get_and_log_device_stats(trainer, "on_test_batch_start")

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._get_and_log_device_stats(trainer, "on_test_batch_end")


def _cpu_stats_available() -> bool:
    if os.path.exists(_PROC_STAT) and os.path.exists(_PROC_MEMINFO):
        return True
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def _accelerator_stats(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return dict(torch.cuda.memory_stats(device))
    return {}


def _read_cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from the first line of /proc/stat."""
    with open(_PROC_STAT, encoding="ascii") as handle:
        fields = [float(v) for v in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user/nice
    times = fields[:8]
    idle = times[3] + (times[4] if len(times) > 4 else 0.0)
    total = sum(times)
    return total - idle, total


def _read_meminfo() -> dict[str, int]:
    """/proc/meminfo's fields in kB."""
    found: dict[str, int] = {}
    with open(_PROC_MEMINFO, encoding="ascii") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                found[name] = int(parts[0])
    return found


def _used_percent(total: int, free: int) -> float:
    return round(100.0 * (total - free) / total, 1) if total > 0 else 0.0
