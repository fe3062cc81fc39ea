"""What ``training_step`` returned under automatic optimization (Lightning's ``ClosureResult``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from lightning_lib.utilities.exceptions import MisconfigurationException


@dataclass
class ClosureResult:
    """The loss with its graph (``closure_loss``), a detached copy of it (``loss``) and any other keys
    ``training_step`` returned (``extra``)."""

    closure_loss: Tensor | None
    loss: Tensor | None = field(init=False, default=None)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a copy, so what the loop keeps for hooks and logging never aliases the graph's storage
        if self.closure_loss is not None:
            self.loss = self.closure_loss.detach().clone()

    @classmethod
    def from_training_step_output(cls, training_step_output: Any, normalize: int = 1) -> ClosureResult:
        """Check ``training_step``'s output (a Tensor, a dict with ``"loss"``, or None to skip the step) and
        divide the loss by ``normalize`` (the accumulation window)."""
        closure_loss: Tensor | None = None
        extra: dict[str, Any] = {}
        if isinstance(training_step_output, Mapping):
            closure_loss = training_step_output.get("loss")
            if closure_loss is None:
                raise MisconfigurationException(
                    "In automatic_optimization, when `training_step` returns a dict, the 'loss' key needs to be"
                    f" present; received keys {sorted(training_step_output)}."
                )
            extra = {k: v for k, v in training_step_output.items() if k != "loss"}
        elif isinstance(training_step_output, Tensor):
            closure_loss = training_step_output
        elif training_step_output is not None:
            raise MisconfigurationException(
                "In automatic optimization, `training_step` must return a Tensor, a dict, or None (where the step"
                f" will be skipped); received {type(training_step_output).__name__}."
            )
        if closure_loss is not None:
            closure_loss = closure_loss / normalize
        return cls(closure_loss, extra=extra)

    def asdict(self) -> dict[str, Any]:
        """The step's outputs as the hooks receive them: the detached loss and the extra keys."""
        return {"loss": self.loss, **self.extra}


__all__ = ["ClosureResult"]
