"""ModelSummary: the layer table Lightning shows when fitting starts, and ``summarize`` behind it.

The table has Lightning's columns (index, Name, Type, Params, Mode, and In sizes / Out sizes when the
module defines ``example_input_array``) and footer (trainable / non-trainable / total params,
estimated size in MB, modules in train / eval mode). Lightning 2.6's FLOPs column is left out: it
needs a FlopCounterMode forward pass that few users read.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)

UNKNOWN_SIZE = "?"
LEFTOVER_PARAMS_NAME = "other params"
NOT_APPLICABLE = "n/a"
_UNITS = (" ", "K", "M", "B", "T")
_PRECISION_BITS = {
    "64": 64, "32": 32, "16": 16, "bf16": 16, "16-true": 16, "bf16-true": 16, "32-true": 32, "64-true": 64,
    "16-mixed": 32, "bf16-mixed": 32,
}  # fmt: skip


def get_human_readable_count(number: float) -> str:
    """``123`` -> ``'123  '``, ``1234`` -> ``'1.2 K'``, ``2e6`` -> ``'2.0 M'``; stops at trillions."""
    assert number >= 0
    digits = int(math.floor(math.log10(number)) + 1) if number > 0 else 1
    groups = min(math.ceil(digits / 3), len(_UNITS))
    scaled = number * 10 ** (-3 * (groups - 1))
    if groups == 1 or scaled >= 100:
        return f"{int(scaled):,d} {_UNITS[groups - 1]}"
    return f"{scaled:,.1f} {_UNITS[groups - 1]}"


def _count(params: Iterator[nn.Parameter]) -> int:
    # Lazy modules have no size until their first forward; they count 0 (Lightning warns the same way).
    total = 0
    for p in params:
        if isinstance(p, UninitializedParameter):
            warnings.warn(
                "The total number of parameters detected may be inaccurate because the model contains an"
                " instance of `UninitializedParameter`. To get an accurate number, set"
                " `self.example_input_array` in your LightningModule.",
                stacklevel=3,
            )
            continue
        total += p.numel()
    return total


def _shape(value: Any) -> Any:
    if hasattr(value, "shape"):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return [_shape(v) for v in value]
    return UNKNOWN_SIZE


class LayerSummary:
    """Type, parameter count, mode and (after a forward pass) input/output shapes of one submodule."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self.in_size: Any = UNKNOWN_SIZE
        self.out_size: Any = UNKNOWN_SIZE
        self._handle: Any = None
        if not isinstance(module, torch.jit.ScriptModule):
            self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, _: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        inputs = (*args, *kwargs.values())
        self.in_size = _shape(inputs[0] if len(inputs) == 1 else inputs)
        self.out_size = _shape(out)
        # Only the first call counts (a module reused in a loop would otherwise overwrite it).
        self.detach_hook()

    def detach_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def layer_type(self) -> str:
        return type(self._module).__name__

    @property
    def num_parameters(self) -> int:
        return _count(self._module.parameters())

    @property
    def training(self) -> bool:
        return self._module.training


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


class Summary:
    """What ``summarize`` returns: per-layer data and totals; ``str()`` is Lightning's table."""

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`max_depth` can be -1, 0 or > 0, got {max_depth}.")
        self._model = model
        self._max_depth = max_depth
        self.layers: dict[str, LayerSummary] = {name: LayerSummary(m) for name, m in self._named_modules()}
        if getattr(model, "example_input_array", None) is not None:
            self._forward_example_input()
        for layer in self.layers.values():
            layer.detach_hook()
        self._megabytes_per_param = _precision_bits(model) / 8 * 1e-6

    def _named_modules(self) -> list[tuple[str, nn.Module]]:
        if self._max_depth == 0:
            return []
        if self._max_depth == 1:
            return list(self._model.named_children())
        mods = list(self._model.named_modules())[1:]  # not the root module itself
        if self._max_depth > 1:
            mods = [(n, m) for n, m in mods if n.count(".") < self._max_depth]
        return mods

    def _forward_example_input(self) -> None:
        """Run ``example_input_array`` once in eval mode, without grad, to record layer shapes."""
        model = self._model
        first = next(model.parameters(), None)
        example = model.example_input_array
        if first is not None:
            example = _to_device(example, first.device)
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.no_grad():
                if isinstance(example, (list, tuple)):
                    model(*example)
                elif isinstance(example, dict):
                    model(**example)
                else:
                    model(example)
        finally:
            for m, training in modes.items():
                m.training = training

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def total_parameters(self) -> int:
        return _count(self._model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return _count(p for p in self._model.parameters() if p.requires_grad)

    @property
    def model_size(self) -> float:
        """Estimated size of the parameters in MB at the trainer's precision."""
        return self.total_parameters * self._megabytes_per_param

    @property
    def total_training_modes(self) -> dict[str, int]:
        modes = [m.training for m in self._model.modules()][1:]
        return {"train": modes.count(True), "eval": modes.count(False)}

    def summary_data(self) -> list[tuple[str, list[str]]]:
        """The table's columns as (header, cells)."""
        layers = list(self.layers.values())
        params = [layer.num_parameters for layer in layers]
        cols: list[tuple[str, list[str]]] = [
            (" ", [str(i) for i in range(len(layers))]),
            ("Name", self.layer_names),
            ("Type", [layer.layer_type for layer in layers]),
            ("Params", [get_human_readable_count(n) for n in params]),
            ("Mode", ["train" if layer.training else "eval" for layer in layers]),
        ]
        if getattr(self._model, "example_input_array", None) is not None:
            cols.append(("In sizes", [str(layer.in_size) for layer in layers]))
            cols.append(("Out sizes", [str(layer.out_size) for layer in layers]))
        leftover = self.total_parameters - sum(params)
        # Parameters held directly by the root; at depth > 1 nested layers are counted twice, so the
        # difference is negative and no row is added (Lightning behaves the same).
        if leftover > 0:
            extra = {" ": " ", "Name": LEFTOVER_PARAMS_NAME, "Params": get_human_readable_count(leftover)}
            for header, cells in cols:
                cells.append(extra.get(header, NOT_APPLICABLE))
        return cols

    def __str__(self) -> str:
        return format_summary_table(
            self.total_parameters,
            self.trainable_parameters,
            self.model_size,
            self.total_training_modes,
            *self.summary_data(),
        )

    __repr__ = __str__


def _precision_bits(model: nn.Module) -> int:
    trainer = getattr(model, "_trainer", None)
    precision = getattr(trainer, "precision", None) if trainer is not None else None
    if precision is None:
        return 32
    return _PRECISION_BITS.get(str(precision), 32)


def format_summary_table(
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: dict[str, int],
    *cols: tuple[str, list[str]],
) -> str:
    """Lay out the columns and the totals footer as Lightning prints them."""
    n_rows = len(cols[0][1]) if cols else 0
    widths = [max([len(header), *(len(c) for c in cells)]) for header, cells in cols]
    total_width = sum(widths) + 3 * (len(cols) + 1)
    rule = "-" * total_width
    lines = [" | ".join(f"{h:<{w}}" for (h, _), w in zip(cols, widths)), rule]
    lines += [" | ".join(f"{c[i]:<{w}}" for (_, c), w in zip(cols, widths)) for i in range(n_rows)]
    lines.append(rule)
    footer = [
        (get_human_readable_count(trainable_parameters), "Trainable params"),
        (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
        (get_human_readable_count(total_parameters), "Total params"),
        (f"{model_size:,.3f}", "Total estimated model params size (MB)"),
        (str(total_training_modes["train"]), "Modules in train mode"),
        (str(total_training_modes["eval"]), "Modules in eval mode"),
    ]
    lines += [f"{value:<10}{label}" for value, label in footer]
    return "\n".join(lines)


def summarize(lightning_module: nn.Module, max_depth: int = 1) -> Summary:
    """Summarize ``lightning_module`` down to ``max_depth`` levels (-1: all, 0: totals only)."""
    return Summary(lightning_module, max_depth=max_depth)


class ModelSummary(Callback):
    """Log the model summary table when fitting starts.

    Args:
        max_depth: nesting depth of the layers listed; 0 turns the summary off.
        **summarize_kwargs: passed on to :meth:`summarize` (for subclasses that render differently).
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._max_depth:
            return
        summary = summarize(pl_module, max_depth=self._max_depth)
        if trainer.is_global_zero:
            self.summarize(
                summary.summary_data(),
                summary.total_parameters,
                summary.trainable_parameters,
                summary.model_size,
                summary.total_training_modes,
                **self._summarize_kwargs,
            )

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        **summarize_kwargs: Any,
    ) -> None:
        """Emit the table; override to render it elsewhere."""
        table = format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, *summary_data
        )
        log.info("\n" + table)
