"""Validation of the Trainer's arguments: every bad value is named, with what was expected, up front."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

import torch

_DURATION = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")

# Bounds on what an argument makes the run allocate or start, checked before anything is built: an
# argument may come from an untrusted form (a UI, an API parameter), and ``devices=100000`` must not
# start 100,000 processes, nor ``devices=10**11`` build a list that size while being checked.
MAX_DEVICES_PER_NODE = 256  # processes per machine: above any GPU node, and any useful CPU DDP run
MAX_NUM_NODES = 1024
# The longest ``max_time`` (or time-based ``val_check_interval``): beyond it a limit means nothing,
# and far beyond it ``timedelta`` overflows.
MAX_DURATION = timedelta(days=3650)


def _fail(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"Expected {name} {expected}, received {value!r}.")


def check_int(
    name: str, value: Any, minimum: int, allow_none: bool = False, maximum: int | None = None
) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return_type = "an int" + (" or None" if allow_none else "")
        raise _fail(name, f"to be {return_type} >= {minimum}", value)
    if value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}, received {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"Expected {name} <= {maximum}, received {value}.")
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
    duration: timedelta | None = None
    try:
        if isinstance(value, timedelta):
            duration = value
        elif isinstance(value, dict):
            try:
                duration = timedelta(**value)
            except TypeError as err:
                raise _fail(
                    name, "to be a dict of timedelta arguments (days, hours, minutes, seconds)", value
                ) from err
        elif isinstance(value, str):
            match = _DURATION.match(value.strip())
            if match:
                days, hours, minutes, seconds = (int(g) for g in match.groups())
                duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        duration = timedelta.max  # refused just below, as a ValueError like every bad argument
    if duration is None:
        raise _fail(name, 'to be a "DD:HH:MM:SS" string, a timedelta or a dict', value)
    if duration > MAX_DURATION:
        raise _fail(name, f"to be at most {MAX_DURATION.days} days", value)
    return duration


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


def device_request(devices: Any) -> str | int | list[int]:
    """The form of ``devices`` without looking at the machine: "auto", -1 (every GPU), a count, or a
    list of device indices (from a list or an "i,j" string). Counts and indices are bounded by
    :data:`MAX_DEVICES_PER_NODE` before anything of that size is built."""
    expected = 'to be "auto", an int >= 1, -1, a list of device indices or a string like "0,1"'
    bound = f"(devices per node) <= {MAX_DEVICES_PER_NODE}"
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return "auto"
        if text.lstrip("-").isdigit():
            devices = int(text)
        elif "," in text and len(text) <= 8 * MAX_DEVICES_PER_NODE:
            parts = [part.strip() for part in text.split(",") if part.strip()]
            if not parts or not all(part.isdigit() for part in parts):
                raise _fail("devices", expected, devices)
            devices = [int(part) for part in parts]
        else:
            raise _fail("devices", expected, devices)
    if isinstance(devices, bool):
        raise _fail("devices", expected, devices)
    if isinstance(devices, int):
        if devices == 0 or devices < -1:
            raise _fail("devices", expected, devices)
        if devices > MAX_DEVICES_PER_NODE:
            raise ValueError(f"Expected devices {bound}, received {devices}.")
        return devices
    if not isinstance(devices, list | tuple) or not devices:
        raise _fail("devices", expected, devices)
    if len(devices) > MAX_DEVICES_PER_NODE:
        raise ValueError(
            f"Expected at most {MAX_DEVICES_PER_NODE} device indices (devices per node), received {len(devices)}."
        )
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices):
        raise _fail("devices", expected, devices)
    too_high = [i for i in devices if i >= MAX_DEVICES_PER_NODE]
    if too_high:
        raise ValueError(f"Expected device indices < {MAX_DEVICES_PER_NODE}, received {too_high[0]}.")
    if len(set(devices)) != len(devices):
        raise _fail("devices", "to list each device index once", devices)
    return list(devices)


def parse_devices(device_type: str, devices: Any) -> list[torch.device]:
    """The devices of this node, one process each: ``devices`` is "auto", a count, -1, a list of indices
    or an "i,j" string. On CPU a count N means N processes; "auto" is one process on CPU, every GPU on CUDA.

    The request is bounded (:data:`MAX_DEVICES_PER_NODE`) before any list is built; on CUDA it is also
    bounded by the devices torch finds. On CPU, as in Lightning, more processes than CPUs is allowed
    (oversubscribed): the pipeline, which takes the count from untrusted parameters, bounds it by the
    worker's CPUs before it launches anything (``tasks.distributed_fit``)."""
    request = device_request(devices)
    if device_type == "cpu":
        processes = (
            len(request) if isinstance(request, list) else max(1, request if isinstance(request, int) else 1)
        )
        return [torch.device("cpu")] * processes
    available = torch.cuda.device_count()
    if isinstance(request, list):
        indices = request
    elif request in ("auto", -1):
        indices = list(range(available))
    else:
        assert isinstance(request, int)
        if request > available:
            raise ValueError(
                f"Expected devices <= {available} (the CUDA devices torch finds), received {request}."
            )
        indices = list(range(request))
    for index in indices:
        if index >= available:
            raise ValueError(f"Expected a CUDA device index < {available}, received {index}.")
    if not indices:
        raise ValueError("Expected at least one CUDA device, but torch finds none.")
    return [torch.device("cuda", i) for i in indices]


def check_gradient_clip_val(value: Any) -> Any:
    """None, or a finite number >= 0 (a NaN or infinite clip value turns every weight into NaN or clips
    nothing while saying it does)."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
    ):
        raise _fail("gradient_clip_val", "to be a finite number >= 0 or None", value)
    return value


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
