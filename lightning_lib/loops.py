"""The fit, evaluation and predict loops as plain functions over the Trainer's state.

Hook order, counters and the moments at which dataloaders are iterated follow Lightning 2.x, so the
same seeds give the same losses; the hot path calls only hooks that something overrides.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.data import INF, LimitedFetcher
from lightning_lib.optimization import run_automatic_step, run_manual_step, update_lr_schedulers
from lightning_lib.seed import capture_rng_states, restore_rng_states
from lightning_lib.state import RunningStage, TrainerFn

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


# ---- fit ---------------------------------------------------------------------------------------------
def run_fit(trainer: Trainer) -> None:
    """Sanity check, then epochs of training with validation, until a stopping condition holds."""
    run_sanity_check(trainer)
    progress = trainer.progress
    trainer.state.stage = RunningStage.TRAINING
    torch.set_grad_enabled(True)
    trainer._setup_train_data()
    if fit_done(trainer) or trainer.num_training_batches == 0:
        return
    fetcher = trainer._train_fetcher
    assert fetcher is not None
    resuming_mid_epoch = progress.epoch_started and progress.epoch_batches_done > 0
    fetcher.start(skip=progress.epoch_batches_done if resuming_mid_epoch else 0)
    if trainer._should_check_val_epoch() and not trainer._val_loaders_loaded:
        trainer._setup_eval_data(RunningStage.VALIDATING)
    hooks = trainer._hooks
    hooks.callbacks("on_train_start")
    hooks.module("on_train_start")
    first_epoch = True
    while not fit_done(trainer):
        if not first_epoch and trainer._reload_train_data_due():
            trainer._setup_train_data()
        trainer._set_sampler_epoch(progress.current_epoch)
        if not (first_epoch and resuming_mid_epoch):
            progress.epoch_batches_done = 0
            progress.batch_idx = -1
            hooks.callbacks("on_train_epoch_start")
            hooks.module("on_train_epoch_start")
            progress.epoch_started = True
            if not first_epoch:
                fetcher = trainer._train_fetcher
                assert fetcher is not None
                fetcher.start()
        first_epoch = False
        run_training_epoch(trainer, fetcher)
        finish_training_epoch(trainer)
    hooks.callbacks("on_train_end")
    hooks.module("on_train_end")


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


def finish_training_epoch(trainer: Trainer) -> None:
    """Lightning's end-of-epoch order: hooks, epoch metrics, epoch schedulers, counters."""
    progress = trainer.progress
    connector = trainer._logger_connector
    hooks = trainer._hooks
    connector.epoch_end_reached()
    progress.epoch_loop_done = True
    hooks.callbacks("on_train_epoch_end", monitoring=False)
    hooks.module("on_train_epoch_end")
    hooks.callbacks("on_train_epoch_end", monitoring=True)
    connector.on_epoch_end()
    if trainer._epoch_batches_reached():
        update_lr_schedulers(trainer, "epoch", plateau=True)
    progress.batches_that_stepped -= 1
    connector.update_train_epoch_metrics()
    progress.batches_that_stepped += 1
    progress.current_epoch += 1
    progress.epoch_started = False
    progress.epoch_loop_done = False
    progress.epoch_batches_done = 0


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
        if batch_end_cbs:
            module.__dict__["_current_fx_name"] = "on_train_batch_end"
            for fn in batch_end_cbs:
                fn(trainer, module, output, batch, batch_idx)
            module.__dict__["_current_fx_name"] = None
        if module_batch_end:
            hooks.module("on_train_batch_end", output, batch, batch_idx)
        connector.on_batch_end()
        connector.update_train_step_metrics(accumulating)
        if val_epoch and trainer._should_check_val(fetcher):
            trainer.state.stage = RunningStage.VALIDATING
            first_loop_iter = connector.first_loop_iter
            if not accumulating:
                hooks.module("on_validation_model_zero_grad")
            run_evaluation(trainer, RunningStage.VALIDATING)
            trainer.state.stage = RunningStage.TRAINING
            connector.use(trainer._train_results)
            connector.first_loop_iter = first_loop_iter
        if not accumulating:
            update_lr_schedulers(trainer, "step", plateau=True)
            progress.batches_that_stepped += 1
        if trainer._received_sigterm:
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


# ---- evaluation ----------------------------------------------------------------------------------------
def run_evaluation(trainer: Trainer, stage: RunningStage) -> list[dict[str, Any]]:
    """Validation, sanity check or test over every loader in turn; returns one dict per loader."""
    testing = stage == RunningStage.TESTING
    prefix = "test" if testing else "validation"
    if not trainer._eval_loaders_loaded(stage):
        trainer._setup_eval_data(stage)
    loaders = trainer._eval_loaders(stage)
    limits = (
        trainer.num_sanity_val_batches
        if stage == RunningStage.SANITY_CHECKING
        else trainer._eval_limits(stage)
    )
    if not loaders or all(limit == 0 for limit in limits):
        return []
    grad_context = torch.inference_mode() if trainer.inference_mode else torch.no_grad()
    with grad_context:
        return _evaluate(trainer, stage, prefix, loaders, limits)


def _evaluate(
    trainer: Trainer, stage: RunningStage, prefix: str, loaders: list[Any], limits: list[int | float]
) -> list[dict[str, Any]]:
    module = trainer.lightning_module
    hooks = trainer._hooks
    connector = trainer._logger_connector
    results = trainer._eval_results(stage)
    connector.use(results)
    fetchers = [LimitedFetcher(dl, limit) for dl, limit in zip(loaders, limits)]
    if trainer.state.fn == TrainerFn.FITTING:
        trainer._set_sampler_epoch(trainer.progress.current_epoch, loaders)
    # Lightning creates the first loader's iterator before the start hooks run.
    first = next((i for i, limit in enumerate(limits) if limit != 0), 0)
    fetchers[first].start()
    modes = {name: m.training for name, m in module.named_modules()}
    hooks.module(f"on_{'test' if prefix == 'test' else 'validation'}_model_eval")
    hooks.callbacks(f"on_{prefix}_start")
    hooks.module(f"on_{prefix}_start")
    hooks.callbacks(f"on_{prefix}_epoch_start")
    hooks.module(f"on_{prefix}_epoch_start")
    step_name = "test_step" if prefix == "test" else "validation_step"
    step_fn = getattr(module, step_name)
    pass_batch_idx = trainer._takes_batch_idx(step_fn)
    multiple = len(loaders) > 1
    logged_outputs: list[dict[str, Any]] = []
    precision = trainer.precision_plugin
    sanity = stage == RunningStage.SANITY_CHECKING
    for dl_idx, fetcher in enumerate(fetchers):
        if limits[dl_idx] == 0:
            continue
        if dl_idx != first:
            fetcher.start()
        transfer = trainer._batch_transfer(dataloader_idx=dl_idx)
        seen = 0
        batch_idx = 0
        while True:
            try:
                batch = next(fetcher)
            except StopIteration:
                break
            batch = transfer(batch)
            hook_args: tuple[Any, ...] = (batch, batch_idx, dl_idx) if multiple else (batch, batch_idx)
            connector.on_batch_start(batch, dl_idx if multiple else None)
            hooks.callbacks(f"on_{prefix}_batch_start", *hook_args)
            hooks.module(f"on_{prefix}_batch_start", *hook_args)
            step_args = hook_args if pass_batch_idx else (batch, *hook_args[2:])
            with precision.forward_context():
                output = hooks.module(step_name, *step_args)
            hooks.callbacks(f"on_{prefix}_batch_end", output, *hook_args)
            hooks.module(f"on_{prefix}_batch_end", output, *hook_args)
            connector.on_batch_end()
            if not sanity:
                trainer._val_has_run = True
                connector.update_eval_step_metrics(seen)
                seen += 1
            batch_idx += 1
        fetcher.close()
        if multiple:
            connector.epoch_end_reached()
            logged_outputs.append(connector.update_eval_epoch_metrics())
    if not multiple:
        connector.epoch_end_reached()
        logged_outputs.append(connector.update_eval_epoch_metrics())
    connector.epoch_end_reached()
    results.dataloader_idx = None
    hooks.callbacks(f"on_{prefix}_epoch_end")
    hooks.module(f"on_{prefix}_epoch_end")
    connector.on_epoch_end()
    epoch_end_logged = connector.update_eval_epoch_metrics()
    combined: dict[str, Any] = {}
    for outputs in logged_outputs:
        combined.update(outputs)
    combined.update(epoch_end_logged)
    for outputs in logged_outputs:
        outputs.update(epoch_end_logged)
    connector.log_eval_end_metrics(combined)
    hooks.callbacks(f"on_{prefix}_end")
    hooks.module(f"on_{prefix}_end")
    connector.reset_results()
    train_hook = f"on_{'test' if prefix == 'test' else 'validation'}_model_train"
    if hooks.module_overrides(train_hook):
        hooks.module(train_hook)
    else:
        for name, sub in module.named_modules():
            if name in modes:
                sub.train(modes[name])
    trainer._last_val_time = time.monotonic()
    return logged_outputs


# ---- predict -------------------------------------------------------------------------------------------
def run_predict(trainer: Trainer, return_predictions: bool) -> list[Any] | None:
    """Prediction over every loader; a flat list for one loader, a list per loader for several."""
    hooks = trainer._hooks
    loaders = trainer._eval_loaders(RunningStage.PREDICTING)
    limits = trainer._eval_limits(RunningStage.PREDICTING)
    if not loaders or all(limit == 0 for limit in limits):
        return [] if return_predictions else None
    grad_context = torch.inference_mode() if trainer.inference_mode else torch.no_grad()
    all_predictions: list[list[Any]] = []
    multiple = len(loaders) > 1
    precision = trainer.precision_plugin
    with grad_context:
        fetchers = [LimitedFetcher(dl, limit) for dl, limit in zip(loaders, limits)]
        fetchers[0].start()
        hooks.module("on_predict_model_eval")
        hooks.callbacks("on_predict_start")
        hooks.module("on_predict_start")
        hooks.callbacks("on_predict_epoch_start")
        hooks.module("on_predict_epoch_start")
        for dl_idx, fetcher in enumerate(fetchers):
            if dl_idx:
                fetcher.start()
            transfer = trainer._batch_transfer(dataloader_idx=dl_idx)
            predictions: list[Any] = []
            batch_idx = 0
            while True:
                try:
                    batch = next(fetcher)
                except StopIteration:
                    break
                batch = transfer(batch)
                hook_args: tuple[Any, ...] = (batch, batch_idx, dl_idx) if multiple else (batch, batch_idx)
                hooks.callbacks("on_predict_batch_start", *hook_args)
                hooks.module("on_predict_batch_start", *hook_args)
                with precision.forward_context():
                    output = hooks.module("predict_step", *hook_args)
                if return_predictions:
                    predictions.append(output)
                hooks.callbacks("on_predict_batch_end", output, *hook_args)
                hooks.module("on_predict_batch_end", output, *hook_args)
                batch_idx += 1
            fetcher.close()
            all_predictions.append(predictions)
        hooks.callbacks("on_predict_epoch_end")
        hooks.module("on_predict_epoch_end")
        hooks.callbacks("on_predict_end")
        hooks.module("on_predict_end")
    if not return_predictions:
        return None
    return all_predictions if multiple else all_predictions[0]


def estimated_stepping_batches(trainer: Trainer) -> int | float:
    """Optimizer steps the fit will take, as Lightning estimates them (for OneCycleLR and friends)."""
    if trainer.max_steps != -1:
        return trainer.max_steps
    if trainer.max_epochs is None or trainer.max_epochs == -1:
        return INF
    batches = trainer.num_training_batches
    if batches == INF:
        return INF
    per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
    return per_epoch * trainer.max_epochs
