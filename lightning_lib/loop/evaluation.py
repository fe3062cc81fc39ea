"""The fit, evaluation and predict loops as plain functions over the Trainer's state.

Hook order, counters and the moments at which dataloaders are iterated follow Lightning 2.x, so the
same seeds give the same losses; the hot path calls only hooks that something overrides.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.loop.loaders import INF, LimitedFetcher
from lightning_lib.trainer.states import RunningStage, TrainerFn

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


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
