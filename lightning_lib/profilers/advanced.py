"""``AdvancedProfiler``: a ``cProfile`` per action, reported function by function."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

from lightning_lib.profilers.profiler import Profiler


class AdvancedProfiler(Profiler):
    """Python's cProfile for each action: where the time inside a hook goes (verbose; for debugging).

    Args:
        dirpath: Where ``filename`` (and the raw stats with ``dump_stats``) are written.
        filename: Write the report to ``<stage>-<filename>.txt`` instead of logging it.
        line_count_restriction: Functions per action in the report: a count, or a fraction in [0.0, 1.0].
        dump_stats: Also write each action's raw stats as ``<...>-<action>.prof`` under ``dirpath``.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        line_count_restriction: float = 1.0,
        dump_stats: bool = False,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.profiled_actions: dict[str, cProfile.Profile] = defaultdict(cProfile.Profile)
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats

    def start(self, action_name: str) -> None:
        # one cProfile may be enabled at a time: an action started inside another pauses the outer one
        for profile in self.profiled_actions.values():
            profile.disable()
        self.profiled_actions[action_name].enable()

    def stop(self, action_name: str) -> None:
        profile = self.profiled_actions.get(action_name)
        if profile is None:
            raise ValueError(
                f"Attempting to stop recording an action ({action_name}) which was never started."
            )
        profile.disable()

    def summary(self) -> str:
        stats = {}
        for action, profile in self.profiled_actions.items():
            if self.dump_stats:
                if not self.dirpath:
                    raise ValueError("Expected a dirpath with dump_stats=True, received none.")
                os.makedirs(self.dirpath, exist_ok=True)
                profile.dump_stats(
                    os.path.join(self.dirpath, self._prepare_filename(action_name=action, extension=".prof"))
                )
            stream = io.StringIO()
            pstats.Stats(profile, stream=stream).strip_dirs().sort_stats("cumulative").print_stats(
                self.line_count_restriction
            )
            stats[action] = stream.getvalue()
        return self._stats_to_str(stats)

    def teardown(self, stage: str | None) -> None:
        super().teardown(stage=stage)
        self.profiled_actions.clear()

    def __reduce__(self) -> tuple[Any, ...]:
        # cProfile objects cannot be pickled; a copy starts with no recorded actions
        return (
            self.__class__,
            (),
            {
                "dirpath": self.dirpath,
                "filename": self.filename,
                "line_count_restriction": self.line_count_restriction,
            },
        )


__all__ = ["AdvancedProfiler"]
