"""The bundled digits classifier, recording when each training step ends (for benchmarks/pipeline.py).

The flow imports the model by path, so the times are kept at module level, where the benchmark (same
process: the flow runs its tasks in-process) reads them after each run. A benchmark that runs the CLI in
another process (benchmarks/latency.py) names a file in ``LIGHTNING_LIB_BENCH_STEP_FILE``: the wall-clock
time of the last step's end is written there when training ends.
"""

from __future__ import annotations

import os
import time
from typing import Any

from examples.digits import DigitsClassifier

STEP_ENDS: list[float] = []


class TimedDigitsClassifier(DigitsClassifier):
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        STEP_ENDS.append(time.perf_counter())
        self._last_step_wall = time.time()

    def on_train_end(self) -> None:
        path = os.environ.get("LIGHTNING_LIB_BENCH_STEP_FILE")
        if path and hasattr(self, "_last_step_wall"):
            with open(path, "w") as file:
                file.write(repr(self._last_step_wall))
