"""The run seen as Lightning's loop objects: ``trainer.fit_loop`` and its children, their progress
counters, limits and ``state_dict``.

Lightning's Trainer owns loop objects (``trainer.fit_loop.epoch_loop.val_loop``...) that user code and
callbacks read for progress (``epoch_progress.current.completed``, a val loop's ``batch_progress``),
write for a few limits (``fit_loop.max_epochs``, ``epoch_loop.max_steps``) and save in checkpoints
(``checkpoint["loops"]["fit_loop"]``). Here the loops are functions over the run state, so these
objects hold no state of their own besides the ``restarting`` flags: the counters are the Trainer's
(``loop.progress.LoopCounters``), advanced by the loop functions at Lightning's moments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_lib.loop.progress import (
    BatchProgress,
    OptimizationProgress,
    ProcessedTracker,
    Progress,
    ReadyCompletedTracker,
)

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


class _LoopView:
    """``restarting`` propagates to the child loops, as Lightning's does."""

    def __init__(self) -> None:
        self._restarting = False
        self._children: tuple[_LoopView, ...] = ()

    @property
    def restarting(self) -> bool:
        """Whether this loop's state was loaded from a checkpoint and it has not run since."""
        return self._restarting

    @restarting.setter
    def restarting(self, value: bool) -> None:
        self._restarting = value
        for child in self._children:
            child.restarting = value


class _OptimizationView(_LoopView):
    """``epoch_loop.automatic_optimization`` / ``manual_optimization``: their step counters."""

    def __init__(self, trainer: Trainer, automatic: bool) -> None:
        super().__init__()
        self._trainer = trainer
        self._automatic = automatic

    @property
    def optim_progress(self) -> OptimizationProgress:
        """Automatic optimization: optimizer ``step`` and ``zero_grad`` calls."""
        return self._trainer._run_state.loops.optim

    @property
    def optim_step_progress(self) -> Progress[ReadyCompletedTracker]:
        """Manual optimization: ``optimizer.step()`` calls made in ``training_step``."""
        return self._trainer._run_state.loops.manual_step

    def state_dict(self, prefix: str = "") -> dict[str, Any]:
        if self._automatic:
            return {f"{prefix}state_dict": {}, f"{prefix}optim_progress": self.optim_progress.state_dict()}
        return {
            f"{prefix}state_dict": {},
            f"{prefix}optim_step_progress": self.optim_step_progress.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], prefix: str = "") -> None:
        key = f"{prefix}optim_progress" if self._automatic else f"{prefix}optim_step_progress"
        if key in state:
            (self.optim_progress if self._automatic else self.optim_step_progress).load_state_dict(state[key])
        self.restarting = True


class EvaluationLoopView(_LoopView):
    """``trainer.validate_loop`` / ``test_loop`` / ``predict_loop`` and the fit's ``val_loop``."""

    def __init__(self, trainer: Trainer, stage: str, fitting: bool = False) -> None:
        super().__init__()
        self._trainer = trainer
        self._stage = stage
        self._fitting = fitting

    @property
    def batch_progress(self) -> Progress[ProcessedTracker]:
        """Batches over the Trainer's life (``total``; per training epoch for the fit's val loop) and in
        the latest run of this loop (``current``)."""
        loops = self._trainer._run_state.loops
        if self._stage == "predict":
            return loops.predict
        return loops.eval_progress(self._stage, self._fitting)

    @property
    def max_batches(self) -> list[int | float]:
        """Batches per dataloader this loop takes."""
        prefix = {"validate": "val", "test": "test", "predict": "predict"}[self._stage]
        return self._trainer._data.batch_counts(prefix)  # type: ignore[arg-type]

    def state_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}state_dict": {}, f"{prefix}batch_progress": self.batch_progress.state_dict()}

    def load_state_dict(self, state: dict[str, Any], prefix: str = "") -> None:
        key = f"{prefix}batch_progress"
        if key in state:
            self.batch_progress.load_state_dict(state[key])
        self.restarting = True


class TrainingEpochLoopView(_LoopView):
    """``trainer.fit_loop.epoch_loop``: the batches of an epoch, the step limits and counters."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self._trainer = trainer
        self.automatic_optimization = _OptimizationView(trainer, automatic=True)
        self.manual_optimization = _OptimizationView(trainer, automatic=False)
        self.val_loop = EvaluationLoopView(trainer, "validate", fitting=True)
        self._children = (self.automatic_optimization, self.manual_optimization, self.val_loop)
        # set by the fit loop's reset: where in an epoch the loaded state was saved
        self._restarted_on_batch_end = False
        self._restarted_on_last = False

    @property
    def max_steps(self) -> int:
        return self._trainer.max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        self._trainer.max_steps = value

    @property
    def min_steps(self) -> int | None:
        return self._trainer.min_steps

    @min_steps.setter
    def min_steps(self, value: int | None) -> None:
        self._trainer.min_steps = value

    @property
    def global_step(self) -> int:
        return self._trainer.global_step

    @property
    def batch_idx(self) -> int:
        return self._trainer._run_state.progress.batch_idx

    @property
    def total_batch_idx(self) -> int:
        return self._trainer._run_state.progress.total_batch_idx

    @property
    def batch_progress(self) -> BatchProgress:
        return self._trainer._run_state.loops.batch

    @property
    def _batches_that_stepped(self) -> int:
        """The step the loggers see (Lightning's attribute name)."""
        return self._trainer._run_state.progress.batches_that_stepped

    @_batches_that_stepped.setter
    def _batches_that_stepped(self, value: int) -> None:
        self._trainer._run_state.progress.batches_that_stepped = value

    def _get_monitor_value(self, key: str) -> Any:
        """The metric a ReduceLROnPlateau scheduler monitors (Lightning's hook point; code may wrap it)."""
        return self._trainer.callback_metrics.get(key)

    @property
    def scheduler_progress(self) -> Progress[ReadyCompletedTracker]:
        return self._trainer._run_state.loops.scheduler

    def state_dict(self, prefix: str = "") -> dict[str, Any]:
        state: dict[str, Any] = {
            f"{prefix}state_dict": {
                "_batches_that_stepped": self._trainer._run_state.progress.batches_that_stepped
            },
            f"{prefix}batch_progress": self.batch_progress.state_dict(),
            f"{prefix}scheduler_progress": self.scheduler_progress.state_dict(),
        }
        state.update(self.manual_optimization.state_dict(f"{prefix}manual_optimization."))
        state.update(self.automatic_optimization.state_dict(f"{prefix}automatic_optimization."))
        state.update(self.val_loop.state_dict(f"{prefix}val_loop."))
        return state

    def load_state_dict(self, state: dict[str, Any], prefix: str = "") -> None:
        for key, progress in (
            (f"{prefix}batch_progress", self.batch_progress),
            (f"{prefix}scheduler_progress", self.scheduler_progress),
        ):
            if key in state:
                progress.load_state_dict(state[key])
        own = state.get(f"{prefix}state_dict") or {}
        if "_batches_that_stepped" in own:
            self._trainer._run_state.progress.batches_that_stepped = int(own["_batches_that_stepped"])
        self.manual_optimization.load_state_dict(state, f"{prefix}manual_optimization.")
        self.automatic_optimization.load_state_dict(state, f"{prefix}automatic_optimization.")
        self.val_loop.load_state_dict(state, f"{prefix}val_loop.")
        self.restarting = True

    def _update_restart_stage(self) -> None:
        total = self.batch_progress.total
        settled = self.restarting and total.started == total.ready and total.processed == total.started
        self._restarted_on_batch_end = settled and total.completed == total.processed - 1
        self._restarted_on_last = settled and total.completed == total.processed

    def reset(self) -> None:
        """Lightning's reset for a new run of the epoch: on a restart, finish the counts of a batch saved in
        ``on_train_batch_end`` and roll back what had not completed; otherwise start the epoch's counts."""
        loops = self._trainer._run_state.loops
        after_batch = self._restarted_on_batch_end or not self._restarted_on_last
        if self.restarting and after_batch and not self._should_accumulate():
            # the checkpoint was taken before the batch's logging step was counted
            self._trainer._run_state.progress.batches_that_stepped += 1
        if self._restarted_on_batch_end:
            loops.batch.increment_completed()
            if loops.batch.current.completed >= self._trainer.num_training_batches:
                self._start_epoch_counts()
        if self.restarting:
            loops.batch.reset_on_restart()
            loops.scheduler.reset_on_restart()
            loops.optim.reset_on_restart()
        else:
            self._start_epoch_counts()

    def _start_epoch_counts(self) -> None:
        loops = self._trainer._run_state.loops
        loops.batch.reset_on_run()
        loops.scheduler.reset_on_run()
        loops.optim.reset_on_run()
        # the fit's val loop counts per training epoch (validation may run several times in one)
        loops.fit_val.total.reset()

    def _should_accumulate(self) -> bool:
        trainer = self._trainer
        ready = self.batch_progress.current.ready
        last = ready == trainer.num_training_batches or self.batch_progress.is_last_batch
        return ready % trainer.accumulate_grad_batches != 0 and not last


class FitLoopView(_LoopView):
    """``trainer.fit_loop``: the epochs of a fit, their limits, counters and ``state_dict``."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self._trainer = trainer
        self.epoch_loop = TrainingEpochLoopView(trainer)
        self._children = (self.epoch_loop,)
        self._loaded = False

    @property
    def restarting(self) -> bool:
        return self._restarting

    @restarting.setter
    def restarting(self, value: bool) -> None:
        # a loaded state whose last epoch finished is not a restart (Lightning's rule), unless the fit is
        # bounded by steps only
        current = self.epoch_progress.current
        unfinished = current.ready != current.processed or current.started != current.processed
        value = (value and unfinished) or self._trainer.max_steps != -1
        self._restarting = value
        self.epoch_loop.restarting = value

    @property
    def max_epochs(self) -> int | None:
        return self._trainer.max_epochs

    @max_epochs.setter
    def max_epochs(self, value: int | None) -> None:
        self._trainer.max_epochs = value

    @property
    def max_steps(self) -> int:
        return self._trainer.max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        self._trainer.max_steps = value

    @property
    def min_epochs(self) -> int | None:
        return self._trainer.min_epochs

    @min_epochs.setter
    def min_epochs(self, value: int | None) -> None:
        self._trainer.min_epochs = value

    @property
    def max_batches(self) -> int | float:
        """Training batches per epoch (``trainer.num_training_batches``)."""
        return self._trainer._data.num_training_batches

    @max_batches.setter
    def max_batches(self, value: int | float) -> None:
        self._trainer._data.num_training_batches = value

    @property
    def _skip_backward(self) -> bool:
        return self._trainer._run_state.skip_backward

    @_skip_backward.setter
    def _skip_backward(self, value: bool) -> None:
        self._trainer._run_state.skip_backward = value

    @property
    def min_steps(self) -> int | None:
        return self._trainer.min_steps

    @property
    def total_batch_idx(self) -> int:
        return self.epoch_loop.total_batch_idx

    @property
    def batch_idx(self) -> int:
        return self.epoch_loop.batch_idx

    @property
    def epoch_progress(self) -> Progress[ProcessedTracker]:
        """Epochs ready, started, processed (before ``on_train_epoch_end``) and completed."""
        return self._trainer._run_state.loops.epoch

    @property
    def done(self) -> bool:
        """Whether a stopping condition holds (max_steps, max_epochs, or a stop request past the minimums)."""
        from lightning_lib.loop.fit import fit_done

        return fit_done(self._trainer)

    def setup_data(self) -> None:
        """Request and count the train dataloaders now (Lightning does it when the fit starts)."""
        self._trainer._data.setup_train_data()

    def state_dict(self) -> dict[str, Any]:
        """Lightning's ``checkpoint["loops"]["fit_loop"]``: every counter of the fit, flat, by loop path."""
        state: dict[str, Any] = {
            "state_dict": _train_loader_states(self._trainer),
            "epoch_progress": self.epoch_progress.state_dict(),
        }
        state.update(self.epoch_loop.state_dict("epoch_loop."))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load counters saved by ``state_dict``; the loop is then ``restarting`` (if its epoch had not ended)."""
        if "epoch_progress" in state:
            self.epoch_progress.load_state_dict(state["epoch_progress"])
        self.epoch_loop.load_state_dict(state, "epoch_loop.")
        self._loaded = True
        self.restarting = True

    def reset(self) -> None:
        """Lightning's reset before a (resumed) run: complete the epoch counts a checkpoint taken at the
        end of an epoch's last batch left open, or roll back an epoch whose start did not complete."""
        epoch = self.epoch_progress
        total = epoch.total
        started, processed = total.started, total.processed
        on_start = (
            self.restarting
            and started == total.ready - 1
            and processed == started
            and total.completed == processed
        )
        mid_epoch = (
            self.restarting
            and started == total.ready
            and processed == started - 1
            and total.completed == processed
        )
        resumed_on_end = (
            not self.restarting
            and self._loaded
            and started == total.ready
            and processed == started
            and total.completed == processed - 1
        )
        self.epoch_loop._update_restart_stage()
        batch = self.epoch_loop.batch_progress
        on_batch_end = self.epoch_loop._restarted_on_batch_end
        if on_start:
            epoch.reset_on_restart()
        if resumed_on_end:
            epoch.increment_completed()
        if on_batch_end and mid_epoch and batch.is_last_batch:
            epoch.increment_processed()
            epoch.increment_completed()
        if (
            on_batch_end
            and batch.is_last_batch
            and not mid_epoch
            and not self._trainer._run_state.loops.fit_val.is_last_batch
        ):
            epoch.increment_completed()


def _train_loader_states(trainer: Trainer) -> dict[str, Any]:
    """The fit loop's own state: the states of the stateful train loaders (``state_dict``/``load_state_dict``)."""
    states = [
        dl.state_dict()
        for dl in trainer._data.train_loaders()
        if callable(getattr(dl, "state_dict", None)) and callable(getattr(dl, "load_state_dict", None))
    ]
    return {"combined_loader": states} if states else {}


def loops_state_dict(trainer: Trainer) -> dict[str, Any]:
    """Lightning's ``checkpoint["loops"]``: the fit, validate, test and predict loops' state."""
    return {
        "fit_loop": trainer.fit_loop.state_dict(),
        "validate_loop": trainer.validate_loop.state_dict(),
        "test_loop": trainer.test_loop.state_dict(),
        "predict_loop": trainer.predict_loop.state_dict(),
    }


__all__ = ["EvaluationLoopView", "FitLoopView", "TrainingEpochLoopView", "loops_state_dict"]
