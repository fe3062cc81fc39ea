"""Automatic optimization's closure (Lightning's ``Closure``) and what ``training_step`` returned in it
(``ClosureResult``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
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


class Closure:
    """What ``optimizer.step(closure)`` calls under automatic optimization (``optimizer_step`` receives it).

    Each call runs ``step_fn`` (``training_step``, giving a :class:`ClosureResult`), then ``zero_grad_fn``
    and, when the step returned a loss, ``backward_fn`` on it; it returns the detached loss, or ``None``
    for a skipped step. Optimizers that re-evaluate (LBFGS) call it several times: the last result is kept
    for :meth:`consume_result`.
    """

    def __init__(
        self,
        step_fn: Callable[[], ClosureResult],
        backward_fn: Callable[[Tensor], None] | None = None,
        zero_grad_fn: Callable[[], None] | None = None,
    ) -> None:
        self._step_fn = step_fn
        self._backward_fn = backward_fn
        self._zero_grad_fn = zero_grad_fn
        self._result: ClosureResult | None = None

    def closure(self, *args: Any, **kwargs: Any) -> ClosureResult:
        """One evaluation: the step, then zero_grad and backward; returns the step's result."""
        result = self._step_fn()
        # after the step and before backward, so the window's gradients start clean even for a skipped step
        if self._zero_grad_fn is not None:
            self._zero_grad_fn()
        if self._backward_fn is not None and result.closure_loss is not None:
            self._backward_fn(result.closure_loss)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor | None:
        # gradients are needed even where the caller (an optimizer's step) runs under no_grad
        with torch.enable_grad():
            self._result = self.closure(*args, **kwargs)
        return self._result.loss

    def consume_result(self) -> ClosureResult:
        """The last evaluation's result, handed over once."""
        if self._result is None:
            raise MisconfigurationException(
                "Expected the closure to have been called before its result is consumed, received no result:"
                " `optimizer_step` must call `optimizer_closure()` (or pass it to `optimizer.step`)."
            )
        result, self._result = self._result, None
        return result


__all__ = ["Closure", "ClosureResult"]
