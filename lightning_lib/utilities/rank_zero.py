"""Rank-zero-only calls: what loggers and printing do in a multi-process run.

Every process of a distributed run executes the same script, so a logger constructed in it exists on
every rank; only the global-zero process may talk to the backend (one MLflow run, one CSV file).
The rank is known before any Trainer exists: launchers (torchrun, our own local launcher) put it in
the environment, so a logger built at the top of a script already knows whether it is rank zero.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# the variables launchers set, in the order Lightning reads them
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def rank_from_environment() -> int:
    """The global rank the launcher gave this process (0 when not launched as part of a group)."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


class _RankZeroOnly:
    """``@rank_zero_only`` decorator; ``rank_zero_only.rank`` is the process's global rank."""

    def __init__(self) -> None:
        self.rank = rank_from_environment()

    def __call__(self, fn: F) -> F:
        if getattr(fn, "_rank_zero_only", False):
            return fn

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.rank == 0:
                return fn(*args, **kwargs)
            return None

        wrapped._rank_zero_only = True  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]


rank_zero_only = _RankZeroOnly()


class DummyExperiment:
    """What a logger's ``experiment`` is on a non-zero rank: accepts any call and does nothing."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        """Discard the call."""

    def __getattr__(self, _: str) -> Callable[..., None]:
        return self.nop

    def __getitem__(self, index: Any) -> DummyExperiment:
        return self


def rank_zero_experiment(fget: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a logger's ``experiment`` getter: the real backend on rank zero, a dummy elsewhere."""
    if getattr(fget, "_rank_zero_only", False):
        return fget

    @functools.wraps(fget)
    def experiment(self: Any) -> Any:
        if rank_zero_only.rank != 0:
            return DummyExperiment()
        return fget(self)

    experiment._rank_zero_only = True  # type: ignore[attr-defined]
    return experiment


def rank_zero_print(*args: Any, **kwargs: Any) -> None:
    """``print`` on the global-zero process only."""
    if rank_zero_only.rank == 0:
        print(*args, **kwargs)


__all__ = [
    "DummyExperiment",
    "rank_from_environment",
    "rank_zero_experiment",
    "rank_zero_only",
    "rank_zero_print",
]
