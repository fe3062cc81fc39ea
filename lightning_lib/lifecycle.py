"""What a Trainer run does between the entry point and the loops: setup, data, teardown, failure.

The order is Lightning's ``Trainer._run``: prepare_data, setup, configure_model, optimizers,
on_fit_start, hyper-parameter logging, checkpoint restore, the loops, on_fit_end, teardown.
"""

from __future__ import annotations

import inspect
import logging
import signal
import threading
import time
import warnings
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib import loops
from lightning_lib.data import (
    INF,
    CycleLoaders,
    LimitedFetcher,
    add_worker_init_fn,
    check_iterable,
    flatten_loaders,
    num_batches,
    with_sequential_sampler,
)
from lightning_lib.fit_loop import run_fit
from lightning_lib.metrics import ResultCollection, to_python_scalars
from lightning_lib.optim import LightningOptimizer, parse_optimizers
from lightning_lib.resume import make_resumable
from lightning_lib.state import RunningStage, TrainerFn, TrainerStatus

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

log = logging.getLogger("lightning_lib")


class SIGTERMException(SystemExit):
    """Raised at the next batch boundary after SIGTERM, so callbacks can save before the process exits."""


_STAGE_KEYS = {
    RunningStage.VALIDATING: "val",
    RunningStage.SANITY_CHECKING: "val",
    RunningStage.TESTING: "test",
    RunningStage.PREDICTING: "predict",
}


class TrainerLifecycle:
    """Mixin of ``Trainer``: the run, its data plumbing and the per-step helpers the loops call."""

    ckpt_path: str | None

    # ---- the run -------------------------------------------------------------------------------------
    def _run(  # type: ignore[misc]
        self: Trainer,
        fn: TrainerFn,
        model: Any,
        datamodule: Any,
        loaders: dict[str, Any],
        ckpt_path: Any,
        verbose: bool = True,
        return_predictions: bool = True,
        model_provided: bool = True,
    ) -> Any:
        from lightning_lib.checkpoint_io import (
            load_file,
            restore_modules,
            restore_training_state,
            select_ckpt_path,
        )
        from lightning_lib.module import LightningModule

        if not isinstance(model, LightningModule):
            raise TypeError(f"Expected a lightning_lib LightningModule, received {type(model).__name__}.")
        self.state.fn = fn
        self.state.status = TrainerStatus.RUNNING
        self.state.stage = {
            TrainerFn.FITTING: RunningStage.TRAINING,
            TrainerFn.VALIDATING: RunningStage.VALIDATING,
            TrainerFn.TESTING: RunningStage.TESTING,
            TrainerFn.PREDICTING: RunningStage.PREDICTING,
        }[fn]
        self.should_stop = False
        self._check_model(model, fn, loaders, datamodule)
        ckpt = select_ckpt_path(self, fn, ckpt_path, model_provided)
        self.lightning_module = model
        model.trainer = self
        self.datamodule = datamodule
        if datamodule is not None:
            datamodule.trainer = self
        self._reset_data_state()
        self._loader_sources.update({k: v for k, v in loaders.items() if v is not None})
        self._attach_model_callbacks(model)
        self._hooks.reset()
        self.ckpt_path = ckpt
        self._received_sigterm = False
        self._resume: dict[str, Any] | None = None
        try:
            return self._run_stages(
                fn,
                model,
                datamodule,
                ckpt,
                verbose,
                return_predictions,
                load_file,
                restore_modules,
                restore_training_state,
            )
        except BaseException as exc:
            self._on_failure(exc)
            raise

    def _run_stages(  # type: ignore[misc]
        self: Trainer,
        fn: TrainerFn,
        model: Any,
        datamodule: Any,
        ckpt: str | None,
        verbose: bool,
        return_predictions: bool,
        load_file: Any,
        restore_modules: Any,
        restore_training_state: Any,
    ) -> Any:
        if datamodule is not None:
            datamodule.prepare_data()
        model.prepare_data()
        self._hooks.datamodule("setup", stage=fn.value)
        self._hooks.callbacks("setup", fn.value)
        self._hooks.module("setup", fn.value)
        self._hooks.module("configure_model")
        checkpoint = load_file(ckpt, map_location=self.strategy.root_device) if ckpt else None
        if checkpoint is not None:
            restore_modules(self, checkpoint)
        self._logger_connector.reset_results()
        self._logger_connector.reset_metrics()
        self.strategy.setup_module(model)
        if fn == TrainerFn.FITTING:
            self._setup_optimizers(model)
            self._hooks.callbacks("on_fit_start")
            self._hooks.module("on_fit_start")
            self._log_hyperparams(model, datamodule)
        if checkpoint is not None and fn == TrainerFn.FITTING:
            restore_training_state(self, checkpoint)
        del checkpoint
        handler_context = self._sigterm_handler() if fn == TrainerFn.FITTING else nullcontext()
        self.lightning_module.zero_grad(set_to_none=True)
        with handler_context, torch.autograd.set_detect_anomaly(self.detect_anomaly):
            if fn == TrainerFn.FITTING:
                run_fit(self)
                results: Any = None
            elif fn == TrainerFn.PREDICTING:
                results = loops.run_predict(self, return_predictions)
            else:
                stage = RunningStage.TESTING if fn == TrainerFn.TESTING else RunningStage.VALIDATING
                outputs = loops.run_evaluation(self, stage)
                results = [to_python_scalars(out) for out in outputs]
                if verbose:
                    self._print_results(results, stage)
        if fn == TrainerFn.FITTING:
            self._checkpoint_writer.wait()  # fit returns only once every checkpoint is committed
            self._hooks.callbacks("on_fit_end")
            self._hooks.module("on_fit_end")
        self._teardown_hooks(fn)
        for logger in self.loggers:
            logger.finalize("success")
        self.state.status = TrainerStatus.FINISHED
        self.state.stage = None
        return results

    def _teardown_hooks(self: Trainer, fn: TrainerFn) -> None:  # type: ignore[misc]
        self._hooks.datamodule("teardown", stage=fn.value)
        self._hooks.callbacks("teardown", fn.value)
        self._hooks.module("teardown", fn.value)
        self._close_fetchers()

    def _on_failure(self: Trainer, exc: BaseException) -> None:  # type: ignore[misc]
        """Lightning's interrupt path: on_exception everywhere, loggers finalised as failed."""
        self.state.status = TrainerStatus.INTERRUPTED
        module = self.lightning_module
        try:
            if module is not None:
                self._hooks.callbacks("on_exception", exc)
            if self.datamodule is not None and hasattr(self.datamodule, "on_exception"):
                self.datamodule.on_exception(exc)
        finally:
            try:
                self._checkpoint_writer.wait()  # what on_exception saved must be committed before exit
            except Exception:
                log.exception("A checkpoint could not be committed while handling %r", exc)
            for logger in self.loggers:
                try:
                    logger.finalize("failed")
                except Exception:  # a logger failing must not hide the original error
                    log.exception("logger.finalize('failed') raised")
            self._close_fetchers()
            self.state.stage = None

    def _check_model(  # type: ignore[misc]
        self: Trainer, model: Any, fn: TrainerFn, loaders: dict[str, Any], datamodule: Any
    ) -> None:
        from lightning_lib.hooks import overrides
        from lightning_lib.module import LightningModule

        if fn == TrainerFn.FITTING:
            if not overrides(model, "training_step", LightningModule):
                raise ValueError(
                    "Expected the LightningModule to implement `training_step` for `trainer.fit`."
                )
            if not overrides(model, "configure_optimizers", LightningModule):
                raise ValueError(
                    "Expected the LightningModule to implement `configure_optimizers` for `trainer.fit`."
                )
        if fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
            step = "validation_step" if fn == TrainerFn.VALIDATING else "test_step"
            if not overrides(model, step, LightningModule):
                raise ValueError(
                    f"Expected the LightningModule to implement `{step}` for `trainer.{fn.value}`."
                )
        if not model.automatic_optimization and (self.accumulate_grad_batches != 1 or self.gradient_clip_val):
            raise ValueError(
                "Expected accumulate_grad_batches=1 and no gradient_clip_val with manual optimization"
                f" (automatic_optimization=False), received accumulate_grad_batches={self.accumulate_grad_batches},"
                f" gradient_clip_val={self.gradient_clip_val}; do both inside `training_step`."
            )

    def _attach_model_callbacks(self: Trainer, model: Any) -> None:  # type: ignore[misc]
        from lightning_lib.callbacks.model_checkpoint import Checkpoint

        extra = model.configure_callbacks()
        if extra:
            extra = list(extra) if isinstance(extra, list | tuple) else [extra]
            replaced = {type(cb) for cb in extra}
            self.callbacks = [cb for cb in self.callbacks if type(cb) not in replaced] + extra
        # checkpoints last, so they see every metric the other callbacks logged
        self.callbacks = [cb for cb in self.callbacks if not isinstance(cb, Checkpoint)] + [
            cb for cb in self.callbacks if isinstance(cb, Checkpoint)
        ]

    def _setup_optimizers(self: Trainer, model: Any) -> None:  # type: ignore[misc]
        conf = self._hooks.module("configure_optimizers")
        self.optimizers, self.lr_scheduler_configs = parse_optimizers(conf)
        if model.automatic_optimization and len(self.optimizers) > 1:
            raise ValueError(
                "Expected one optimizer with automatic optimization, received"
                f" {len(self.optimizers)}; set `self.automatic_optimization = False` and step them in"
                " `training_step`."
            )
        self.strategy._lightning_optimizers = [LightningOptimizer(opt, self) for opt in self.optimizers]

    def _log_hyperparams(self: Trainer, model: Any, datamodule: Any) -> None:  # type: ignore[misc]
        if not self.loggers or not self.enable_autolog_hparams:
            return
        params: dict[str, Any] = {}
        if datamodule is not None and getattr(datamodule, "_log_hyperparams", True):
            params.update(datamodule.hparams_initial)
        if getattr(model, "_log_hyperparams", True):
            model_params = model.hparams_initial
            clash = [k for k in model_params if k in params and params[k] != model_params[k]]
            if clash:
                raise ValueError(
                    f"Expected the model and datamodule hyper-parameters to agree, received different values for {clash}."
                )
            params.update(model_params)
        for logger in self.loggers:
            if params:
                logger.log_hyperparams(params)
            logger.log_graph(model)
            logger.save()

    def _print_results(self: Trainer, results: list[dict[str, Any]], stage: RunningStage) -> None:  # type: ignore[misc]
        rows = [(name, value, idx) for idx, res in enumerate(results) for name, value in sorted(res.items())]
        if not rows:
            return
        title = f"{'Test' if stage == RunningStage.TESTING else 'Validate'} metric"
        width = max(len(title), *(len(r[0]) for r in rows)) + 2
        lines = [f"{title:<{width}}DataLoader {{idx}} value".replace("{idx}", "")]
        for name, value, idx in rows:
            lines.append(f"{name:<{width}}{idx:<12}{value}")
        print("\n".join(lines))

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
        from lightning_lib.hooks import overrides

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
            from lightning_lib.datamodule import LightningDataModule

            if overrides(datamodule, hook, LightningDataModule):
                return getattr(datamodule, hook)()
            return None
        from lightning_lib.module import LightningModule

        if overrides(self.lightning_module, hook, LightningModule):
            return self._hooks.module(hook)
        return None

    def _source_defined(self: Trainer, key: str) -> bool:  # type: ignore[misc]
        from lightning_lib.hooks import overrides

        if key in self._loader_sources:
            return True
        hook = f"{key}_dataloader"
        if self.datamodule is not None:
            from lightning_lib.datamodule import LightningDataModule

            return overrides(self.datamodule, hook, LightningDataModule)
        from lightning_lib.module import LightningModule

        return overrides(self.lightning_module, hook, LightningModule)

    def _prepare_loader(self: Trainer, loader: Any, hook: str) -> Any:  # type: ignore[misc]
        check_iterable(loader, hook)
        if self.overfit_batches > 0 and self.state.fn == TrainerFn.FITTING:
            loader = with_sequential_sampler(loader)
        add_worker_init_fn(loader)
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
        from lightning_lib.hooks import overrides
        from lightning_lib.module import LightningModule

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
        from lightning_lib.hooks import overrides
        from lightning_lib.module import LightningModule

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
            return time.monotonic() - self._last_val_time >= self._val_check_time_interval
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

    # ---- per-step helpers ----------------------------------------------------------------------------
    def _batch_transfer(self: Trainer, dataloader_idx: int) -> Any:  # type: ignore[misc]
        """The batch path to the device; on CPU with default hooks it is the identity.

        As in Lightning, a datamodule's transfer hook replaces the module's when the datamodule overrides it.
        """
        precision = self.precision_plugin
        device = self.strategy.root_device
        calls = [
            self._batch_hook(n)
            for n in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
        ]
        from lightning_lib.precision import Precision

        converts = type(precision).convert_input is not Precision.convert_input
        if device.type == "cpu" and not any(custom for _, custom in calls) and not converts:
            return lambda batch: batch
        (before, _), (to_device, _), (after, _) = calls

        def transfer(batch: Any) -> Any:
            batch = precision.convert_input(batch)
            batch = before("on_before_batch_transfer", batch, dataloader_idx)
            batch = to_device("transfer_batch_to_device", batch, device, dataloader_idx)
            return after("on_after_batch_transfer", batch, dataloader_idx)

        return transfer

    def _batch_hook(self: Trainer, name: str) -> tuple[Any, bool]:  # type: ignore[misc]
        """Who runs batch-transfer hook ``name`` (the datamodule's override wins), and whether it is custom."""
        from lightning_lib.datamodule import LightningDataModule
        from lightning_lib.hooks import overrides

        module_custom = self._hooks.module_overrides(name)
        datamodule = self.datamodule
        if datamodule is not None and overrides(datamodule, name, LightningDataModule):
            seen: set[str] = self.__dict__.setdefault("_batch_hook_warnings", set())
            if module_custom and name not in seen:
                seen.add(name)
                warnings.warn(
                    f"`{name}` is overridden in both the LightningModule and the LightningDataModule;"
                    " the LightningDataModule's is used.",
                    UserWarning,
                    stacklevel=2,
                )
            return self._hooks.datamodule, True
        return self._hooks.module, module_custom

    def _takes_batch_idx(self: Trainer, fn: Any) -> bool:  # type: ignore[misc]
        key = id(getattr(fn, "__func__", fn))
        cached = self._step_args_cache.get(key)
        if cached is None:
            params = list(inspect.signature(fn).parameters.values())
            has_var = any(p.kind == p.VAR_POSITIONAL for p in params)
            cached = has_var or "batch_idx" in {p.name for p in params} or len(params) >= 2
            self._step_args_cache[key] = cached
        return cached

    def _training_step_args(self: Trainer, batch: Any, batch_idx: int) -> tuple[Any, ...]:  # type: ignore[misc]
        if self._takes_batch_idx(self.lightning_module.training_step):
            return (batch, batch_idx)
        return (batch,)

    def _backward(self: Trainer, loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[misc]
        hooks = self._hooks
        scaled = self.precision_plugin.scale_loss(loss)
        hooks.callbacks("on_before_backward", scaled)
        if hooks.module_overrides("on_before_backward"):
            hooks.module("on_before_backward", scaled)
        hooks.module("backward", scaled, *args, **kwargs)
        hooks.callbacks("on_after_backward")
        if hooks.module_overrides("on_after_backward"):
            hooks.module("on_after_backward")

    def _optimizer_step(self: Trainer, optimizer: torch.optim.Optimizer, closure: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        hooks = self._hooks
        module = self.lightning_module
        automatic = module.automatic_optimization
        clip = automatic and (
            bool(self.gradient_clip_val) or hooks.module_overrides("configure_gradient_clipping")
        )

        def after_closure() -> None:
            hooks.callbacks("on_before_optimizer_step", optimizer)
            if hooks.module_overrides("on_before_optimizer_step"):
                hooks.module("on_before_optimizer_step", optimizer)
            if clip:
                hooks.module(
                    "configure_gradient_clipping",
                    optimizer,
                    gradient_clip_val=self.gradient_clip_val,
                    gradient_clip_algorithm=self.gradient_clip_algorithm,
                )

        out = self.precision_plugin.optimizer_step(
            optimizer, closure or _no_op_closure, after_closure, automatic, **kwargs
        )
        if not automatic:
            self.progress.global_step += 1
        return out

    def _clip_gradients(self: Trainer, optimizer: Any, clip_val: Any, algorithm: str | None) -> None:  # type: ignore[misc]
        if clip_val is None:
            clip_val = self.gradient_clip_val or 0.0
        elif self.gradient_clip_val is not None and self.gradient_clip_val != clip_val:
            raise ValueError(
                f"Expected one gradient_clip_val, received Trainer(gradient_clip_val={self.gradient_clip_val})"
                f" and clip_gradients(gradient_clip_val={clip_val}); use only one."
            )
        if algorithm is None:
            algorithm = self.gradient_clip_algorithm or "norm"
        else:
            algorithm = algorithm.lower()
            if self.gradient_clip_algorithm is not None and self.gradient_clip_algorithm != algorithm:
                raise ValueError(
                    f"Expected one gradient_clip_algorithm, received Trainer({self.gradient_clip_algorithm!r})"
                    f" and clip_gradients({algorithm!r}); use only one."
                )
        if isinstance(clip_val, bool) or not isinstance(clip_val, int | float):
            raise TypeError(f"Expected gradient_clip_val to be an int or a float, received {clip_val!r}.")
        if algorithm not in ("norm", "value"):
            raise ValueError(f"Expected gradient_clip_algorithm 'norm' or 'value', received {algorithm!r}.")
        if clip_val <= 0:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, clip_value=clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, clip_val)

    # ---- SIGTERM -------------------------------------------------------------------------------------
    def _sigterm_handler(self: Trainer) -> Any:  # type: ignore[misc]
        trainer = self

        class _Handler:
            previous: Any = None

            def __enter__(self) -> None:
                if threading.current_thread() is not threading.main_thread():
                    return
                self.previous = signal.getsignal(signal.SIGTERM)

                def on_sigterm(signum: int, frame: Any) -> None:
                    log.warning("Received SIGTERM: stopping at the next batch boundary.")
                    trainer._received_sigterm = True

                signal.signal(signal.SIGTERM, on_sigterm)

            def __exit__(self, *exc: Any) -> None:
                if self.previous is not None:
                    signal.signal(signal.SIGTERM, self.previous)

        return _Handler()

    def _raise_sigterm(self: Trainer) -> None:  # type: ignore[misc]
        raise SIGTERMException(128 + signal.SIGTERM)


def _no_op_closure() -> None:
    return None
