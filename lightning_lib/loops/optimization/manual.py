"""What ``training_step`` returned under manual optimization (Lightning's ``ManualResult``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from lightning_lib.utilities.exceptions import MisconfigurationException


@dataclass
class ManualResult:
    """Everything ``training_step`` returned (``extra``), its ``"loss"`` detached."""

    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_training_step_output(cls, training_step_output: Any) -> ManualResult:
        """Check ``training_step``'s output (a Tensor, a dict, or None) and detach its loss."""
        extra: dict[str, Any] = {}
        if isinstance(training_step_output, Mapping):
            extra = dict(training_step_output)
        elif isinstance(training_step_output, Tensor):
            extra = {"loss": training_step_output}
        elif training_step_output is not None:
            raise MisconfigurationException(
                "In manual optimization, `training_step` must either return a Tensor or have no return; received"
                f" {type(training_step_output).__name__}."
            )
        if isinstance(extra.get("loss"), Tensor):
            # the user backpropagated it already; what hooks and logging keep must not hold the graph
            extra["loss"] = extra["loss"].detach()
        return cls(extra=extra)

    def asdict(self) -> dict[str, Any]:
        return self.extra


__all__ = ["ManualResult"]
