"""Where a run's dataloaders come from, how they are prepared, and how many batches each loop takes."""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

from lightning_lib.checkpoint._positions import make_resumable
from lightning_lib.loop.loaders import (
    INF,
    CombinedBatches,
    LimitedFetcher,
    add_worker_init_fn,
    check_iterable,
    flatten_loaders,
    num_batches,
    with_distributed_sampler,
    with_sequential_sampler,
)
from lightning_lib.trainer.states import RunningStage, TrainerFn
from lightning_lib.utilities.combined_loader import CombinedLoader
from lightning_lib.utilities.data import has_len_all_ranks, suggested_max_num_workers
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import rank_zero_warn
from lightning_lib.utilities.warnings import PossibleUserWarning

if TYPE_CHECKING:
    from lightning_lib.loop.hooks import LoaderHook, ModuleHook
    from lightning_lib.trainer import Trainer

log = logging.getLogger("lightning_lib")

LoaderKey = Literal["train", "val", "test", "predict"]
EvalKey = Literal["val", "test", "predict"]

_STAGE_KEYS: dict[RunningStage, EvalKey] = {
    RunningStage.VALIDATING: "val",
    RunningStage.SANITY_CHECKING: "val",
    RunningStage.TESTING: "test",
    RunningStage.PREDICTING: "predict",
}
_LOADER_HOOKS: dict[LoaderKey, LoaderHook] = {
    "train": "train_dataloader",
    "val": "val_dataloader",
    "test": "test_dataloader",
    "predict": "predict_dataloader",
}
_STEP_HOOKS: dict[EvalKey, ModuleHook] = {
    "val": "validation_step",
    "test": "test_step",
    "predict": "predict_step",
}


class DataConnector:
    """The Trainer's data collaborator: requests loaders from the arguments, datamodule or module, prepares
    them (samplers, worker seeding, resumable positions) and counts their batches under the limits."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.reset()

    def reset(self) -> None:
        """Forget the previous run's loaders: each entry point requests them again."""
        self.sources: dict[str, Any] = {}
        self.train_loader: Any = None
        # the train loaders as the user gave them (after the distributed or sequential sampler is applied),
        # which ``trainer.train_dataloader`` returns; ``train_loader`` is what the loop iterates
        self.train_iterables: Any = None
        self.train_fetcher: LimitedFetcher | None = None
        self.num_training_batches: int | float = INF
        self.val_check_batch: int | float = INF
        self._eval: dict[EvalKey, tuple[list[Any], list[int | float]]] = {}
        # each stage's loaders in the structure they were given (what ``trainer.val_dataloaders`` returns)
        self._eval_iterables: dict[EvalKey, Any] = {}
        self.last_train_reload_epoch = 0
        self.last_val_reload_epoch: float = float("-inf")

    # ---- where loaders come from ------------------------------------------------------------------
    def _request(self, key: LoaderKey) -> Any:
        from lightning_lib.core.datamodule import LightningDataModule
        from lightning_lib.core.module import LightningModule
        from lightning_lib.utilities.model_helpers import is_overridden

        if key in self.sources:
            return self.sources[key]
        hook = _LOADER_HOOKS[key]
        trainer = self.trainer
        datamodule = trainer.datamodule
        if datamodule is not None:
            if is_overridden(hook, datamodule, LightningDataModule):
                return trainer._hooks.datamodule(hook)
            return None
        if is_overridden(hook, trainer.lightning_module, LightningModule):
            return trainer._hooks.module(hook)
        return None

    def source_defined(self, key: LoaderKey) -> bool:
        """Whether the arguments, the datamodule or the module provide loaders for ``key``."""
        from lightning_lib.core.datamodule import LightningDataModule
        from lightning_lib.core.module import LightningModule
        from lightning_lib.utilities.model_helpers import is_overridden

        if key in self.sources:
            return True
        hook = _LOADER_HOOKS[key]
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            return is_overridden(hook, datamodule, LightningDataModule)
        return is_overridden(hook, self.trainer.lightning_module, LightningModule)

    def prepare_all(self, loaders: list[Any], hook: str) -> list[Any]:
        """Each of a stage's loaders as this run iterates it; when overfitting, all of them without shuffling."""
        trainer = self.trainer
        if (
            trainer.overfit_batches > 0
            and trainer.state.fn == TrainerFn.FITTING
            and hook != "predict_dataloader"
        ):
            loaders = _without_shuffling(loaders, hook)
        return [self.prepare(dl, hook) for dl in loaders]

    def prepare(self, loader: Any, hook: str) -> Any:
        """The loader as this run iterates it: sharded across processes, seeded workers."""
        trainer = self.trainer
        check_iterable(loader, hook)
        if hook != "train_dataloader" and is_shuffled(loader):
            rank_zero_warn(
                f"Your `{hook}`'s sampler has shuffling enabled, it is strongly recommended that you turn"
                " shuffling off for val/test dataloaders.",
                category=PossibleUserWarning,
            )
        if trainer.use_distributed_sampler and trainer.world_size > 1:
            loader = with_distributed_sampler(loader, trainer.world_size, trainer.global_rank, hook)
        _check_workers(trainer, loader, hook)
        add_worker_init_fn(loader, trainer.global_rank)
        if trainer.state.fn != TrainerFn.FITTING:
            # samplers that shuffle per epoch see the epoch the model was trained to (a fit sets it per epoch)
            set_sampler_epoch(loader, trainer.current_epoch)
        return loader

    # ---- training data ------------------------------------------------------------------------------
    def setup_train_data(self) -> None:
        """Request, prepare and count the train loaders; decide after which batches validation runs."""
        trainer = self.trainer
        if trainer.limit_train_batches == 0:
            # Lightning neither requests nor counts the train loaders then: the fit has nothing to train on
            self.train_loader = self.train_iterables = self.train_fetcher = None
            self.num_training_batches = INF
            return
        source = self._request("train")
        flat = flatten_loaders(source)
        if not flat and source is not None:
            # an empty collection of loaders: no training batches, and the fit stops at once (Lightning)
            self.train_loader = self.train_fetcher = None
            self.train_iterables = source
            self.num_training_batches = 0
            return
        if not flat:
            raise ValueError(
                "Expected a train dataloader for `trainer.fit`: pass `train_dataloaders`, a datamodule,"
                " or implement `train_dataloader`; received none."
            )
        flat = self.prepare_all(flat, "train_dataloader")
        self._check_lengths(flat)
        if isinstance(source, Mapping | list | tuple):
            # a collection of loaders (nested as deep as wanted) is one CombinedLoader, as in Lightning
            source = CombinedLoader(source, "max_size_cycle")
        if isinstance(source, CombinedLoader):
            source.flattened = flat
            self._check_lengths([source])
            if source.mode == "sequential":
                self.num_training_batches = num_batches(source, trainer.limit_train_batches, "train")
                raise ValueError(
                    '`FitLoop` does not support the `CombinedLoader(mode="sequential")` mode: expected one of'
                    ' "min_size", "max_size_cycle", "max_size" for training, received "sequential".'
                )
            loader: Any = CombinedBatches(source)
            self.train_iterables = source.iterables
        else:
            # Lightning checks the single loader and the combined loader it wraps it in
            self._check_lengths([CombinedLoader(flat[0], "max_size_cycle")])
            self.train_iterables = flat[0]
            # a plain DataLoader is rebuilt so checkpoints can record its position in the epoch
            loader = make_resumable(flat[0])
        self.train_loader = loader
        self.num_training_batches = num_batches(loader, trainer.limit_train_batches, "train")
        self.train_fetcher = LimitedFetcher(loader, self.num_training_batches)
        self.last_train_reload_epoch = trainer.current_epoch
        self._resolve_val_check_batch()
        if (
            trainer.loggers
            and self.num_training_batches < trainer.log_every_n_steps
            and not trainer.fast_dev_run
        ):
            rank_zero_warn(
                f"The number of training batches ({self.num_training_batches}) is smaller than the logging"
                f" interval Trainer(log_every_n_steps={trainer.log_every_n_steps}). Set a lower value for"
                " log_every_n_steps if you want to see logs for the training epoch.",
                category=PossibleUserWarning,
            )

    def _check_lengths(self, loaders: list[Any]) -> None:
        """Lightning's length checks across ranks (a rank with no batches, an iterable dataset with a length)."""
        allow = self.trainer.lightning_module.allow_zero_length_dataloader_with_multiple_devices
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            allow |= datamodule.allow_zero_length_dataloader_with_multiple_devices
        for loader in loaders:
            has_len_all_ranks(loader, self.trainer.strategy, allow)

    def _resolve_val_check_batch(self) -> None:
        trainer = self.trainer
        n = self.num_training_batches
        if trainer._val_check_time_interval is not None:
            self.val_check_batch = INF
        elif isinstance(trainer.val_check_interval, int):
            self.val_check_batch = trainer.val_check_interval
            if (
                self.val_check_batch > n
                and trainer.check_val_every_n_epoch is not None
                and trainer.limit_val_batches > 0
            ):
                raise ValueError(
                    f"`val_check_interval` ({trainer.val_check_interval}) must be less than or equal to the"
                    f" number of the training batches ({n}). If you want to disable validation set"
                    " `limit_val_batches` to 0.0 instead. If you want to validate based on the total training"
                    " batches, set `check_val_every_n_epoch=None`."
                )
        elif n == INF:
            if trainer.val_check_interval != 1.0:
                raise MisconfigurationException(
                    "When using an IterableDataset for `train_dataloader`, `Trainer(val_check_interval)` must be"
                    " time based, `1.0` or an int. An int k specifies checking validation every k training"
                    f" batches. Received val_check_interval={trainer.val_check_interval}."
                )
            self.val_check_batch = INF
        else:
            self.val_check_batch = max(1, int(n * trainer.val_check_interval))

    def reload_train_data_due(self) -> bool:
        n = self.trainer.reload_dataloaders_every_n_epochs
        return bool(n) and self.trainer.current_epoch - self.last_train_reload_epoch >= n

    def train_loaders(self) -> list[Any]:
        """The train loaders as a flat list (the members of a combined loader)."""
        loader = self.train_loader
        if isinstance(loader, CombinedBatches):
            return list(loader.combined.flattened)
        return [loader] if loader is not None else []

    def close_fetchers(self) -> None:
        if self.train_fetcher is not None:
            self.train_fetcher.close()

    # ---- evaluation and prediction data -------------------------------------------------------------
    def setup_eval_data(self, stage: RunningStage) -> None:
        """Request, prepare and count the loaders of an evaluation or prediction stage."""
        from lightning_lib.core.module import LightningModule
        from lightning_lib.utilities.model_helpers import is_overridden

        trainer = self.trainer
        key = _STAGE_KEYS[stage]
        hook = _LOADER_HOOKS[key]
        limit = self._limit(key)
        if limit == 0 or (
            key != "predict"
            and not is_overridden(_STEP_HOOKS[key], trainer.lightning_module, LightningModule)
        ):
            self._eval[key] = ([], [])
            self._eval_iterables.pop(key, None)
            return
        defined = self.source_defined(key)
        source = self._request(key) if defined else None
        if defined and source is None:
            raise TypeError(f"Expected `{hook}()` to return a dataloader (or a list of them), received None.")
        running_fn = trainer.state.fn.value if trainer.state.fn else key
        if not defined and (key != "val" or trainer.state.fn == TrainerFn.VALIDATING):
            raise ValueError(
                f"Expected a {key} dataloader for `trainer.{running_fn}`: pass dataloaders, a datamodule,"
                f" or implement `{hook}`; received none."
            )
        flat = self.prepare_all(flatten_loaders(source), hook)
        self._check_lengths(flat)
        self._eval[key] = (flat, [num_batches(dl, limit, key) for dl in flat])
        combined = source if isinstance(source, CombinedLoader) else CombinedLoader(source)
        combined.flattened = flat
        self._eval_iterables[key] = combined.iterables
        every = trainer.check_val_every_n_epoch
        validates_this_epoch = every is None or (trainer.current_epoch + 1) % every == 0
        # the sanity check's load counts as this epoch's reload only if this epoch validates (Lightning's rule)
        if key == "val" and (not trainer.sanity_checking or validates_this_epoch):
            self.last_val_reload_epoch = trainer.current_epoch

    def _limit(self, key: EvalKey) -> int | float:
        trainer = self.trainer
        return {
            "val": trainer.limit_val_batches,
            "test": trainer.limit_test_batches,
            "predict": trainer.limit_predict_batches,
        }[key]

    def eval_loaders_current(self, stage: RunningStage) -> bool:
        """Whether ``stage``'s loaders are loaded and not due for a reload."""
        trainer = self.trainer
        key = _STAGE_KEYS[stage]
        if key not in self._eval:
            return False
        if key == "val" and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            n = trainer.reload_dataloaders_every_n_epochs
            return not (n and trainer.current_epoch - self.last_val_reload_epoch >= n)
        return True

    @property
    def val_loaders_loaded(self) -> bool:
        return "val" in self._eval

    def eval_loaders(self, stage: RunningStage) -> list[Any]:
        if _STAGE_KEYS[stage] not in self._eval:
            self.setup_eval_data(stage)
        return self._eval[_STAGE_KEYS[stage]][0]

    def eval_limits(self, stage: RunningStage) -> list[int | float]:
        if _STAGE_KEYS[stage] not in self._eval:
            self.setup_eval_data(stage)
        return self._eval[_STAGE_KEYS[stage]][1]

    def loaded(self, key: EvalKey) -> list[Any]:
        """The loaders of ``key`` loaded so far (none before the stage ran)."""
        return self._eval.get(key, ([], []))[0]

    def iterables(self, key: EvalKey) -> Any:
        """The loaders of ``key`` loaded so far, in the structure they were given (None before the stage ran)."""
        return self._eval_iterables.get(key)

    def batch_counts(self, key: EvalKey) -> list[int | float]:
        """How many batches each loaded loader of ``key`` gives under its limit."""
        return list(self._eval.get(key, ([], []))[1])

    @property
    def enable_validation(self) -> bool:
        from lightning_lib.core.module import LightningModule
        from lightning_lib.utilities.model_helpers import is_overridden

        trainer = self.trainer
        return (
            trainer.lightning_module is not None
            and self.source_defined("val")
            and is_overridden("validation_step", trainer.lightning_module, LightningModule)
            and trainer.limit_val_batches > 0
        )

    def set_sampler_epoch(self, epoch: int, loaders: list[Any] | None = None) -> None:
        """Tell each sampler that can shuffle per epoch (DistributedSampler and friends) which epoch it is."""
        targets = loaders if loaders is not None else flatten_loaders(self.train_loaders())
        for dl in targets:
            set_sampler_epoch(dl, epoch)


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch`` once on each of ``loader``'s sampler and its batch sampler's sampler that has one."""
    # the same sampler is often both: a dict by id calls it once (samplers need not be hashable)
    samplers = {}
    for sampler in (
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        if sampler is not None:
            samplers[id(sampler)] = sampler
    for sampler in samplers.values():
        set_epoch = getattr(sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


def is_shuffled(loader: Any) -> bool:
    """Whether ``loader`` draws its samples in random order (a RandomSampler, directly or in its batch sampler)."""
    if isinstance(getattr(loader, "dataset", None), IterableDataset) or not hasattr(loader, "sampler"):
        return False
    batch_sampler = loader.batch_sampler
    sampler = loader.sampler if batch_sampler is None else getattr(batch_sampler, "sampler", batch_sampler)
    return isinstance(sampler, RandomSampler)


def _without_shuffling(loaders: list[Any], hook: str) -> list[Any]:
    """``overfit_batches`` needs the same batches every epoch: loaders that do not read in order are made to."""
    if all(isinstance(dl.sampler, SequentialSampler) for dl in loaders if hasattr(dl, "sampler")):
        return loaders
    prefix = hook.removesuffix("_dataloader")
    rank_zero_warn(
        f"You requested to overfit but enabled {prefix} dataloader shuffling. We are turning off the {prefix}"
        " dataloader shuffling for you."
    )
    return [with_sequential_sampler(dl) if hasattr(dl, "dataset") else dl for dl in loaders]


def _check_workers(trainer: Trainer, loader: Any, name: str) -> None:
    """Lightning's hints about a loader's workers: too few for the CPUs, or re-spawned every epoch."""
    if not isinstance(loader, DataLoader):
        return
    upper_bound = suggested_max_num_workers(trainer.num_devices)
    context = loader.multiprocessing_context
    start_method = context.get_start_method() if context is not None else mp.get_start_method()
    if loader.num_workers > 0 and start_method == "spawn" and not loader.persistent_workers:
        rank_zero_warn(
            f"Consider setting `persistent_workers=True` in '{name}' to speed up the dataloader worker"
            " initialization."
        )
    elif loader.num_workers < 2 and upper_bound > 1:
        rank_zero_warn(
            f"The '{name}' does not have many workers which may be a bottleneck. Consider increasing the value"
            f" of the `num_workers` argument` to `num_workers={upper_bound}` in the `DataLoader` to improve"
            " performance.",
            category=PossibleUserWarning,
        )


def info_once(trainer: Trainer, message: str) -> None:
    """Log ``message`` at INFO once per Trainer."""
    seen = trainer._run_state.infos_seen
    if message not in seen:
        seen.add(message)
        log.info(message)
