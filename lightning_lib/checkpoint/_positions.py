"""Where the training data stood when a checkpoint was taken, so a resumed epoch continues exactly.

A plain map-style ``DataLoader`` is rebuilt around a batch sampler that materialises each epoch's
index batches when the epoch starts (at the same moment, and with the same RNG draws, as the original
sampler would). A checkpoint records those index batches and how many the training loop consumed;
resuming yields the remaining index batches directly, so skipped samples are never loaded and no
batch passes through the model twice. Loaders or datasets with ``state_dict``/``load_state_dict``
(torchdata's StatefulDataLoader, for instance) are asked for their own state instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from lightning_lib.loop.loaders import rebuild_loader


class ResumableBatchSampler:
    """Wraps a batch sampler; remembers the current epoch's batches and can start part-way through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[list[Any]] | None = None
        self._resume: tuple[list[list[Any]], int] | None = None

    @property
    def sampler(self) -> Any:
        return getattr(self.inner, "sampler", None)

    @property
    def batch_size(self) -> Any:
        return getattr(self.inner, "batch_size", None)

    @property
    def drop_last(self) -> Any:
        return getattr(self.inner, "drop_last", False)

    def __len__(self) -> int:
        return len(self.inner)

    def resume_from(self, batches: list[list[Any]], start: int) -> None:
        """The next iteration yields ``batches[start:]`` instead of drawing a new epoch."""
        self._resume = (batches, start)

    def __iter__(self) -> Iterator[list[Any]]:
        # A generator: the body runs at the first request for indices, exactly when the wrapped
        # sampler would have drawn its permutation, so the global RNG sees the same draws.
        if self._resume is not None:
            batches, start = self._resume
            self._resume = None
        else:
            batches, start = [list(batch) for batch in self.inner], 0
        self.batches = batches
        yield from batches[start:]


def make_resumable(loader: Any) -> Any:
    """A plain map-style DataLoader rebuilt around a :class:`ResumableBatchSampler`; others unchanged."""
    if type(loader) is not DataLoader or isinstance(loader.dataset, IterableDataset):
        return loader
    if loader.batch_sampler is None or isinstance(loader.batch_sampler, ResumableBatchSampler):
        return loader
    return rebuild_loader(loader, batch_sampler=ResumableBatchSampler(loader.batch_sampler))


def _generators(loader: Any) -> list[torch.Generator]:
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates = (
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(batch_sampler, "sampler", None), "generator", None),
        getattr(getattr(getattr(batch_sampler, "inner", None), "sampler", None), "generator", None),
    )
    for gen in candidates:
        if isinstance(gen, torch.Generator) and all(gen is not seen for seen in found):
            found.append(gen)
    return found


def _is_stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def capture_loader_state(loader: Any, mid_epoch: bool) -> dict[str, Any]:
    """Plain-data state of the train loader: sampler generators, and mid-epoch its position."""
    state: dict[str, Any] = {"generators": [gen.get_state() for gen in _generators(loader)]}
    if _is_stateful(loader):
        state["loader"] = loader.state_dict()
    elif _is_stateful(getattr(loader, "dataset", None)):
        state["dataset"] = loader.dataset.state_dict()
    batch_sampler = getattr(loader, "batch_sampler", None)
    if mid_epoch and isinstance(batch_sampler, ResumableBatchSampler) and batch_sampler.batches is not None:
        state["batches"] = _encode_batches(batch_sampler.batches)
    return state


def restore_loader_position(loader: Any, state: dict[str, Any], batches_done: int) -> bool:
    """Before the resumed epoch's ``iter``: put the loader where the checkpoint left it.

    Returns whether the position could be restored (False: the loader cannot resume mid-epoch).
    """
    if restore_loader_state(loader, state) == "loader":
        return True
    batch_sampler = getattr(loader, "batch_sampler", None)
    if "batches" in state and isinstance(batch_sampler, ResumableBatchSampler):
        batch_sampler.resume_from(_decode_batches(state["batches"]), batches_done)
        return True
    return "dataset" in state


def restore_loader_state(loader: Any, state: dict[str, Any]) -> str | None:
    """A loader's or dataset's own saved state, if it has one: which of the two was restored."""
    if "loader" in state and _is_stateful(loader):
        loader.load_state_dict(state["loader"])
        return "loader"
    if "dataset" in state and _is_stateful(getattr(loader, "dataset", None)):
        loader.dataset.load_state_dict(state["dataset"])
        return "dataset"
    return None


def restore_generators(loader: Any, state: dict[str, Any]) -> None:
    """After the resumed epoch's ``iter`` has drawn its seeds: the generators as they were saved."""
    for gen, saved in zip(_generators(loader), state.get("generators", [])):
        gen.set_state(saved)


def _encode_batches(batches: Sequence[Sequence[Any]]) -> dict[str, Any]:
    sizes = [len(b) for b in batches]
    flat = [i for b in batches for i in b]
    if all(type(i) is int for i in flat):
        return {
            "indices": torch.tensor(flat, dtype=torch.int64),
            "sizes": torch.tensor(sizes, dtype=torch.int64),
        }
    return {"items": [list(b) for b in batches]}


def _decode_batches(encoded: dict[str, Any]) -> list[list[Any]]:
    if "items" in encoded:
        return [list(b) for b in encoded["items"]]
    flat = encoded["indices"].tolist()
    out: list[list[Any]] = []
    pos = 0
    for size in encoded["sizes"].tolist():
        out.append(flat[pos : pos + size])
        pos += size
    return out
