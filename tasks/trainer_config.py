"""``TrainerConfig``: the commonly used ``Trainer`` arguments as a form, checked by the Trainer's own rules.

Every rule comes from :mod:`lightning_lib.trainer.arguments` (and the precision table), so a config that
validates here is one ``Trainer(**config.trainer.to_kwargs())`` accepts, with the same error messages.
Only the checks that depend on the machine (is there a CUDA device? how many CPUs?) are left to the
Trainer itself: a config is often validated where the API runs, not on the GPU worker that trains.

Bounds (issue 14): every count a parameter controls has a fixed upper bound here, in the JSON schema
(the Prefect form) as well as in the checks: ``devices`` per node <= ``MAX_DEVICES_PER_NODE`` (each is a
process), ``num_nodes`` <= ``MAX_NUM_NODES``, ``max_time`` <= ten years (longer overflows), and epochs,
steps and the other counts <= ``MAX_COUNT`` (2**31 - 1: they allocate nothing, but a larger number is a
typo and loses precision in the browser's JavaScript form). The machine's own bound (CPUs, CUDA devices)
is checked by the Trainer on the worker, before torchrun is launched.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationInfo, field_validator

from lightning_lib.plugins.precision import normalize_precision
from lightning_lib.trainer.arguments import (
    MAX_DEVICES_PER_NODE,
    MAX_NUM_NODES,
    batch_limit,
    check_choice,
    check_gradient_clip_val,
    check_int,
    device_request,
    parse_duration,
)

# Upper bound of the counts that allocate nothing (epochs, steps, intervals): see the module docstring.
MAX_COUNT = 2**31 - 1
_Count = Annotated[int, Field(le=MAX_COUNT)]
_Limit = Annotated[int, Field(ge=0, le=MAX_COUNT)] | Annotated[float, Field(ge=0, le=1)]
# What a limit allows but an interval does not: 0 (the Trainer refuses validating every 0 batches).
_Interval = Annotated[int, Field(ge=1, le=MAX_COUNT)] | Annotated[float, Field(gt=0, le=1)]
_Duration = Annotated[str, Field(pattern=r"^\s*\d{1,4}:\d{1,2}:\d{1,2}:\d{1,2}\s*$")]

PrecisionName = Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true"]
_LIMIT = (
    "A fraction of the batches (a number from 0.0 to 1.0) or a whole number of batches; `None` means all."
)


def require_every_field(schema: dict[str, JsonValue]) -> None:
    """Mark every property of a config section required in its JSON schema (the Prefect form).

    The form drops a cleared field, or a number typed as text, from the values it sends, and Prefect
    merges a run's parameters over the deployment's only at the top level: the missing key would then
    silently take the model's default (seed 0 instead of the deployment's 42). Required, it is refused
    by the form and by the server's parameter check instead. Python callers and YAML files still get
    the defaults: only the schema is strict. A field that may be empty says so with an explicit `None`.
    """
    properties = schema.get("properties")
    if isinstance(properties, dict):
        schema["required"] = list(properties)


def _check_interval(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str):
        parse_duration(name, value)
    elif batch_limit(name, value) == 0:
        raise ValueError(f"Expected {name} > 0, received 0.")
    else:
        _check_limit(name, value)


def _check_limit(name: str, value: Any) -> None:
    if batch_limit(name, value) > MAX_COUNT:
        raise ValueError(f"Expected {name} <= {MAX_COUNT} batches, received {value!r}.")


def _count(minimum: int, allow_none: bool = False) -> Any:
    return lambda n, v: check_int(n, v, minimum, allow_none=allow_none, maximum=MAX_COUNT)


# Field -> the Trainer's check for it, applied to the raw value before pydantic's own type coercion, so
# e.g. ``max_epochs=True`` is refused as the Trainer refuses it instead of becoming 1.
_RULES: dict[str, Any] = {
    "max_epochs": _count(-1, allow_none=True),
    "max_steps": _count(-1),
    "max_time": lambda n, v: parse_duration(n, v),
    "devices": lambda n, v: device_request(v),  # the form and its bound; the machine's at fit time
    "num_nodes": lambda n, v: check_int(n, v, 1, maximum=MAX_NUM_NODES),
    "limit_train_batches": _check_limit,
    "limit_val_batches": _check_limit,
    "limit_test_batches": _check_limit,
    "limit_predict_batches": _check_limit,
    "val_check_interval": _check_interval,
    "check_val_every_n_epoch": _count(1, allow_none=True),
    "num_sanity_val_steps": _count(-1, allow_none=True),
    "log_every_n_steps": _count(0, allow_none=True),
    "accumulate_grad_batches": _count(1),
    "gradient_clip_val": lambda n, v: check_gradient_clip_val(v),
    "gradient_clip_algorithm": lambda n, v: check_choice(n, v, (None, "norm", "value")),
    "deterministic": lambda n, v: check_choice(n, v, (None, True, False, "warn")),
}


class TrainerConfig(BaseModel):
    """Arguments passed to ``lightning_lib.Trainer``; defaults are the Trainer's own."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        title="Trainer",
        json_schema_extra=require_every_field,
    )

    max_epochs: Annotated[int, Field(ge=-1, le=MAX_COUNT)] | None = Field(
        default=None,
        description="Stop after this many epochs; -1 means no limit, `None` means 1000 (no limit when `max_steps` is set).",
    )
    max_steps: int = Field(
        default=-1,
        ge=-1,
        le=MAX_COUNT,
        description="Stop after this many optimizer steps; -1 means no limit.",
    )
    max_time: _Duration | None = Field(
        default=None,
        description="Stop after this much time, `DD:HH:MM:SS` (at most 3650 days); `None` means no time limit.",
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = Field(
        default="auto", description="The device type to train on; `auto` picks a GPU when there is one."
    )
    devices: (
        Annotated[int, Field(ge=-1, le=MAX_DEVICES_PER_NODE)]
        | Annotated[str, Field(max_length=8 * MAX_DEVICES_PER_NODE)]
        | Annotated[
            list[Annotated[int, Field(ge=0, lt=MAX_DEVICES_PER_NODE)]],
            Field(min_length=1, max_length=MAX_DEVICES_PER_NODE),
        ]
    ) = Field(
        default="auto",
        description="Devices per node, one process each: `auto`, a count, -1 (all GPUs) or a list of indices."
        f" More than one trains with DDP (the fit task launches torchrun). At most {MAX_DEVICES_PER_NODE},"
        " and at most the worker's CPUs (CPU) or CUDA devices (GPU), checked on the worker before launching.",
    )
    strategy: Literal["auto", "single_device", "ddp", "ddp_find_unused_parameters_true"] = Field(
        default="auto", description="`auto` uses DDP when there is more than one device."
    )
    num_nodes: int = Field(
        default=1,
        ge=1,
        le=MAX_NUM_NODES,
        description="Machines taking part (each runs torchrun; see `infra/k8s`).",
    )
    precision: PrecisionName = Field(
        default="32-true",
        description="Numerical precision; a config file (not this form) may also give 16, 32, 64 or `bf16`.",
    )
    limit_train_batches: _Limit | None = Field(default=None, description=_LIMIT)
    limit_val_batches: _Limit | None = Field(default=None, description=_LIMIT)
    limit_test_batches: _Limit | None = Field(default=None, description=_LIMIT)
    limit_predict_batches: _Limit | None = Field(default=None, description=_LIMIT)
    val_check_interval: _Interval | _Duration | None = Field(
        default=None,
        description="Validate every fraction of an epoch (a number up to 1.0), every N batches (a whole number) "
        "or every `DD:HH:MM:SS`; `None` means once per epoch.",
    )
    check_val_every_n_epoch: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        default=1, description="Validate every N epochs; `None` means only by `val_check_interval`."
    )
    num_sanity_val_steps: Annotated[int, Field(ge=-1, le=MAX_COUNT)] | None = Field(
        default=None, description="Validation batches run before training; -1 means all, `None` means 2."
    )
    accumulate_grad_batches: int = Field(
        default=1,
        ge=1,
        le=MAX_COUNT,
        description="Accumulate gradients over this many batches per optimizer step.",
    )
    gradient_clip_val: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Clip gradients at this value; `None` means no clipping."
    )
    gradient_clip_algorithm: Literal["norm", "value"] | None = Field(
        default=None, description="Clip by the gradients' `norm` or by `value`; `None` means `norm`."
    )
    log_every_n_steps: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = Field(
        default=None, description="Log every N steps within an epoch; `None` means 50."
    )
    deterministic: bool | Literal["warn"] | None = Field(
        default=None,
        description="Use deterministic algorithms: true, false or `warn`; `None` leaves torch's setting as it is.",
    )
    enable_progress_bar: bool | None = Field(
        default=None, description="Show the progress bar; `None` means shown."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _trainer_rule(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if name == "accelerator" and isinstance(value, str):
            return value.lower()  # the Trainer is case-insensitive here
        if name == "precision":
            # The Trainer's table, with aliases mapped to their canonical name; "cuda" so that the CPU
            # fallback (16-mixed -> bf16-mixed) stays the Trainer's decision on the machine that trains.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return normalize_precision(value, "cuda")
        rule = _RULES.get(name or "")
        if rule is not None:
            rule(name, value)
        return value

    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``lightning_lib.Trainer``."""
        return self.model_dump()


class CheckpointConfig(BaseModel):
    """How the ``fit`` task checkpoints (``ModelCheckpoint`` under ``<checkpoint_root>/<run_key>``).

    ``last`` is always kept: it is what a retry resumes from. Frequent step checkpoints make a crash cost
    fewer repeated steps; each one is committed in the background.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        title="Checkpoints",
        json_schema_extra=require_every_field,
    )

    monitor: str | None = Field(
        default="val_loss",
        description="Metric that ranks checkpoints (`best`); `None` means the latest is the best.",
    )
    mode: Literal["min", "max"] = Field(
        default="min", description="Whether a lower (`min`) or higher (`max`) monitor is better."
    )
    save_top_k: int = Field(
        default=1, ge=-1, le=MAX_COUNT, description="Best checkpoints kept besides `last`; -1 means all."
    )
    every_n_train_steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="Also checkpoint every N optimizer steps; `None` means once per epoch only.",
    )

    @field_validator("save_top_k")
    @classmethod
    def _rank_needs_monitor(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("monitor") is None and value not in (-1, 0, 1):
            raise ValueError(
                f"Expected a monitor to keep save_top_k={value} checkpoints; there is nothing to rank."
            )
        return value

    def callback_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``ModelCheckpoint`` (besides ``dirpath``)."""
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "save_top_k": self.save_top_k,
            "every_n_train_steps": self.every_n_train_steps,
            "save_last": True,
        }
