"""The batch size search (Lightning's ``tuner.batch_size_scaling``).

Short trials of the running loop (``steps_per_trial`` batches each) with a growing batch size: ``power``
doubles it until a trial runs out of memory, ``binsearch`` then bisects between the last size that fit
and the first that did not. The batch size lives in an attribute of the model, its hparams or the
datamodule that the dataloader hooks read; the model and the Trainer are put back afterwards.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from torch.utils.data import DataLoader

from lightning_lib.loop.evaluation import run_evaluation
from lightning_lib.loop.predict import run_predict
from lightning_lib.trainer.states import RunningStage, TrainerFn
from lightning_lib.tuner._session import (
    SavedState,
    forget_loaders,
    quiet_trainer,
    reset_progress,
    restore_state,
    run_training,
    save_state,
)
from lightning_lib.utilities.combined_loader import CombinedLoader
from lightning_lib.utilities.memory import garbage_collection_cuda, is_oom_error
from lightning_lib.utilities.parsing import lightning_getattr, lightning_setattr
from lightning_lib.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)

_EVAL_KEYS: dict[RunningStage, Literal["val", "test", "predict"]] = {
    RunningStage.VALIDATING: "val",
    RunningStage.TESTING: "test",
    RunningStage.PREDICTING: "predict",
}


def _scale_batch_size(
    trainer: Trainer,
    mode: str = "power",
    steps_per_trial: int = 3,
    init_val: int = 2,
    max_trials: int = 25,
    batch_arg_name: str = "batch_size",
    margin: float = 0.05,
    max_val: int = 8192,
) -> int | None:
    """Search the largest batch size that fits, starting from ``init_val``; returns it (None under
    ``fast_dev_run``, which skips the search)."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"Expected margin in [0, 1), received {margin}.")
    if trainer.fast_dev_run:
        rank_zero_warn("Skipping batch size scaler since `fast_dev_run` is enabled.")
        return None
    fitting = trainer.state.fn == TrainerFn.FITTING
    stage = trainer.state.stage
    saved = save_state(trainer)
    quiet_trainer(trainer, [])
    if fitting:
        trainer.limit_train_batches = 1.0
        trainer.limit_val_batches = steps_per_trial
        trainer.max_steps = steps_per_trial
    else:
        setattr(trainer, f"limit_{_EVAL_KEYS[stage]}_batches", steps_per_trial)  # type: ignore[index]
    try:
        new_size, _ = _adjust_batch_size(trainer, batch_arg_name, value=init_val)
        if mode == "power":
            new_size = _run_power_scaling(trainer, new_size, batch_arg_name, max_trials, saved, max_val)
        elif mode == "binsearch":
            new_size = _run_binsearch_scaling(
                trainer, new_size, batch_arg_name, max_trials, saved, margin, max_val
            )
        garbage_collection_cuda()
        log.info(f"Finished batch size finder, will continue with full run using batch size {new_size}")
    finally:
        restore_state(trainer, saved)
        trainer.state.stage = stage
        _reload_active_loaders(trainer)
    return new_size


def _run_power_scaling(
    trainer: Trainer,
    new_size: int,
    batch_arg_name: str,
    max_trials: int,
    saved: SavedState,
    max_val: int = 8192,
) -> int:
    """Double the batch size after each trial that fits; halve it on the first that runs out of memory."""
    any_success = False
    for trial in range(max_trials):
        garbage_collection_cuda()
        if new_size >= max_val:
            rank_zero_info(f"Reached the maximum batch size limit of {max_val}. Stopping search.")
            break
        try:
            _try_loop_run(trainer, saved)
            last_successful_size = new_size
            if trial + 1 >= max_trials:
                new_size = last_successful_size
                break
            new_size, changed = _adjust_batch_size(trainer, batch_arg_name, factor=2.0, desc="succeeded")
            if not changed:
                break
            _forget_active_loaders(trainer)
            any_success = True
        except RuntimeError as exception:
            if not is_oom_error(exception):
                raise
            garbage_collection_cuda()
            new_size, _ = _adjust_batch_size(trainer, batch_arg_name, factor=0.5, desc="failed")
            _forget_active_loaders(trainer)
            if any_success:
                break
    return new_size


def _run_binsearch_scaling(
    trainer: Trainer,
    new_size: int,
    batch_arg_name: str,
    max_trials: int,
    saved: SavedState,
    margin: float,
    max_val: int = 8192,
) -> int:
    """Double the batch size until a trial runs out of memory, then bisect between the last size that
    fit and the first that did not; ``margin`` takes that fraction off the result."""
    low = 1
    high: int | None = None
    count = 0
    while True:
        garbage_collection_cuda()
        if new_size >= max_val:
            rank_zero_info(f"Reached the maximum batch size limit of {max_val}. Stopping search.")
            break
        try:
            _try_loop_run(trainer, saved)
            last_successful_size = new_size
            count += 1
            if count >= max_trials:
                new_size = last_successful_size
                break
            low = new_size
            if high:
                if high - low <= 1:
                    break
                new_size, changed = _adjust_batch_size(
                    trainer, batch_arg_name, value=(high + low) // 2, desc="succeeded", max_val=max_val
                )
            else:
                new_size, changed = _adjust_batch_size(
                    trainer, batch_arg_name, factor=2.0, desc="succeeded", max_val=max_val
                )
            if not changed:
                break
            _forget_active_loaders(trainer)
        except RuntimeError as exception:
            if not is_oom_error(exception):
                raise
            garbage_collection_cuda()
            high = new_size
            new_size, _ = _adjust_batch_size(trainer, batch_arg_name, value=(high + low) // 2, desc="failed")
            _forget_active_loaders(trainer)
            if high - low <= 1:
                break
    if margin > 0:
        reduced = max(1, int(new_size * (1 - margin)))
        if reduced != new_size:
            rank_zero_info(
                f"Applying margin of {margin:.1%}, reducing batch size from {new_size} to {reduced}"
            )
            new_size = reduced
            lightning_setattr(trainer.lightning_module, batch_arg_name, new_size)
    return new_size


def _adjust_batch_size(
    trainer: Trainer,
    batch_arg_name: str = "batch_size",
    factor: float = 1.0,
    value: int | None = None,
    desc: str | None = None,
    max_val: int = 8192,
) -> tuple[int, bool]:
    """Set the batch size to ``value`` (or the current one times ``factor``, at most ``max_val``); returns
    the new size and whether it changed. A batch size already covering the dataset is left as it is."""
    model = trainer.lightning_module
    batch_size = lightning_getattr(model, batch_arg_name)
    length = _dataset_length(trainer)
    if length is not None and batch_size >= length:
        rank_zero_info(
            f"The batch size {batch_size} is greater or equal than the length of your dataset: {length}."
        )
        return batch_size, False
    new_size = value if value is not None else int(batch_size * factor)
    if new_size > max_val:
        if desc:
            rank_zero_info(f"Batch size {new_size} exceeds max_val limit {max_val}, capping at {max_val}")
        new_size = max_val
    if desc:
        rank_zero_info(f"Batch size {batch_size} {desc}, trying batch size {new_size}")
    lightning_setattr(model, batch_arg_name, new_size)
    return new_size, new_size != batch_size


def _dataset_length(trainer: Trainer) -> int | None:
    """The length of the running loop's data as Lightning's CombinedLoader counts it (the longest train
    dataset, the sum of the evaluation datasets); None when a dataset has no length."""
    data = trainer._data
    stage = trainer.state.stage
    if trainer.state.fn == TrainerFn.FITTING:
        if data.train_loader is None:
            data.setup_train_data()
        loaders = data.train_loaders()
        combine: Any = max
        source = data.sources.get("train")
        if isinstance(source, CombinedLoader) and source.mode == "min_size":
            combine = min
    else:
        assert stage is not None
        loaders = data.eval_loaders(stage)
        combine = sum
    lengths = []
    for loader in loaders:
        dataset = getattr(loader, "dataset", None)
        if isinstance(loader, DataLoader) and hasattr(dataset, "__len__"):
            lengths.append(len(dataset))  # type: ignore[arg-type]
    if not lengths:
        return None
    length: int = combine(lengths)
    return length


def _forget_active_loaders(trainer: Trainer) -> None:
    """The next trial (or the run itself) requests its loaders again, with the current batch size."""
    if trainer.state.fn == TrainerFn.FITTING:
        forget_loaders(trainer, "train")
        trainer._data.train_loader = None
        forget_loaders(trainer, "val")
    else:
        stage = trainer.state.stage
        assert stage is not None
        forget_loaders(trainer, _EVAL_KEYS[stage])


def _reload_active_loaders(trainer: Trainer) -> None:
    """Request the running loop's loaders again now, with the batch size found and the Trainer's own
    batch limits (``trainer.train_dataloader`` shows the found size, as in Lightning)."""
    _forget_active_loaders(trainer)
    data = trainer._data
    if trainer.state.fn == TrainerFn.FITTING:
        data.setup_train_data()
        if data.enable_validation:
            data.setup_eval_data(RunningStage.VALIDATING)
    else:
        stage = trainer.state.stage
        assert stage is not None
        data.setup_eval_data(stage)


def _try_loop_run(trainer: Trainer, saved: SavedState) -> None:
    """One trial of the running loop from the counters it started with."""
    reset_progress(trainer, saved)
    stage = trainer.state.stage
    if trainer.state.fn == TrainerFn.FITTING:
        run_training(trainer)
        trainer.state.stage = stage
    elif stage == RunningStage.PREDICTING:
        run_predict(trainer, return_predictions=False)
    else:
        assert stage is not None
        run_evaluation(trainer, stage)
