"""The evaluation loop: validation, sanity check and test over every loader in turn.

Hook order, counters and the moments at which dataloaders are iterated follow Lightning 2.x, so the
same seeds give the same losses; the hot path calls only hooks that something overrides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.loop.hooks import LoopHook, ModuleHook
from lightning_lib.loop.loaders import LimitedFetcher
from lightning_lib.loop.step import batch_transfer, takes_batch_idx
from lightning_lib.trainer.states import RunningStage, TrainerFn

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


@dataclass(frozen=True)
class _StageHooks:
    """The hooks of one evaluation stage, named once so mypy checks every one of them."""

    step: ModuleHook
    model_eval: ModuleHook
    model_train: ModuleHook
    start: LoopHook
    end: LoopHook
    epoch_start: LoopHook
    epoch_end: LoopHook
    batch_start: LoopHook
    batch_end: LoopHook


_VALIDATION_HOOKS = _StageHooks(
    step="validation_step",
    model_eval="on_validation_model_eval",
    model_train="on_validation_model_train",
    start="on_validation_start",
    end="on_validation_end",
    epoch_start="on_validation_epoch_start",
    epoch_end="on_validation_epoch_end",
    batch_start="on_validation_batch_start",
    batch_end="on_validation_batch_end",
)
_TEST_HOOKS = _StageHooks(
    step="test_step",
    model_eval="on_test_model_eval",
    model_train="on_test_model_train",
    start="on_test_start",
    end="on_test_end",
    epoch_start="on_test_epoch_start",
    epoch_end="on_test_epoch_end",
    batch_start="on_test_batch_start",
    batch_end="on_test_batch_end",
)


def _fetcher_key(stage: RunningStage) -> str:
    # the sanity check runs the validation loop, whose iterators the first validation replaces
    return "test" if stage == RunningStage.TESTING else "val"


def run_evaluation(trainer: Trainer, stage: RunningStage, skip: int = 0) -> list[dict[str, Any]]:
    """Validation, sanity check or test over every loader in turn; returns one dict per loader.

    ``skip``: batches (over the loaders in turn) an interrupted run of this loop completed; they are
    passed over and the counters go on from them."""
    data = trainer._data
    if not data.eval_loaders_current(stage):
        data.setup_eval_data(stage)
    loaders = data.eval_loaders(stage)
    limits = (
        trainer.num_sanity_val_batches if stage == RunningStage.SANITY_CHECKING else data.eval_limits(stage)
    )
    if not loaders or all(limit == 0 for limit in limits):
        return []
    hooks = _TEST_HOOKS if stage == RunningStage.TESTING else _VALIDATION_HOOKS
    # the fit's validation (and sanity check) runs under no_grad, as Lightning's: tensors a callback
    # makes at its epoch end (pruning masks, averaged weights) must stay usable for training
    fitting = trainer.state.fn == TrainerFn.FITTING
    grad_context = torch.inference_mode() if trainer.inference_mode and not fitting else torch.no_grad()
    with grad_context:
        return _evaluate(trainer, stage, hooks, loaders, limits, skip)


def _evaluate(
    trainer: Trainer,
    stage: RunningStage,
    names: _StageHooks,
    loaders: list[Any],
    limits: list[int | float],
    skip: int,
) -> list[dict[str, Any]]:
    module = trainer.lightning_module
    hooks = trainer._hooks
    run = trainer._run_state
    connector = trainer._logger_connector
    results = connector.eval_results(stage)
    connector.use(results)
    fetchers = [LimitedFetcher(dl, limit) for dl, limit in zip(loaders, limits)]
    if trainer.state.fn == TrainerFn.FITTING:
        trainer._data.set_sampler_epoch(run.progress.current_epoch, loaders)
    # Lightning creates the first loader's iterator before the start hooks run.
    first = next((i for i, limit in enumerate(limits) if limit != 0), 0)
    # the previous run's iterators live until this run's first one exists (Lightning's moment for
    # releasing their workers), then go
    previous = run.eval_fetchers.pop(_fetcher_key(stage), None)
    fetchers[first].start()
    del previous
    run.eval_fetchers[_fetcher_key(stage)] = fetchers
    modes = {name: m.training for name, m in module.named_modules()}
    hooks.module(names.model_eval)
    hooks.callbacks(names.start)
    if stage != RunningStage.SANITY_CHECKING and trainer._data.eval_loaders(stage) is not loaders:
        # a callback (BatchSizeFinder) changed the batch size at the start: run with the loaders it left
        for fetcher in fetchers:
            fetcher.close()
        loaders = trainer._data.eval_loaders(stage)
        limits = trainer._data.eval_limits(stage)
        fetchers = [LimitedFetcher(dl, limit) for dl, limit in zip(loaders, limits)]
        first = next((i for i, limit in enumerate(limits) if limit != 0), 0)
        if fetchers:
            fetchers[first].start()
    hooks.module(names.start)
    hooks.callbacks(names.epoch_start)
    hooks.module(names.epoch_start)
    pass_batch_idx = takes_batch_idx(trainer, getattr(module, names.step))
    multiple = len(loaders) > 1
    logged_outputs: list[dict[str, Any]] = []
    precision = trainer.precision_plugin
    sanity = stage == RunningStage.SANITY_CHECKING
    next_action = f"[_EvaluationLoop].{stage.dataloader_prefix}_next"
    fitting = trainer.state.fn == TrainerFn.FITTING
    counts = run.loops.eval_progress("test" if stage == RunningStage.TESTING else "validate", fitting)
    if not skip:
        counts.reset_on_run()
    last_loader = max(i for i, limit in enumerate(limits) if limit != 0)
    for dl_idx, fetcher in enumerate(fetchers):
        if limits[dl_idx] == 0:
            continue
        if dl_idx != first:
            fetcher.start()
        transfer = batch_transfer(trainer, dataloader_idx=dl_idx)
        seen = 0
        batch_idx = 0
        while skip and batch_idx < limits[dl_idx]:
            try:
                next(fetcher)
            except StopIteration:
                break
            skip -= 1
            batch_idx += 1
            seen += 1
        while True:
            try:
                with hooks.profile(next_action):
                    batch = next(fetcher)
            except StopIteration:
                break
            counts.is_last_batch = fetcher.done and dl_idx == last_loader
            batch = transfer(batch)
            hook_args: tuple[Any, ...] = (batch, batch_idx, dl_idx) if multiple else (batch, batch_idx)
            counts.increment_ready()
            connector.on_batch_start(batch, dl_idx if multiple else None)
            hooks.callbacks(names.batch_start, *hook_args)
            hooks.module(names.batch_start, *hook_args)
            counts.increment_started()
            step_args = hook_args if pass_batch_idx else (batch, *hook_args[2:])
            with precision.forward_context():
                output = hooks.module(names.step, *step_args)
            counts.increment_processed()
            hooks.callbacks(names.batch_end, output, *hook_args)
            hooks.module(names.batch_end, output, *hook_args)
            connector.on_batch_end()
            counts.increment_completed()
            if not sanity:
                run.val_has_run = True
                connector.update_eval_step_metrics(seen)
                seen += 1
            batch_idx += 1
        if multiple:
            connector.epoch_end_reached()
            logged_outputs.append(connector.update_eval_epoch_metrics())
    if not multiple:
        connector.epoch_end_reached()
        logged_outputs.append(connector.update_eval_epoch_metrics())
    connector.epoch_end_reached()
    results.dataloader_idx = None
    hooks.callbacks(names.epoch_end)
    hooks.module(names.epoch_end)
    connector.on_epoch_end()
    epoch_end_logged = connector.update_eval_epoch_metrics()
    combined: dict[str, Any] = {}
    for outputs in logged_outputs:
        combined.update(outputs)
    combined.update(epoch_end_logged)
    for outputs in logged_outputs:
        outputs.update(epoch_end_logged)
    connector.log_eval_end_metrics(combined)
    hooks.callbacks(names.end)
    hooks.module(names.end)
    connector.reset_results()
    if hooks.module_overrides(names.model_train):
        hooks.module(names.model_train)
    else:
        # each submodule back in the mode it had, set directly as Lightning does (no train() calls)
        for name, sub in module.named_modules():
            if name in modes:
                sub.training = modes[name]
    run.last_val_time = time.monotonic()
    return logged_outputs
