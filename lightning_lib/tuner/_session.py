"""What a tuner changes on a running Trainer: saved before its trial runs, put back after them.

Lightning writes a temporary checkpoint into ``default_root_dir`` and restores it. Here the state is
kept in memory instead: nothing is written to the checkpoint root (which may be object storage, with
the commit protocol and the background writer), nothing can be left behind by a crash, and modules
whose hyper-parameters are not plain data (an ``nn.Module`` passed to ``__init__``) need no pickling.
What is restored is what the checkpoint would restore: the weights, the optimizer and scheduler
states, the loop counters, and the Trainer's settings the tuner changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lightning_lib.loop.fit import run_fit

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

_LIMITS = (
    "max_steps",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
)


@dataclass
class SavedState:
    """The Trainer and module state a tuner's trials may change."""

    module: dict[str, Any]
    optimizers: list[Any]
    optimizer_states: list[dict[str, Any]]
    scheduler_configs: list[Any]
    scheduler_states: list[dict[str, Any] | None]
    progress: dict[str, Any]
    loops: Any  # loop.progress.LoopCounters: every loop's progress counters
    callbacks: list[Any]
    loggers: list[Any]
    limits: dict[str, Any] = field(default_factory=dict)


def save_state(trainer: Trainer) -> SavedState:
    """Copy what the trials will change (copies, not references: the trials update tensors in place)."""
    module = trainer.lightning_module
    return SavedState(
        module=copy.deepcopy(module.state_dict()),
        optimizers=list(trainer.optimizers),
        optimizer_states=[copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
        scheduler_configs=list(trainer.lr_scheduler_configs),
        scheduler_states=[_scheduler_state(config.scheduler) for config in trainer.lr_scheduler_configs],
        progress=copy.deepcopy(trainer._run_state.progress.state_dict()),
        loops=copy.deepcopy(trainer._run_state.loops),
        callbacks=list(trainer.callbacks),
        loggers=list(trainer.loggers),
        limits={name: getattr(trainer, name) for name in _LIMITS},
    )


def _scheduler_state(scheduler: Any) -> dict[str, Any] | None:
    state_dict = getattr(scheduler, "state_dict", None)
    return copy.deepcopy(state_dict()) if callable(state_dict) else None


def quiet_trainer(trainer: Trainer, callbacks: list[Any]) -> None:
    """Run the trials with only the tuner's own callbacks and a logger that records nothing."""
    from lightning_lib.loggers.logger import DummyLogger

    trainer.callbacks = callbacks
    trainer.logger = DummyLogger() if trainer.logger is not None else None
    trainer._hooks.reset()


def restore_state(trainer: Trainer, saved: SavedState) -> None:
    """Put back everything :func:`save_state` copied; the trials' metrics and stop request are dropped."""
    module = trainer.lightning_module
    module.load_state_dict(saved.module)
    trainer.optimizers = saved.optimizers
    for optimizer, state in zip(saved.optimizers, saved.optimizer_states):
        optimizer.load_state_dict(state)
    trainer.lr_scheduler_configs = saved.scheduler_configs
    for config, sched_state in zip(saved.scheduler_configs, saved.scheduler_states):
        if sched_state is not None:
            config.scheduler.load_state_dict(sched_state)
    reset_progress(trainer, saved)
    trainer._run_state.loops = copy.deepcopy(saved.loops)
    trainer.callbacks = saved.callbacks
    trainer.loggers = saved.loggers
    for name, value in saved.limits.items():
        setattr(trainer, name, value)
    trainer.should_stop = False
    trainer._run_state.is_last_batch = False
    trainer._hooks.reset()
    trainer._logger_connector.reset_results()
    trainer._logger_connector.reset_metrics()


def reset_progress(trainer: Trainer, saved: SavedState) -> None:
    """The loop counters as they were when the tuner started."""
    trainer._run_state.progress.load_state_dict(copy.deepcopy(saved.progress))


def forget_loaders(trainer: Trainer, key: Literal["train", "val", "test", "predict"]) -> None:
    """Make the next loop request ``key``'s loaders again, so they are built with the current batch size
    and the current batch limit."""
    data = trainer._data
    if key == "train":
        data.close_fetchers()
        data.train_fetcher = None
    else:
        data._eval.pop(key, None)


def run_training(trainer: Trainer) -> None:
    """One trial of the fit loop, without the sanity check (Lightning runs the fit loop alone)."""
    trainer.should_stop = False
    run_fit(trainer, sanity_check=False)
