"""``CombinedLoader``: several iterables (a list, tuple or dict of them, nested) iterated together.

Modes, as in Lightning:

``"max_size_cycle"`` (the default)
    One batch of every iterable per step, until the longest is exhausted; shorter ones start over.
``"max_size"``
    Until the longest is exhausted; an exhausted iterable contributes ``None``.
``"min_size"``
    Until the shortest is exhausted.
``"sequential"``
    One iterable after the other, each batch on its own (evaluation and prediction only).

The default mode is ``"min_size"``, as in Lightning. Iterating yields ``(batch, batch_idx, dataloader_idx)``; ``batch`` has the structure of ``iterables``
with a batch in place of each iterable (in ``"sequential"`` mode it is one iterable's batch, and
``dataloader_idx`` says whose).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

_MODES = ("min_size", "max_size_cycle", "max_size", "sequential")
Mode = Literal["min_size", "max_size_cycle", "max_size", "sequential"]


def _flatten(tree: Any) -> list[Any]:
    if isinstance(tree, Mapping):
        return [leaf for value in tree.values() for leaf in _flatten(value)]
    if isinstance(tree, list | tuple):
        return [leaf for value in tree for leaf in _flatten(value)]
    return [tree]


def _unflatten(tree: Any, leaves: Iterator[Any]) -> Any:
    if isinstance(tree, Mapping):
        return type(tree)({key: _unflatten(value, leaves) for key, value in tree.items()})  # type: ignore[call-arg]
    if isinstance(tree, list | tuple):
        return type(tree)(_unflatten(value, leaves) for value in tree)
    return next(leaves)


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except (TypeError, NotImplementedError):
        return None


class CombinedLoader(Iterator[tuple[Any, int, int]]):
    """Iterate ``iterables`` (one, or a list, tuple or dict of them, possibly nested) together in ``mode``.

    ``iter(combined)`` starts a pass and returns the loader itself; ``limits`` (one per iterable, or one
    number for all) cap each iterable's batches in ``"sequential"`` mode and the length in every mode.
    """

    def __init__(self, iterables: Any, mode: Mode = "min_size") -> None:
        if mode not in _MODES:
            raise ValueError(f"Unsupported mode {mode!r}, please select one of: {list(_MODES)}.")
        self._iterables = iterables
        self._flattened = _flatten(iterables)
        self._mode = mode
        self._limits: list[int | float] | None = None
        self._iterator: _Pass | None = None

    @property
    def mode(self) -> Mode:
        """How the iterables are combined."""
        return self._mode

    @property
    def iterables(self) -> Any:
        """The iterables as given (their structure)."""
        return self._iterables

    @property
    def flattened(self) -> list[Any]:
        """The iterables as a flat list, in the order of their structure."""
        return self._flattened

    @flattened.setter
    def flattened(self, flattened: list[Any]) -> None:
        if len(flattened) != len(self._flattened):
            raise ValueError(
                f"Mismatch in flattened length ({len(flattened)}) and existing length ({len(self._flattened)})"
            )
        self._iterables = _unflatten(self._iterables, iter(flattened))
        self._flattened = list(flattened)

    @property
    def limits(self) -> list[int | float] | None:
        """The most batches taken from each iterable (None: no limit)."""
        return self._limits

    @limits.setter
    def limits(self, limits: int | float | list[int | float] | None) -> None:
        if isinstance(limits, int | float):
            limits = [limits] * len(self._flattened)
        elif isinstance(limits, list) and len(limits) != len(self._flattened):
            raise ValueError(
                f"Mismatch in number of limits ({len(limits)}) and number of iterables ({len(self._flattened)})"
            )
        self._limits = limits

    @property
    def batch_sampler(self) -> Any:
        """Each iterable's ``batch_sampler``, in the structure of ``iterables``."""
        return _unflatten(
            self._iterables, iter([getattr(it, "batch_sampler", None) for it in self._flattened])
        )

    @property
    def sampler(self) -> Any:
        """Each iterable's ``sampler``, in the structure of ``iterables``."""
        return _unflatten(self._iterables, iter([getattr(it, "sampler", None) for it in self._flattened]))

    def __len__(self) -> int:
        lengths = [_length(it) for it in self._flattened]
        if any(n is None for n in lengths):
            raise TypeError(f"{type(self).__name__} has no length: one of its iterables has none.")
        sizes: list[int | float] = [n for n in lengths if n is not None]
        if not sizes:
            return 0
        if self._limits is not None:
            if self._mode == "min_size":
                return int(min(sizes + self._limits))
            sizes = [min(n, limit) for n, limit in zip(sizes, self._limits, strict=True)]
        if self._mode == "min_size":
            return int(min(sizes))
        if self._mode == "sequential":
            return int(sum(sizes))
        return int(max(sizes))

    def __iter__(self) -> CombinedLoader:
        self._iterator = _Pass(self._flattened, self._mode, self._limits)
        return self

    def __next__(self) -> tuple[Any, int, int]:
        if self._iterator is None:
            raise RuntimeError("Please call `iter(combined_loader)` first.")
        batches, batch_idx, dataloader_idx = next(self._iterator)
        if self._mode == "sequential":
            return batches, batch_idx, dataloader_idx
        return _unflatten(self._iterables, iter(batches)), batch_idx, dataloader_idx

    def reset(self) -> None:
        """Forget the running pass (its iterators, and their workers, go with it)."""
        self._iterator = None


class _Pass:
    """One pass over the flattened iterables in a mode; a plain iterator, so an exhausted member ends it."""

    def __init__(self, iterables: list[Any], mode: Mode, limits: list[int | float] | None) -> None:
        self.iterables = iterables
        self.mode = mode
        self.limits = limits
        self.batch_idx = 0
        self.consumed = [False] * len(iterables)
        self.exhausted = [False] * len(iterables)
        # sequential mode opens one iterable at a time, so only one set of workers runs
        self.current = 0
        self.iterators: list[Iterator[Any]] = [] if mode == "sequential" else [iter(it) for it in iterables]
        if mode == "sequential" and iterables:
            self.iterators = [iter(iterables[0])]

    def __next__(self) -> tuple[Any, int, int]:
        if self.mode == "sequential":
            return self._next_sequential()
        if not self.iterators:
            raise StopIteration
        batches: list[Any] = []
        for i, iterator in enumerate(self.iterators):
            if self.mode == "max_size" and self.exhausted[i]:
                batches.append(None)
                continue
            try:
                batches.append(next(iterator))
                continue
            except StopIteration:
                self.consumed[i] = self.exhausted[i] = True
            if self.mode == "min_size" or all(self.consumed):
                raise StopIteration
            if self.mode == "max_size":
                batches.append(None)
                continue
            # max_size_cycle: the shorter iterable starts over (an exhausted iterator cannot, and ends the pass)
            self.iterators[i] = iter(self.iterables[i])
            batches.append(next(self.iterators[i]))
        index = self.batch_idx
        self.batch_idx += 1
        return batches, index, 0

    def _next_sequential(self) -> tuple[Any, int, int]:
        while self.current < len(self.iterables):
            limit = self.limits[self.current] if self.limits is not None else None
            if limit is None or self.batch_idx < limit:
                try:
                    batch = next(self.iterators[0])
                except StopIteration:
                    pass
                else:
                    index = self.batch_idx
                    self.batch_idx += 1
                    return batch, index, self.current
            self.current += 1
            self.batch_idx = 0
            self.iterators = (
                [iter(self.iterables[self.current])] if self.current < len(self.iterables) else []
            )
        raise StopIteration


__all__ = ["CombinedLoader"]
