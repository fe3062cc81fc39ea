"""Small building blocks shared by the unit tests (the parity models live in tests/helpers.py)."""

from __future__ import annotations

import io
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from tests.helpers import BoringModel, RandomDataset, quiet_trainer_kwargs


class CountingModel(BoringModel):
    """BoringModel that counts the steps it ran and records what the hooks saw."""

    def __init__(self) -> None:
        super().__init__()
        self.train_steps = 0
        self.val_steps = 0
        self.val_epochs = 0
        self.seen: dict[str, Any] = {}

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.train_steps += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.val_steps += 1
        return super().validation_step(batch, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self.val_epochs += 1


def loader(length: int = 64, batch_size: int = 2, seed: int = 0, size: int = 32) -> DataLoader:
    return DataLoader(RandomDataset(size, length, seed=seed), batch_size=batch_size)


def trainer_kwargs(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    """Quiet, small and fast: one epoch, a few batches, no sanity check unless asked."""
    kwargs: dict[str, Any] = {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
    }
    kwargs.update(overrides)
    return quiet_trainer_kwargs(tmp_path, **kwargs)


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def sgd(module: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=0.1)


def archive(tag: str, size: int = 2000) -> bytes:
    """What ``torch.save`` writes for a small checkpoint (``size`` bytes of weights): what a commit takes."""
    buffer = io.BytesIO()
    torch.save({"tag": tag, "w": torch.arange(size, dtype=torch.uint8)}, buffer)
    return buffer.getvalue()


def with_marker(sealed: bytes, raw: bytes) -> bytes:
    """The committed file ``sealed`` with its commit marker's JSON replaced by ``raw`` (the lengths around
    it kept consistent): how a damaged or hostile marker looks to a reader."""
    from lightning_lib.checkpoint._manifest import MAGIC

    length = int.from_bytes(sealed[-len(MAGIC) - 4 : -len(MAGIC)], "little")
    body = sealed[: -(length + 4 + len(MAGIC)) - 2]
    comment = len(raw) + 4 + len(MAGIC)
    return body + comment.to_bytes(2, "little") + raw + len(raw).to_bytes(4, "little") + MAGIC


def marker_json(sealed: bytes) -> bytes:
    """The commit marker's JSON of the committed file ``sealed``."""
    from lightning_lib.checkpoint._manifest import MAGIC

    length = int.from_bytes(sealed[-len(MAGIC) - 4 : -len(MAGIC)], "little")
    return sealed[-(length + 4 + len(MAGIC)) : -(4 + len(MAGIC))]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"waited {timeout}s for {what}")
