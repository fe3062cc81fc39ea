"""A Prefect progress artifact that follows ``fit``: the bar a person sees on the flow run's page.

The flow run's Artifacts tab lists each artifact as a card showing its type, key and the first line of its
description, never the progress value itself (that shows only on the artifact's own page): so the
description carries the percentage too, and is updated with the value.

The training thread only stores a number; a daemon thread posts it at most every ``interval`` seconds, so
a slow or unreachable Prefect API never holds a training step up (a failed update is logged and skipped).
The thread runs in the context of the run that started it, so it posts with that run's Prefect client
(one connection for the whole fit, not a new client per update). At the end of a fit the last value is
posted while the logger ends its run; :meth:`PrefectProgress.wait` (called once ``Trainer.fit`` returned)
is what waits for it.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from typing import Any

from lightning_lib.callbacks import Callback

log = logging.getLogger(__name__)


def in_prefect_run() -> bool:
    """Whether this code runs inside a Prefect flow or task run (where an artifact can be created)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def fit_progress(trainer: Any) -> float:
    """Percent done: optimizer steps over the planned ones, else epochs over ``max_epochs``, else 0."""
    return _percent(planned_steps(trainer), trainer.global_step, trainer.current_epoch, trainer.max_epochs)


def planned_steps(trainer: Any) -> float | None:
    """The optimizer steps the fit will take, when that is a finite number."""
    total = trainer.estimated_stepping_batches
    return float(total) if isinstance(total, int | float) and math.isfinite(total) and total > 0 else None


def _percent(total: float | None, step: int, epoch: int, max_epochs: int | None) -> float:
    if total:
        return min(100.0, 100.0 * step / total)
    if max_epochs and max_epochs > 0:
        return min(100.0, 100.0 * epoch / max_epochs)
    return 0.0


class PrefectProgress(Callback):
    """Create a progress artifact at the start of fit and keep it up to date until its end."""

    def __init__(self, key: str | None = None, description: str = "Training progress", interval: float = 2.0):
        self.key = key
        self.description = description
        self.interval = interval
        self.artifact_id: Any = None
        self._total: float | None = None
        self._max_epochs: int | None = None
        self._position = (0, 0)  # (global_step, epoch): one tuple store per batch, read by the thread
        self._done = False
        self._latest = 0.0
        self._posted: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # the estimate is not free: taken once
        self.start(planned_steps(trainer), trainer.max_epochs, (trainer.global_step, trainer.current_epoch))

    def start(self, total: float | None, max_epochs: int | None, position: tuple[int, int]) -> None:
        """Create the artifact at ``position`` (a resumed fit starts part of the way) and start posting."""
        from prefect.artifacts import create_progress_artifact

        self._total = total
        self._max_epochs = max_epochs
        self._position = position
        self._done = False
        self._latest = self._progress()
        try:
            self.artifact_id = create_progress_artifact(
                self._latest, key=self.key, description=self.describe(self._latest)
            )
        except Exception as exc:  # no Prefect API: training goes on without the bar
            log.warning("Could not create the Prefect progress artifact: %s", exc)
            return
        self._posted = self._latest
        self._stop.clear()
        # the run's context: Prefect's settings (its API URL) and the run's client, reused for every post
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._post_loop,), name="prefect-progress", daemon=True
        )
        self._thread.start()

    def describe(self, value: float) -> str:
        """The description's first line with the percentage (truncated, as Prefect's UI shows it)."""
        return f"{self.description}: {math.floor(value)}%"

    def update(self, step: int, epoch: int, total: float | None, max_epochs: int | None) -> None:
        """Progress reported from elsewhere (rank zero of a torchrun launch), with the fit's plan."""
        self._total, self._max_epochs = total, max_epochs
        self._position = (step, epoch)

    def finish(self, done: bool) -> None:
        """The fit ended: 100 % when it completed, the last position when it failed."""
        self._done = done
        self.wait()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._position = (trainer.global_step, trainer.current_epoch)  # the hot path: no arithmetic here

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # a fit that ends normally is done, whatever the estimate said (early stopping, max_time); the
        # last post overlaps the rest of the fit's end (the logger's), and wait() collects it
        self._done = True
        self._signal_stop()

    def wait(self, timeout: float = 10.0) -> None:
        """Return once the last value is posted (or ``timeout`` seconds passed: the post is abandoned)."""
        thread = self._thread
        if thread is None:
            return
        self._signal_stop()
        thread.join(timeout=timeout)
        self._thread = None

    def _progress(self) -> float:
        if self._done:
            return 100.0
        step, epoch = self._position
        return _percent(self._total, step, epoch, self._max_epochs)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.wait()

    def _signal_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _post_loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stop.is_set()
            value = self._progress()
            if value != self._posted:
                self._post(value)
            if stopping:
                return

    def _post(self, value: float) -> None:
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(self.artifact_id, value, description=self.describe(value))
            self._posted = value
        except Exception as exc:
            log.warning("Could not update the Prefect progress artifact: %s", exc)


__all__ = ["PrefectProgress", "fit_progress", "in_prefect_run"]
