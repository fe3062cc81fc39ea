"""Moving and converting the tensors inside arbitrary batch structures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor


def apply_to_tensors(data: Any, fn: Callable[[Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor in nested lists, tuples, namedtuples, mappings and dataclasses."""
    if isinstance(data, Tensor):
        return fn(data)
    if isinstance(data, Mapping):
        return type(data)({k: apply_to_tensors(v, fn) for k, v in data.items()})  # type: ignore[call-arg]
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_tensors(v, fn) for v in data))
    if isinstance(data, list | tuple):
        return type(data)(apply_to_tensors(v, fn) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_tensors(getattr(data, f.name), fn) for f in dataclasses.fields(data) if f.init
        }
        return dataclasses.replace(data, **changes)
    return data


def move_to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor of ``batch`` to ``device``; CUDA copies from pinned memory do not block."""
    device = torch.device(device)
    if isinstance(batch, Tensor):
        if batch.device == device:
            return batch
        return batch.to(device, non_blocking=device.type == "cuda")
    if hasattr(batch, "to") and not isinstance(batch, Mapping | list | tuple):
        try:
            return batch.to(device)
        except TypeError:
            return batch
    non_blocking = device.type == "cuda"
    return apply_to_tensors(
        batch, lambda t: t if t.device == device else t.to(device, non_blocking=non_blocking)
    )


def move_data_to_device(batch: Any, device: torch.device | str | int) -> Any:
    """Lightning's name for :func:`move_to_device`: every tensor of ``batch`` on ``device``."""
    return move_to_device(batch, torch.device(device) if isinstance(device, int) else device)
