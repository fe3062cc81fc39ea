"""The checkpoint dict (pytorch_lightning's top-level keys) and how a run is saved and restored.

Checkpoints hold plain data only and are read with ``weights_only=True`` unless the caller opts out:
a checkpoint that carries pickled objects is refused instead of executed.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.checkpoint._commit import load_manifest, load_verified
from lightning_lib.checkpoint._manifest import (
    CheckpointNotFoundError,
    CommittedCheckpoint,
    CorruptCheckpointError,
    InvalidManifestError,
)
from lightning_lib.checkpoint._positions import capture_loader_state
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
PROGRESS_KEY = "lightning_lib"
# This library's keys beside Lightning's: written after the save hooks ran and taken out while the load
# hooks run, so user hooks see exactly the keys Lightning's hooks see
_OWN_KEYS = ("lightning_lib_version", PROGRESS_KEY, "rng_states")


def dump_checkpoint(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """Everything needed to resume ``trainer``'s fit, as plain data."""
    module = trainer.lightning_module
    datamodule = trainer.datamodule
    checkpoint: dict[str, Any] = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        # the running library's version, as Lightning's hooks see theirs; the file gets the format's below
        "pytorch-lightning_version": LIBRARY_VERSION,
        "state_dict": module.state_dict(),
        # Lightning's loop state; this library's own resume state (RNG streams, data position) is added
        # under PROGRESS_KEY after the hooks, so "loops" holds only the counters Lightning's checkpoints have
        "loops": trainer._fit_loop_states(),
    }
    own: dict[str, Any] = {
        "lightning_lib_version": LIBRARY_VERSION,
        PROGRESS_KEY: _loop_state(trainer, weights_only),
    }
    if not weights_only:
        callback_states = {}
        for cb in trainer.callbacks:
            # once per save: a callback's state_dict may count or snapshot as it runs
            cb_state = cb.state_dict()
            if cb_state:
                callback_states[cb.state_key] = cb_state
        checkpoint["callbacks"] = callback_states
        checkpoint["optimizer_states"] = [opt.state_dict() for opt in trainer.optimizers]
        checkpoint["lr_schedulers"] = [
            config.scheduler.state_dict() for config in trainer.lr_scheduler_configs
        ]
        scaler_state = trainer.precision_plugin.state_dict()
        if scaler_state:
            checkpoint["MixedPrecision"] = scaler_state
        ranks = own[PROGRESS_KEY].get("ranks")
        # rank zero's streams; every rank's are under "ranks"
        own["rng_states"] = ranks[0]["rng_states"] if ranks else capture_rng_states()
    for obj, prefix in ((module, ""), (datamodule, "datamodule_")):
        if obj is not None and obj.hparams:
            if "_hparams_name" in obj.__dict__:  # which __init__ argument load_from_checkpoint rebuilds
                checkpoint[f"{prefix}hparams_name"] = obj.__dict__["_hparams_name"]
            checkpoint[f"{prefix}hyper_parameters"] = to_plain(dict(obj.hparams))
    if datamodule is not None:
        # through the hook dispatcher, so a profiler times it as Lightning's does
        dm_state = trainer._hooks.datamodule("state_dict")
        if dm_state:
            checkpoint[type(datamodule).__qualname__] = dm_state
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, checkpoint)
    module.on_save_checkpoint(checkpoint)
    # pytorch_lightning picks the migrations it applies from this key: the file names the Lightning format
    # it follows (a library version here would make it rewrite a current-layout checkpoint)
    # a new dict: the one the hooks received stays as they saw it
    return {**checkpoint, "pytorch-lightning_version": LIGHTNING_FORMAT_VERSION, **own}


def split_own_keys(checkpoint: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``checkpoint`` as Lightning's load hooks see it (its keys only, the version migrated to the running
    library's, as Lightning's loader does), and this library's keys apart; ``checkpoint`` is left as is."""
    own = {key: value for key, value in checkpoint.items() if key in _OWN_KEYS}
    view = {key: value for key, value in checkpoint.items() if key not in _OWN_KEYS}
    view["pytorch-lightning_version"] = LIBRARY_VERSION
    return view, own


def _loop_state(trainer: Trainer, weights_only: bool) -> dict[str, Any]:
    """Loop progress down to the batch, the train loader's position and the metrics callbacks read.

    In a multi-process run each rank has its own RNG streams and its own share of the data: those are
    gathered from every rank (a collective, so every rank builds the checkpoint) and kept per rank.
    """
    progress = trainer._run_state.progress
    state: dict[str, Any] = {
        "world_size": trainer.world_size,
        "progress": progress.state_dict(),
        "callback_metrics": {
            k: v.detach().cpu().clone()
            for k, v in trainer.callback_metrics.items()
            if isinstance(v, torch.Tensor)
        },
    }
    loader = trainer._data.train_loader
    if loader is not None and trainer.state.fn == TrainerFn.FITTING:
        state["train_loader"] = capture_loader_state(loader, mid_epoch=progress.epoch_started)
    if trainer.world_size > 1 and not weights_only:
        own = {"rng_states": capture_rng_states(), "train_loader": state.get("train_loader")}
        # sent as torch.save bytes and read back with weights_only=True: plain data only, never pickles
        gathered = trainer.strategy.all_gather_object(_to_bytes(own))
        state["ranks"] = [_from_bytes(blob) for blob in gathered]
    return state


def _to_bytes(obj: Any) -> bytes:
    """One rank's own resume state as bytes for the all-gather (not a checkpoint save: code that counts or
    wraps ``torch.save`` to watch checkpoint writes, as Lightning's tests do, does not see it)."""
    buffer = io.BytesIO()
    torch.serialization.save(obj, buffer)
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
    path: str | os.PathLike[str],
    map_location: Any = None,
    verified: dict[str, Any] | None = None,
    weights_only: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint file. A committed one (sealed with its commit marker; always, on ``s3://``) is
    verified against the marker while it is loaded; a local file without a marker (pytorch_lightning's,
    ``Trainer.save_checkpoint``'s) is read as it is. ``verified`` is a checkpoint already loaded and
    verified (while choosing "last"): returned as is.

    ``weights_only=True`` (the default) refuses anything but plain data; ``False`` is Lightning's opt-in
    for checkpoints that pickle objects, for files the caller trusts.
    """
    if verified is not None:
        return verified
    text = os.fspath(path)
    remote = is_remote(text)
    if not remote and not os.path.isfile(text):
        raise FileNotFoundError(f"Expected a checkpoint file at {text!r}, found none.")
    root, name = split_uri(text)
    store = open_store(root)
    ckpt = _committed(store, name, text, remote)
    if ckpt is not None:
        return load_committed(store, ckpt, map_location, weights_only)
    with open(text, "rb") as handle:
        return _torch_load(handle, text, map_location, weights_only)


def _committed(store: ObjectStore, name: str, text: str, remote: bool) -> CommittedCheckpoint | None:
    """The committed checkpoint at ``text``; ``None`` for a local file without a marker."""
    try:
        return load_manifest(store, name)
    except ValueError:  # a local name no checkpoint is committed under (not a store key)
        if remote:
            raise
        return None
    except CheckpointNotFoundError as err:
        if remote:
            raise FileNotFoundError(
                f"Expected a committed checkpoint at {text!r}: {err} A checkpoint without its commit marker"
                " was never completely written."
            ) from None
        return None
    except InvalidManifestError as err:
        raise CorruptCheckpointError(str(err)) from None


def load_committed(
    store: ObjectStore, ckpt: CommittedCheckpoint, map_location: Any, weights_only: bool = True
) -> dict[str, Any]:
    """Load and verify a committed checkpoint's file (``CorruptCheckpointError`` if it does not match)."""
    return load_verified(
        store, ckpt, lambda handle: _torch_load(handle, ckpt.uri, map_location, weights_only)
    )


def _torch_load(handle: Any, where: str, map_location: Any, weights_only: bool) -> dict[str, Any]:
    try:
        checkpoint = torch.load(handle, map_location=map_location or "cpu", weights_only=weights_only)
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


def save_checkpoint(trainer: Trainer, filepath: str | os.PathLike[str], weights_only: bool) -> None:
    """``Trainer.save_checkpoint``: every rank builds it (the per-rank states are gathered), rank zero
    alone writes it, and no rank goes on before it is there.

    Called by ``ModelCheckpoint`` (as Lightning's does, so a user who wraps or mocks
    ``trainer.save_checkpoint`` sees each of its saves), the save goes through the commit protocol
    with the callback's retention instead (``commit_request``)."""
    target = os.fspath(filepath)
    request = _REQUEST.get()
    if request is not None and request.trainer is trainer and request.uri == target:
        _REQUEST.set(None)  # one save per request: a nested save_checkpoint is a plain one
        commit_checkpoint(
            trainer, target, weights_only, replaces=request.replaces, overwrite=request.overwrite
        )
        return
    checkpoint = dump_checkpoint(trainer, weights_only)
    if trainer.is_global_zero:
        if is_remote(target):
            # object storage: the same commit protocol as ModelCheckpoint, synchronously
            trainer._checkpoint_writer.save(checkpoint, target, trainer.global_step, overwrite=True)
            trainer._checkpoint_writer.close()
        else:
            save_file(checkpoint, filepath)  # a plain .ckpt file, as Lightning writes it
            trainer._checkpoint_writer.note_taken(os.path.abspath(target))
    trainer.strategy.barrier("Trainer.save_checkpoint")
    notify_loggers(trainer, trainer.checkpoint_callback)


@dataclass(frozen=True)
class _CommitRequest:
    """What ``ModelCheckpoint`` asks of the ``trainer.save_checkpoint`` call it is about to make."""

    trainer: Any
    uri: str
    replaces: str | None
    overwrite: bool


_REQUEST: ContextVar[_CommitRequest | None] = ContextVar("lightning_lib_commit_request", default=None)


@contextmanager
def commit_request(
    trainer: Trainer, uri: str, replaces: str | None = None, overwrite: bool = False
) -> Iterator[None]:
    """Within it, ``trainer.save_checkpoint(uri, ...)`` commits ``uri`` as ``commit_checkpoint`` does,
    with its retention (``replaces``, ``overwrite``)."""
    token = _REQUEST.set(_CommitRequest(trainer, uri, replaces, overwrite))
    try:
        yield
    finally:
        _REQUEST.reset(token)


def commit_checkpoint(
    trainer: Trainer,
    uri: str,
    weights_only: bool,
    replaces: str | None = None,
    overwrite: bool = False,
) -> None:
    """ModelCheckpoint's save: a committed checkpoint file; ``replaces`` (retention) is deleted once it
    has committed, or never committed if superseded before its turn; ``overwrite`` takes over a
    checkpoint already at ``uri`` (see ``CheckpointWriter.save``).

    On object storage the commit runs in the background (training does not wait for the network); a
    local file is there when this returns, as Lightning's is (callbacks and user code read it during the
    fit), still written through the commit protocol (sealed, published whole)."""
    checkpoint = dump_checkpoint(trainer, weights_only)  # on every rank: it gathers the per-rank states
    if trainer.is_global_zero:  # committed once, by rank zero
        writer = trainer._checkpoint_writer
        writer.save(checkpoint, uri, trainer.global_step, replaces=replaces, overwrite=overwrite)
        if writer.sync_local and not is_remote(uri):
            writer.wait()


def notify_loggers(trainer: Trainer, callback: Any) -> None:
    """Each logger's ``after_save_checkpoint`` hook, with the checkpoint callback that saved."""
    if callback is None:
        return
    for logger in trainer.loggers:
        hook = getattr(logger, "after_save_checkpoint", None)
        if hook is not None:
            hook(callback)


def build_from_checkpoint(
    cls: type,
    checkpoint_path: str | os.PathLike[str],
    map_location: Any,
    hparams_file: str | os.PathLike[str] | None,
    strict: bool | None,
    overrides: dict[str, Any],
) -> Any:
    """``LightningModule.load_from_checkpoint``: rebuild from hyper-parameters, then load the weights."""
    from lightning_lib.core.datamodule import LightningDataModule
    from lightning_lib.core.saving import instantiate_from_checkpoint

    checkpoint = load_file(checkpoint_path, map_location=map_location)
    model = instantiate_from_checkpoint(cls, checkpoint, hparams_file, overrides)
    if isinstance(model, LightningDataModule):
        state = checkpoint.get(type(model).__qualname__)
        if state is not None:
            model.load_state_dict(state)
        return model
    view, _ = split_own_keys(checkpoint)
    model.on_load_checkpoint(view)
    model.load_state_dict(view["state_dict"], strict=True if strict is None else strict)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model
