"""``XLAProfiler``: importable like Lightning's; TPUs are not supported by this library."""

from __future__ import annotations

from typing import Any

from lightning_lib.profilers.profiler import Profiler


class XLAProfiler(Profiler):
    """TPU profiling, which this library does not support: constructing one raises."""

    def __init__(self, port: int = 9012, **kwargs: Any) -> None:
        raise NotImplementedError(
            "XLAProfiler needs TPUs (torch_xla), which lightning_lib does not support; use"
            ' Trainer(profiler="simple"), "advanced" or "pytorch".'
        )

    def start(self, action_name: str) -> None:
        """Never reached: construction raises."""

    def stop(self, action_name: str) -> None:
        """Never reached: construction raises."""


__all__ = ["XLAProfiler"]
