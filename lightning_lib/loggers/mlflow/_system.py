"""System metrics of a fit (CPU, memory, disk, network, GPU) in the run's System metrics tab.

MLflow's own ``SystemMetricsMonitor`` samples on its thread every ``interval`` seconds and logs under
``system/``; the logger starts it for its run at fit start and stops it before the run ends, so sampling
costs the training loop nothing per step. MLflow reads NVIDIA GPUs through ``pynvml`` (nvidia-ml-py);
without it, CUDA devices are still reported here from torch (memory in use per device).

A fit shorter than one interval would log nothing (MLflow's thread publishes only after a full interval),
so stopping publishes what was sampled so far: the tab is never empty for a fit that ran.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("lightning_lib.loggers.mlflow._logger")


def _torch_gpu_monitor() -> Any:
    """A monitor of CUDA memory in use per device, from torch, or None without CUDA."""
    import torch
    from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor

    if not torch.cuda.is_available():
        return None

    class CudaMemoryMonitor(BaseMetricsMonitor):  # type: ignore[misc,unused-ignore]
        def collect_metrics(self) -> None:
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                used = total - free
                self._metrics[f"gpu_{index}_memory_usage_megabytes"].append(used / 1e6)
                self._metrics[f"gpu_{index}_memory_usage_percentage"].append(100.0 * used / total)

        def aggregate_metrics(self) -> dict[str, float]:
            return {name: round(sum(v) / len(v), 1) for name, v in self._metrics.items() if v}

    return CudaMemoryMonitor()


def start_system_metrics(run_id: str, tracking_uri: str, interval: float, resumed: bool) -> Any:
    """Start sampling for ``run_id`` (a resumed run continues its steps); None when it cannot start."""
    try:
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=interval, resume_logging=resumed, tracking_uri=tracking_uri
        )
        if not any(isinstance(m, GPUMonitor) for m in monitor.monitors):
            gpu = _torch_gpu_monitor()
            if gpu is not None:
                monitor.monitors.append(gpu)
        first_step = monitor._logging_step
        monitor.start()
    except Exception as exc:  # psutil missing, an old MLflow: the fit goes on without system metrics
        log.warning("System metrics are not logged for this run: %s: %s", type(exc).__name__, exc)
        return None
    return monitor, first_step


def begin_stop_system_metrics(handle: Any) -> Callable[[float], None]:
    """Start stopping on a daemon thread; return the function that waits (at most its argument, in
    seconds) for the stop to be done, warning when it is not: the end of a fit overlaps the stop (a
    request or two of MLflow's monitor) with its other work."""
    if handle is None:
        return lambda timeout: None
    thread = threading.Thread(target=_stop, args=(handle,), name="mlflow-system-metrics-stop", daemon=True)
    thread.start()
    return functools.partial(_wait_stopped, thread)


def _wait_stopped(thread: threading.Thread, timeout: float) -> None:
    thread.join(timeout)
    if thread.is_alive():
        log.warning(
            "The last system metrics were not delivered within %.0f s (is the MLflow server reachable?); "
            "the run ends without waiting for them.",
            timeout,
        )


def _stop(handle: Any) -> None:
    monitor, first_step = handle
    try:
        monitor.finish()
        if monitor._logging_step == first_step:
            metrics = monitor.aggregate_metrics()
            if metrics:
                monitor.publish_metrics(metrics)
                monitor.mlflow_logger.flush()
    except Exception as exc:
        log.warning("Could not log the last system metrics: %s: %s", type(exc).__name__, exc)


__all__ = ["begin_stop_system_metrics", "start_system_metrics"]
