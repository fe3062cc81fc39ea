"""Turns what the loops collected into ``callback_metrics``, logged metrics and logger calls.

The order of updates is Lightning's (step values at batch end, epoch values at epoch end, logger calls
every ``log_every_n_steps`` optimizer steps), but step values are folded into the stored dicts lazily:
the live results are always merged on read, so a batch end costs nothing unless someone looks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_lib.loop.results import MetricDicts, ResultCollection, to_python_scalars
from lightning_lib.trainer.states import RunningStage

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


class LoggerConnector:
    """The metric bookkeeping the Trainer does on behalf of the loops."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        # one collection for training, one per evaluation stage; ``results`` is the one in use
        self.train_results = ResultCollection(training=True)
        self._eval_results = {stage: ResultCollection(training=False) for stage in RunningStage}
        self.results: ResultCollection | None = None
        # None between epochs, True on an epoch's first batch, False afterwards (Lightning's meaning).
        self.first_loop_iter: bool | None = None
        self._callback: dict[str, Tensor] = {}
        self._logged: dict[str, Tensor] = {}
        self._pbar: dict[str, Tensor] = {}
        self._step_values_pending = False

    def eval_results(self, stage: RunningStage) -> ResultCollection:
        return self._eval_results[stage]

    def restore_callback_metrics(self, metrics: dict[str, Tensor]) -> None:
        """The metrics a checkpoint recorded, so callbacks that read them on resume see what they saw."""
        self._callback.update(metrics)

    # ---- views -------------------------------------------------------------------------------------
    def _live(self) -> MetricDicts | None:
        if self.results is None:
            return None
        return self.results.metrics(self.first_loop_iter is not None)

    @property
    def callback_metrics(self) -> dict[str, Tensor]:
        live = self._live()
        if live is not None:
            self._callback.update(live.callback)
        return self._callback

    @property
    def logged_metrics(self) -> dict[str, Tensor]:
        live = self._live()
        if live is not None:
            self._logged.update(live.log)
        return self._logged

    @property
    def progress_bar_metrics(self) -> dict[str, Any]:
        live = self._live()
        if live is not None:
            self._pbar.update(live.pbar)
        return to_python_scalars(self._pbar)

    def _store(self, metrics: MetricDicts) -> None:
        self._callback.update(metrics.callback)
        self._logged.update(metrics.log)
        self._pbar.update(metrics.pbar)

    def _flush_step_values(self) -> None:
        if self._step_values_pending and self.results is not None:
            self._store(self.results.metrics(on_step=True))
        self._step_values_pending = False

    def reset_metrics(self) -> None:
        self._callback, self._logged, self._pbar = {}, {}, {}

    # ---- loop events -------------------------------------------------------------------------------
    def results_for_stage(self) -> ResultCollection | None:
        """The collection ``self.log`` writes to: the loop's in use, else the one of the Trainer's stage."""
        if self.results is None:
            stage = self.trainer.state.stage
            if stage is None:
                return None
            self.use(self.train_results if stage == RunningStage.TRAINING else self._eval_results[stage])
        return self.results

    def use(self, results: ResultCollection) -> None:
        self._flush_step_values()
        self.results = results

    def on_batch_start(self, batch: Any, dataloader_idx: int | None = None) -> None:
        self.first_loop_iter = self.first_loop_iter is None
        results = self.results
        assert results is not None
        results.batch = batch
        results.batch_size = None
        results.dataloader_idx = dataloader_idx

    def on_batch_end(self) -> None:
        self._step_values_pending = True
        results = self.results
        assert results is not None
        results.batch = None
        results.batch_size = None

    def epoch_end_reached(self) -> None:
        self._flush_step_values()
        self.first_loop_iter = None

    def on_epoch_end(self) -> None:
        assert self.results is not None
        self._store(self.results.metrics(on_step=False))

    def reset_results(self) -> None:
        self._flush_step_values()
        if self.results is not None:
            self.results.reset()
        self.first_loop_iter = None

    # ---- logger calls ------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, Tensor], step: int | None = None) -> None:
        trainer = self.trainer
        if not trainer.loggers or not metrics:
            return
        self._logged.update(metrics)
        scalars = to_python_scalars(metrics)
        if step is None:
            step_metric = scalars.pop("step", None)
            if step_metric is not None:
                step = int(step_metric)
            else:
                scalars.setdefault("epoch", trainer.current_epoch)
                step = trainer.progress.batches_that_stepped
        for logger in trainer.loggers:
            logger.log_metrics(metrics=scalars, step=step)
            logger.save()

    def should_update_logs(self) -> bool:
        n = self.trainer.log_every_n_steps
        if n == 0:
            return False
        return (self.trainer.progress.batches_that_stepped + 1) % n == 0 or self.trainer.should_stop

    def update_train_step_metrics(self, accumulating: bool) -> None:
        if accumulating or not self.trainer.loggers:
            return
        if self.should_update_logs() or self.trainer.fast_dev_run:
            assert self.results is not None
            self.log_metrics(self.results.metrics(on_step=True).log)

    def update_train_epoch_metrics(self) -> None:
        assert self.results is not None
        self.log_metrics(self.results.metrics(on_step=False).log)
        self.reset_results()

    def update_eval_step_metrics(self, step: int) -> None:
        if self.trainer.loggers:
            assert self.results is not None
            self.log_metrics(self.results.metrics(on_step=True).log, step=step)

    def update_eval_epoch_metrics(self) -> dict[str, Tensor]:
        if self.trainer.sanity_checking:
            return {}
        assert self.results is not None
        metrics = self.results.metrics(on_step=False)
        self._store(metrics)
        return metrics.log

    def log_eval_end_metrics(self, metrics: dict[str, Tensor]) -> None:
        if not self.trainer.sanity_checking:
            self.log_metrics(metrics)
