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

Iterating yields ``(batch, batch_idx, dataloader_idx)``; ``batch`` has the structure of ``iterables``
with a batch in place of each iterable (in ``"sequential"`` mode it is one iterable's batch, and
``dataloader_idx`` says whose).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
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


class CombinedLoader(Iterable[tuple[Any, int, int]]):
    """Iterate ``iterables`` (one, or a list, tuple or dict of them, possibly nested) together in ``mode``."""

    def __init__(self, iterables: Any, mode: Mode = "max_size_cycle") -> None:
        if mode not in _MODES:
            raise ValueError(f"Expected mode to be one of {_MODES}, received {mode!r}.")
        self._iterables = iterables
        self._flattened = _flatten(iterables)
        self._mode = mode
        self._iterator: Iterator[tuple[Any, int, int]] | None = None

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
                f"Expected {len(self._flattened)} iterables to replace the flattened ones, received"
                f" {len(flattened)}."
            )
        self._iterables = _unflatten(self._iterables, iter(flattened))
        self._flattened = list(flattened)

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

    def _lengths(self) -> list[int | None]:
        return [_length(it) for it in self._flattened]

    def __len__(self) -> int:
        lengths = self._lengths()
        if any(n is None for n in lengths):
            raise TypeError(f"{type(self).__name__} has no length: one of its iterables has none.")
        sizes = [n for n in lengths if n is not None]
        if not sizes:
            return 0
        if self._mode == "min_size":
            return min(sizes)
        if self._mode == "sequential":
            return sum(sizes)
        return max(sizes)

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        iterator = self._sequential() if self._mode == "sequential" else self._together()
        self._iterator = iterator
        return iterator

    def reset(self) -> None:
        """Forget the running iteration (its workers stop with it)."""
        self._iterator = None

    def _sequential(self) -> Iterator[tuple[Any, int, int]]:
        for dataloader_idx, iterable in enumerate(self._flattened):
            for batch_idx, batch in enumerate(iterable):
                yield batch, batch_idx, dataloader_idx

    def _together(self) -> Iterator[tuple[Any, int, int]]:
        iterators = [iter(it) for it in self._flattened]
        if not iterators:
            return
        lengths = self._lengths()
        # with lengths known, the number of steps is known; without, it ends when the mode says so
        known = all(n is not None for n in lengths)
        steps = len(self) if known and self._mode != "min_size" else None
        exhausted = [False] * len(iterators)
        batch_idx = 0
        while steps is None or batch_idx < steps:
            batches = []
            for i, iterator in enumerate(iterators):
                try:
                    batches.append(next(iterator))
                    continue
                except StopIteration:
                    exhausted[i] = True
                if self._mode == "min_size" or all(exhausted):
                    return
                if self._mode == "max_size":
                    batches.append(None)
                    iterators[i] = iter(())
                    continue
                iterators[i] = iter(self._flattened[i])  # max_size_cycle: start the shorter one over
                batches.append(next(iterators[i]))
            yield _unflatten(self._iterables, iter(batches)), batch_idx, 0
            batch_idx += 1


__all__ = ["CombinedLoader"]
