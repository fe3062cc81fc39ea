"""``PassThroughProfiler`` at Lightning's module path (``profilers.base``)."""

from lightning_lib.profilers.profiler import PassThroughProfiler

__all__ = ["PassThroughProfiler"]
