"""Dataloader facts a user (or a test) asks of a loader: length on every rank, iterable datasets, workers."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import IterableDataset

from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import rank_zero_warn

# each distinct ambiguity is reported once per process, as Lightning's warning cache does
_AMBIGUOUS_WARNED: set[str] = set()


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


def _batch_sizes(batch: Any) -> Iterator[int | None]:
    """The first dimension of each tensor in ``batch``, in order; ``None`` for a leaf that is not one."""
    if isinstance(batch, torch.Tensor):
        yield 1 if batch.ndim == 0 else int(batch.size(0))
    elif isinstance(batch, str | bytes):
        return
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from _batch_sizes(value)
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        for field in dataclasses.fields(batch):
            yield from _batch_sizes(getattr(batch, field.name))
    elif isinstance(batch, Iterable):
        for value in batch:
            yield from _batch_sizes(value)
    else:
        yield None


def extract_batch_size(batch: Any) -> int:
    """The batch size ``self.log`` weighs epoch means with: the first dimension of the first tensor in
    ``batch``; warns once when the collection holds tensors (or other leaves) of different sizes."""
    cannot = (
        "We could not infer the batch_size from the batch. Either simplify its structure or provide the"
        " batch_size as `self.log(..., batch_size=batch_size)`."
    )
    size: int | None = None
    try:
        for found in _batch_sizes(batch):
            if size is None:
                size = found
            elif found != size:
                message = (
                    "Trying to infer the `batch_size` from an ambiguous collection. The batch size we found is"
                    f" {size}. To avoid any miscalculations, use `self.log(..., batch_size=batch_size)`."
                )
                if message not in _AMBIGUOUS_WARNED:
                    _AMBIGUOUS_WARNED.add(message)
                    rank_zero_warn(message)
                break
    except RecursionError as err:  # a self-containing structure
        raise MisconfigurationException(cannot) from err
    if size is None:
        raise MisconfigurationException(cannot)
    return size


__all__ = [
    "extract_batch_size",
    "has_iterable_dataset",
    "has_len_all_ranks",
    "sized_len",
    "suggested_max_num_workers",
]
