"""``PyTorchProfiler``: torch's own profiler (operators, devices, memory) around the Trainer's actions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.autograd.profiler import record_function

from lightning_lib.profilers.profiler import Profiler

_SORT_KEYS = {
    "cpu_time",
    "cuda_time",
    "cpu_time_total",
    "cuda_time_total",
    "cpu_memory_usage",
    "cuda_memory_usage",
    "self_cpu_memory_usage",
    "self_cuda_memory_usage",
    "count",
}


class PyTorchProfiler(Profiler):
    """Records torch operators with ``torch.profiler.profile`` while the Trainer runs.

    Each Trainer action (``[LightningModule]MyModel.training_step``, ...) is a ``record_function`` range,
    so the report's table (sorted by ``sort_by_key``, ``row_limit`` rows) attributes operator time to
    hooks. ``profiler_kwargs`` go to ``torch.profiler.profile`` (``activities``, ``record_shapes``,
    ``profile_memory``, ``with_stack``, ``schedule``, ...). With ``export_to_chrome`` and a ``dirpath``
    the trace is also written as ``<...>-trace.json`` for chrome://tracing.
    """

    STEP_FUNCTIONS = {"training_step", "validation_step", "test_step", "predict_step"}
    AVAILABLE_SORT_KEYS = _SORT_KEYS

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        group_by_input_shapes: bool = False,
        emit_nvtx: bool = False,
        export_to_chrome: bool = True,
        row_limit: int = 20,
        sort_by_key: str | None = None,
        record_module_names: bool = True,
        table_kwargs: dict[str, Any] | None = None,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        if emit_nvtx:
            raise ValueError(
                "Expected emit_nvtx=False: NVTX ranges (for nsys) are not supported by this PyTorchProfiler."
            )
        self._group_by_input_shapes = group_by_input_shapes and profiler_kwargs.get("record_shapes", False)
        self._export_to_chrome = export_to_chrome
        self._row_limit = row_limit
        self._sort_by_key = sort_by_key or (
            "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        )
        if self._sort_by_key not in _SORT_KEYS:
            raise ValueError(
                f"Expected sort_by_key to be one of {sorted(_SORT_KEYS)}, received {sort_by_key!r}."
            )
        self._record_module_names = record_module_names
        self._table_kwargs = table_kwargs or {}
        self._profiler_kwargs = profiler_kwargs
        self.profiler: torch.profiler.profile | None = None
        self._recording: dict[str, record_function] = {}
        self.function_events: Any = None

    def start(self, action_name: str) -> None:
        if self.profiler is None:
            self.profiler = torch.profiler.profile(**self._profiler_kwargs)
            self.profiler.__enter__()
        if action_name not in self._recording:
            recording = record_function("[pl][profile]" + action_name)
            recording.__enter__()
            self._recording[action_name] = recording

    def stop(self, action_name: str) -> None:
        recording = self._recording.pop(action_name, None)
        if recording is not None:
            recording.__exit__(None, None, None)
        if self.profiler is not None and action_name.rsplit(".", 1)[-1] in self.STEP_FUNCTIONS:
            self.profiler.step()

    def _stop_profiler(self) -> None:
        for name in list(self._recording):
            self.stop(name)
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)
            self.function_events = self.profiler.events()
            if self._export_to_chrome and self.dirpath is not None:
                os.makedirs(self.dirpath, exist_ok=True)
                trace = os.path.join(
                    self.dirpath, self._prepare_filename(action_name="trace", extension=".json")
                )
                self.profiler.export_chrome_trace(trace)
            self.profiler = None

    def summary(self) -> str:
        self._stop_profiler()
        if not self.function_events:
            return ""
        averages = self.function_events.key_averages(group_by_input_shapes=self._group_by_input_shapes)
        table = averages.table(sort_by=self._sort_by_key, row_limit=self._row_limit, **self._table_kwargs)
        return self._stats_to_str({"records": table})

    def teardown(self, stage: str | None) -> None:
        self._stop_profiler()
        super().teardown(stage=stage)


__all__ = ["PyTorchProfiler"]
