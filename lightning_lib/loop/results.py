"""What ``self.log`` collects, and how it becomes ``callback_metrics``, logged and progress-bar metrics.

Semantics follow Lightning 2.x: per-hook on_step/on_epoch defaults, ``name_step``/``name_epoch`` when
both are set, batch-size weighted epoch means, ``/dataloader_idx_N`` suffixes. What differs is cost: a
logged tensor is only detached and stored, epoch reductions are folded in batches, and nothing leaves
the device until a logger or the progress bar actually needs a number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from lightning_lib.utilities.data import extract_batch_size
from lightning_lib.utilities.exceptions import MisconfigurationException

# (allowed on_step, allowed on_epoch, default on_step, default on_epoch) per hook; None: logging forbidden.
_LogRule = tuple[tuple[bool, ...], tuple[bool, ...], bool, bool] | None
_STEP_RULE: _LogRule = ((False, True), (False, True), True, False)
_EVAL_STEP_RULE: _LogRule = ((False, True), (False, True), False, True)
_EPOCH_RULE: _LogRule = ((False,), (True,), False, True)

_STEP_HOOKS = (
    "training_step on_train_batch_start on_train_batch_end on_before_backward backward on_after_backward "
    "on_before_optimizer_step optimizer_step configure_gradient_clipping clip_gradients on_before_zero_grad "
    "optimizer_zero_grad"
)
_EVAL_STEP_HOOKS = (
    "validation_step test_step on_validation_batch_start on_validation_batch_end on_test_batch_start "
    "on_test_batch_end"
)
_EPOCH_HOOKS = (
    "on_train_start on_validation_start on_test_start on_train_epoch_start on_train_epoch_end "
    "on_validation_epoch_start on_validation_epoch_end on_test_epoch_start on_test_epoch_end"
)
_NO_LOG_HOOKS = (
    "lr_scheduler_step on_fit_start on_fit_end on_sanity_check_start on_sanity_check_end on_train_end "
    "on_validation_end on_test_end on_predict_start on_predict_end on_predict_epoch_start "
    "on_predict_epoch_end on_before_batch_transfer transfer_batch_to_device on_after_batch_transfer "
    "on_predict_batch_start on_predict_batch_end on_exception state_dict on_save_checkpoint "
    "on_load_checkpoint load_state_dict setup teardown configure_model configure_optimizers "
    "train_dataloader val_dataloader test_dataloader predict_dataloader prepare_data predict_step "
    "configure_callbacks on_validation_model_zero_grad on_validation_model_eval on_test_model_eval "
    "on_validation_model_train on_test_model_train"
)
LOG_RULES: dict[str, _LogRule] = {
    **dict.fromkeys(_STEP_HOOKS.split(), _STEP_RULE),
    **dict.fromkeys(_EVAL_STEP_HOOKS.split(), _EVAL_STEP_RULE),
    **dict.fromkeys(_EPOCH_HOOKS.split(), _EPOCH_RULE),
    **dict.fromkeys(_NO_LOG_HOOKS.split(), None),
}

_REDUCTIONS: dict[Any, str] = {
    "mean": "mean",
    "avg": "mean",
    torch.mean: "mean",
    "sum": "sum",
    torch.sum: "sum",
    sum: "sum",
    "max": "max",
    torch.max: "max",
    max: "max",
    "min": "min",
    torch.min: "min",
    min: "min",
}

DATALOADER_SUFFIX = "/dataloader_idx_{}"
# Epoch accumulators fold their pending step values into one tensor this often, bounding memory.
_FOLD_EVERY = 256


def resolve_logging_levels(
    fx: str, name: str, on_step: bool | None, on_epoch: bool | None
) -> tuple[bool, bool]:
    """Apply the hook's defaults and reject levels Lightning forbids there, naming hook and argument."""
    if fx not in LOG_RULES:
        raise RuntimeError(f"Logging inside `{fx}` is not supported; log from a LightningModule hook.")
    rule = LOG_RULES[fx]
    if rule is None:
        raise MisconfigurationException(
            f"You can't `self.log({name!r}, ...)` inside `{fx}`. Log from a step or epoch hook instead,"
            " or use `self.logger.log_metrics` directly."
        )
    allowed_step, allowed_epoch, default_step, default_epoch = rule
    on_step = default_step if on_step is None else on_step
    on_epoch = default_epoch if on_epoch is None else on_epoch
    if on_step not in allowed_step:
        raise MisconfigurationException(
            f"You can't `self.log(on_step={on_step})` inside `{fx}`, expected one of {allowed_step}."
        )
    if on_epoch not in allowed_epoch:
        raise MisconfigurationException(
            f"You can't `self.log(on_epoch={on_epoch})` inside `{fx}`, expected one of {allowed_epoch}."
        )
    if not on_step and not on_epoch:
        raise MisconfigurationException(
            f"`self.log({name!r}, on_step=False, on_epoch=False)` is not useful: expected on_step or on_epoch"
            f" to be True in `{fx}`, received neither."
        )
    return on_step, on_epoch


def resolve_reduce_fx(name: str, reduce_fx: Any) -> str:
    key = reduce_fx.lower() if isinstance(reduce_fx, str) else reduce_fx
    try:
        return _REDUCTIONS[key]
    except (KeyError, TypeError):
        raise MisconfigurationException(
            "Only `self.log(..., reduce_fx={min,max,mean,sum})` are supported (or the torch functions);"
            f" received reduce_fx={reduce_fx!r} for {name!r}. For a custom reduction, log a torchmetrics Metric."
        ) from None


def is_metric_object(value: Any) -> bool:
    """A torchmetrics-style Metric: logged by reference, computed at epoch end."""
    return hasattr(value, "compute") and hasattr(value, "update") and hasattr(value, "_forward_cache")


class LoggedValue:
    """One ``self.log`` key: its options, its latest step value and its epoch accumulator."""

    __slots__ = (
        "add_dataloader_idx",
        "computed",
        "dataloader_idx",
        "fx",
        "logger",
        "metric",
        "name",
        "on_epoch",
        "on_step",
        "options",
        "pending_sizes",
        "pending_values",
        "prog_bar",
        "reduce",
        "step_value",
        "total",
        "total_size",
        "updated",
    )

    def __init__(self, fx: str, name: str, options: tuple[Any, ...], dataloader_idx: int | None) -> None:
        self.fx = fx
        self.name = name
        self.options = options
        self.prog_bar, self.logger, self.on_step, self.on_epoch, self.reduce, self.add_dataloader_idx = (
            options
        )
        self.dataloader_idx = dataloader_idx
        self.metric: Any = None
        self.reset()

    def reset(self) -> None:
        if self.metric is not None and getattr(self, "updated", False):
            self.metric.reset()
        self.step_value: Tensor | None = None
        self.pending_values: list[Tensor] = []
        self.pending_sizes: list[int] = []
        self.total: Tensor | None = None
        self.total_size = 0
        self.computed: Tensor | None = None
        self.updated = False

    def update(self, value: Tensor, batch_size: int) -> None:
        self.updated = True
        self.computed = None
        if self.on_step:
            self.step_value = value
            if not self.on_epoch:
                return
        self.pending_values.append(value)
        if self.reduce == "mean":
            self.pending_sizes.append(batch_size)
        if len(self.pending_values) >= _FOLD_EVERY:
            self._fold()

    def update_metric(self, metric: Any) -> None:
        self.updated = True
        self.computed = None
        self.metric = metric
        cache = getattr(metric, "_forward_cache", None)
        self.step_value = cache.detach() if isinstance(cache, Tensor) else cache

    def _fold(self) -> None:
        if not self.pending_values:
            return
        stacked = torch.stack(self.pending_values)
        if self.reduce == "mean":
            sizes = self.pending_sizes
            if all(size == sizes[0] for size in sizes):
                part = stacked.sum() * sizes[0]  # the usual case: no sizes tensor to copy to the device
            else:
                # built on the host and copied without blocking: a plain torch.tensor(..., device="cuda")
                # would wait for the GPU
                host = torch.tensor(sizes, dtype=stacked.dtype)
                if stacked.device.type == "cuda":
                    host = host.pin_memory()
                part = (stacked * host.to(stacked.device, non_blocking=True)).sum()
            self.total_size += sum(sizes)
        elif self.reduce == "sum":
            part = stacked.sum()
        elif self.reduce == "max":
            part = stacked.max()
        else:
            part = stacked.min()
        if self.total is None:
            self.total = part
        elif self.reduce in ("mean", "sum"):
            self.total = self.total + part
        elif self.reduce == "max":
            self.total = torch.maximum(self.total, part)
        else:
            self.total = torch.minimum(self.total, part)
        self.pending_values.clear()
        self.pending_sizes.clear()

    def epoch_value(self) -> Tensor | None:
        if self.computed is None:
            if self.metric is not None:
                self.computed = self.metric.compute()
            else:
                self._fold()
                if self.total is None:
                    return None
                self.computed = self.total / self.total_size if self.reduce == "mean" else self.total
        return self.computed

    def names(self, on_step: bool) -> tuple[str, str]:
        forked = (
            f"{self.name}_{'step' if on_step else 'epoch'}" if self.on_step and self.on_epoch else self.name
        )
        name = self.name
        if self.add_dataloader_idx and self.dataloader_idx is not None:
            suffix = DATALOADER_SUFFIX.format(self.dataloader_idx)
            name += suffix
            forked += suffix
        return name, forked


class MetricDicts:
    """The three views of logged values Lightning exposes."""

    __slots__ = ("callback", "log", "pbar")

    def __init__(self) -> None:
        self.callback: dict[str, Tensor] = {}
        self.log: dict[str, Tensor] = {}
        self.pbar: dict[str, Tensor] = {}


class ResultCollection:
    """Everything logged during one loop (training, validation, test) until its epoch ends."""

    def __init__(self, training: bool) -> None:
        self.training = training
        self.items: dict[tuple[str, str, int | None], LoggedValue] = {}
        self.batch: Any = None
        self.batch_size: int | None = None
        self.dataloader_idx: int | None = None

    def log(
        self,
        fx: str,
        name: str,
        value: Any,
        options: tuple[Any, ...],
        add_dataloader_idx: bool,
        batch_size: int | None,
    ) -> None:
        dl_idx = self.dataloader_idx
        key = (fx, name, dl_idx if add_dataloader_idx else None)
        item = self.items.get(key)
        if item is None:
            item = self.items[key] = LoggedValue(fx, name, options, dl_idx)
        elif item.options != options or item.dataloader_idx != dl_idx:
            raise MisconfigurationException(
                f"You called `self.log({name}, ...)` twice in `{fx}` with different arguments; "
                "use the same on_step/on_epoch/reduce_fx/prog_bar/logger each time."
            )
        if is_metric_object(value):
            item.update_metric(value)
            return
        if batch_size is None:
            batch_size = self._batch_size_for(item)
        item.update(value, batch_size)

    def _batch_size_for(self, item: LoggedValue) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if self.batch is None or not item.on_epoch or item.reduce != "mean":
            return 1
        self.batch_size = extract_batch_size(self.batch)
        return self.batch_size

    def metrics(self, on_step: bool) -> MetricDicts:
        out = MetricDicts()
        current_dl = self.dataloader_idx
        for item in self.items.values():
            # only values logged under the current loader (None: outside any loader) are reported
            if not item.updated or item.dataloader_idx != current_dl:
                continue
            if on_step:
                value = item.step_value if item.on_step else None
            else:
                value = item.epoch_value() if item.on_epoch else None
            if not isinstance(value, Tensor):
                continue
            name, forked = item.names(on_step)
            if item.logger:
                out.log[forked] = value
            if self.training or (item.on_epoch and not on_step):
                out.callback[name] = value
                out.callback[forked] = value
            if item.prog_bar:
                out.pbar[forked] = value
        return out

    def reset(self) -> None:
        for item in self.items.values():
            item.reset()


def to_python_scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Tensors to Python numbers: the one place where logged values leave the device."""
    return {k: (v.item() if isinstance(v, Tensor) and v.numel() == 1 else v) for k, v in metrics.items()}


def as_log_tensor(name: str, value: Any, device: torch.device | None, warn: Callable[[str], None]) -> Any:
    """Validate a value given to ``self.log`` and make it a detached floating scalar tensor.

    A number, a one-element tensor or a torchmetrics Metric; NaN and infinities are logged as they are.
    """
    if type(value) is Tensor and value.dtype is torch.float32 and value.ndim == 0:
        return value.detach()  # the common case, kept to one check
    if is_metric_object(value):
        return value
    if isinstance(value, bool | int | float):
        # filled on the device: no host-to-device copy, so no wait for the GPU
        return torch.full((), float(value), dtype=torch.get_default_dtype(), device=device)
    if not isinstance(value, Tensor):
        if isinstance(value, Mapping) and any(isinstance(v, Mapping) for v in value.values()):
            problem = "nested dictionaries cannot be logged"
        else:
            problem = f"`{type(value).__name__}` values cannot be logged"
        raise ValueError(
            f"`self.log({name}, {value})` was called, but {problem}: expected a number, a one-element tensor"
            " or a torchmetrics Metric (use `self.log_dict` for a dict of values)."
        )
    if value.numel() != 1:
        raise ValueError(
            f"`self.log({name}, {value})` was called, but the tensor must have a single element, received"
            f" shape {tuple(value.shape)}. You can try doing `self.log({name}, {value}.mean())`."
        )
    value = value.detach()
    if not value.is_floating_point():
        warn(
            f"`self.log({name!r}, ...)` received a {value.dtype} tensor; it is converted to "
            f"{torch.get_default_dtype()} so it can be reduced."
        )
    if value.dtype not in (torch.float32, torch.float64):
        value = value.to(torch.get_default_dtype())
    if value.ndim:
        value = value.reshape(())
    return value


def warn_once(cache: set[str], message: str) -> None:
    if message not in cache:
        cache.add(message)
        warnings.warn(message, stacklevel=3)
