"""The fit loop: sanity check, epochs of training batches, validation, and exact resumption.

Hook order, counters and the moments at which the train loader is iterated follow Lightning 2.x.
A checkpoint records where in this loop it was taken (``progress.resume_point``); a resumed fit
first finishes what was left of that point (the validation and counters after the batch, or the
end of the epoch), then goes on with the next batch, so an interrupted run ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.checkpoint._positions import (
    restore_generators,
    restore_loader_position,
    restore_loader_state,
)
from lightning_lib.loop.data import info_once
from lightning_lib.loop.evaluation import run_evaluation
from lightning_lib.loop.loaders import INF, LimitedFetcher
from lightning_lib.loop.progress import ProcessedTracker, Progress
from lightning_lib.loop.state import BATCH_END, EPOCH_END, VAL_END, ResumeState
from lightning_lib.loop.step import batch_transfer, run_automatic_step, run_manual_step, update_lr_schedulers
from lightning_lib.trainer.states import RunningStage
from lightning_lib.utilities.exceptions import SIGTERMException
from lightning_lib.utilities.rank_zero import rank_zero_info
from lightning_lib.utilities.seed import capture_rng_states, restore_rng_states

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


def run_fit(trainer: Trainer, sanity_check: bool = True) -> None:
    """Sanity check (unless resuming), then epochs until a stopping condition holds.

    The tuners' trials run the loop with ``sanity_check=False``, as Lightning runs its fit loop alone.
    """
    run = trainer._run_state
    data = trainer._data
    resume, run.resume = run.resume, None
    if resume is None and sanity_check:
        run_sanity_check(trainer)
    progress = run.progress
    trainer.state.stage = RunningStage.TRAINING
    torch.set_grad_enabled(True)
    if (
        data.train_fetcher is None
    ):  # a tuner at on_fit_start may have set them up already, as Lightning keeps them
        _setup_train_data(trainer)
    if data.num_training_batches == 0 or data.train_fetcher is None:  # no batches, or limit_train_batches=0
        _log_stop_reason(trainer)
        return
    point = progress.resume_point if resume is not None else ""
    in_epoch = resume is not None and progress.epoch_started
    # an epoch whose on_train_epoch_start did not complete starts again without counting it twice
    restart_epoch_start = resume is not None and not in_epoch and _epoch_start_interrupted(run.loops.epoch)
    if resume is not None:
        _resume_counters(trainer, point, in_epoch)
    if not in_epoch and fit_done(trainer):
        _log_stop_reason(trainer)
        return
    fetcher = data.train_fetcher
    assert fetcher is not None
    _start_first_epoch_data(trainer, fetcher, resume, in_epoch, point)
    if should_check_val_epoch(trainer) and not data.val_loaders_loaded:
        data.setup_eval_data(RunningStage.VALIDATING)
    hooks = trainer._hooks
    # what on_train_start and the first on_train_epoch_start log belongs to training, not to the sanity check
    trainer._logger_connector.use(trainer._logger_connector.train_results)
    epoch_finished = (
        in_epoch and point == EPOCH_END and progress.epoch_batches_done >= data.num_training_batches
    )
    if epoch_finished:
        # an epoch whose batches all ran and whose end hooks ran is over: on_train_start sees the next one,
        # as in Lightning
        finish_training_epoch(trainer, hooks_done=True)
    hooks.callbacks("on_train_start")
    hooks.module("on_train_start")
    if in_epoch and not epoch_finished:
        _finish_interrupted_epoch(trainer, fetcher, point)
    first_epoch = not in_epoch
    while not fit_done(trainer):
        if not first_epoch and data.reload_train_data_due():
            _setup_train_data(trainer)
        data.set_sampler_epoch(progress.current_epoch)
        progress.epoch_batches_done = 0
        progress.batch_idx = -1
        counters = run.loops
        if restart_epoch_start:
            counters.epoch.reset_on_restart()
            restart_epoch_start = False
        else:
            counters.epoch.increment_ready()
        hooks.callbacks("on_train_epoch_start")
        hooks.module("on_train_epoch_start")
        counters.epoch.increment_started()
        progress.epoch_started = True
        trainer._fit_loop.epoch_loop._start_epoch_counts()
        fetcher = data.train_fetcher
        assert fetcher is not None
        if not first_epoch:
            fetcher.start()
        first_epoch = False
        with hooks.profile("run_training_epoch"):
            run_training_epoch(trainer, fetcher)
        finish_training_epoch(trainer)
    _log_stop_reason(trainer)
    hooks.callbacks("on_train_end")
    hooks.module("on_train_end")


def _setup_train_data(trainer: Trainer) -> None:
    trainer._data.setup_train_data()
    if trainer._val_check_time_interval is not None:
        # the time-based validation interval counts from the moment training data is ready
        trainer._run_state.last_val_time = time.monotonic()


def _start_first_epoch_data(
    trainer: Trainer, fetcher: LimitedFetcher, resume: ResumeState | None, in_epoch: bool, point: str
) -> None:
    """Create the first iterator (Lightning does it before on_train_start) and put the RNG back."""
    progress = trainer._run_state.progress
    if resume is None:
        fetcher.start()
        return
    _load_combined_loader_states(trainer)
    loader_state = resume.get("loader") or {}
    # an epoch that max_steps or a stop request ended early goes on where it stopped, as in Lightning
    remaining = in_epoch and progress.epoch_batches_done < trainer._data.num_training_batches
    if remaining:
        if not restore_loader_position(fetcher.loader, loader_state, progress.epoch_batches_done):
            warnings.warn(
                "You're resuming from a checkpoint that ended before the epoch ended, with a train dataloader"
                " that cannot restore its position (not a plain map-style DataLoader and no"
                " state_dict/load_state_dict): the rest of the epoch starts from a fresh iterator.",
                UserWarning,
                stacklevel=3,
            )
        # the iterator draws its seeds now; the saved RNG states then replace whatever it drew
        fetcher.start(skip=progress.epoch_batches_done)
        _restore_rng(trainer, fetcher, resume, loader_state)
    elif in_epoch:
        _restore_finished_epoch_state(fetcher.loader, loader_state)
        _restore_rng(trainer, fetcher, resume, loader_state)
        fetcher.done = True  # this epoch's batches are all done; only its tail is left
    else:
        _restore_finished_epoch_state(fetcher.loader, loader_state)
        _restore_rng(trainer, fetcher, resume, loader_state)
        fetcher.start()


def _load_combined_loader_states(trainer: Trainer) -> None:
    """The stateful members of a combined train loader as the checkpoint saved them (Lightning restores
    them before the first iterator); a single loader's own state is restored with its position."""
    states, trainer._run_state.train_loader_states = trainer._run_state.train_loader_states, []
    data = trainer._data
    loaders = data.train_loaders()
    if not states or any(dl is data.train_loader for dl in loaders):
        return
    stateful = [
        dl
        for dl in loaders
        if callable(getattr(dl, "state_dict", None)) and callable(getattr(dl, "load_state_dict", None))
    ]
    if len(stateful) != len(states):
        raise RuntimeError(
            f"Expected {len(stateful)} states for the stateful train loaders, received {len(states)} in the"
            " checkpoint: define the same train dataloaders that were used when it was saved."
        )
    for loader, state in zip(stateful, states):
        loader.load_state_dict(state)


def _epoch_start_interrupted(epoch: Progress[ProcessedTracker]) -> bool:
    total = epoch.total
    return total.started == total.ready - 1 and total.processed == total.started


def _resume_counters(trainer: Trainer, point: str, in_epoch: bool) -> None:
    """Lightning's counters as a restarted loop leaves them: the batch saved in on_train_batch_end is
    completed, and in the interrupted epoch what had not completed is rolled back."""
    counters = trainer._run_state.loops
    if point == BATCH_END:
        counters.batch.increment_completed()
    if in_epoch:
        counters.batch.reset_on_restart()
        counters.scheduler.reset_on_restart()
        counters.optim.reset_on_restart()
    trainer._fit_loop.restarting = False


def _restore_finished_epoch_state(loader: Any, loader_state: dict[str, Any]) -> None:
    """A stateful loader saved once its epoch's batches were all taken: restore it, then let the
    restored iterator go, as the original run let go of that epoch's iterator, so the next ``iter``
    starts the next epoch from the restored state rather than replaying the end of the old one."""
    if restore_loader_state(loader, loader_state) == "loader":
        iterator = iter(loader)
        del iterator


def _restore_rng(
    trainer: Trainer, fetcher: LimitedFetcher, resume: ResumeState, loader_state: dict[str, Any]
) -> None:
    rng = resume["rng"]
    if rng is not None:
        restore_rng_states(rng)
    restore_generators(fetcher.loader, loader_state)


def _finish_interrupted_epoch(trainer: Trainer, fetcher: LimitedFetcher, point: str) -> None:
    """Do what the original run did after the checkpoint, then the rest of the epoch."""
    progress = trainer._run_state.progress
    trainer._logger_connector.use(trainer._logger_connector.train_results)
    if point == EPOCH_END:
        # only an epoch ended before its last batch reaches here: its end hooks run again when it ends
        epoch = trainer._run_state.loops.epoch
        for tracker in (epoch.total, epoch.current):
            tracker.processed = tracker.completed
    if point in (BATCH_END, VAL_END):
        ready = progress.epoch_batches_done
        epoch_end = ready >= trainer._data.num_training_batches
        accumulating = (
            trainer.lightning_module.automatic_optimization
            and ready % trainer.accumulate_grad_batches != 0
            and not epoch_end
        )
        trainer._run_state.is_last_batch = epoch_end
        done = fetcher.done
        fetcher.done = epoch_end
        val_skip = _interrupted_validation(trainer) if point == VAL_END else None
        val_epoch = should_check_val_epoch(trainer) and (point == BATCH_END or val_skip is not None)
        _after_batch(trainer, fetcher, accumulating, val_epoch, val_skip or 0)
        fetcher.done = done
    if not _epoch_batches_reached(trainer) and not fetcher.done:
        run_training_epoch(trainer, fetcher)
    finish_training_epoch(trainer)


def fit_done(trainer: Trainer) -> bool:
    """Whether a stopping condition holds: max_steps, max_epochs, or a stop request past the minimums."""
    progress = trainer._run_state.progress
    if trainer._data.num_training_batches == 0:
        return True
    if trainer.max_steps != -1 and progress.global_step >= trainer.max_steps:
        return True
    if (
        trainer.max_epochs is not None
        and trainer.max_epochs != -1
        and progress.current_epoch >= trainer.max_epochs
    ):
        return True
    return trainer._run_state.should_stop and _can_stop_early(trainer)


def _log_stop_reason(trainer: Trainer) -> None:
    """Lightning's info line saying which limit ended the fit (a stop request is not announced)."""
    progress = trainer._run_state.progress
    if trainer._data.num_training_batches == 0:
        rank_zero_info("`Trainer.fit` stopped: No training batches.")
    elif trainer.max_steps != -1 and progress.global_step >= trainer.max_steps:
        rank_zero_info(f"`Trainer.fit` stopped: `max_steps={trainer.max_steps!r}` reached.")
    elif trainer.max_epochs not in (None, -1) and progress.current_epoch >= trainer.max_epochs:
        rank_zero_info(f"`Trainer.fit` stopped: `max_epochs={trainer.max_epochs!r}` reached.")


def finish_training_epoch(trainer: Trainer, hooks_done: bool = False) -> None:
    """Lightning's end-of-epoch order: hooks, epoch metrics, epoch schedulers, counters."""
    progress = trainer._run_state.progress
    connector = trainer._logger_connector
    hooks = trainer._hooks
    connector.epoch_end_reached()
    if not hooks_done:
        trainer._run_state.loops.epoch.increment_processed()
        progress.resume_point = EPOCH_END
        hooks.callbacks("on_train_epoch_end", monitoring=False)
        hooks.module("on_train_epoch_end")
        hooks.callbacks("on_train_epoch_end", monitoring=True)
    connector.on_epoch_end()
    if _epoch_batches_reached(trainer):
        update_lr_schedulers(trainer, "epoch", plateau=True)
    progress.batches_that_stepped -= 1
    connector.update_train_epoch_metrics()
    progress.batches_that_stepped += 1
    for logger in trainer.loggers:
        flush = getattr(logger, "flush", None)  # loggers that batch in the background send at epoch ends
        if callable(flush):
            flush()
    progress.current_epoch += 1
    trainer._run_state.loops.epoch.increment_completed()
    progress.epoch_started = False
    progress.epoch_batches_done = 0
    progress.resume_point = ""


def run_training_epoch(trainer: Trainer, fetcher: LimitedFetcher) -> None:
    """One epoch of training batches, with validation wherever ``val_check_interval`` puts it."""
    run = trainer._run_state
    progress = run.progress
    module = trainer.lightning_module
    hooks = trainer._hooks
    connector = trainer._logger_connector
    connector.use(connector.train_results)
    strategy = trainer.strategy
    automatic = module.automatic_optimization
    optimizer = strategy._lightning_optimizers[0] if automatic and strategy._lightning_optimizers else None
    # called directly on the hot path; through the dispatcher (which times each one) when profiling
    profiling = hooks.profiling
    batch_start_cbs = [] if profiling else hooks.callback_fns("on_train_batch_start")
    batch_end_cbs = [] if profiling else hooks.callback_fns("on_train_batch_end")
    module_batch_start = hooks.module_overrides("on_train_batch_start")
    module_batch_end = hooks.module_overrides("on_train_batch_end")
    transfer = batch_transfer(trainer, dataloader_idx=0)
    accumulate = trainer.accumulate_grad_batches
    num_batches = trainer._data.num_training_batches
    # fixed for the whole epoch: whether validation may run in it at all
    val_epoch = should_check_val_epoch(trainer)
    batch_progress = run.loops.batch
    while True:
        if fit_epoch_done(trainer, fetcher):
            break
        try:
            if profiling:
                with hooks.profile("[_TrainingEpochLoop].train_dataloader_next"):
                    batch = next(fetcher)
            else:
                batch = next(fetcher)
        except StopIteration:
            break
        batch_idx = progress.batch_idx + 1
        progress.batch_idx = batch_idx
        progress.total_batch_idx += 1
        run.is_last_batch = batch_progress.is_last_batch = fetcher.done
        batch = transfer(batch)
        batch_progress.increment_ready()
        connector.on_batch_start(batch)
        ready = progress.epoch_batches_done + 1
        epoch_end = ready == num_batches or fetcher.done
        accumulating = automatic and ready % accumulate != 0 and not epoch_end
        run.accumulating = accumulating
        output: Any = None
        skip_rest = False
        if batch is None:
            warnings.warn("train_dataloader yielded None; the batch is skipped.", UserWarning, stacklevel=2)
        else:
            if batch_start_cbs:
                module.__dict__["_current_fx_name"] = "on_train_batch_start"
                for fn in batch_start_cbs:
                    fn(trainer, module, batch, batch_idx)
                module.__dict__["_current_fx_name"] = None
            if profiling:
                hooks.callbacks("on_train_batch_start", batch, batch_idx)
            response = hooks.module("on_train_batch_start", batch, batch_idx) if module_batch_start else None
            skip_rest = response == -1
            if skip_rest:
                batch_progress.is_last_batch = True
            else:
                batch_progress.increment_started()
                with hooks.profile("run_training_batch"):
                    if automatic:
                        output = run_automatic_step(trainer, optimizer, batch, batch_idx, accumulating)
                    else:
                        output = run_manual_step(trainer, batch, batch_idx)
        progress.epoch_batches_done = ready
        batch_progress.increment_processed()
        if not accumulating:
            update_lr_schedulers(trainer, "step", plateau=False)
        if epoch_end:
            update_lr_schedulers(trainer, "epoch", plateau=False)
        if skip_rest:
            break
        progress.resume_point = BATCH_END
        if batch_end_cbs:
            module.__dict__["_current_fx_name"] = "on_train_batch_end"
            for fn in batch_end_cbs:
                fn(trainer, module, output, batch, batch_idx)
            module.__dict__["_current_fx_name"] = None
        elif profiling:
            hooks.callbacks("on_train_batch_end", output, batch, batch_idx)
        if module_batch_end:
            hooks.module("on_train_batch_end", output, batch, batch_idx)
        connector.on_batch_end()
        batch_progress.increment_completed()
        connector.update_train_step_metrics(accumulating)
        _after_batch(trainer, fetcher, accumulating, val_epoch)


def _interrupted_validation(trainer: Trainer) -> int | None:
    """How many batches a validation that failed in a step had completed (it goes on from there), or
    None when the checkpoint was not taken in a failed validation step (Lightning's rule)."""
    counts = trainer._run_state.loops.fit_val
    total = counts.total
    if (
        total.started == total.ready
        and total.processed == total.started - 1
        and total.completed == total.processed
    ):
        counts.reset_on_restart()
        return counts.current.completed
    return None


def _after_batch(
    trainer: Trainer, fetcher: LimitedFetcher, accumulating: bool, val_epoch: bool, val_skip: int = 0
) -> None:
    """Validation if due, plateau schedulers and the logging step; then a pending SIGTERM stops the run.

    ``val_skip``: batches of this validation already done before the run was interrupted."""
    run = trainer._run_state
    progress = run.progress
    if val_epoch and _should_check_val(trainer, fetcher):
        connector = trainer._logger_connector
        trainer.state.stage = RunningStage.VALIDATING
        progress.resume_point = VAL_END
        first_loop_iter = connector.first_loop_iter
        if not accumulating:
            trainer._hooks.module("on_validation_model_zero_grad")
        run_evaluation(trainer, RunningStage.VALIDATING, skip=val_skip)
        trainer.state.stage = RunningStage.TRAINING
        connector.use(connector.train_results)
        connector.first_loop_iter = first_loop_iter
    if not accumulating:
        update_lr_schedulers(trainer, "step", plateau=True)
        progress.batches_that_stepped += 1
    progress.resume_point = ""
    stop = run.received_sigterm
    if trainer.world_size > 1:
        # each rank got SIGTERM at its own moment: all stop at the first batch boundary where any has it
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
    if stop:
        raise SIGTERMException(128 + signal.SIGTERM)


def fit_epoch_done(trainer: Trainer, fetcher: LimitedFetcher) -> bool:
    """Whether the epoch ends before the next batch: max_steps, its batches done, or a stop request."""
    run = trainer._run_state
    max_steps_reached = trainer.max_steps != -1 and run.progress.global_step >= trainer.max_steps
    if max_steps_reached or _epoch_batches_reached(trainer) or fetcher.done:
        return True
    if run.should_stop:
        if _can_stop_early(trainer):
            return True
        info_once(
            trainer,
            f"Trainer was signaled to stop but the required `min_epochs={trainer.min_epochs}` or"
            f" `min_steps={trainer.min_steps}` has not been met. Training will continue...",
        )
    return False


def run_sanity_check(trainer: Trainer) -> None:
    """A few validation batches before training, isolated from the global RNG as Lightning does."""
    if not (trainer._data.enable_validation and trainer.num_sanity_val_steps != 0):
        return
    run = trainer._run_state
    rng = capture_rng_states()
    try:
        run.sanity_checking = True
        trainer.state.stage = RunningStage.SANITY_CHECKING
        connector = trainer._logger_connector
        connector.reset_results()
        connector.reset_metrics()
        trainer._hooks.callbacks("on_sanity_check_start")
        run_evaluation(trainer, RunningStage.SANITY_CHECKING)
        trainer._hooks.callbacks("on_sanity_check_end")
        run.loops.fit_val.reset()  # what the sanity check counted is not validation progress
        connector.reset_results()
        connector.reset_metrics()
    finally:
        run.sanity_checking = False
        restore_rng_states(rng)


# ---- decisions the loop takes ------------------------------------------------------------------------
def should_check_val_epoch(trainer: Trainer) -> bool:
    """Whether validation may run during the current epoch (check_val_every_n_epoch)."""
    every = trainer.check_val_every_n_epoch
    return trainer._data.enable_validation and (
        every is None or (trainer._run_state.progress.current_epoch + 1) % every == 0
    )


def _should_check_val(trainer: Trainer, fetcher: LimitedFetcher) -> bool:
    """Whether to validate after this batch; the caller has checked ``should_check_val_epoch``."""
    run = trainer._run_state
    val_check_batch = trainer._data.val_check_batch
    is_last = fetcher.done
    interval = trainer._val_check_time_interval
    # with a time-based interval the batch count plays no part, not even at the end of an endless epoch
    infinite = val_check_batch == INF and interval is None
    if is_last and infinite:
        return True
    if run.should_stop and _can_stop_early(trainer):
        return True
    if interval is not None:
        due = time.monotonic() - run.last_val_time >= interval
        # rank zero's clock decides: validation's collectives need every rank at the same batch
        return bool(trainer.strategy.broadcast(due)) if trainer.world_size > 1 else due
    if val_check_batch != INF:
        progress = run.progress
        current = progress.total_batch_idx if trainer.check_val_every_n_epoch is None else progress.batch_idx
        return (current + 1) % val_check_batch == 0
    return is_last


def _epoch_batches_reached(trainer: Trainer) -> bool:
    done = trainer._run_state.progress.epoch_batches_done
    fetcher = trainer._data.train_fetcher
    return done == trainer._data.num_training_batches or (fetcher is not None and fetcher.done and done > 0)


def _can_stop_early(trainer: Trainer) -> bool:
    progress = trainer._run_state.progress
    epochs_ok = progress.current_epoch >= trainer.min_epochs if trainer.min_epochs else True
    steps_ok = progress.global_step >= trainer.min_steps if trainer.min_steps else True
    return epochs_ok and steps_ok


def estimated_stepping_batches(trainer: Trainer) -> int | float:
    """Optimizer steps the fit will take, as Lightning estimates them (for OneCycleLR and friends):
    the epochs' steps, capped by ``max_steps``; ``max_steps`` itself when the epochs are unbounded."""
    max_epochs = trainer.max_epochs
    if max_epochs is None:  # before fit resolves it, with Lightning's rule
        max_epochs = 1000 if trainer.max_steps == -1 else -1
    if max_epochs == -1:
        return INF if trainer.max_steps == -1 else trainer.max_steps
    batches = trainer._data.num_training_batches
    if batches == INF:
        return trainer.max_steps
    estimate = math.ceil(batches / trainer.accumulate_grad_batches) * max(max_epochs, 1)
    return min(estimate, trainer.max_steps) if trainer.max_steps != -1 else estimate
