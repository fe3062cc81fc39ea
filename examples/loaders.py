"""The DataLoader the bundled data modules build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


def seeded_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """Shuffled (when asked) with a seeded generator of its own: the order is reproducible and
    independent of how much global randomness the model or callbacks consumed. ``collate_fn`` (picklable,
    for workers) turns the list of samples into a batch; ``None`` is PyTorch's default collation."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
    )
