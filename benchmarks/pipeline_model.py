"""The bundled digits classifier, recording when each training step ends (for benchmarks/pipeline.py).

The flow imports the model by path, so the times are kept at module level, where the benchmark (same
process: the flow runs its tasks in-process) reads them after each run.
"""

from __future__ import annotations

import time
from typing import Any

from examples.digits import DigitsClassifier

STEP_ENDS: list[float] = []


class TimedDigitsClassifier(DigitsClassifier):
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        STEP_ENDS.append(time.perf_counter())
