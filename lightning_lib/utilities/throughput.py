"""``measure_flops``: the floating-point operations of one forward (and backward) pass, from torch's counter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def measure_flops(
    model: nn.Module, forward_fn: Callable[[], Any], loss_fn: Callable[[Any], Any] | None = None
) -> int:
    """FLOPs of ``forward_fn()`` (and of the backward of ``loss_fn(forward_fn())`` when given).

    Build ``model`` on the meta device (``with torch.device("meta"):``) to count without computing.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        if loss_fn is None:
            forward_fn()
        else:
            loss_fn(forward_fn()).backward()
    return int(counter.get_total_flops())


__all__ = ["measure_flops"]
