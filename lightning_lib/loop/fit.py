"""The fit loop: sanity check, epochs of training batches, validation, and exact resumption.

Hook order, counters and the moments at which the train loader is iterated follow Lightning 2.x.
A checkpoint records where in this loop it was taken (``progress.resume_point``); a resumed fit
first finishes what was left of that point (the validation and counters after the batch, or the
end of the epoch), then goes on with the next batch, so an interrupted run ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.checkpoint._positions import (
    restore_generators,
    restore_loader_position,
    restore_loader_state,
)
from lightning_lib.loop.evaluation import run_evaluation
from lightning_lib.loop.loaders import LimitedFetcher
from lightning_lib.loop.optimization import run_automatic_step, run_manual_step, update_lr_schedulers
from lightning_lib.trainer.states import RunningStage
from lightning_lib.utilities.seed import capture_rng_states, restore_rng_states

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

# resume points: the moment inside the loop at which a checkpoint was written
BATCH_END = "batch_end"  # in on_train_batch_end, before this batch's validation and counters
VAL_END = "val_end"  # during validation after a batch, before the batch's counters
EPOCH_END = "epoch_end"  # in on_train_epoch_end, before the epoch's schedulers and counters


def run_fit(trainer: Trainer) -> None:
    """Sanity check (unless resuming), then epochs until a stopping condition holds."""
    resume = trainer._resume
    trainer._resume = None
    if resume is None:
        run_sanity_check(trainer)
    progress = trainer.progress
    trainer.state.stage = RunningStage.TRAINING
    torch.set_grad_enabled(True)
    trainer._setup_train_data()
    if trainer.num_training_batches == 0:
        return
    point = progress.resume_point if resume is not None else ""
    in_epoch = resume is not None and progress.epoch_started
    if not in_epoch and fit_done(trainer):
        return
    fetcher = trainer._train_fetcher
    assert fetcher is not None
    _start_first_epoch_data(trainer, fetcher, resume, in_epoch, point)
    if trainer._should_check_val_epoch() and not trainer._val_loaders_loaded:
        trainer._setup_eval_data(RunningStage.VALIDATING)
    hooks = trainer._hooks
    hooks.callbacks("on_train_start")
    hooks.module("on_train_start")
    if in_epoch:
        _finish_interrupted_epoch(trainer, fetcher, point)
    first_epoch = not in_epoch
    while not fit_done(trainer):
        if not first_epoch and trainer._reload_train_data_due():
            trainer._setup_train_data()
        trainer._set_sampler_epoch(progress.current_epoch)
        progress.epoch_batches_done = 0
        progress.batch_idx = -1
        hooks.callbacks("on_train_epoch_start")
        hooks.module("on_train_epoch_start")
        progress.epoch_started = True
        fetcher = trainer._train_fetcher
        assert fetcher is not None
        if not first_epoch:
            fetcher.start()
        first_epoch = False
        run_training_epoch(trainer, fetcher)
        finish_training_epoch(trainer)
    hooks.callbacks("on_train_end")
    hooks.module("on_train_end")


def _start_first_epoch_data(
    trainer: Trainer, fetcher: LimitedFetcher, resume: dict[str, Any] | None, in_epoch: bool, point: str
) -> None:
    """Create the first iterator (Lightning does it before on_train_start) and put the RNG back."""
    progress = trainer.progress
    if resume is None:
        fetcher.start()
        return
    loader_state = resume.get("loader") or {}
    remaining = in_epoch and point != EPOCH_END and progress.epoch_batches_done < trainer.num_training_batches
    if remaining:
        if not restore_loader_position(fetcher.loader, loader_state, progress.epoch_batches_done):
            warnings.warn(
                "Resuming in the middle of an epoch with a train dataloader that cannot restore its position"
                " (not a plain map-style DataLoader and no state_dict/load_state_dict): the rest of the epoch"
                " starts from a fresh iterator.",
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


def _restore_finished_epoch_state(loader: Any, loader_state: dict[str, Any]) -> None:
    """A stateful loader saved once its epoch's batches were all taken: restore it, then let the
    restored iterator go, as the original run let go of that epoch's iterator, so the next ``iter``
    starts the next epoch from the restored state rather than replaying the end of the old one."""
    if restore_loader_state(loader, loader_state) == "loader":
        iterator = iter(loader)
        del iterator


def _restore_rng(
    trainer: Trainer, fetcher: LimitedFetcher, resume: dict[str, Any], loader_state: dict[str, Any]
) -> None:
    if resume.get("rng") is not None:
        restore_rng_states(resume["rng"])
    restore_generators(fetcher.loader, loader_state)


def _finish_interrupted_epoch(trainer: Trainer, fetcher: LimitedFetcher, point: str) -> None:
    """Do what the original run did after the checkpoint, then the rest of the epoch."""
    progress = trainer.progress
    trainer._logger_connector.use(trainer._train_results)
    if point == EPOCH_END:
        finish_training_epoch(trainer, hooks_done=True)
        return
    if point in (BATCH_END, VAL_END):
        ready = progress.epoch_batches_done
        epoch_end = ready >= trainer.num_training_batches
        accumulating = (
            trainer.lightning_module.automatic_optimization
            and ready % trainer.accumulate_grad_batches != 0
            and not epoch_end
        )
        trainer.is_last_batch = epoch_end
        done = fetcher.done
        fetcher.done = epoch_end
        _after_batch(trainer, fetcher, accumulating, trainer._should_check_val_epoch() and point == BATCH_END)
        fetcher.done = done
    if not trainer._epoch_batches_reached() and not fetcher.done:
        run_training_epoch(trainer, fetcher)
    finish_training_epoch(trainer)


def fit_done(trainer: Trainer) -> bool:
    progress = trainer.progress
    if trainer.num_training_batches == 0:
        return True
    if trainer.max_steps != -1 and progress.global_step >= trainer.max_steps:
        return True
    if (
        trainer.max_epochs is not None
        and trainer.max_epochs != -1
        and progress.current_epoch >= trainer.max_epochs
    ):
        return True
    return trainer.should_stop and trainer._can_stop_early()


def finish_training_epoch(trainer: Trainer, hooks_done: bool = False) -> None:
    """Lightning's end-of-epoch order: hooks, epoch metrics, epoch schedulers, counters."""
    progress = trainer.progress
    connector = trainer._logger_connector
    hooks = trainer._hooks
    connector.epoch_end_reached()
    if not hooks_done:
        progress.resume_point = EPOCH_END
        hooks.callbacks("on_train_epoch_end", monitoring=False)
        hooks.module("on_train_epoch_end")
        hooks.callbacks("on_train_epoch_end", monitoring=True)
    connector.on_epoch_end()
    if trainer._epoch_batches_reached():
        update_lr_schedulers(trainer, "epoch", plateau=True)
    progress.batches_that_stepped -= 1
    connector.update_train_epoch_metrics()
    progress.batches_that_stepped += 1
    for logger in trainer.loggers:
        flush = getattr(logger, "flush", None)  # loggers that batch in the background send at epoch ends
        if callable(flush):
            flush()
    progress.current_epoch += 1
    progress.epoch_started = False
    progress.epoch_batches_done = 0
    progress.resume_point = ""


def run_training_epoch(trainer: Trainer, fetcher: LimitedFetcher) -> None:
    """One epoch of training batches, with validation wherever ``val_check_interval`` puts it."""
    progress = trainer.progress
    module = trainer.lightning_module
    hooks = trainer._hooks
    connector = trainer._logger_connector
    connector.use(trainer._train_results)
    strategy = trainer.strategy
    automatic = module.automatic_optimization
    optimizer = strategy._lightning_optimizers[0] if automatic and strategy._lightning_optimizers else None
    batch_start_cbs = hooks.callback_fns("on_train_batch_start")
    batch_end_cbs = hooks.callback_fns("on_train_batch_end")
    module_batch_start = hooks.module_overrides("on_train_batch_start")
    module_batch_end = hooks.module_overrides("on_train_batch_end")
    transfer = trainer._batch_transfer(dataloader_idx=0)
    accumulate = trainer.accumulate_grad_batches
    num_batches = trainer.num_training_batches
    # fixed for the whole epoch: whether validation may run in it at all
    val_epoch = trainer._should_check_val_epoch()
    while True:
        if fit_epoch_done(trainer, fetcher):
            break
        try:
            batch = next(fetcher)
        except StopIteration:
            break
        batch_idx = progress.batch_idx + 1
        progress.batch_idx = batch_idx
        progress.total_batch_idx += 1
        trainer.is_last_batch = fetcher.done
        batch = transfer(batch)
        connector.on_batch_start(batch)
        ready = progress.epoch_batches_done + 1
        epoch_end = ready == num_batches or fetcher.done
        accumulating = automatic and ready % accumulate != 0 and not epoch_end
        trainer._accumulating = accumulating
        output: Any = None
        skip_rest = False
        if batch is None:
            warnings.warn("train_dataloader yielded None; the batch is skipped.", UserWarning, stacklevel=2)
        else:
            for fn in batch_start_cbs:
                fn(trainer, module, batch, batch_idx)
            response = hooks.module("on_train_batch_start", batch, batch_idx) if module_batch_start else None
            skip_rest = response == -1
            if not skip_rest:
                if automatic:
                    output = run_automatic_step(trainer, optimizer, batch, batch_idx, accumulating)
                else:
                    output = run_manual_step(trainer, batch, batch_idx)
        progress.epoch_batches_done = ready
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
        if module_batch_end:
            hooks.module("on_train_batch_end", output, batch, batch_idx)
        connector.on_batch_end()
        connector.update_train_step_metrics(accumulating)
        _after_batch(trainer, fetcher, accumulating, val_epoch)


def _after_batch(trainer: Trainer, fetcher: LimitedFetcher, accumulating: bool, val_epoch: bool) -> None:
    """Validation if due, plateau schedulers and the logging step; then a pending SIGTERM stops the run."""
    progress = trainer.progress
    if val_epoch and trainer._should_check_val(fetcher):
        connector = trainer._logger_connector
        trainer.state.stage = RunningStage.VALIDATING
        progress.resume_point = VAL_END
        first_loop_iter = connector.first_loop_iter
        if not accumulating:
            trainer._hooks.module("on_validation_model_zero_grad")
        run_evaluation(trainer, RunningStage.VALIDATING)
        trainer.state.stage = RunningStage.TRAINING
        connector.use(trainer._train_results)
        connector.first_loop_iter = first_loop_iter
    if not accumulating:
        update_lr_schedulers(trainer, "step", plateau=True)
        progress.batches_that_stepped += 1
    progress.resume_point = ""
    stop = trainer._received_sigterm
    if trainer.world_size > 1:
        # each rank got SIGTERM at its own moment: all stop at the first batch boundary where any has it
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
    if stop:
        trainer._raise_sigterm()


def fit_epoch_done(trainer: Trainer, fetcher: LimitedFetcher) -> bool:
    progress = trainer.progress
    max_steps_reached = trainer.max_steps != -1 and progress.global_step >= trainer.max_steps
    if max_steps_reached or trainer._epoch_batches_reached() or fetcher.done:
        return True
    if trainer.should_stop:
        if trainer._can_stop_early():
            return True
        trainer._info_once(
            f"Trainer was signaled to stop but the required `min_epochs={trainer.min_epochs}` or"
            f" `min_steps={trainer.min_steps}` has not been met. Training will continue..."
        )
    return False


def run_sanity_check(trainer: Trainer) -> None:
    """A few validation batches before training, isolated from the global RNG as Lightning does."""
    if not (trainer.enable_validation and trainer.num_sanity_val_steps != 0):
        return
    rng = capture_rng_states()
    try:
        trainer.sanity_checking = True
        trainer.state.stage = RunningStage.SANITY_CHECKING
        connector = trainer._logger_connector
        connector.reset_results()
        connector.reset_metrics()
        trainer._hooks.callbacks("on_sanity_check_start")
        run_evaluation(trainer, RunningStage.SANITY_CHECKING)
        trainer._hooks.callbacks("on_sanity_check_end")
        connector.reset_results()
        connector.reset_metrics()
    finally:
        trainer.sanity_checking = False
        restore_rng_states(rng)
