"""``SimpleProfiler``: the wall time of every action, reported as mean, calls, total and share of the run."""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from pathlib import Path

from lightning_lib.profilers.profiler import Profiler


class SimpleProfiler(Profiler):
    """Times each action (a hook such as ``[LightningModule]MyModel.training_step``, a batch, a fetch).

    Args:
        dirpath: Where ``filename`` is written; the Trainer's log dir when None.
        filename: Write the report to ``<stage>-<filename>.txt`` instead of logging it.
        extended: Add the number of calls and the share of the total time to the report.
    """

    def __init__(
        self, dirpath: str | Path | None = None, filename: str | None = None, extended: bool = True
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.current_actions: dict[str, float] = {}
        self.recorded_durations: dict[str, list[float]] = defaultdict(list)
        self.extended = extended
        self.start_time = time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self.current_actions[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        end = time.perf_counter()
        start = self.current_actions.pop(action_name, None)
        if start is None:
            raise ValueError(
                f"Attempting to stop recording an action ({action_name}) which was never started."
            )
        self.recorded_durations[action_name].append(end - start)

    def summary(self) -> str:
        sep = os.linesep
        title = f"{self._stage.upper()} " if self._stage else ""
        text = f"{title}Profiler Report{sep}"
        if not self.recorded_durations:
            return text
        width = max(len(k) for k in self.recorded_durations)
        total_time = time.perf_counter() - self.start_time
        rows = []
        for action, durations in self.recorded_durations.items():
            total = math.fsum(durations)
            rows.append((action, total / len(durations), len(durations), total, 100.0 * total / total_time))

        def row(*cells: str) -> str:
            first, *rest = cells
            return f"{sep}|  {first:<{width}s}\t|" + "".join(f"  {cell:<15}\t|" for cell in rest)

        if self.extended:
            header = row("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
            line = f"{sep}{'-' * len(header.expandtabs())}"
            text += line + header + line
            text += row("Total", "-", f"{sum(r[2] for r in rows)}", f"{total_time:.5}", "100 %") + line
            for action, mean, calls, total, share in sorted(rows, key=lambda r: r[4], reverse=True):
                text += row(action, f"{mean:.5}", f"{calls}", f"{total:.5}", f"{share:.5}")
        else:
            header = row("Action", "Mean duration (s)", "Total time (s)")
            line = f"{sep}{'-' * len(header.expandtabs())}"
            text += line + header + line
            for action, mean, _, total, _ in sorted(rows, key=lambda r: r[1], reverse=True):
                text += row(action, f"{mean:.5}", f"{total:.5}")
        return text + line + sep


__all__ = ["SimpleProfiler"]
