"""``SpikeDetection``: stop training when the loss spikes, recording the batches to skip on resume."""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


class TrainingSpikeException(RuntimeError):
    """Raised by ``SpikeDetection`` when the loss of a batch spiked."""

    def __init__(self, batch_idx: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args, **kwargs)


class SpikeDetection(Callback):
    """Raise ``TrainingSpikeException`` when a training loss spikes against the running mean of the last ones.

    A loss is a spike when it is not an improvement over the previous one (lower for ``mode="min"``) and
    differs from the mean of the last ``window`` finite losses by at least ``atol`` and by at least
    ``rtol`` times that mean (a tolerance of ``None`` is not checked); with ``finite_only`` a NaN or
    infinite loss is a spike as well. The batch and the one before it are appended to the JSON list in
    ``exclude_batches_path`` before the exception is raised: the previous batch may have corrupted the
    weights. Each rank detects on its own losses; a spike on any rank stops every rank.

    Args:
        mode: "min" or "max": which direction is an improvement.
        window: number of recent losses in the running mean.
        warmup: batches (by index in the epoch) before detection starts.
        atol: absolute tolerance, or ``None``.
        rtol: relative tolerance, or ``None``.
        exclude_batches_path: the JSON file, or a folder for ``skip_batches.json``; by default
            ``trainer.default_root_dir/skip_batches.json``.
        finite_only: count non-finite losses as spikes; with ``False`` they are neither spikes nor averaged.
    """

    def __init__(
        self,
        mode: Literal["min", "max"] = "min",
        window: int = 10,
        warmup: int = 1,
        atol: float | None = None,
        rtol: float | None = 2.0,
        exclude_batches_path: str | os.PathLike[str] | None = None,
        finite_only: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode. Has to be min or max, found {mode}")
        if window < 1:
            raise ValueError(f"Expected window >= 1, received {window}.")
        super().__init__()
        self.mode = mode
        self.window = window
        self.warmup = warmup
        self.atol = atol
        self.rtol = rtol
        self.exclude_batches_path = exclude_batches_path
        self.finite_only = finite_only
        self.last_val: torch.Tensor | float = 0.0
        self.bad_batches: list[int] = []
        # the last `window` finite losses, as floats: one host sync per batch, like Lightning's metric
        self._recent: deque[float] = deque(maxlen=window)

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if isinstance(outputs, torch.Tensor):
            loss = outputs.detach()
        elif isinstance(outputs, Mapping):
            loss = outputs["loss"].detach()
        else:
            raise TypeError(
                f"outputs have to be of type torch.Tensor or Mapping, got {type(outputs).__qualname__}"
            )
        if self.exclude_batches_path is None:
            self.exclude_batches_path = os.path.join(trainer.default_root_dir, "skip_batches.json")
        if not os.fspath(self.exclude_batches_path).endswith(".json"):
            self.exclude_batches_path = os.path.join(self.exclude_batches_path, "skip_batches.json")

        spike = batch_idx >= self.warmup and self._is_spike(loss)
        strategy = trainer.strategy
        strategy.barrier()
        if strategy.reduce_boolean_decision(spike, all=False):
            self._handle_spike(trainer, batch_idx)
        finite = self.finite_only or strategy.reduce_boolean_decision(
            bool(torch.isfinite(loss).all()), all=True
        )
        if finite:
            self._update_stats(loss)

    def _running_mean(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else math.nan

    def _is_spike(self, loss: torch.Tensor) -> bool:
        if self.finite_only and not bool(torch.isfinite(loss).all()):
            return True
        if self._is_better(loss - self.last_val):
            return False
        mean = self._running_mean()
        return self._check_atol(loss, mean) and self._check_rtol(loss, mean)

    def _handle_spike(self, trainer: Trainer, batch_idx: int) -> None:
        self.bad_batches.extend([batch_idx - 1, batch_idx])
        if trainer.global_rank == 0:
            assert self.exclude_batches_path is not None
            path = os.fspath(self.exclude_batches_path)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self.bad_batches, handle, indent=4)
        raise TrainingSpikeException(batch_idx=batch_idx)

    def _check_atol(self, value: torch.Tensor, reference: float) -> bool:
        return self.atol is None or bool(abs(value - reference) >= abs(self.atol))

    def _check_rtol(self, value: torch.Tensor, reference: float) -> bool:
        return self.rtol is None or bool(abs(value - reference) >= abs(self.rtol * reference))

    def _is_better(self, diff: torch.Tensor) -> bool:
        if self.mode == "min":
            return bool((diff <= 0.0).all())
        return bool((diff >= 0.0).all())

    def _update_stats(self, value: torch.Tensor) -> None:
        self._recent.append(float(value.float().mean()))
        self.last_val = value

    def state_dict(self) -> dict[str, Any]:
        last = self.last_val
        return {
            "last_val": last.item() if isinstance(last, torch.Tensor) else last,
            "mode": self.mode,
            "warmup": self.warmup,
            "atol": self.atol,
            "rtol": self.rtol,
            "bad_batches": list(self.bad_batches),
            "bad_batches_path": None
            if self.exclude_batches_path is None
            else os.fspath(self.exclude_batches_path),
            "window": self.window,
            "running_values": list(self._recent),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_val = state_dict["last_val"]
        self.mode = state_dict["mode"]
        self.warmup = state_dict["warmup"]
        self.atol = state_dict["atol"]
        self.rtol = state_dict["rtol"]
        self.bad_batches = list(state_dict["bad_batches"])
        self.exclude_batches_path = state_dict["bad_batches_path"]
        self.window = int(state_dict.get("window", self.window))
        self._recent = deque(state_dict.get("running_values", []), maxlen=self.window)
