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


def resolve_device(device_type: str, devices: Any) -> torch.device:
    """One device from ``devices`` ("auto", 1, "1", -1, [index] or "index,")."""
    if devices in ("auto", 1, "1", -1, "-1"):
        index = 0
    elif isinstance(devices, list | tuple) and len(devices) == 1 and isinstance(devices[0], int):
        index = devices[0]
    elif isinstance(devices, str) and devices.rstrip(",").isdigit() and devices.endswith(","):
        index = int(devices.rstrip(","))
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 1:
        raise ValueError(
            f"Expected devices=1 (one process), received devices={devices}: multi-device training needs the"
            " DDP strategy, which this version does not provide yet."
        )
    else:
        raise _fail("devices", 'to be "auto", 1, -1 or a one-element list of device indices', devices)
    if device_type == "cpu":
        return torch.device("cpu")
    if index >= torch.cuda.device_count():
        raise ValueError(f"Expected a CUDA device index < {torch.cuda.device_count()}, received {index}.")
    return torch.device("cuda", index)


def check_strategy(strategy: Any) -> None:
    if strategy not in ("auto", "single_device"):
        raise _fail("strategy", 'to be "auto" or "single_device" in this version', strategy)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        raise _fail(name, f"to be one of {choices}", value)
    return value
