"""The checkpoint dict (pytorch_lightning's top-level keys) and how a run is saved and restored.

Checkpoints hold plain data only and are always read with ``weights_only=True``: a checkpoint that
carries pickled objects is refused instead of executed.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.checkpoint._commit import (
    MANIFEST_NAME,
    CommittedCheckpoint,
    CorruptCheckpointError,
    list_committed,
    load_verified,
    read_manifest,
    warn_fallback,
)
from lightning_lib.checkpoint._positions import capture_loader_state
from lightning_lib.checkpoint._writer import CHECKPOINT_FILE
from lightning_lib.core.saving import to_plain
from lightning_lib.storage import ObjectStore, is_remote, open_store, split_uri
from lightning_lib.trainer.states import TrainerFn
from lightning_lib.utilities.seed import capture_rng_states

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)

LIBRARY_VERSION = "0.1.0"
# The Lightning release whose checkpoint format and semantics this library follows; pytorch_lightning
# reads this key to decide which migrations to apply, so it must name a real Lightning version.
LIGHTNING_FORMAT_VERSION = "2.6.0"
_PROGRESS_KEY = "lightning_lib"


def dump_checkpoint(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """Everything needed to resume ``trainer``'s fit, as plain data."""
    module = trainer.lightning_module
    datamodule = trainer.datamodule
    checkpoint: dict[str, Any] = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "pytorch-lightning_version": LIGHTNING_FORMAT_VERSION,
        "lightning_lib_version": LIBRARY_VERSION,
        "state_dict": module.state_dict(),
        "loops": {_PROGRESS_KEY: _loop_state(trainer, weights_only)},
    }
    if not weights_only:
        checkpoint["callbacks"] = {
            cb.state_key: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()
        }
        checkpoint["optimizer_states"] = [opt.state_dict() for opt in trainer.optimizers]
        checkpoint["lr_schedulers"] = [
            config.scheduler.state_dict() for config in trainer.lr_scheduler_configs
        ]
        scaler_state = trainer.precision_plugin.state_dict()
        if scaler_state:
            checkpoint["MixedPrecision"] = scaler_state
        ranks = checkpoint["loops"][_PROGRESS_KEY].get("ranks")
        # Lightning's key holds rank zero's streams; every rank's are under "ranks"
        checkpoint["rng_states"] = ranks[0]["rng_states"] if ranks else capture_rng_states()
    for obj, prefix in ((module, ""), (datamodule, "datamodule_")):
        if obj is not None and obj.hparams:
            checkpoint[f"{prefix}hyper_parameters"] = to_plain(dict(obj.hparams))
    if datamodule is not None:
        dm_state = datamodule.state_dict()
        if dm_state:
            checkpoint[type(datamodule).__qualname__] = dm_state
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, checkpoint)
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def _loop_state(trainer: Trainer, weights_only: bool) -> dict[str, Any]:
    """Loop progress down to the batch, the train loader's position and the metrics callbacks read.

    In a multi-process run each rank has its own RNG streams and its own share of the data: those are
    gathered from every rank (a collective, so every rank builds the checkpoint) and kept per rank.
    """
    progress = trainer.progress
    state: dict[str, Any] = {
        "world_size": trainer.world_size,
        "progress": progress.state_dict(),
        "callback_metrics": {
            k: v.detach().cpu().clone()
            for k, v in trainer.callback_metrics.items()
            if isinstance(v, torch.Tensor)
        },
    }
    loader = trainer._train_loader
    if loader is not None and trainer.state.fn == TrainerFn.FITTING:
        state["train_loader"] = capture_loader_state(loader, mid_epoch=progress.epoch_started)
    if trainer.world_size > 1 and not weights_only:
        own = {"rng_states": capture_rng_states(), "train_loader": state.get("train_loader")}
        # sent as torch.save bytes and read back with weights_only=True: plain data only, never pickles
        gathered = trainer.strategy.all_gather_object(_to_bytes(own))
        state["ranks"] = [_from_bytes(blob) for blob in gathered]
    return state


def _to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _from_bytes(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), weights_only=True)


def save_file(checkpoint: dict[str, Any], filepath: str | os.PathLike[str]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated file under the final name."""
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_file(
    path: str | os.PathLike[str], map_location: Any = None, verified: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a plain ``.ckpt`` file, or a committed checkpoint
    folder (local or ``s3://``) whose bytes are verified against its manifest while they are loaded.
    ``verified`` is a checkpoint already loaded and verified (while choosing "last"): returned as is."""
    if verified is not None:
        return verified
    text = os.fspath(path)
    if is_remote(text) or os.path.isdir(text):
        root, name = split_uri(text)
        store = open_store(root)
        ckpt = read_manifest(store, name)
        if ckpt is None:
            raise FileNotFoundError(
                f"Expected a committed checkpoint at {text!r}: its {MANIFEST_NAME} is missing or invalid, so it"
                " was never completely written."
            )
        return _load_committed(store, ckpt, map_location)
    if not os.path.isfile(text):
        raise FileNotFoundError(
            f"Expected a checkpoint file or committed checkpoint folder at {text!r}, found none."
        )
    with open(text, "rb") as handle:
        return _torch_load(handle, text, map_location)


def _load_committed(store: ObjectStore, ckpt: CommittedCheckpoint, map_location: Any) -> dict[str, Any]:
    """Load and verify a committed checkpoint's file (``CorruptCheckpointError`` if it does not match)."""
    filename = CHECKPOINT_FILE if CHECKPOINT_FILE in ckpt.files else next(iter(ckpt.files))
    return load_verified(store, ckpt, filename, lambda handle: _torch_load(handle, ckpt.uri, map_location))


def _torch_load(handle: Any, where: str, map_location: Any) -> dict[str, Any]:
    try:
        checkpoint = torch.load(handle, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"Refusing to load checkpoint {where!r}: it contains objects that are not plain data"
            f" (weights_only=True rejected it: {str(err).splitlines()[0]})."
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"Expected a readable torch checkpoint at {where!r}: {err}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"Expected a Lightning checkpoint dict with a 'state_dict' key in {where!r}.")
    return checkpoint


def select_ckpt_path(trainer: Trainer, fn: TrainerFn, ckpt_path: Any, model_provided: bool) -> str | None:
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
            chosen = _newest_valid(trainer, fn) if trainer.is_global_zero else None
            return trainer.strategy.broadcast(chosen)
        return _newest_valid(trainer, fn)
    if isinstance(ckpt_path, str | os.PathLike):
        path = os.fspath(ckpt_path)
        if not is_remote(path) and not os.path.exists(path):
            raise FileNotFoundError(
                f"Expected ckpt_path to be 'best', 'last', an existing file, folder or s3:// URI, received {path!r}."
            )
        return path
    raise TypeError(f"Expected ckpt_path to be 'best', 'last', a path or None, received {ckpt_path!r}.")


def _newest_valid(trainer: Trainer, fn: TrainerFn) -> str | None:
    dirpaths = {
        getattr(cb, "dirpath", None) or cb._default_dirpath(trainer) for cb in trainer.checkpoint_callbacks
    }
    candidates: list[tuple[ObjectStore, CommittedCheckpoint]] = []
    for dirpath in dirpaths:
        store = trainer._checkpoint_writer.store(dirpath)
        candidates.extend((store, ckpt) for ckpt in list_committed(store))
    candidates.sort(key=lambda found: (found[1].step, found[1].time))
    for store, ckpt in reversed(candidates):
        try:
            # loaded here, verified as it loads: the bytes are read once, and fit reuses the result
            checkpoint = _load_committed(store, ckpt, trainer.strategy.root_device)
        except CorruptCheckpointError as err:
            warn_fallback(ckpt, str(err), stacklevel=4)
            continue
        trainer._verified_checkpoint = (ckpt.uri, checkpoint)
        return ckpt.uri
    warnings.warn(
        f'.{fn.value}(ckpt_path="last") is set, but no committed checkpoint verifies yet; starting from scratch.',
        UserWarning,
        stacklevel=4,
    )
    return None


def restore_modules(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Weights, datamodule state and callback states (before optimizers exist)."""
    module = trainer.lightning_module
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    datamodule = trainer.datamodule
    if datamodule is not None:
        state = checkpoint.get(type(datamodule).__qualname__)
        if state:
            datamodule.load_state_dict(state)
    if trainer.state.fn == TrainerFn.FITTING:
        states = checkpoint.get("callbacks") or {}
        for cb in trainer.callbacks:
            cb.on_load_checkpoint(trainer, module, checkpoint)
            if cb.state_key in states:
                cb.load_state_dict(states[cb.state_key])


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Optimizers, schedulers, precision scaler, loop progress and RNG: resume where it stopped."""
    if "optimizer_states" not in checkpoint:
        raise ValueError(
            "Expected a full checkpoint to resume training, received a weights-only one (no optimizer states);"
            " load its weights with `load_from_checkpoint` and start a new fit instead."
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
    ours = (checkpoint.get("loops") or {}).get(_PROGRESS_KEY)
    progress = trainer.progress
    if ours is not None:
        # the fit loop finishes the interrupted batch or epoch from here (fit_loop.run_fit)
        own = _own_rank_state(trainer, ours)
        progress.load_state_dict(ours["progress"])
        trainer._logger_connector._callback.update(ours.get("callback_metrics", {}))
        trainer._resume = {
            "rng": own.get("rng_states", checkpoint.get("rng_states")),
            "loader": own.get("train_loader", ours.get("train_loader")),
        }
        return
    else:
        _restore_lightning_progress(trainer, checkpoint)
    trainer._resume = {"rng": checkpoint.get("rng_states"), "loader": None}


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
    progress = trainer.progress
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs = (fit_loop.get("epoch_progress") or {}).get("current") or {}
    processed = epochs.get("processed")
    progress.current_epoch = int(processed) if processed is not None else int(checkpoint.get("epoch", 0)) + 1
    progress.global_step = int(checkpoint.get("global_step", 0))
    epoch_loop = fit_loop.get("epoch_loop.state_dict") or {}
    progress.batches_that_stepped = int(epoch_loop.get("_batches_that_stepped", progress.global_step))


def build_from_checkpoint(
    cls: type,
    checkpoint_path: str | os.PathLike[str],
    map_location: Any,
    hparams_file: str | os.PathLike[str] | None,
    strict: bool | None,
    overrides: dict[str, Any],
) -> Any:
    """``LightningModule.load_from_checkpoint``: rebuild from hyper-parameters, then load the weights."""
    import inspect

    import yaml

    checkpoint = load_file(checkpoint_path, map_location=map_location)
    hparams: dict[str, Any] = dict(checkpoint.get("hyper_parameters") or {})
    if hparams_file is not None:
        with open(hparams_file, encoding="utf-8") as handle:
            hparams.update(yaml.safe_load(handle) or {})
    hparams.update(overrides)
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        hparams = {k: v for k, v in hparams.items() if k in params}
    model = cls(**hparams)
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model
