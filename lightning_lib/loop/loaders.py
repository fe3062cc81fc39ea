"""Dataloader handling: collecting loaders, counting batches under limits, fetching, worker seeding."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from functools import partial
from typing import Any

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)
from torch.utils.data.distributed import DistributedSampler

from lightning_lib.utilities.combined_loader import CombinedLoader
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.seed import worker_init_function

INF = float("inf")


def flatten_loaders(source: Any) -> list[Any]:
    """The iterables inside what a ``*_dataloader`` hook or argument returned (one, a list, tuple or dict of
    them, nested as deep as wanted, or a ``CombinedLoader``), in the order of their structure."""
    if source is None:
        return []
    if isinstance(source, CombinedLoader):
        return list(source.flattened)
    # Lightning flattens every level of lists, tuples and dicts: each leaf is one dataloader
    return CombinedLoader(source).flattened


def check_iterable(loader: Any, name: str) -> None:
    try:
        iter_fn = loader.__iter__
    except AttributeError:
        iter_fn = None
    if iter_fn is None or isinstance(loader, str | bytes | Mapping):
        raise TypeError(
            f"Expected `{name}` to return an iterable such as a torch DataLoader, received {type(loader).__name__}."
        )


def sized_len(loader: Any) -> int | None:
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return None


def num_batches(loader: Any, limit: int | float, prefix: str) -> int | float:
    """Batches a loop takes from ``loader`` under ``limit_{prefix}_batches`` (Lightning's rules)."""
    length = sized_len(loader)
    if length == 0:  # nothing to limit (and no share of nothing to complain about)
        return 0
    total: int | float = INF if length is None else length
    if isinstance(limit, int):
        count: int | float = min(total, limit)
    elif total != INF:
        count = int(total * limit)
    elif limit != 1.0:
        raise MisconfigurationException(
            f"When using an `IterableDataset`, `Trainer(limit_{prefix}_batches)` must be `1.0` or an int. An int"
            f" specifies `num_{prefix}_batches` to use. Expected 1.0 or an int for a dataloader without a length,"
            f" received {limit}."
        )
    else:
        count = INF
    if count == 0 and isinstance(limit, float) and limit > 0.0 and total != INF:
        raise MisconfigurationException(
            f"You requested to check {limit} of the `{prefix}_dataloader` but {limit} * {total} < 1. Please"
            f" increase the `limit_{prefix}_batches` argument. Try at least"
            f" `limit_{prefix}_batches={1.0 / total}`"
        )
    return count


def add_worker_init_fn(loader: Any, rank: int = 0) -> None:
    """Seed worker processes reproducibly when ``seed_everything(workers=True)`` asked for it."""
    if (
        isinstance(loader, DataLoader)
        and os.environ.get("PL_SEED_WORKERS") == "1"
        and loader.worker_init_fn is None
        and loader.num_workers > 0
    ):
        loader.worker_init_fn = partial(worker_init_function, rank=rank)


_REBUILD_ATTRS = (
    "batch_size",
    "num_workers",
    "collate_fn",
    "pin_memory",
    "drop_last",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def rebuild_loader(loader: DataLoader, **changes: Any) -> DataLoader:
    """The same plain DataLoader with some constructor arguments replaced (a sampler, a batch sampler)."""
    kwargs = {a: getattr(loader, a) for a in _REBUILD_ATTRS if hasattr(loader, a)}
    if "batch_sampler" in changes:  # mutually exclusive with these in DataLoader's constructor
        kwargs.pop("batch_size", None)
        kwargs.pop("drop_last", None)
    kwargs.update(changes)
    if kwargs.get("num_workers", 0) == 0:
        kwargs.pop("prefetch_factor", None)
        kwargs["persistent_workers"] = False
    return DataLoader(loader.dataset, **kwargs)


def with_sequential_sampler(loader: Any) -> Any:
    """The same DataLoader without shuffling (what ``overfit_batches`` needs)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, SequentialSampler):
        return loader
    if type(loader) is not DataLoader or loader.batch_sampler is None:
        raise ValueError(
            "Expected a plain torch DataLoader with a batch size for `overfit_batches`, received"
            f" {type(loader).__name__}; make it use a SequentialSampler yourself."
        )
    return rebuild_loader(loader, sampler=SequentialSampler(loader.dataset))  # type: ignore[arg-type]


class IndexRecordingBatchSampler(Sampler[list[Any]]):
    """A batch sampler that remembers the dataset indices of every batch it yields, in order.

    The indices are drawn in the main process even when workers load the samples, and a loader with
    workers draws ahead of what the loop consumes: ``seen_batch_indices[batch_idx]`` is always the
    batch the loop is at. Prediction writers read them through ``trainer.predict_loop``.
    """

    def __init__(self, inner: Iterable[list[Any]]) -> None:
        self.inner = inner
        self.seen_batch_indices: list[list[Any]] = []

    def __iter__(self) -> Iterator[list[Any]]:
        self.seen_batch_indices = []
        for batch in self.inner:
            self.seen_batch_indices.append(list(batch))
            yield batch

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


def with_batch_indices(loader: Any) -> Any:
    """The same plain DataLoader with its batch sampler recording indices; any other loader as it is."""
    if (
        type(loader) is not DataLoader
        or loader.batch_sampler is None
        or isinstance(loader.batch_sampler, IndexRecordingBatchSampler)
        or isinstance(loader.dataset, IterableDataset)
    ):
        return loader
    return rebuild_loader(loader, batch_sampler=IndexRecordingBatchSampler(loader.batch_sampler))


class ShardedSampler(Sampler[Any]):
    """Rank ``rank``'s share of any sampler's indices (every ``num_replicas``-th, from ``rank``).

    With ``pad`` the list is first extended by its own head so every rank gets as many indices (what
    DistributedSampler does; the collectives of a step need every rank to take the same number of
    batches); without it (prediction) no sample is seen twice.
    """

    def __init__(self, inner: Any, num_replicas: int, rank: int, pad: bool) -> None:
        self.inner = inner
        self.num_replicas = num_replicas
        self.rank = rank
        self.pad = pad

    def _indices(self) -> list[Any]:
        indices = list(self.inner)
        if self.pad and indices and len(indices) % self.num_replicas:
            missing = self.num_replicas - len(indices) % self.num_replicas
            indices += (indices * (missing // len(indices) + 1))[:missing]
        return indices[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._indices())

    def __len__(self) -> int:
        total = len(self.inner)
        if self.pad:
            return -(-total // self.num_replicas)
        return len(range(self.rank, total, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.inner, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


def with_distributed_sampler(loader: Any, num_replicas: int, rank: int, hook: str) -> Any:
    """The loader with each rank reading its own share of the data (``use_distributed_sampler``).

    Lightning's rules: a sequential or random sampler becomes a DistributedSampler (shuffling as the
    original did, seeded by ``PL_GLOBAL_SEED`` so every rank draws the same permutation); any other
    sampler is sharded as it is; prediction shards without repeating samples. Iterable datasets and
    loaders that already shard are left alone.
    """
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler | ShardedSampler):
        return loader
    if type(loader) is not DataLoader or (
        loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler
    ):
        raise ValueError(
            f"Expected a plain torch DataLoader with a batch size from `{hook}` to add a distributed sampler"
            f" to, received {type(loader).__name__} with batch sampler {type(loader.batch_sampler).__name__};"
            " pass Trainer(use_distributed_sampler=False) and give each rank its own share yourself."
        )
    predicting = hook == "predict_dataloader"
    if isinstance(sampler, SequentialSampler | RandomSampler) and not predicting:
        new: Sampler[Any] = DistributedSampler(
            loader.dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=isinstance(sampler, RandomSampler),
            seed=int(os.environ.get("PL_GLOBAL_SEED", "0")),
        )
    else:
        new = ShardedSampler(sampler, num_replicas, rank, pad=not predicting)
    return rebuild_loader(loader, sampler=new)


class LimitedFetcher:
    """Iterates one loader up to a limit, knowing whether the batch just returned is the last one.

    Sized loaders need no look-ahead (``done`` is a count); unsized ones are pre-fetched by one batch,
    as Lightning does, so the last batch is known when it is returned.
    """

    def __init__(self, loader: Iterable[Any], limit: int | float) -> None:
        self.loader = loader
        self.limit = limit
        self.fetched = 0
        self.done = False
        self._iterator: Iterator[Any] | None = None
        self._lookahead: list[Any] = []
        self._unsized = limit == INF

    def start(self, skip: int = 0) -> None:
        self._iterator = iter(self.loader)
        self.fetched = skip
        self.done = self.limit <= skip
        self._lookahead = []
        if self._unsized and not self.done:
            self._prefetch()

    def _prefetch(self) -> None:
        assert self._iterator is not None
        with contextlib.suppress(StopIteration):
            self._lookahead.append(next(self._iterator))

    def __next__(self) -> Any:
        if self.done or self._iterator is None:
            raise StopIteration
        if self._unsized:
            if not self._lookahead:
                self.done = True
                raise StopIteration
            batch = self._lookahead.pop()
            self._prefetch()
            self.done = not self._lookahead
        else:
            try:
                batch = next(self._iterator)
            except StopIteration:
                self.done = True
                raise
            self.done = self.fetched + 1 >= self.limit
        self.fetched += 1
        return batch

    def close(self) -> None:
        self._iterator = None
        self._lookahead = []


class CombinedBatches:
    """A train ``CombinedLoader`` as the fit loop iterates it: the combined batches alone."""

    def __init__(self, combined: CombinedLoader) -> None:
        self.combined = combined

    def __len__(self) -> int:
        return len(self.combined)

    def __iter__(self) -> Iterator[Any]:
        return (batch for batch, _, _ in self.combined)
