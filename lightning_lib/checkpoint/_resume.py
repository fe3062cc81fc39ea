"""Resuming from a checkpoint: which one ``ckpt_path`` names, and putting its state back.

"last" is the newest committed checkpoint whose bytes verify; the module, datamodule and callback
states are restored before the optimizers exist, the training state (optimizers, schedulers, scaler,
loop progress, RNG and data position) after, and the fit loop then finishes the interrupted batch.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from lightning_lib.checkpoint._commit import list_committed, warn_fallback
from lightning_lib.checkpoint._format import PROGRESS_KEY, load_committed, split_own_keys
from lightning_lib.checkpoint._manifest import CommittedCheckpoint, CorruptCheckpointError
from lightning_lib.storage import ObjectStore, is_remote
from lightning_lib.trainer.states import TrainerFn
from lightning_lib.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


def select_ckpt_path(
    trainer: Trainer, fn: TrainerFn, ckpt_path: Any, model_provided: bool, weights_only: bool = True
) -> str | None:
    """Resolve "best" / "last" / a path or URI, as Lightning's ``_select_ckpt_path`` does.

    "last" is the newest committed checkpoint (by step, then time) in any ModelCheckpoint's folder whose
    bytes verify; a newer one that fails verification is reported and skipped.
    """
    if ckpt_path is None:
        if model_provided or fn == TrainerFn.FITTING:
            return None
        callback = trainer.checkpoint_callback
        if callback is not None and bool(getattr(callback, "best_model_path", "")):
            ckpt_path = "best"
        else:
            return None
    if ckpt_path == "best":
        callback = trainer.checkpoint_callback
        if callback is None:
            raise ValueError(
                f'`.{fn.value}(ckpt_path="best")` needs a ModelCheckpoint callback; none is configured.'
            )
        if not getattr(callback, "best_model_path", ""):
            raise ValueError(
                f'`.{fn.value}(ckpt_path="best")` found no best checkpoint: ModelCheckpoint has saved none yet.'
            )
        return str(callback.best_model_path)
    if ckpt_path == "last":
        if trainer.world_size > 1:
            # rank zero chooses (and verifies); every rank then loads that same checkpoint
            chosen = _newest_valid(trainer, fn, weights_only) if trainer.is_global_zero else None
            return trainer.strategy.broadcast(chosen)
        return _newest_valid(trainer, fn, weights_only)
    if isinstance(ckpt_path, str | os.PathLike):
        path = os.fspath(ckpt_path)
        if not is_remote(path) and not os.path.exists(path):
            raise FileNotFoundError(
                f"Checkpoint file not found: {path}. Expected ckpt_path to be 'best', 'last', an existing"
                " checkpoint file or an s3:// URI."
            )
        return path
    raise TypeError(f"Expected ckpt_path to be 'best', 'last', a path or None, received {ckpt_path!r}.")


def _newest_valid(trainer: Trainer, fn: TrainerFn, weights_only: bool) -> str | None:
    # each callback's folder, and its files' extension: the other files there (logs) are not read
    folders = {
        (getattr(cb, "dirpath", None) or cb._default_dirpath(trainer), getattr(cb, "FILE_EXTENSION", None))
        for cb in trainer.checkpoint_callbacks
    }
    candidates: list[tuple[ObjectStore, CommittedCheckpoint]] = []
    for dirpath, extension in folders:
        store = trainer._checkpoint_writer.store(dirpath)
        candidates.extend((store, ckpt) for ckpt in list_committed(store, suffix=extension))
    candidates.sort(key=lambda found: (found[1].step, found[1].time))
    for store, ckpt in reversed(candidates):
        try:
            # loaded here, verified as it loads: the bytes are read once, and fit reuses the result
            checkpoint = load_committed(store, ckpt, trainer.strategy.root_device, weights_only)
        except CorruptCheckpointError as err:
            warn_fallback(ckpt, str(err), stacklevel=4)
            continue
        trainer._run_state.verified_checkpoint = (ckpt.uri, checkpoint)
        return ckpt.uri
    warnings.warn(
        f'.{fn.value}(ckpt_path="last") is set, but no committed checkpoint verifies yet; starting from scratch.',
        UserWarning,
        stacklevel=4,
    )
    return None


def restore_modules(trainer: Trainer, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Weights, datamodule state and callback states (before optimizers exist); returns the checkpoint
    ``restore_training_state`` continues from: what the hooks left, with this library's resume state."""
    # the hooks get a dict of Lightning's keys that nothing changes after them, as Lightning's do
    view, own = split_own_keys(checkpoint)
    _restore_modules(trainer, view)
    return {**view, **own}


def _restore_modules(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    module = trainer.lightning_module
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    datamodule = trainer.datamodule
    if datamodule is not None:
        state = checkpoint.get(type(datamodule).__qualname__)
        if state:
            trainer._hooks.datamodule("load_state_dict", state)
    if trainer.state.fn == TrainerFn.FITTING:
        states = checkpoint.get("callbacks") or {}
        missing = [key for key in states if key not in {cb.state_key for cb in trainer.callbacks}]
        if missing:
            warnings.warn(
                "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be"
                f" provided during `Trainer` instantiation. Please add the following callbacks: {missing}.",
                UserWarning,
                stacklevel=2,
            )
        # every callback sees the checkpoint before any state is loaded, as in Lightning
        for cb in trainer.callbacks:
            cb.on_load_checkpoint(trainer, module, checkpoint)
        for cb in trainer.callbacks:
            if cb.state_key in states:
                cb.load_state_dict(states[cb.state_key])


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Optimizers, schedulers, precision scaler, loop progress and RNG: resume where it stopped."""
    if "optimizer_states" not in checkpoint:
        raise ValueError(
            "Expected a full checkpoint to resume training, received a weights-only one (no optimizer states);"
            " load its weights with `load_from_checkpoint` and start a new fit instead."
        )
    epoch = int(checkpoint.get("epoch", 0))
    if trainer.max_epochs not in (None, -1) and epoch > trainer.max_epochs:
        raise MisconfigurationException(
            f"You restored a checkpoint with current_epoch={epoch},"
            f" but you have set Trainer(max_epochs={trainer.max_epochs})."
        )
    opt_states = checkpoint["optimizer_states"]
    if len(opt_states) != len(trainer.optimizers):
        raise ValueError(
            f"Expected {len(trainer.optimizers)} optimizer states in the checkpoint, received {len(opt_states)}."
        )
    for opt, state in zip(trainer.optimizers, opt_states):
        opt.load_state_dict(state)
    for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
        config.scheduler.load_state_dict(state)
    if "MixedPrecision" in checkpoint:
        trainer.precision_plugin.load_state_dict(checkpoint["MixedPrecision"])
    # under "loops" in checkpoints written before Lightning's loop state was saved there
    ours = checkpoint.get(PROGRESS_KEY) or (checkpoint.get("loops") or {}).get(PROGRESS_KEY)
    progress = trainer._run_state.progress
    if ours is not None:
        # the fit loop finishes the interrupted batch or epoch from here (fit_loop.run_fit)
        own = _own_rank_state(trainer, ours)
        progress.load_state_dict(ours["progress"])
        trainer._logger_connector.restore_callback_metrics(ours.get("callback_metrics", {}))
        trainer._run_state.resume = {
            "rng": own.get("rng_states", checkpoint.get("rng_states")),
            "loader": own.get("train_loader", ours.get("train_loader")),
        }
        return
    else:
        _restore_lightning_progress(trainer, checkpoint)
    trainer._run_state.resume = {"rng": checkpoint.get("rng_states"), "loader": None}


def _own_rank_state(trainer: Trainer, ours: dict[str, Any]) -> dict[str, Any]:
    """This rank's RNG and data position from the checkpoint; the world size must be the one it was saved at.

    Mid-epoch the data position is per rank, so another world size cannot continue it; at an epoch
    boundary it can, but the order of the data then differs from an uninterrupted run's.
    """
    saved = int(ours.get("world_size", 1))
    if saved != trainer.world_size:
        if ours["progress"].get("epoch_started"):
            raise ValueError(
                f"Expected to resume with the world size the checkpoint was written with ({saved} processes),"
                f" received {trainer.world_size}: it was taken in the middle of an epoch, whose remaining"
                f" batches are split across {saved} processes. Resume with devices x num_nodes = {saved}."
            )
        warnings.warn(
            f"Resuming a checkpoint written by {saved} processes with {trainer.world_size}: training goes on"
            " from the next epoch, but the data order differs from an uninterrupted run.",
            UserWarning,
            stacklevel=3,
        )
        # no rank's saved streams fit: with several processes each keeps its own seeded ones (all taking
        # rank zero's would give every rank the same dropout masks)
        return {"rng_states": None} if trainer.world_size > 1 else {}
    ranks = ours.get("ranks")
    return dict(ranks[trainer.global_rank] or {}) if ranks else {}


def _restore_lightning_progress(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """A pytorch_lightning checkpoint: continue at the first epoch whose training batches had not all run.

    Its loop state says how many epochs were processed; mid-epoch positions cannot be restored from it,
    so an epoch it interrupted starts again from its first batch.
    """
    progress = trainer._run_state.progress
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs = (fit_loop.get("epoch_progress") or {}).get("current") or {}
    processed = epochs.get("processed")
    progress.current_epoch = int(processed) if processed is not None else int(checkpoint.get("epoch", 0)) + 1
    progress.global_step = int(checkpoint.get("global_step", 0))
    epoch_loop = fit_loop.get("epoch_loop.state_dict") or {}
    progress.batches_that_stepped = int(epoch_loop.get("_batches_that_stepped", progress.global_step))
