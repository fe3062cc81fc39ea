"""Rank-zero-only calls: what loggers and printing do in a multi-process run.

Every process of a distributed run executes the same script, so a logger constructed in it exists on
every rank; only the global-zero process may talk to the backend (one MLflow run, one CSV file).
The rank is known before any Trainer exists: launchers (torchrun, our own local launcher) put it in
the environment, so a logger built at the top of a script already knows whether it is rank zero.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

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

    def __call__(self, fn: _F, default: Any = None) -> _F:
        """Run ``fn`` on global rank zero only; elsewhere return ``default``."""
        if getattr(fn, "_rank_zero_only", False) and default is None:
            return fn

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.rank == 0:
                return fn(*args, **kwargs)
            return default

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

    def __setitem__(self, index: Any, value: Any) -> None:
        """Discard the assignment (``experiment.config["lr"] = ...`` on a non-zero rank)."""


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


_log = logging.getLogger(__name__)


class LightningDeprecationWarning(DeprecationWarning):
    """What ``rank_zero_deprecation`` warns with."""


def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """A debug log record, on the global-zero process only."""
    if rank_zero_only.rank == 0:
        _log.debug(*args, stacklevel=stacklevel - 2, **kwargs)


def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """An info log record, on the global-zero process only."""
    if rank_zero_only.rank == 0:
        _log.info(*args, stacklevel=stacklevel - 2, **kwargs)


def rank_zero_warn(message: str | Warning, stacklevel: int = 4, **kwargs: Any) -> None:
    """``warnings.warn`` on the global-zero process only (``category`` defaults to UserWarning)."""
    if rank_zero_only.rank == 0:
        # stacklevel counts from the caller of this function, as in Lightning
        warnings.warn(message, stacklevel=stacklevel - 2, **kwargs)


def rank_zero_deprecation(message: str | Warning, stacklevel: int = 5, **kwargs: Any) -> None:
    """A ``LightningDeprecationWarning`` on the global-zero process only."""
    category = kwargs.pop("category", LightningDeprecationWarning)
    rank_zero_warn(message, stacklevel=stacklevel, category=category, **kwargs)


class WarningCache(set[str]):
    """Each message is warned (or logged) once per cache, on the global-zero process."""

    def warn(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_warn(message, stacklevel=stacklevel, **kwargs)

    def deprecation(self, message: str, stacklevel: int = 6, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_deprecation(message, stacklevel=stacklevel, **kwargs)

    def info(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_info(message, stacklevel=stacklevel, **kwargs)


__all__ = [
    "DummyExperiment",
    "LightningDeprecationWarning",
    "WarningCache",
    "rank_from_environment",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_experiment",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_print",
    "rank_zero_warn",
]
