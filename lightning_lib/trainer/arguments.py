"""Validation of the Trainer's arguments: every bad value is named, with what was expected, up front."""

from __future__ import annotations

import ast
import functools
import inspect
import math
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch

from lightning_lib.utilities.enums import GradClipAlgorithmType
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import rank_zero_info

_F = TypeVar("_F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")

# Bounds on what an argument makes the run allocate or start, checked before anything is built: an
# argument may come from an untrusted form (a UI, an API parameter), and ``devices=100000`` must not
# start 100,000 processes, nor ``devices=10**11`` build a list that size while being checked.
MAX_DEVICES_PER_NODE = 256  # processes per machine: above any GPU node, and any useful CPU DDP run
MAX_NUM_NODES = 1024
# The longest ``max_time`` (or time-based ``val_check_interval``): beyond it a limit means nothing,
# and far beyond it ``timedelta`` overflows.
MAX_DURATION = timedelta(days=3650)


def _fail(name: str, expected: str, value: Any) -> MisconfigurationException:
    return MisconfigurationException(f"Expected {name} {expected}, received {value!r}.")


def check_int(
    name: str, value: Any, minimum: int, allow_none: bool = False, maximum: int | None = None
) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return_type = "an int" + (" or None" if allow_none else "")
        raise _fail(name, f"to be {return_type} >= {minimum}", value)
    if value < minimum:
        raise MisconfigurationException(f"Expected {name} >= {minimum}, received {value}.")
    if maximum is not None and value > maximum:
        raise MisconfigurationException(f"Expected {name} <= {maximum}, received {value}.")
    return value


# what an explicit 1 (one batch) or 1.0 (every batch) means, announced since the two are easily confused
_LIMIT_INFO = {
    ("limit_train_batches", "1"): "1 batch per epoch will be used.",
    ("val_check_interval", "1"): "validation will run after every batch.",
    ("limit_train_batches", "1.0"): "100% of the batches per epoch will be used.",
    ("val_check_interval", "1.0"): "validation will run at the end of the training epoch.",
}
_LIMIT_INFO_DEFAULT = {"1": "1 batch will be used.", "1.0": "100% of the batches will be used."}


def batch_limit(name: str, value: Any, announce: bool = False) -> int | float:
    """Lightning's rule: a fraction in [0.0, 1.0] or a whole number of batches.

    With ``announce`` (the Trainer's), an explicit 1 or 1.0 is logged, as Lightning does, since the int and
    the float mean different things.
    """
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_limit(name, value)
    if announce and value == 1:
        spelled = "1" if isinstance(value, int) else "1.0"
        message = _LIMIT_INFO.get((name, spelled), _LIMIT_INFO_DEFAULT[spelled])
        rank_zero_info(f"`Trainer({name}={spelled})` was configured so {message}")
    if 0 <= value <= 1:
        return value
    if value > 1 and float(value).is_integer():
        return int(value)
    raise _invalid_limit(name, value)


def _invalid_limit(name: str, value: Any) -> MisconfigurationException:
    return MisconfigurationException(
        f"Expected {name} to be a float in [0.0, 1.0] or an int >= 0, received {value!r}: you passed invalid"
        f" value {value!r} for {name}."
    )


def check_fast_dev_run(value: Any) -> int | bool:
    """``fast_dev_run``: a bool or a number of batches >= 0; 1 reads back as True, as in Lightning."""
    if not isinstance(value, int):
        raise _fail("fast_dev_run", "to be a bool or an int >= 0", value)
    if value < 0:
        raise MisconfigurationException(
            f"Expected fast_dev_run >= 0, received {value}; it should be >= 0 (batches to run, True for 1)."
        )
    return True if value == 1 else value


def check_reload_every_n_epochs(value: Any) -> int:
    """``reload_dataloaders_every_n_epochs``: 0 (never) or a number of epochs."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MisconfigurationException(
            f"Expected reload_dataloaders_every_n_epochs >= 0, received {value!r}; it should be an int >= 0"
            " (0 never reloads)."
        )
    return value


def check_val_every_n_epoch_arg(value: Any, val_check_interval: Any) -> int | None:
    """``check_val_every_n_epoch``: an int >= 1, or None to count ``val_check_interval`` across epochs."""
    if value is None:
        if isinstance(val_check_interval, float):
            raise MisconfigurationException(
                "`val_check_interval` should be an integer or a time-based duration (str 'DD:HH:MM:SS', "
                "datetime.timedelta, or dict kwargs for timedelta) when `check_val_every_n_epoch=None`."
                f" Received val_check_interval={val_check_interval!r}."
            )
        return None
    checked: int = check_int("check_val_every_n_epoch", value, 1)
    return checked


def check_gradient_clip_algorithm(value: Any) -> GradClipAlgorithmType | None:
    """None, "norm" or "value" (in any case)."""
    if value is None:
        return None
    if not isinstance(value, str) or not GradClipAlgorithmType.supported_type(value.lower()):
        raise _fail("gradient_clip_algorithm", "to be one of (None, 'norm', 'value')", value)
    return GradClipAlgorithmType(value.lower())


def check_barebones(**arguments: Any) -> None:
    """``barebones=True`` switches off everything that costs speed: an argument that turns one on is refused."""
    reasons = {
        "enable_checkpointing": "Checkpointing can impact raw speed",
        "logger": "Logging can impact raw speed",
        "enable_progress_bar": "The progress bar can impact raw speed",
        "log_every_n_steps": "Logging can impact raw speed",
        "enable_model_summary": "Model summary can impact raw speed",
        "num_sanity_val_steps": "Sanity checking can impact raw speed",
        "fast_dev_run": "Development run is not meant for raw speed evaluation",
        "detect_anomaly": "Anomaly detection can impact raw speed",
        "profiler": "Profiling can impact raw speed",
    }
    turned_on = {
        "logger": lambda v: v is not None and v is not False,
        "log_every_n_steps": lambda v: v is not None and v != 0,
        "num_sanity_val_steps": lambda v: v is not None and v != 0,
        "fast_dev_run": lambda v: v is not False and v != 0,
        "profiler": lambda v: v is not None,
    }
    for name, value in arguments.items():
        if turned_on.get(name, bool)(value):
            raise MisconfigurationException(
                f"`Trainer(barebones=True, {name}={value!r})` was passed. {reasons[name]} so it is disabled in"
                " barebones mode."
            )


BAREBONES_INFO = (
    "You are running in `Trainer(barebones=True)` mode. All features that may impact raw speed have been"
    " disabled to facilitate analyzing the Trainer overhead. Specifically, the following features are"
    " deactivated:"
    + "".join(
        f"{os.linesep} - {feature}"
        for feature in (
            "Checkpointing: `Trainer(enable_checkpointing=True)`",
            "Progress bar: `Trainer(enable_progress_bar=True)`",
            "Model summary: `Trainer(enable_model_summary=True)`",
            "Logging: `Trainer(logger=True)`, `Trainer(log_every_n_steps>0)`, `LightningModule.log(...)`,"
            " `LightningModule.log_dict(...)`",
            "Sanity checking: `Trainer(num_sanity_val_steps>0)`",
            "Development run: `Trainer(fast_dev_run=True)`",
            "Anomaly detection: `Trainer(detect_anomaly=True)`",
            "Profiling: `Trainer(profiler=...)`",
        )
    )
)


def build_profiler(profiler: Any) -> Any:
    """The profiler for ``Trainer(profiler=...)``: None, "simple", "advanced", "pytorch", "xla" or a Profiler."""
    from lightning_lib import profilers

    choices = {
        "simple": profilers.SimpleProfiler,
        "advanced": profilers.AdvancedProfiler,
        "pytorch": profilers.PyTorchProfiler,
        "xla": profilers.XLAProfiler,
    }
    if profiler is None:
        return profilers.PassThroughProfiler()
    if isinstance(profiler, profilers.Profiler):
        return profiler
    if isinstance(profiler, str) and profiler.lower() in choices:
        return choices[profiler.lower()]()
    raise MisconfigurationException(
        f"Expected profiler to be one of {list(choices)}, a Profiler or None, received {profiler!r}."
    )


def precision_from_plugins(precision: Any, plugins: Any) -> Any:
    """The precision to build: ``precision``, or the precision plugin among ``plugins`` (not both)."""
    from lightning_lib.plugins.precision import Precision

    if plugins is None:
        return precision
    items = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
    plugin = None
    for item in items:
        if not isinstance(item, Precision):
            raise MisconfigurationException(
                f"Expected plugins to be precision plugins (lightning_lib.plugins), received {item!r};"
                " checkpoint IO, cluster environment and layer-sync plugins are not supported."
            )
        if plugin is not None:
            raise MisconfigurationException(
                f"Expected one precision plugin, received {plugin!r} and {item!r}; choose one."
            )
        plugin = item
    if plugin is not None and precision is not None:
        raise MisconfigurationException(
            f"Received both `precision={precision}` and `plugins={plugin}`. Choose one."
        )
    return plugin if plugin is not None else precision


def expand_local_path(path: str) -> str:
    """``~`` expanded and the path normalised, unless it is a URI (``s3://...``), which is kept as given."""
    if "://" in path:
        return path
    return os.path.normpath(os.path.expanduser(path))


def _env_value(text: str) -> Any:
    """An environment value as the Python literal it spells (``"7"`` -> 7, ``"False"`` -> False), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def defaults_from_env_vars(init: _F) -> _F:
    """``PL_TRAINER_<ARGUMENT>`` environment variables as defaults for a Trainer's arguments (Lightning's).

    A value the caller passes wins over the environment; an empty variable is ignored.
    """
    names = [name for name in inspect.signature(init).parameters if name != "self"]

    @functools.wraps(init)
    def with_env_defaults(self: Any, *args: Any, **kwargs: Any) -> Any:
        prefix = f"PL_{type(self).__name__.upper()}_"
        for name in names:
            text = os.environ.get(prefix + name.upper())
            if text and name not in kwargs:
                kwargs[name] = _env_value(text)
        return init(self, *args, **kwargs)

    return with_env_defaults  # type: ignore[return-value]


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
            raise MisconfigurationException(
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
            raise MisconfigurationException(f"Expected devices {bound}, received {devices}.")
        return devices
    if not isinstance(devices, list | tuple) or not devices:
        raise _fail("devices", expected, devices)
    if len(devices) > MAX_DEVICES_PER_NODE:
        raise MisconfigurationException(
            f"Expected at most {MAX_DEVICES_PER_NODE} device indices (devices per node), received {len(devices)}."
        )
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices):
        raise _fail("devices", expected, devices)
    too_high = [i for i in devices if i >= MAX_DEVICES_PER_NODE]
    if too_high:
        raise MisconfigurationException(
            f"Expected device indices < {MAX_DEVICES_PER_NODE}, received {too_high[0]}."
        )
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
            raise MisconfigurationException(
                f"Expected devices <= {available} (the CUDA devices torch finds), received {request}."
            )
        indices = list(range(request))
    for index in indices:
        if index >= available:
            raise MisconfigurationException(f"Expected a CUDA device index < {available}, received {index}.")
    if not indices:
        raise MisconfigurationException("Expected at least one CUDA device, but torch finds none.")
    return [torch.device("cuda", i) for i in indices]


def check_gradient_clip_val(value: Any) -> Any:
    """None, or a finite number >= 0 (a NaN or infinite clip value turns every weight into NaN or clips
    nothing while saying it does)."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
    ):
        raise _fail("gradient_clip_val", "to be a finite number >= 0 or None", value)
    return value


STRATEGIES = (
    "auto",
    "single_device",
    "ddp",
    "ddp_find_unused_parameters_true",
    "ddp_spawn",
    "ddp_spawn_find_unused_parameters_true",
)


def check_strategy(strategy: Any) -> None:
    from lightning_lib.distributed._ddp import DDPStrategy

    if isinstance(strategy, DDPStrategy):
        return
    if strategy not in STRATEGIES:
        raise _fail("strategy", f"to be one of {STRATEGIES} or a DDPStrategy", strategy)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise _fail(name, f"to be one of {choices}", value)
    return value
