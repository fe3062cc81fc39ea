"""Seeding: ``seed_everything``, dataloader worker seeding, and RNG state capture/restore."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_MAX_SEED = np.iinfo(np.uint32).max
_MIN_SEED = np.iinfo(np.uint32).min


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed python, numpy and torch (all devices); with ``workers=True`` dataloader workers are seeded too.

    Without a seed, ``PL_GLOBAL_SEED`` is used, else 0 (Lightning's behaviour), so the call is reproducible.
    """
    if seed is None:
        env_seed = os.environ.get("PL_GLOBAL_SEED")
        if env_seed is None:
            seed = 0
            log.warning("No seed found, seed set to 0")
        else:
            try:
                seed = int(env_seed)
            except ValueError as err:
                raise ValueError(f"Expected PL_GLOBAL_SEED to be an integer, received {env_seed!r}.") from err
    elif not isinstance(seed, int):
        seed = int(seed)
    if not (_MIN_SEED <= seed <= _MAX_SEED):
        raise ValueError(f"Expected seed in [{_MIN_SEED}, {_MAX_SEED}], received {seed}.")
    if verbose:
        log.info("Seed set to %d", seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PL_SEED_WORKERS"] = f"{int(workers)}"
    return seed


def reset_seed() -> None:
    """Re-apply the seed set by ``seed_everything`` (used by spawned processes)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        seed_everything(int(seed), workers=bool(int(os.environ.get("PL_SEED_WORKERS", "0"))), verbose=False)


def worker_init_function(worker_id: int, rank: int | None = None) -> None:
    """Give each dataloader worker distinct, reproducible seeds for torch, numpy and python.

    The worker's torch seed already differs per worker (DataLoader sets it from its base seed); the
    numpy and python seeds are derived from it and the process rank so workers never share a stream.
    """
    global_rank = rank if rank is not None else int(os.environ.get("RANK", "0"))
    process_seed = torch.initial_seed()
    base_seed = process_seed - worker_id
    seq = np.random.SeedSequence([base_seed, worker_id, global_rank])
    np.random.seed(seq.generate_state(4))
    torch_ss, stdlib_ss = seq.spawn(2)
    torch.manual_seed(int(torch_ss.generate_state(1, dtype=np.uint64)[0]))
    stdlib_seed = (stdlib_ss.generate_state(2, dtype=np.uint64).astype(object) * [1 << 64, 1]).sum()
    random.seed(int(stdlib_seed))


def capture_rng_states() -> dict[str, Any]:
    """Global RNG states as plain data (tensors, tuples, lists) loadable with ``weights_only=True``."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np.asarray(np_state[1]).copy()), *np_state[2:]),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "numpy" in states:
        kind, keys, *rest = states["numpy"]
        keys_np = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        np.random.set_state((kind, keys_np.astype(np.uint32), *rest))
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])


def _python_state_to_plain(state: tuple[Any, ...]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, list(internal), gauss)


@contextmanager
def isolate_rng(include_cuda: bool = True) -> Iterator[None]:
    """Run the block on the current global RNG states and put them back afterwards (Lightning's
    ``isolate_rng``): what the block draws does not shift the draws of the code after it."""
    states = capture_rng_states()
    if not include_cuda:
        states.pop("torch.cuda", None)
    try:
        yield
    finally:
        restore_rng_states(states)
