"""One epoch of a sharded Parquet split as batches: who reads which rows, in which order, and how a
loader that was stopped part-way through an epoch starts again exactly where it stopped.

Everything below is a pure function of the row counts in the shards' footers, the seed and the epoch,
so a resumed process recomputes the same epoch without reading data, skips what was already served by
counting rows, and reads only from the first row group that still has rows to serve.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules._preprocess import standardize
from datamodules._shards import SplitIndex, open_parquet, read_rows

_SEED_MOD = 1 << 64  # SeedSequence takes non-negative entropy; any int seed maps onto it


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` of row group ``row_group`` of shard number ``shard``."""

    shard: int
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """What every epoch of one rank shares: each stream's rows (global offsets into the epoch's row
    order) and its batch count. A stream is one DataLoader worker (or the main process without workers)."""

    ranges: tuple[tuple[int, int], ...]
    batches: tuple[int, ...]


def epoch_order(
    row_groups: Sequence[Sequence[int]], seed: int, epoch: int, shuffle: bool
) -> list[tuple[int, int, int]]:
    """``(shard, row_group, rows)`` in the order the epoch reads them: shards permuted by seed and
    epoch, and each shard's row groups permuted too, when shuffling; file order otherwise."""
    if not shuffle:
        return [(s, g, rows) for s, groups in enumerate(row_groups) for g, rows in enumerate(groups)]
    rng = np.random.default_rng([seed % _SEED_MOD, epoch])
    order = []
    for s in rng.permutation(len(row_groups)).tolist():
        groups = row_groups[s]
        for g in rng.permutation(len(groups)).tolist():
            order.append((s, g, groups[g]))
    return order


def layout(
    total_rows: int,
    world_size: int,
    rank: int,
    streams: int,
    batch_size: int,
    drop_last: bool,
    even_ranks: bool,
) -> Layout:
    """Rank ``rank``'s share of the epoch cut into whole batches, which go to the streams in contiguous
    blocks: only the rank's last batch can be short.

    With ``even_ranks`` every rank gets ``total_rows // world_size`` rows, so all take the same number
    of steps (each step's collectives need every rank), and the epoch's last ``total_rows %
    world_size`` rows in its order are left out; otherwise ranks differ by at most one row and every
    row is served.
    """
    if even_ranks:
        rows = total_rows // world_size
        start = rows * rank
    else:
        start = total_rows * rank // world_size
        rows = total_rows * (rank + 1) // world_size - start
    batches = rows // batch_size if drop_last else -(-rows // batch_size)
    used = min(rows, batches * batch_size)
    bounds = [batches * w // streams for w in range(streams + 1)]
    ranges = tuple(
        (start + min(bounds[w] * batch_size, used), start + min(bounds[w + 1] * batch_size, used))
        for w in range(streams)
    )
    return Layout(ranges, tuple(bounds[w + 1] - bounds[w] for w in range(streams)))


def pieces_in(order: Sequence[tuple[int, int, int]], first: int, last: int) -> list[Piece]:
    """The row-group pieces covering rows ``first:last`` of the epoch's row order."""
    offsets = [0]
    for _, _, rows in order:
        offsets.append(offsets[-1] + rows)
    pieces = []
    i = max(0, bisect.bisect_right(offsets, first) - 1)
    while i < len(order) and offsets[i] < last:
        shard, group, _ = order[i]
        lo, hi = max(first, offsets[i]), min(last, offsets[i + 1])
        if hi > lo:
            pieces.append(Piece(shard, group, lo - offsets[i], hi - offsets[i]))
        i += 1
    return pieces


def windows(pieces: Sequence[Piece], buffer_rows: int, shuffle: bool) -> list[list[Piece]]:
    """Consecutive pieces grouped until each group holds at least ``buffer_rows`` rows (shuffled
    together), or one piece a group when not shuffling."""
    if not shuffle:
        return [[piece] for piece in pieces]
    groups: list[list[Piece]] = []
    current: list[Piece] = []
    rows = 0
    for piece in pieces:
        current.append(piece)
        rows += piece.rows
        if rows >= buffer_rows:
            groups.append(current)
            current, rows = [], 0
    if current:
        groups.append(current)
    return groups


def resume_position(batches: Sequence[int], served: int) -> tuple[list[int], int]:
    """After ``served`` batches of an epoch: how many each stream had produced, and which stream is next.

    A DataLoader takes batches from its workers in turn (0, 1, ..., skipping workers that have run
    out), so the epoch's batch sequence is round ``j`` of every stream that has more than ``j``
    batches, in worker order. A resumed loader gives the next stream to worker 0, keeping the turns.
    """
    streams = len(batches)
    if served <= 0:
        return [0] * streams, 0
    if served >= sum(batches):
        return list(batches), 0

    def before(round_: int) -> int:
        return sum(min(count, round_) for count in batches)

    lo, hi = 0, max(batches)
    while lo < hi:  # the last round that starts at or before `served`
        mid = (lo + hi + 1) // 2
        if before(mid) <= served:
            lo = mid
        else:
            hi = mid - 1
    active = [w for w, count in enumerate(batches) if count > lo]
    taken = active[: served - before(lo)]
    done = [min(count, lo) + (w in taken) for w, count in enumerate(batches)]
    return done, (taken[-1] + 1) % streams if taken else 0


class _Reader:
    """Reads pieces of one split's shards into arrays, keeping the last opened shard open."""

    def __init__(self, index: SplitIndex, features: Sequence[str], target: str | None) -> None:
        self.shards = index.shards
        self.features = list(features)
        self.target = target if index.target_dtype is not None else None
        self.target_dtype = index.target_dtype
        self._open: tuple[int, Any] | None = None

    def _parquet(self, shard: int) -> Any:
        if self._open is None or self._open[0] != shard:
            self.close()
            info = self.shards[shard]
            self._open = (shard, open_parquet(info.uri, info.size))
        return self._open[1]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def read(self, pieces: Sequence[Piece]) -> tuple[np.ndarray, np.ndarray | None]:
        """The pieces' rows, features as float32 ``(rows, features)`` and the target (or None)."""
        rows = sum(piece.rows for piece in pieces)
        x = np.empty((rows, len(self.features)), dtype=np.float32)
        y = np.empty(rows, dtype=self.target_dtype) if self.target is not None else None
        columns = self.features + ([self.target] if self.target is not None else [])
        at = 0
        for piece in pieces:
            table = read_rows(self._parquet(piece.shard), piece.row_group, piece.start, piece.stop, columns)
            for j, name in enumerate(self.features):
                x[at : at + piece.rows, j] = table.column(name).to_numpy()
            if y is not None and self.target is not None:
                y[at : at + piece.rows] = table.column(self.target).to_numpy()
            at += piece.rows
        return x, y


class ParquetStream(IterableDataset[tuple[torch.Tensor, ...]]):
    """Batches of one split for one rank; in a DataLoader worker, that worker's stream only.

    ``even_ranks``: every rank takes the same number of rows (training under DDP; see :func:`layout`).
    ``plan`` (epoch, batches each stream already produced, the stream worker 0 takes) is set by
    :class:`ParquetStreamLoader` right before its workers start; they receive it with their copy.
    """

    def __init__(
        self,
        index: SplitIndex,
        *,
        features: Sequence[str],
        target: str | None,
        batch_size: int,
        shuffle: bool,
        shuffle_buffer: int,
        seed: int,
        drop_last: bool,
        world_size: int,
        rank: int,
        num_workers: int,
        even_ranks: bool = False,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        self.index = index
        self.features = list(features)
        self.target = target
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.drop_last = drop_last
        self.world_size = world_size
        self.rank = rank
        self.num_workers = num_workers
        self.mean = mean
        self.std = std
        self.streams = max(1, num_workers)
        self.even_ranks = even_ranks
        self.layout = layout(index.rows, world_size, rank, self.streams, batch_size, drop_last, even_ranks)
        self.plan: tuple[int, list[int], int] = (0, [0] * self.streams, 0)

    def __len__(self) -> int:
        return sum(self.layout.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # not a generator: the plan is read now, when the loader starts its workers (or its fetcher)
        epoch, done, first = self.plan
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.streams:
            raise RuntimeError(
                f"Expected the Parquet stream to run in {self.streams} DataLoader worker(s), received"
                f" {workers}; iterate it through the data module's own dataloaders."
            )
        stream = (worker + first) % self.streams
        return self._batches(epoch, stream, done[stream])

    def _batches(self, epoch: int, stream: int, skip_batches: int) -> Iterator[tuple[torch.Tensor, ...]]:
        row_groups = [shard.row_groups for shard in self.index.shards]
        order = epoch_order(row_groups, self.seed, epoch, self.shuffle)
        first, last = self.layout.ranges[stream]
        skip = skip_batches * self.batch_size
        start = first  # global offset of the current window: seeds its permutation
        reader = _Reader(self.index, self.features, self.target)
        pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        pending_rows = 0
        try:
            for window in windows(pieces_in(order, first, last), self.shuffle_buffer, self.shuffle):
                rows = sum(piece.rows for piece in window)
                if skip >= rows:  # served before the checkpoint: not read at all
                    skip -= rows
                    start += rows
                    continue
                x, y = reader.read(window)
                order_in_window = (
                    np.random.default_rng([self.seed % _SEED_MOD, epoch, start]).permutation(rows)
                    if self.shuffle
                    else np.arange(rows)
                )
                start += rows
                at, skip = skip, 0
                while at < rows:
                    take = order_in_window[at : at + self.batch_size - pending_rows]
                    pending.append((x[take], y[take] if y is not None else None))
                    pending_rows += len(take)
                    at += len(take)
                    if pending_rows == self.batch_size:
                        yield self._batch(pending)
                        pending, pending_rows = [], 0
            if pending:
                yield self._batch(pending)
        finally:
            reader.close()

    def _batch(self, parts: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[torch.Tensor, ...]:
        if len(parts) == 1:
            x_np, y_np = parts[0]
        else:
            x_np = np.concatenate([x for x, _ in parts])
            y_np = np.concatenate([y for _, y in parts if y is not None]) if parts[0][1] is not None else None
        x = torch.from_numpy(x_np)
        if self.mean is not None and self.std is not None:
            x = standardize(x, self.mean, self.std)
        return (x,) if y_np is None else (x, torch.from_numpy(y_np))


class ParquetStreamLoader(DataLoader[tuple[torch.Tensor, ...]]):
    """A DataLoader over a :class:`ParquetStream` that knows its place in the epoch.

    Every ``iter`` starts the next epoch (or the one :meth:`set_epoch` names). ``state_dict`` is the
    epoch and the number of batches handed out in it, plain ints; after ``load_state_dict`` the next
    ``iter`` hands out exactly the batches that were still to come in that epoch, in the same order,
    with the same contents. Workers are started afresh each epoch (never persistent) because each
    epoch's plan travels to them with their copy of the dataset.
    """

    def __init__(self, dataset: ParquetStream, *, start_epoch: int = 0, pin_memory: bool = False) -> None:
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=dataset.num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,
        )
        self._stream = dataset
        self._next_epoch = start_epoch
        self._pending: tuple[int, int] | None = None
        # before the first epoch: as if the epoch before it had been served in full
        self._epoch = start_epoch - 1
        self._served = len(dataset)

    def __len__(self) -> int:
        return len(self._stream)

    def set_epoch(self, epoch: int) -> None:
        """The next ``iter`` starts epoch ``epoch`` from its beginning."""
        if epoch < 0:
            raise ValueError(f"Expected epoch >= 0, received {epoch}.")
        self._next_epoch = epoch
        self._pending = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if self._pending is not None:
            (epoch, served), self._pending = self._pending, None
        else:
            epoch, served = self._next_epoch, 0
        self._next_epoch = epoch + 1
        done, first = resume_position(self._stream.layout.batches, served)
        self._stream.plan = (epoch, done, first)
        self._epoch, self._served = epoch, min(served, len(self._stream))
        # started now, not at the first batch: the workers get this plan, and the iterator draws its
        # seed from the global RNG at the moment a plain DataLoader's would (the Trainer relies on it)
        inner = super().__iter__()
        return self._count(inner)

    def _count(self, inner: Iterator[Any]) -> Iterator[Any]:
        for batch in inner:
            self._served += 1
            yield batch

    def _identity(self) -> dict[str, Any]:
        stream = self._stream
        return {
            "num_workers": stream.num_workers,
            "world_size": stream.world_size,
            "rank": stream.rank,
            "batch_size": stream.batch_size,
            "rows": stream.index.rows,
            "seed": stream.seed,
            "shuffle": stream.shuffle,
            "shuffle_buffer": stream.shuffle_buffer,
            "drop_last": stream.drop_last,
            "even_ranks": stream.even_ranks,
        }

    def state_dict(self) -> dict[str, Any]:
        """``epoch`` and ``batches`` served in it, plus what the epoch's order depends on (plain data)."""
        return {"epoch": self._epoch, "batches": self._served, **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next ``iter`` continues the saved epoch after its ``batches`` served batches."""
        changed = [
            f"{name} was {state.get(name)!r}, now {value!r}"
            for name, value in self._identity().items()
            if state.get(name) != value
        ]
        if changed:
            raise ValueError(
                "Expected the Parquet stream of the checkpoint to resume exactly, but what orders its rows"
                f" changed: {'; '.join(changed)}."
            )
        epoch, served = int(state["epoch"]), int(state["batches"])
        self._pending = (epoch, served)
        self._epoch, self._served = epoch, min(served, len(self._stream))
