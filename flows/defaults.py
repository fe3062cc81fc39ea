"""The bundled example's config: what ``make demo``, ``lightning-lib train`` without ``--config`` and the
served deployments use when nothing else is given."""

from __future__ import annotations

import os
from pathlib import Path

from flows._env import seconds_env
from tasks.config import TrainConfig

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "pipeline.yaml"

# How often ``serve``'s runner asks the API for runs to start. Prefect's default (10 s) leaves a run
# submitted from the UI up to 10 s in Scheduled on an idle served process; one request a second from one
# process is nothing for the server.
SERVE_POLL_SECONDS = 1.0
POLL_VARIABLE = "PREFECT_RUNNER_POLL_FREQUENCY"


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


def serve_poll_seconds() -> float:
    """The runner's polling interval for ``serve``: ``PREFECT_RUNNER_POLL_FREQUENCY`` when the user set
    it, else :data:`SERVE_POLL_SECONDS`."""
    return seconds_env(POLL_VARIABLE, SERVE_POLL_SECONDS)


__all__ = ["EXAMPLE_CONFIG", "POLL_VARIABLE", "SERVE_POLL_SECONDS", "load_config", "serve_poll_seconds"]
