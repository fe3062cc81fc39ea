"""Durations read from the environment. Standard library only: ``flows.embedded`` uses it before Prefect or
torch is imported."""

from __future__ import annotations

import os


def seconds_env(name: str, default: float) -> float:
    """``name`` from the environment as a positive number of seconds; ``default`` when unset or blank.
    Anything else (text, zero, a negative number, NaN) is a ``ValueError`` naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"Expected {name} to be a number of seconds, received {raw!r}.") from None
    if not value > 0:  # also refuses NaN, which compares false with everything
        raise ValueError(f"Expected {name} > 0, received {raw!r}.")
    return value
