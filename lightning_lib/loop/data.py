"""The Trainer's data plumbing: requesting, preparing and counting dataloaders, and when to validate."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from lightning_lib.checkpoint._positions import make_resumable
from lightning_lib.loop.loaders import (
    INF,
    CycleLoaders,
    LimitedFetcher,
    add_worker_init_fn,
    check_iterable,
    flatten_loaders,
    num_batches,
    with_distributed_sampler,
    with_sequential_sampler,
)
from lightning_lib.loop.results import ResultCollection
from lightning_lib.trainer.states import RunningStage, TrainerFn

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

log = logging.getLogger("lightning_lib")

_STAGE_KEYS = {
    RunningStage.VALIDATING: "val",
    RunningStage.SANITY_CHECKING: "val",
    RunningStage.TESTING: "test",
    RunningStage.PREDICTING: "predict",
}


class TrainerData:
    """Mixin of ``Trainer``: where its dataloaders come from and how many batches each loop takes."""

    # ---- data ----------------------------------------------------------------------------------------
    def _reset_data_state(self: Trainer) -> None:  # type: ignore[misc]
        self._loader_sources: dict[str, Any] = {}
        self._train_loader: Any = None
        self._train_fetcher: LimitedFetcher | None = None
        self.num_training_batches: int | float = INF
        self._eval: dict[str, tuple[list[Any], list[int | float]]] = {}
        self._last_train_reload_epoch = 0
        self._last_val_reload_epoch = 0
        self.val_check_batch: int | float = INF
        self._last_val_time = time.monotonic()
        self._accumulating = False
        self._val_has_run = False
        self._step_args_cache: dict[int, bool] = {}
        self.ckpt_path = getattr(self, "ckpt_path", None)

    def _request_loaders(self: Trainer, key: str) -> Any:  # type: ignore[misc]
        from lightning_lib.loop.hooks import overrides

        if key in self._loader_sources:
            return self._loader_sources[key]
        hook = {
            "train": "train_dataloader",
            "val": "val_dataloader",
            "test": "test_dataloader",
            "predict": "predict_dataloader",
        }[key]
        datamodule = self.datamodule
        if datamodule is not None:
            from lightning_lib.core.datamodule import LightningDataModule

            if overrides(datamodule, hook, LightningDataModule):
                return getattr(datamodule, hook)()
            return None
        from lightning_lib.core.module import LightningModule

        if overrides(self.lightning_module, hook, LightningModule):
            return self._hooks.module(hook)
        return None

    def _source_defined(self: Trainer, key: str) -> bool:  # type: ignore[misc]
        from lightning_lib.loop.hooks import overrides

        if key in self._loader_sources:
            return True
        hook = f"{key}_dataloader"
        if self.datamodule is not None:
            from lightning_lib.core.datamodule import LightningDataModule

            return overrides(self.datamodule, hook, LightningDataModule)
        from lightning_lib.core.module import LightningModule

        return overrides(self.lightning_module, hook, LightningModule)

    def _prepare_loader(self: Trainer, loader: Any, hook: str) -> Any:  # type: ignore[misc]
        check_iterable(loader, hook)
        if self.overfit_batches > 0 and self.state.fn == TrainerFn.FITTING:
            loader = with_sequential_sampler(loader)
        if self.use_distributed_sampler and self.world_size > 1:
            loader = with_distributed_sampler(loader, self.world_size, self.global_rank, hook)
        add_worker_init_fn(loader, self.global_rank)
        return loader

    def _setup_train_data(self: Trainer) -> None:  # type: ignore[misc]
        source = self._request_loaders("train")
        flat = flatten_loaders(source)
        if not flat:
            raise ValueError(
                "Expected a train dataloader for `trainer.fit`: pass `train_dataloaders`, a datamodule,"
                " or implement `train_dataloader`; received none."
            )
        flat = [self._prepare_loader(dl, "train_dataloader") for dl in flat]
        if isinstance(source, dict):
            loader: Any = CycleLoaders(dict(zip(source.keys(), flat)))
        elif isinstance(source, list | tuple):
            loader = CycleLoaders(flat)
        else:
            # a plain DataLoader is rebuilt so checkpoints can record its position in the epoch
            loader = make_resumable(flat[0])
        self._train_loader = loader
        self.num_training_batches = num_batches(loader, self.limit_train_batches, "train")
        self._train_fetcher = LimitedFetcher(loader, self.num_training_batches)
        self._last_train_reload_epoch = self.current_epoch
        self._resolve_val_check_batch()
        if self.loggers and self.num_training_batches < self.log_every_n_steps and not self.fast_dev_run:
            self._info_once(
                f"The number of training batches ({self.num_training_batches}) is smaller than the logging"
                f" interval Trainer(log_every_n_steps={self.log_every_n_steps})."
            )

    def _resolve_val_check_batch(self: Trainer) -> None:  # type: ignore[misc]
        n = self.num_training_batches
        if self._val_check_time_interval is not None:
            self.val_check_batch = INF
        elif isinstance(self.val_check_interval, int):
            self.val_check_batch = self.val_check_interval
            if (
                self.val_check_batch > n
                and self.check_val_every_n_epoch is not None
                and self.limit_val_batches > 0
            ):
                raise ValueError(
                    f"Expected val_check_interval <= the number of training batches ({n}), received"
                    f" {self.val_check_interval}; set check_val_every_n_epoch=None to count across epochs."
                )
        elif n == INF:
            if self.val_check_interval != 1.0:
                raise ValueError(
                    "Expected val_check_interval to be 1.0 or an int for a train dataloader without a length,"
                    f" received {self.val_check_interval}."
                )
            self.val_check_batch = INF
        else:
            self.val_check_batch = max(1, int(n * self.val_check_interval))

    def _setup_eval_data(self: Trainer, stage: RunningStage) -> None:  # type: ignore[misc]
        key = _STAGE_KEYS[stage]
        hook = f"{key}_dataloader"
        step = {"val": "validation_step", "test": "test_step", "predict": "predict_step"}[key]
        limit = getattr(self, f"limit_{key}_batches")
        from lightning_lib.core.module import LightningModule
        from lightning_lib.loop.hooks import overrides

        if limit == 0 or (key != "predict" and not overrides(self.lightning_module, step, LightningModule)):
            self._eval[key] = ([], [])
            return
        defined = self._source_defined(key)
        source = self._request_loaders(key) if defined else None
        if defined and source is None:
            raise TypeError(f"Expected `{hook}()` to return a dataloader (or a list of them), received None.")
        running_fn = self.state.fn.value if self.state.fn else key
        if not defined and (key != "val" or self.state.fn == TrainerFn.VALIDATING):
            raise ValueError(
                f"Expected a {key} dataloader for `trainer.{running_fn}`: pass dataloaders, a datamodule,"
                f" or implement `{hook}`; received none."
            )
        flat = [self._prepare_loader(dl, hook) for dl in flatten_loaders(source)]
        self._eval[key] = (flat, [num_batches(dl, limit, key) for dl in flat])
        if key == "val":
            self._last_val_reload_epoch = self.current_epoch

    def _eval_loaders_loaded(self: Trainer, stage: RunningStage) -> bool:  # type: ignore[misc]
        key = _STAGE_KEYS[stage]
        if key not in self._eval:
            return False
        if key == "val" and self.state.fn == TrainerFn.FITTING and not self.sanity_checking:
            n = self.reload_dataloaders_every_n_epochs
            return not (n and self.current_epoch - self._last_val_reload_epoch >= n)
        return True

    @property
    def _val_loaders_loaded(self: Trainer) -> bool:  # type: ignore[misc]
        return "val" in self._eval

    def _eval_loaders(self: Trainer, stage: RunningStage) -> list[Any]:  # type: ignore[misc]
        if _STAGE_KEYS[stage] not in self._eval:
            self._setup_eval_data(stage)
        return self._eval[_STAGE_KEYS[stage]][0]

    def _eval_limits(self: Trainer, stage: RunningStage) -> list[int | float]:  # type: ignore[misc]
        if _STAGE_KEYS[stage] not in self._eval:
            self._setup_eval_data(stage)
        return self._eval[_STAGE_KEYS[stage]][1]

    def _eval_results(self: Trainer, stage: RunningStage) -> ResultCollection:  # type: ignore[misc]
        return self._eval_result_sets[stage]

    @property
    def num_val_batches(self: Trainer) -> list[int | float]:  # type: ignore[misc]
        return list(self._eval.get("val", ([], []))[1])

    @property
    def num_test_batches(self: Trainer) -> list[int | float]:  # type: ignore[misc]
        return list(self._eval.get("test", ([], []))[1])

    @property
    def num_predict_batches(self: Trainer) -> list[int | float]:  # type: ignore[misc]
        return list(self._eval.get("predict", ([], []))[1])

    @property
    def num_sanity_val_batches(self: Trainer) -> list[int | float]:  # type: ignore[misc]
        return [min(self.num_sanity_val_steps, n) for n in self._eval_limits(RunningStage.VALIDATING)]

    @property
    def train_dataloader(self: Trainer) -> Any:  # type: ignore[misc]
        return self._train_loader

    @property
    def val_dataloaders(self: Trainer) -> Any:  # type: ignore[misc]
        loaders = self._eval.get("val", ([], []))[0]
        return loaders[0] if len(loaders) == 1 else (loaders or None)

    @property
    def test_dataloaders(self: Trainer) -> Any:  # type: ignore[misc]
        loaders = self._eval.get("test", ([], []))[0]
        return loaders[0] if len(loaders) == 1 else (loaders or None)

    @property
    def enable_validation(self: Trainer) -> bool:  # type: ignore[misc]
        from lightning_lib.core.module import LightningModule
        from lightning_lib.loop.hooks import overrides

        return (
            self.lightning_module is not None
            and self._source_defined("val")
            and overrides(self.lightning_module, "validation_step", LightningModule)
            and self.limit_val_batches > 0
        )

    def _set_sampler_epoch(self: Trainer, epoch: int, loaders: list[Any] | None = None) -> None:  # type: ignore[misc]
        targets = loaders if loaders is not None else flatten_loaders(self._loader_list())
        for dl in targets:
            for sampler in (
                getattr(dl, "sampler", None),
                getattr(getattr(dl, "batch_sampler", None), "sampler", None),
            ):
                set_epoch = getattr(sampler, "set_epoch", None)
                if callable(set_epoch):
                    set_epoch(epoch)

    def _loader_list(self: Trainer) -> list[Any]:  # type: ignore[misc]
        loader = self._train_loader
        if isinstance(loader, CycleLoaders):
            return list(loader._values)
        return [loader] if loader is not None else []

    def _reload_train_data_due(self: Trainer) -> bool:  # type: ignore[misc]
        n = self.reload_dataloaders_every_n_epochs
        return bool(n) and self.current_epoch - self._last_train_reload_epoch >= n

    def _close_fetchers(self: Trainer) -> None:  # type: ignore[misc]
        if self._train_fetcher is not None:
            self._train_fetcher.close()

    # ---- decisions the loops ask for -----------------------------------------------------------------
    def _should_check_val_epoch(self: Trainer) -> bool:  # type: ignore[misc]
        return self.enable_validation and (
            self.check_val_every_n_epoch is None
            or (self.current_epoch + 1) % self.check_val_every_n_epoch == 0
        )

    def _should_check_val(self: Trainer, fetcher: LimitedFetcher) -> bool:  # type: ignore[misc]
        """Whether to validate after this batch; the caller has checked ``_should_check_val_epoch``."""
        is_last = fetcher.done
        infinite = self.val_check_batch == INF
        if is_last and infinite:
            return True
        if self.should_stop and self._can_stop_early():
            return True
        if self._val_check_time_interval is not None:
            due = time.monotonic() - self._last_val_time >= self._val_check_time_interval
            # rank zero's clock decides: validation's collectives need every rank at the same batch
            return bool(self.strategy.broadcast(due)) if self.world_size > 1 else due
        if self.val_check_batch != INF:
            current = (
                self.progress.total_batch_idx
                if self.check_val_every_n_epoch is None
                else self.progress.batch_idx
            )
            return (current + 1) % self.val_check_batch == 0
        return is_last

    def _epoch_batches_reached(self: Trainer) -> bool:  # type: ignore[misc]
        fetcher = self._train_fetcher
        return self.progress.epoch_batches_done == self.num_training_batches or (
            fetcher is not None and fetcher.done and self.progress.epoch_batches_done > 0
        )

    def _can_stop_early(self: Trainer) -> bool:  # type: ignore[misc]
        epochs_ok = self.progress.current_epoch >= self.min_epochs if self.min_epochs else True
        steps_ok = self.progress.global_step >= self.min_steps if self.min_steps else True
        return epochs_ok and steps_ok

    def _info_once(self: Trainer, message: str) -> None:  # type: ignore[misc]
        seen: set[str] = self.__dict__.setdefault("_infos_seen", set())
        if message not in seen:
            seen.add(message)
            log.info(message)
