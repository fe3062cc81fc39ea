"""Dataloader facts a user (or a test) asks of a loader: length on every rank, iterable datasets, workers."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import IterableDataset

from lightning_lib.utilities.rank_zero import rank_zero_warn


def sized_len(dataloader: object) -> int | None:
    """``len(dataloader)``, or None when it has none (an iterable dataset, a generator)."""
    try:
        return len(dataloader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None


def has_iterable_dataset(dataloader: object) -> bool:
    """Whether ``dataloader`` reads an ``IterableDataset``."""
    return isinstance(getattr(dataloader, "dataset", None), IterableDataset)


def has_len_all_ranks(
    dataloader: object, strategy: Any, allow_zero_length_dataloader_with_multiple_devices: bool = False
) -> bool:
    """Whether ``dataloader`` has a length; warns when the total over ranks is zero, and fails when only
    this rank's is (unless allowed), since the other ranks would wait for it at every collective."""
    local_length = sized_len(dataloader)
    if local_length is None:
        return False
    total = int(strategy.reduce(torch.tensor(local_length, device=strategy.root_device), reduce_op="sum"))
    name = type(dataloader).__name__
    if total == 0:
        rank_zero_warn(
            f"Total length of `{name}` across ranks is zero. Please make sure this was your intention."
        )
    if total > 0 and local_length == 0:
        if not allow_zero_length_dataloader_with_multiple_devices:
            raise RuntimeError(
                f"`{name}` within local rank has zero length. Please make sure that it returns at least 1 batch."
            )
        rank_zero_warn(
            f"Total length of `{name}` across ranks is zero, but local rank has zero length."
            " Please be cautious of uneven batch length."
        )
    if has_iterable_dataset(dataloader):
        rank_zero_warn(
            "Your `IterableDataset` has `__len__` defined. In combination with multi-process data loading (when"
            " num_workers > 1), `__len__` could be inaccurate if each worker is not configured independently"
            " to avoid having duplicate data."
        )
    return True


def _cpus_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """An upper bound for a DataLoader's ``num_workers``: the CPUs per process on this machine, less one for
    the main process (at least 1)."""
    if local_world_size < 1:
        raise ValueError(f"Expected local_world_size >= 1, received {local_world_size}.")
    return max(1, _cpus_available() // local_world_size - 1)


__all__ = [
    "has_iterable_dataset",
    "has_len_all_ranks",
    "sized_len",
    "suggested_max_num_workers",
]
