"""The bundled example's config: what ``make demo``, ``lightning-lib train`` without ``--config`` and the
served deployments use when nothing else is given."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.config import TrainConfig

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "pipeline.yaml"


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """A YAML file (default: the bundled example) with ``a.b.c=value`` overrides, validated.

    A relative local ``data.source`` is taken relative to the working directory, as any path on a
    command line; only the bundled example's own data file is found wherever the command runs.
    """
    if path is not None:
        return TrainConfig.from_yaml(path, overrides)
    bundled_source = EXAMPLE_CONFIG.parent / "data" / "digits.csv"
    return TrainConfig.from_yaml(EXAMPLE_CONFIG, [f"data.source={bundled_source}", *overrides])


__all__ = ["EXAMPLE_CONFIG", "load_config"]
