"""Validation of the Trainer's arguments: every bad value is named, with what was expected, up front."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import torch

_DURATION = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")


def _fail(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"Expected {name} {expected}, received {value!r}.")


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return_type = "an int" + (" or None" if allow_none else "")
        raise _fail(name, f"to be {return_type} >= {minimum}", value)
    if value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}, received {value}.")
    return value


def batch_limit(name: str, value: Any) -> int | float:
    """Lightning's rule: a fraction in [0.0, 1.0] or a whole number of batches."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, "to be a float in [0.0, 1.0] or an int >= 0", value)
    if 0 <= value <= 1:
        return value
    if value > 1 and float(value).is_integer():
        return int(value)
    raise _fail(name, "to be a float in [0.0, 1.0] or an int >= 0", value)


def parse_duration(name: str, value: Any) -> timedelta | None:
    """``"DD:HH:MM:SS"``, a timedelta, or a dict of timedelta arguments."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value
    if isinstance(value, dict):
        try:
            return timedelta(**value)
        except TypeError as err:
            raise _fail(
                name, "to be a dict of timedelta arguments (days, hours, minutes, seconds)", value
            ) from err
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            days, hours, minutes, seconds = (int(g) for g in match.groups())
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise _fail(name, 'to be a "DD:HH:MM:SS" string, a timedelta or a dict', value)


def resolve_accelerator(accelerator: Any) -> str:
    """The device type to run on: "cpu" or "cuda"."""
    if not isinstance(accelerator, str):
        raise _fail("accelerator", 'to be one of "auto", "cpu", "gpu", "cuda"', accelerator)
    name = accelerator.lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"Expected a CUDA device for accelerator={accelerator!r}, but torch finds none;"
                ' use accelerator="cpu" or "auto".'
            )
        return "cuda"
    raise _fail("accelerator", 'to be one of "auto", "cpu", "gpu", "cuda"', accelerator)


def parse_devices(device_type: str, devices: Any) -> list[torch.device]:
    """The devices of this node, one process each: ``devices`` is "auto", a count, -1, a list of indices
    or an "i,j" string. On CPU a count N means N processes; "auto" is one process on CPU, every GPU on CUDA."""
    expected = 'to be "auto", an int >= 1, -1, a list of device indices or a string like "0,1"'
    indices: list[int] | None = None
    count: int | None = None
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            count = -1 if device_type == "cuda" else 1
        elif text.lstrip("-").isdigit():
            devices = int(text)
        elif "," in text and all(part.strip().isdigit() for part in text.split(",") if part.strip()):
            indices = [int(part) for part in text.split(",") if part.strip()]
        else:
            raise _fail("devices", expected, devices)
    if count is None and indices is None:
        if isinstance(devices, bool):
            raise _fail("devices", expected, devices)
        if isinstance(devices, int):
            if devices == 0 or devices < -1:
                raise _fail("devices", expected, devices)
            count = devices
        elif (
            isinstance(devices, list | tuple)
            and devices
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices)
        ):
            indices = list(devices)
        else:
            raise _fail("devices", expected, devices)
    if indices is not None and len(set(indices)) != len(indices):
        raise _fail("devices", "to list each device index once", devices)
    if device_type == "cpu":
        processes = len(indices) if indices is not None else max(1, count or 1)
        return [torch.device("cpu")] * processes
    available = torch.cuda.device_count()
    if indices is None:
        assert count is not None
        indices = list(range(available if count == -1 else count))
    for index in indices:
        if index >= available:
            raise ValueError(f"Expected a CUDA device index < {available}, received {index}.")
    if not indices:
        raise ValueError("Expected at least one CUDA device, but torch finds none.")
    return [torch.device("cuda", i) for i in indices]


STRATEGIES = ("auto", "single_device", "ddp", "ddp_find_unused_parameters_true")


def check_strategy(strategy: Any) -> None:
    from lightning_lib.distributed._ddp import DDPStrategy

    if isinstance(strategy, DDPStrategy):
        return
    if strategy not in STRATEGIES:
        raise _fail("strategy", f"to be one of {STRATEGIES} or a DDPStrategy", strategy)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        raise _fail(name, f"to be one of {choices}", value)
    return value
