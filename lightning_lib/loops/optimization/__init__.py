"""The containers for what ``training_step`` returns under automatic and manual optimization."""

from lightning_lib.loops.optimization.automatic import Closure, ClosureResult
from lightning_lib.loops.optimization.manual import ManualResult

__all__ = ["Closure", "ClosureResult", "ManualResult"]
