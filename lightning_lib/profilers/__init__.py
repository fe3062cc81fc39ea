"""Profilers for ``Trainer(profiler=...)``: "simple" (wall time per action), "advanced" (cProfile per
action), "pytorch" (torch's operator profiler), or a ``Profiler`` subclass of your own."""

from lightning_lib.profilers.advanced import AdvancedProfiler
from lightning_lib.profilers.profiler import PassThroughProfiler, Profiler
from lightning_lib.profilers.pytorch import PyTorchProfiler
from lightning_lib.profilers.simple import SimpleProfiler
from lightning_lib.profilers.xla import XLAProfiler

__all__ = [
    "AdvancedProfiler",
    "PassThroughProfiler",
    "Profiler",
    "PyTorchProfiler",
    "SimpleProfiler",
    "XLAProfiler",
]
