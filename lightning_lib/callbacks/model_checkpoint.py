"""ModelCheckpoint: when to save, what to call the file, which ``save_top_k`` files to keep."""

# No ``from __future__ import annotations``: the signature's annotations are real types, which
# jsonargparse (LightningCLI) reads from ``inspect.signature`` to parse ``--save_last link``.
import logging
import os
import re
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from lightning_lib.callbacks.callback import Callback
from lightning_lib.checkpoint._commit import cleanup_orphans, list_committed
from lightning_lib.checkpoint._format import commit_request, notify_loggers
from lightning_lib.storage import is_remote, join_uri
from lightning_lib.trainer.states import TrainerFn
from lightning_lib.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _is_local(path: str) -> bool:
    """Whether ``path`` is a local path (no URL scheme but ``file://``), as Lightning decides."""
    return not _SCHEME.match(path) or path[:7].lower() == "file://"


def _resolve_dir(dirpath: str | os.PathLike[str]) -> str:
    text = os.fspath(dirpath)
    return os.path.realpath(os.path.expanduser(text)) if _is_local(text) else text.rstrip("/")


class Checkpoint(Callback):
    """Base of checkpointing callbacks (they run after the others at epoch end)."""


class ModelCheckpoint(Checkpoint):
    """Save the model periodically and keep the ``save_top_k`` best by ``monitor`` (Lightning's semantics)."""

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise MisconfigurationException(f"`mode` can be min, max but got {mode}")
        if save_last not in (None, True, False, "link"):
            raise MisconfigurationException(
                f"Expected save_last to be True, False, None or 'link', received {save_last!r}."
            )
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = save_on_exception
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs, every_n_train_steps = 1, 0
        self._every_n_epochs: int = every_n_epochs or 0
        self._every_n_train_steps: int = every_n_train_steps or 0
        self._train_time_interval = train_time_interval
        self.dirpath: str | None = _resolve_dir(dirpath) if dirpath else None
        self.filename = filename
        self.best_k_models: dict[str, Tensor] = {}
        self.kth_best_model_path = ""
        self.best_model_score: Tensor | None = None
        self.best_model_path = ""
        self.last_model_path = ""
        self.current_score: Tensor | None = None
        self.kth_value = torch.tensor(float("inf") if mode == "min" else float("-inf"))
        self._last_global_step_saved = 0
        self._last_time_checked: float | None = None
        self._last_checkpoint_saved = ""
        self.orphan_grace_seconds = 3600.0
        # a step- or time-triggered save whose monitored metric only validation logs waits for it
        self._defer_save_until_validation = False
        self._warned: set[str] = set()  # warnings given once per callback, not at every save
        self._validate_configuration()

    def _validate_configuration(self) -> None:
        # Lightning's checks and messages: user code matches on them
        if not isinstance(self.save_top_k, int) or self.save_top_k < -1:
            raise MisconfigurationException(f"Invalid value for save_top_k={self.save_top_k}. Must be >= -1")
        for name, value in (
            ("every_n_train_steps", self._every_n_train_steps),
            ("every_n_epochs", self._every_n_epochs),
        ):
            if not isinstance(value, int) or value < 0:
                raise MisconfigurationException(f"Invalid value for {name}={value}. Must be >= 0")
        # a trigger set to 0 is off: only the ones that fire count against each other
        triggers = (
            (self._every_n_train_steps >= 1)
            + (self._every_n_epochs >= 1)
            + (self._train_time_interval is not None)
        )
        if triggers > 1:
            raise MisconfigurationException(
                f"Combination of parameters every_n_train_steps={self._every_n_train_steps},"
                f" every_n_epochs={self._every_n_epochs} and train_time_interval={self._train_time_interval}"
                " should be mutually exclusive."
            )
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={self.save_top_k}, monitor=None) is not a valid configuration."
                " No quantity for top_k to track."
            )

    @property
    def every_n_epochs(self) -> int:
        """Epochs between top-k saves (0: none at epoch ends)."""
        return self._every_n_epochs

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
        )

    # ---- hooks -------------------------------------------------------------------------------------
    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        if self.dirpath is None:
            # rank zero's: the logger's version (and so the folder) is known there only
            self.dirpath = trainer.strategy.broadcast(self._default_dirpath(trainer))
        if self.save_last == "link" and not _is_local(self.dirpath):
            raise ValueError(
                "`ModelCheckpoint(save_last='link')` is only supported for local file paths,"
                f" got `dirpath={self.dirpath}`."
            )
        if stage != TrainerFn.FITTING.value or not trainer.is_global_zero:
            return
        store = trainer._checkpoint_writer.store(self.dirpath)
        # the uploads a killed writer left unfinished; the grace period spares a concurrent writer's
        cleanup_orphans(store, grace_seconds=self.orphan_grace_seconds)
        if self.save_top_k != 0 and store.list():
            warnings.warn(
                f"Checkpoint directory {self.dirpath} exists and is not empty.", UserWarning, stacklevel=2
            )

    def on_train_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        skip_batch = self._every_n_train_steps < 1 or trainer.global_step % self._every_n_train_steps != 0
        skip_time = True
        now = time.monotonic()
        if self._train_time_interval is not None:
            last = self._last_time_checked
            skip_time = last is None or now - last < self._train_time_interval.total_seconds()
            if trainer.world_size > 1:  # rank zero's clock decides: every rank must save at the same step
                skip_time = bool(trainer.strategy.broadcast(skip_time))
        if skip_batch and skip_time:
            return
        if not skip_time:
            self._last_time_checked = now
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and (self.monitor not in candidates or self._validation_follows(trainer)):
            # the metric is validation's (not logged yet, or about to be renewed): saving now would rank a
            # stale value, so the save happens when this epoch's (or the next) validation ends
            self._defer_save_until_validation = True
            return
        if self._skip(trainer):
            return
        self._save_topk(trainer, candidates)
        self._save_last(trainer, candidates)

    def _validation_follows(self, trainer: "Trainer") -> bool:
        """Whether this epoch's validation runs right after this (its last) batch, saving at its end."""
        if self._saves_on_train_epoch_end(trainer) or not trainer.is_last_batch:
            return False
        if not trainer.enable_validation or not sum(trainer.num_val_batches):
            return False
        every = trainer.check_val_every_n_epoch
        return every is None or (trainer.current_epoch + 1) % every == 0

    def on_train_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not self._skip(trainer) and self._saves_on_train_epoch_end(trainer):
            self._save_for_epoch(trainer)

    def on_validation_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if self._skip(trainer) or self._saves_on_train_epoch_end(trainer):
            return
        if self._defer_save_until_validation:
            candidates = self._monitor_candidates(trainer)
            self._defer_save_until_validation = False
            self._save_topk(trainer, candidates)
            self._save_last(trainer, candidates)
            return
        self._save_for_epoch(trainer)

    def on_train_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        # a fit that never reached a checkpointing moment (no validation to save after, fast_dev_run)
        # still leaves "last", as Lightning's does
        if self.save_last and not self._last_checkpoint_saved:
            self._save_last(trainer, self._monitor_candidates(trainer))

    def on_exception(
        self, trainer: "Trainer", pl_module: "LightningModule", exception: BaseException
    ) -> None:
        """Save before the process goes: on errors when ``save_on_exception`` (Lightning's file: this
        callback's ``filename``, then "last"), and always on SIGTERM (raised at a batch boundary, so the
        state is consistent and a retried run resumes from it)."""
        from lightning_lib.utilities.exceptions import SIGTERMException

        sigterm = isinstance(exception, SIGTERMException)
        if trainer.world_size > 1 and not sigterm:
            # only the failing rank is here: saving needs every rank (gathers, broadcasts) and would hang
            log.warning(
                "Not saving a checkpoint on %r: the other processes of the run are not saving.", exception
            )
            return
        if (
            not (sigterm or self.save_on_exception)
            or trainer.state.fn != TrainerFn.FITTING
            or not self.dirpath
        ):
            return
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        candidates = self._monitor_candidates(trainer)
        if not sigterm:
            if self._last_global_step_saved == trainer.global_step:
                return  # this step's checkpoint is saved already
            # written over any file of that name, as Lightning does: the newest state is what counts
            filepath = self.format_checkpoint_name(candidates)
            self._save(trainer, filepath, overwrite=True)
            self._save_last(trainer, candidates)
            if trainer.is_global_zero:
                log.info(
                    "An %s was raised with message: %s, saved checkpoint to %s",
                    type(exception).__name__,
                    exception,
                    filepath,
                )
            return
        if self.save_last:
            self._save_last(trainer, candidates)
            return
        name = "sigterm-epoch={epoch}-step={step}"
        filepath = self._unique_path(trainer, candidates, self._format_name(name, candidates, False), None)
        self._save(trainer, filepath, overwrite=self._reuses(filepath, None))

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.dirpath is None or state_dict.get("dirpath") == self.dirpath:
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value", self.kth_value)
            self.best_k_models = dict(state_dict.get("best_k_models", {}))
            self.last_model_path = state_dict.get("last_model_path", "")
            self.current_score = state_dict.get("current_score")
        else:
            warnings.warn(
                f"The dirpath has changed from {state_dict.get('dirpath')!r} to {self.dirpath!r}, therefore"
                " `best_model_score`, `kth_best_model_path`, `kth_value`, `last_model_path` and `best_k_models`"
                " won't be reloaded. Only `best_model_path` will be reloaded.",
                UserWarning,
                stacklevel=2,
            )
        self.best_model_path = state_dict["best_model_path"]

    # ---- decisions ---------------------------------------------------------------------------------
    def _skip(self, trainer: "Trainer") -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def _saves_on_train_epoch_end(self, trainer: "Trainer") -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        if sum(trainer.num_val_batches) == 0 or not trainer.enable_validation:
            return True
        return trainer.val_check_interval == 1.0

    def _save_for_epoch(self, trainer: "Trainer") -> None:
        candidates = self._monitor_candidates(trainer)
        if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            self._save_topk(trainer, candidates)
        self._save_last(trainer, candidates)

    def _monitor_candidates(self, trainer: "Trainer") -> dict[str, Tensor]:
        candidates = {
            k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in trainer.callback_metrics.items()
        }
        epoch = candidates.get("epoch")
        candidates["epoch"] = (
            epoch.int() if isinstance(epoch, Tensor) else torch.tensor(trainer.current_epoch)
        )
        step = candidates.get("step")
        candidates["step"] = step.int() if isinstance(step, Tensor) else torch.tensor(trainer.global_step)
        return candidates

    # ---- saving ------------------------------------------------------------------------------------
    def _save_topk(self, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._save_unmonitored(trainer, candidates)
            return
        if self.monitor not in candidates:
            message = (
                f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned"
                f" metrics: {list(candidates)}. HINT: Did you call `log({self.monitor!r}, value)` in the"
                " `LightningModule`?"
            )
            if trainer._run_state.val_has_run:
                raise MisconfigurationException(message)
            if message not in self._warned:
                self._warned.add(message)
                warnings.warn(message, UserWarning, stacklevel=2)
            return
        # rank zero's value decides on every rank, so all keep the same top-k and save at the same moments
        current = candidates[self.monitor]
        if trainer.world_size > 1 and isinstance(current, Tensor) and current.numel() == 1:
            # as a Python number: exact for every float dtype, and no tensor pickled (torch.save) per save
            value = trainer.strategy.broadcast(current.detach().item())
            current = torch.tensor(value, dtype=current.dtype, device=current.device)
        elif trainer.world_size > 1 and isinstance(current, Tensor):
            current = trainer.strategy.broadcast(current.detach().cpu()).to(current.device)
        if self.check_monitor_top_k(trainer, current):
            self._update_best_and_save(current, trainer, candidates)
        elif self.verbose:
            log.info(
                "Epoch %d, global step %d: %r was not in top %d",
                trainer.current_epoch,
                trainer.global_step,
                self.monitor,
                self.save_top_k,
            )

    def check_monitor_top_k(self, trainer: "Trainer", current: Tensor | None = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        better = torch.lt if self.mode == "min" else torch.gt
        return bool(better(current, self.best_k_models[self.kth_best_model_path]))

    def _update_best_and_save(
        self, current: Tensor, trainer: "Trainer", candidates: dict[str, Tensor]
    ) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        to_delete = None
        if len(self.best_k_models) == k and k > 0:
            to_delete = self.kth_best_model_path
            self.best_k_models.pop(to_delete)
        if isinstance(current, Tensor) and torch.isnan(current):
            current = torch.tensor(
                float("inf") if self.mode == "min" else float("-inf"), device=current.device
            )
        filepath = self._unique_path(trainer, candidates, None, to_delete)
        self.current_score = current
        self.best_k_models[filepath] = current
        if len(self.best_k_models) == k:
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.__getitem__)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            log.info(
                "Epoch %d, global step %d: %r reached %.5f (best %.5f), saving model to %r as top %d",
                trainer.current_epoch,
                trainer.global_step,
                self.monitor,
                float(current),
                float(self.best_model_score),
                filepath,
                k,
            )
        removed = to_delete if to_delete and self._may_remove(trainer, to_delete, filepath) else None
        self._save(trainer, filepath, replaces=removed, overwrite=self._reuses(filepath, to_delete))

    def _save_unmonitored(self, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        filepath = self._unique_path(trainer, candidates, None, self.best_model_path)
        previous, self.best_model_path = self.best_model_path, filepath
        removable = self.save_top_k == 1 and previous and self._may_remove(trainer, previous, filepath)
        replaces = previous if removable else None
        self._save(trainer, filepath, replaces=replaces, overwrite=self._reuses(filepath, previous))

    def _save_last(self, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        if not self.save_last:
            return
        # Lightning's names: this callback's "last.ckpt" is overwritten in place (in one step: a reader
        # finds the old file or the new one, each whole), a "last.ckpt" it did not write (an earlier run's) is kept
        # and this run's takes the next free name (last-v1.ckpt). A "last" whose name changes (metrics in
        # it) replaces the previous one, deleted only once the new one (or a newer one) has committed.
        previous = self.last_model_path
        filepath = self._unique_path(trainer, candidates, self.CHECKPOINT_NAME_LAST, previous or None)
        self.last_model_path = filepath
        removable = previous and self._may_remove(trainer, previous, filepath, previous_is_last=True)
        replaces = previous if removable else None
        self._save(trainer, filepath, replaces=replaces, overwrite=self._reuses(filepath, previous))

    def _reuses(self, filepath: str, allowed_existing: str | None) -> bool:
        """Whether saving ``filepath`` deliberately replaces a checkpoint of that name: the one it was
        allowed to take over, or any, when the version counter is off (Lightning overwrites then).
        Otherwise a taken name (a file exists there, a checkpoint or not) is never overwritten."""
        return filepath == allowed_existing or not self._enable_version_counter

    def _save(
        self, trainer: "Trainer", filepath: str, replaces: str | None = None, overwrite: bool = False
    ) -> None:
        """Save ``filepath`` through ``trainer.save_checkpoint`` (as Lightning does: wrapping it sees every
        save), committed with this callback's retention: ``replaces`` is deleted once ``filepath`` has
        committed.

        Handing the replaced checkpoint to the writer with the save (instead of deleting it afterwards)
        lets a slow object store coalesce: a replaced checkpoint whose commit has not started yet is
        dropped, so training never waits behind uploads of checkpoints that would be deleted anyway. Every
        path this callback names (best, last, top-k) is one it saved and has not replaced: committed (a
        local file, when the save returns), or committed before ``fit`` returns (object storage).
        """
        with commit_request(trainer, filepath, replaces=replaces, overwrite=overwrite):
            trainer.save_checkpoint(filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            notify_loggers(trainer, self)

    def _may_remove(
        self, trainer: "Trainer", previous: str, current: str, previous_is_last: bool = False
    ) -> bool:
        if previous == current:
            return False
        # the checkpoint a fit resumed from is kept, unless it is this callback's own previous "last"
        resumed_from = trainer.ckpt_path is not None and _same_place(previous, trainer.ckpt_path)
        if resumed_from and not previous_is_last:
            return False
        return self.dirpath is not None and _inside(previous, self.dirpath)

    # ---- names -------------------------------------------------------------------------------------
    def _default_dirpath(self, trainer: "Trainer") -> str:
        logger = trainer.logger
        if logger is not None:
            save_dir = logger.save_dir or trainer.default_root_dir
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            return join_uri(save_dir, str(logger.name), version, "checkpoints")
        return join_uri(trainer.default_root_dir, "checkpoints")

    def _unique_path(
        self,
        trainer: "Trainer",
        candidates: dict[str, Tensor],
        filename: str | None,
        allowed_existing: str | None,
    ) -> str:
        """The checkpoint name, with a ``-vN`` suffix while it is taken by another checkpoint than
        ``allowed_existing`` (the one this save may overwrite)."""
        filepath = self.format_checkpoint_name(candidates, filename)
        if not trainer.is_global_zero:  # rank zero's name is broadcast below: no storage lookups here
            return str(trainer.strategy.broadcast(filepath))
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while filepath != allowed_existing and trainer._checkpoint_writer.exists(filepath):
                filepath = self.format_checkpoint_name(candidates, filename, ver=version)
                version += 1
        # rank zero's name: its writer knows which names are still being committed
        return str(trainer.strategy.broadcast(filepath))

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None
    ) -> str:
        """``dirpath/filename.ckpt`` with ``{metric}`` groups filled in (``name=value`` when auto-inserted)."""
        name = self._format_name(filename or self.filename, metrics, self.auto_insert_metric_name)
        if ver is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((name, f"v{ver}"))
        name = f"{name}{self.FILE_EXTENSION}"
        return join_uri(self.dirpath, name) if self.dirpath else name

    @classmethod
    def _format_name(
        cls, filename: str | None, metrics: dict[str, Any], auto_insert_metric_name: bool
    ) -> str:
        if not filename:
            filename = "{epoch}" + cls.CHECKPOINT_JOIN_CHAR + "{step}"
        values = dict(metrics)
        groups = sorted(re.findall(r"(\{.*?)[:\}]", filename), key=len, reverse=True)
        for group in groups:
            key = group[1:]
            if auto_insert_metric_name:
                filename = filename.replace(group, key + cls.CHECKPOINT_EQUALS_CHAR + "{" + key)
            # index the dict so metric names with dots or slashes still format
            filename = filename.replace(group, f"{{0[{key}]")
            if key not in values:
                values[key] = torch.tensor(0)
        return filename.format(values)

    def to_yaml(self, filepath: str | os.PathLike[str] | None = None) -> None:
        """Write ``best_k_models`` (checkpoint path: score) as YAML, by default to ``dirpath/best_k_models.yaml``."""
        import yaml

        best_k = {path: score.item() for path, score in self.best_k_models.items()}
        if filepath is None:
            if not self.dirpath:
                raise ValueError(
                    "Expected a dirpath (set by fit) or a filepath for to_yaml, received neither."
                )
            filepath = join_uri(self.dirpath, "best_k_models.yaml")
        target = os.fspath(filepath)
        text = yaml.safe_dump(best_k)
        if is_remote(target):
            from lightning_lib.storage import open_store, split_uri

            root, name = split_uri(target)
            open_store(root).put_bytes(name, text.encode())
        else:
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text)

    def file_exists(self, filepath: str | os.PathLike[str], trainer: "Trainer") -> bool:
        """Whether a file (a checkpoint or not) is at ``filepath``, or a save of it is still committing;
        rank zero decides for every rank."""
        found = trainer._checkpoint_writer.exists(os.fspath(filepath)) if trainer.is_global_zero else False
        return bool(trainer.strategy.broadcast(found))

    def find_last_checkpoints(self, trainer: "Trainer") -> set[str]:
        """Committed ``last*`` checkpoints in ``dirpath``."""
        dirpath = self.dirpath or self._default_dirpath(trainer)
        store = trainer._checkpoint_writer.store(dirpath)
        found = list_committed(store, self.CHECKPOINT_NAME_LAST, self.FILE_EXTENSION)
        return {ckpt.uri for ckpt in found}

    def committed(self, trainer: "Trainer") -> list[str]:
        """Every committed checkpoint in ``dirpath``, oldest first (by step, then commit time)."""
        dirpath = self.dirpath or self._default_dirpath(trainer)
        store = trainer._checkpoint_writer.store(dirpath)
        return [ckpt.uri for ckpt in list_committed(store, suffix=self.FILE_EXTENSION)]


def _same_place(a: str, b: str) -> bool:
    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).absolute() == Path(b).absolute()


def _inside(path: str, folder: str) -> bool:
    if is_remote(path) or is_remote(folder):
        return path.startswith(folder.rstrip("/") + "/")
    return Path(folder).absolute() in Path(path).absolute().parents
