"""Precision: "32-true" | "16-mixed" | "bf16-mixed" | "bf16-true" | "16-true" | "64-true" (and aliases)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from lightning_lib.utilities.apply_func import apply_to_tensors

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
_ALIASES: dict[Any, str] = {32: "32-true", "32": "32-true", 64: "64-true", "64": "64-true"}
_DISCOURAGED: dict[Any, str] = {16: "16-mixed", "16": "16-mixed", "bf16": "bf16-mixed"}


def normalize_precision(value: Any, device_type: str) -> str:
    """The canonical precision name, with Lightning's warnings and its fp16-on-CPU fallback."""
    if value is None:
        return "32-true"
    if value in _ALIASES:
        return _ALIASES[value]
    if value in _DISCOURAGED:
        name = _DISCOURAGED[value]
        warnings.warn(
            f"`precision={value!r}` is supported for historical reasons; set `precision={name!r}` instead.",
            UserWarning,
            stacklevel=3,
        )
        value = name
    if value not in PRECISIONS:
        raise ValueError(
            f"Expected precision to be one of {(*PRECISIONS, 16, 32, 64, 'bf16')}, received {value!r}."
        )
    if value == "16-mixed" and device_type == "cpu":
        warnings.warn(
            "`precision='16-mixed'` is not supported on CPU (no fp16 autocast there); using 'bf16-mixed'.",
            UserWarning,
            stacklevel=3,
        )
        return "bf16-mixed"
    return str(value)


class Precision:
    """Full float32: the base every other precision adjusts (``Trainer(plugins=[...])`` accepts one)."""

    name = "32-true"
    scaler: Any = None

    @property
    def precision(self) -> str:
        """The canonical precision name ("32-true", "16-mixed", ...), Lightning's attribute."""
        return self.name

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module

    def convert_input(self, data: Any) -> Any:
        return data

    def forward_context(self) -> Any:
        return nullcontext()

    def scale_loss(self, loss: Tensor) -> Tensor:
        return loss

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Make gradients true-sized before clipping or ``on_before_optimizer_step`` reads them."""

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], Any],
        after_closure: Callable[[], None],
        automatic: bool = True,
        **kw: Any,
    ) -> Any:
        """Run ``closure`` (forward + backward) inside ``optimizer.step`` as torch optimizers expect.

        ``automatic`` is False under manual optimization, where the closure need not return the loss.
        """

        def wrapped() -> Any:
            result = closure()
            after_closure()
            return result

        return optimizer.step(closure=wrapped, **kw)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class MixedPrecision(Precision):
    """Autocast to fp16 (with a GradScaler that skips steps whose gradients overflow) or bf16."""

    def __init__(self, precision: str, device: str, scaler: Any = None) -> None:
        if precision not in ("16-mixed", "bf16-mixed"):
            raise ValueError(f"Expected precision to be '16-mixed' or 'bf16-mixed', received {precision!r}.")
        self.name = precision
        self.device = self.device_type = device
        self.dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
        if precision == "16-mixed" and scaler is None:
            scaler = torch.amp.GradScaler(device)
        self.scaler = scaler

    def forward_context(self) -> Any:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale_loss(self, loss: Tensor) -> Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], Any],
        after_closure: Callable[[], None],
        automatic: bool = True,
        **kw: Any,
    ) -> Any:
        if self.scaler is None:
            return super().optimizer_step(optimizer, closure, after_closure, automatic, **kw)
        # A scaler cannot step with a closure: run it first, unscale, then let the scaler skip on inf/nan.
        result = closure()
        self.scaler.unscale_(optimizer)
        after_closure()
        if result is None and automatic:
            # no backward ran (training_step returned None): nothing to step. Under manual optimization
            # the closure returns nothing and the backward already ran through `manual_backward`.
            self.scaler.update()
            return None
        out = self.scaler.step(optimizer, **kw)
        self.scaler.update()
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class TruePrecision(Precision):
    """Parameters, inputs and newly created floats all in one dtype (bf16, fp16 or fp64)."""

    def __init__(self, name: str) -> None:
        dtypes = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}
        if name not in dtypes:
            raise ValueError(f"Expected precision to be one of {sorted(dtypes)}, received {name!r}.")
        self.name = name
        self.dtype = dtypes[name]

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        return apply_to_tensors(data, lambda t: t.to(self.dtype) if t.is_floating_point() else t)

    def forward_context(self) -> Any:
        return _default_dtype(self.dtype)


class DoublePrecision(TruePrecision):
    """``precision="64-true"``: parameters, inputs and new floats in float64."""

    def __init__(self) -> None:
        super().__init__("64-true")


class HalfPrecision(TruePrecision):
    """``precision="16-true"`` or ``"bf16-true"``: everything in half precision, no autocast."""

    def __init__(self, precision: str = "16-true") -> None:
        if precision not in ("16-true", "bf16-true"):
            raise ValueError(f"Expected precision to be '16-true' or 'bf16-true', received {precision!r}.")
        super().__init__(precision)


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_precision(value: Any, device_type: str) -> Precision:
    """The precision object for a Trainer's ``precision`` argument (or precision plugin) on ``device_type``."""
    if isinstance(value, Precision):
        return value
    name = normalize_precision(value, device_type)
    if name == "32-true":
        return Precision()
    if name in ("16-mixed", "bf16-mixed"):
        return MixedPrecision(name, device_type)
    return TruePrecision(name)
