"""What a Trainer run does between the entry point and the loops: setup, data, teardown, failure.

The order is Lightning's ``Trainer._run``: prepare_data, setup, configure_model, optimizers,
on_fit_start, hyper-parameter logging, checkpoint restore, the loops, on_fit_end, teardown.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.core.optimizer import LightningOptimizer, parse_optimizers
from lightning_lib.loop import evaluation as loops
from lightning_lib.loop.data import TrainerData
from lightning_lib.loop.fit import run_fit
from lightning_lib.loop.results import to_python_scalars
from lightning_lib.loop.step import TrainerSteps
from lightning_lib.trainer.states import RunningStage, TrainerFn, TrainerStatus

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

log = logging.getLogger("lightning_lib")


class SIGTERMException(SystemExit):
    """Raised at the next batch boundary after SIGTERM, so callbacks can save before the process exits."""


class TrainerLifecycle(TrainerData, TrainerSteps):
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
        from lightning_lib.checkpoint._format import (
            load_file,
            restore_modules,
            restore_training_state,
            select_ckpt_path,
        )
        from lightning_lib.core.module import LightningModule

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
        # the other ranks are started (or joined) before anything is read: "last" is chosen by rank zero
        self.strategy.setup_environment()
        self._verified_checkpoint: tuple[str, dict[str, Any]] | None = None
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
            explained = self.strategy.explain_failure(exc)
            if explained is not None:
                raise explained from exc
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
        prefetched, self._verified_checkpoint = self._verified_checkpoint, None
        verified = prefetched[1] if prefetched is not None and prefetched[0] == ckpt else None
        checkpoint = (
            load_file(ckpt, map_location=self.strategy.root_device, verified=verified) if ckpt else None
        )
        del prefetched, verified
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
            self.strategy.barrier("fit_end")  # ... on every rank: rank zero committed them
            self._hooks.callbacks("on_fit_end")
            self._hooks.module("on_fit_end")
        self._teardown_hooks(fn)
        self.strategy.teardown()
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
                    log_exception = getattr(logger, "log_exception", None)
                    if callable(log_exception):  # lets a logger tell a kill (KILLED) from a failure (FAILED)
                        log_exception(exc)
                    logger.finalize("failed")
                except Exception:  # a logger failing must not hide the original error
                    log.exception("logger.finalize('failed') raised")
            self._close_fetchers()
            self.strategy.teardown()
            self.state.stage = None

    def _check_model(  # type: ignore[misc]
        self: Trainer, model: Any, fn: TrainerFn, loaders: dict[str, Any], datamodule: Any
    ) -> None:
        from lightning_lib.core.module import LightningModule
        from lightning_lib.loop.hooks import overrides

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
        if not self.loggers:
            return
        params: dict[str, Any] = {}
        if not self.enable_autolog_hparams:
            pass  # log_graph still runs: loggers learn about the module there
        elif datamodule is not None and getattr(datamodule, "_log_hyperparams", True):
            params.update(datamodule.hparams_initial)
        if self.enable_autolog_hparams and getattr(model, "_log_hyperparams", True):
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
        if not self.is_global_zero:
            return
        rows = [(name, value, idx) for idx, res in enumerate(results) for name, value in sorted(res.items())]
        if not rows:
            return
        title = f"{'Test' if stage == RunningStage.TESTING else 'Validate'} metric"
        width = max(len(title), *(len(r[0]) for r in rows)) + 2
        lines = [f"{title:<{width}}DataLoader {{idx}} value".replace("{idx}", "")]
        for name, value, idx in rows:
            lines.append(f"{name:<{width}}{idx:<12}{value}")
        print("\n".join(lines))

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
