"""What a Trainer run does between the entry point and the loops: setup, data, teardown, failure.

The order is Lightning's ``Trainer._run``: prepare_data, setup, configure_model, optimizers,
on_fit_start, hyper-parameter logging, checkpoint restore, the loops, on_fit_end, teardown.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from lightning_lib.checkpoint._format import load_file
from lightning_lib.checkpoint._resume import restore_modules, restore_training_state, select_ckpt_path
from lightning_lib.core.optimizer import LightningOptimizer, parse_optimizers
from lightning_lib.loop.evaluation import run_evaluation
from lightning_lib.loop.fit import run_fit
from lightning_lib.loop.predict import run_predict
from lightning_lib.loop.results import to_python_scalars
from lightning_lib.trainer.states import RunningStage, TrainerFn, TrainerStatus
from lightning_lib.utilities.exceptions import _TunerExitException
from lightning_lib.utilities.rank_zero import rank_zero_info, rank_zero_warn
from lightning_lib.utilities.warnings import PossibleUserWarning

if TYPE_CHECKING:
    from lightning_lib.core.datamodule import LightningDataModule
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

log = logging.getLogger("lightning_lib")

_STAGE_OF = {
    TrainerFn.FITTING: RunningStage.TRAINING,
    TrainerFn.VALIDATING: RunningStage.VALIDATING,
    TrainerFn.TESTING: RunningStage.TESTING,
    TrainerFn.PREDICTING: RunningStage.PREDICTING,
}


def run(
    trainer: Trainer,
    fn: TrainerFn,
    model: LightningModule,
    datamodule: LightningDataModule | None,
    loaders: dict[str, Any],
    ckpt_path: Any,
    weights_only: bool,
    verbose: bool = True,
    return_predictions: bool = True,
    model_provided: bool = True,
) -> Any:
    """Run entry point ``fn`` of ``trainer`` over ``model``; on any failure, Lightning's interrupt path."""
    from lightning_lib.core.module import LightningModule

    if not isinstance(model, LightningModule):
        raise TypeError(f"Expected a lightning_lib LightningModule, received {type(model).__name__}.")
    state = trainer._run_state
    trainer.state.fn = fn
    trainer.state.status = TrainerStatus.RUNNING
    trainer.state.stage = _STAGE_OF[fn]
    if fn == TrainerFn.FITTING:
        trainer.min_epochs, trainer.max_epochs = _loop_limits(trainer)
    state.start()
    # Everything after this point fails through _on_failure, as in Lightning: a logger may already have
    # started its run (an MLflow run the pipeline opened to record the config), and an error choosing the
    # checkpoint (object storage unreachable, a missing bucket) must end it FAILED, not leave it RUNNING.
    try:
        _check_model(trainer, model, fn)
        # the other ranks are started (or joined) before anything is read: "last" is chosen by rank zero
        trainer.strategy.setup_environment()
        ckpt = select_ckpt_path(trainer, fn, ckpt_path, model_provided, weights_only)
        trainer.lightning_module = model
        model.trainer = trainer
        trainer.datamodule = datamodule
        if datamodule is not None:
            datamodule.trainer = trainer
        trainer._data.reset()
        state.reset_data_flags()
        trainer._data.sources.update({k: v for k, v in loaders.items() if v is not None})
        _attach_model_callbacks(trainer, model)
        trainer._hooks.reset()
        state.ckpt_path = ckpt
        return _run_stages(trainer, fn, model, datamodule, ckpt, weights_only, verbose, return_predictions)
    except _TunerExitException:
        # a tuner (Tuner.lr_find / scale_batch_size) has its answer: the run ends as finished, not failed
        _finish_after_tuner(trainer, fn)
        return None
    except KeyboardInterrupt as exc:
        # Lightning's Ctrl-C: shut down gracefully (on_exception, loggers ended as failed), then exit with
        # status 1 instead of re-raising; a second Ctrl-C during the shutdown is ignored
        rank_zero_info("\nDetected KeyboardInterrupt, attempting graceful shutdown ...")
        with _sigint_ignored():
            _on_failure(trainer, exc)
        raise SystemExit(1) from exc
    except BaseException as exc:
        _on_failure(trainer, exc)
        explained = trainer.strategy.explain_failure(exc)
        if explained is not None:
            raise explained from exc
        raise


def _run_stages(
    trainer: Trainer,
    fn: TrainerFn,
    model: LightningModule,
    datamodule: LightningDataModule | None,
    ckpt: str | None,
    weights_only: bool,
    verbose: bool,
    return_predictions: bool,
) -> Any:
    hooks = trainer._hooks
    state = trainer._run_state
    # the rank is in the report's file name only when there are several (Lightning's naming)
    local_rank = trainer.local_rank if trainer.world_size > 1 else None
    trainer.profiler.setup(stage=fn.value, local_rank=local_rank, log_dir=trainer.log_dir)
    _prepare_data(trainer, model, datamodule)
    # as Lightning: each logger's experiment starts before the setup hooks, so that its name and version
    # (W&B's run id, Comet's key) name the checkpoint folder when ModelCheckpoint sets up
    for logger in trainer.loggers:
        getattr(logger, "experiment", None)
    hooks.datamodule("setup", stage=fn)
    hooks.callbacks("setup", stage=fn)
    hooks.module("setup", stage=fn)
    for name in ("configure_sharded_model", "configure_model"):  # only when written, as in Lightning
        if _module_overrides(model, name):
            hooks.module(name)
    prefetched, state.verified_checkpoint = state.verified_checkpoint, None
    verified = prefetched[1] if prefetched is not None and prefetched[0] == ckpt else None
    checkpoint = (
        load_file(
            ckpt, map_location=trainer.strategy.root_device, verified=verified, weights_only=weights_only
        )
        if ckpt
        else None
    )
    del prefetched, verified
    if checkpoint is not None:
        checkpoint = restore_modules(trainer, checkpoint)
    trainer._logger_connector.reset_results()
    trainer._logger_connector.reset_metrics()
    trainer.strategy.setup_module(model)
    if fn == TrainerFn.FITTING:
        _setup_optimizers(trainer, model)
        hooks.callbacks("on_fit_start")
        hooks.module("on_fit_start")
        _log_hyperparams(trainer, model, datamodule)
    if checkpoint is not None and fn == TrainerFn.FITTING:
        restore_training_state(trainer, checkpoint)
        _restore_loop_counters(trainer, checkpoint)
    del checkpoint
    handler = _sigterm_stops_at_batch_boundary(trainer) if fn == TrainerFn.FITTING else nullcontext()
    model.zero_grad()  # torch sets the gradients to None by default
    with handler, torch.autograd.set_detect_anomaly(trainer.detect_anomaly):
        if fn == TrainerFn.FITTING:
            run_fit(trainer)
            results: Any = None
        elif fn == TrainerFn.PREDICTING:
            results = run_predict(trainer, return_predictions)
        else:
            stage = RunningStage.TESTING if fn == TrainerFn.TESTING else RunningStage.VALIDATING
            outputs = run_evaluation(trainer, stage)
            results = [to_python_scalars(out) for out in outputs]
            if verbose:
                _print_results(trainer, results, stage)
    if fn == TrainerFn.FITTING:
        trainer._checkpoint_writer.close()  # fit returns only once every checkpoint is committed
        trainer.strategy.barrier("fit_end")  # ... on every rank: rank zero committed them
        hooks.callbacks("on_fit_end")
        hooks.module("on_fit_end")
    _teardown_hooks(trainer, fn)
    # what the last hooks saved is committed too, and the writer's thread ends with the run
    trainer._checkpoint_writer.close()
    trainer.strategy.teardown()
    for logger in trainer.loggers:
        logger.finalize("success")
    trainer.profiler.describe()
    trainer.state.status = TrainerStatus.FINISHED
    trainer.state.stage = None
    return results


def _finish_after_tuner(trainer: Trainer, fn: TrainerFn) -> None:
    """Lightning's teardown after a tuner ended the run early: teardown hooks, loggers closed as a success."""
    _teardown_hooks(trainer, fn)
    trainer._checkpoint_writer.close()
    trainer.strategy.teardown()
    for logger in trainer.loggers:
        logger.finalize("success")
    trainer.profiler.describe()
    trainer.state.status = TrainerStatus.FINISHED
    trainer.state.stage = None


def _restore_loop_counters(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Lightning's loop counters as saved; the fit loop settles them where it resumes (``run_fit``)."""
    loops = checkpoint.get("loops") or {}
    for name, view in (
        ("fit_loop", trainer.fit_loop),
        ("validate_loop", trainer.validate_loop),
        ("test_loop", trainer.test_loop),
        ("predict_loop", trainer.predict_loop),
    ):
        state = loops.get(name)
        if state:
            view.load_state_dict(state)
            view.restarting = False
    own = (loops.get("fit_loop") or {}).get("state_dict") or {}
    trainer._run_state.train_loader_states = list(own.get("combined_loader") or [])


def _teardown_hooks(trainer: Trainer, fn: TrainerFn) -> None:
    hooks = trainer._hooks
    hooks.datamodule("teardown", stage=fn)
    hooks.callbacks("teardown", stage=fn)
    hooks.module("teardown", stage=fn)
    _release_loaders(trainer)


def _release_loaders(trainer: Trainer) -> None:
    """Drop the run's iterators and stop the loaders' persistent workers (train first, then evaluation),
    so no worker process outlives the run."""
    data = trainer._data
    data.close_fetchers()
    run = trainer._run_state
    for fetchers in run.eval_fetchers.values():
        for fetcher in fetchers:
            fetcher.close()
    run.eval_fetchers.clear()
    loaders = list(data.train_loaders())
    for loaders_and_limits in data._eval.values():
        loaders.extend(loaders_and_limits[0])
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if isinstance(iterator, _MultiProcessingDataLoaderIter):
            iterator._shutdown_workers()
            loader._iterator = None


def _on_failure(trainer: Trainer, exc: BaseException) -> None:
    """Lightning's interrupt path: on_exception everywhere, loggers finalised as failed."""
    trainer.state.status = TrainerStatus.INTERRUPTED
    try:
        if trainer.lightning_module is not None:
            trainer._hooks.callbacks("on_exception", exc)
        if trainer.datamodule is not None and hasattr(trainer.datamodule, "on_exception"):
            trainer.datamodule.on_exception(exc)
    finally:
        try:
            # what on_exception saved must be committed before exit, and the writer's thread ends here
            trainer._checkpoint_writer.close()
        except Exception:
            log.exception("A checkpoint could not be committed while handling %r", exc)
        for logger in trainer.loggers:
            try:
                log_exception = getattr(logger, "log_exception", None)
                if callable(log_exception):  # lets a logger tell a kill (KILLED) from a failure (FAILED)
                    log_exception(exc)
                logger.finalize("failed")
            except Exception:  # a logger failing must not hide the original error
                log.exception("logger.finalize('failed') raised")
        _release_loaders(trainer)
        trainer.strategy.teardown()
        trainer.state.stage = None


def _module_overrides(model: LightningModule, name: str) -> bool:
    """Whether the LightningModule implements hook ``name`` itself (``is_overridden``)."""
    from lightning_lib.core.module import LightningModule
    from lightning_lib.utilities.model_helpers import is_overridden

    return is_overridden(name, model, LightningModule)


def _datamodule_overrides(datamodule: LightningDataModule, name: str) -> bool:
    """Whether the LightningDataModule overrides hook ``name``."""
    from lightning_lib.core.datamodule import LightningDataModule
    from lightning_lib.utilities.model_helpers import is_overridden

    return is_overridden(name, datamodule, LightningDataModule)


def _loop_limits(trainer: Trainer) -> tuple[int, int]:
    """``min_epochs`` and ``max_epochs`` for a fit: unset, ``max_epochs`` is 1000 (with a warning) unless
    ``max_steps`` or a Timer bounds the run (then -1, no epoch limit); ``min_epochs`` is 1 with
    ``min_steps``, else 0 (Lightning's defaults)."""
    from lightning_lib.callbacks.timer import Timer

    max_epochs = trainer.max_epochs
    if max_epochs is None:
        if trainer.max_steps == -1 and not any(isinstance(cb, Timer) for cb in trainer.callbacks):
            rank_zero_warn(
                "`max_epochs` was not set. Setting it to 1000 epochs. To train without an epoch limit,"
                " set `max_epochs=-1`.",
                category=PossibleUserWarning,
            )
            max_epochs = 1000
        else:
            max_epochs = -1
    min_epochs = trainer.min_epochs
    if min_epochs is None:
        min_epochs = 1 if trainer.min_steps is not None else 0
    return min_epochs, max_epochs


def _prepare_data(trainer: Trainer, model: LightningModule, datamodule: LightningDataModule | None) -> None:
    """``prepare_data`` once per node (``prepare_data_per_node=True``) or once per run, by the local (resp.
    global) rank zero; the other ranks wait for it, as in Lightning."""
    hooks = trainer._hooks
    owners: list[tuple[Any, bool]] = []
    if datamodule is not None and _datamodule_overrides(datamodule, "prepare_data"):
        owners.append((datamodule, True))
    if hooks.module_overrides("prepare_data"):
        owners.append((model, False))
    if not owners:
        return
    for owner, is_datamodule in owners:
        rank_zero = trainer.local_rank == 0 and (owner.prepare_data_per_node or trainer.node_rank == 0)
        if rank_zero:
            if is_datamodule:
                hooks.datamodule("prepare_data")
            else:
                hooks.module("prepare_data")
    trainer.strategy.barrier("prepare_data")


def _check_model(trainer: Trainer, model: LightningModule, fn: TrainerFn) -> None:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.utilities.model_helpers import is_overridden

    if fn == TrainerFn.FITTING:
        if not is_overridden("training_step", model, LightningModule):
            raise ValueError("Expected the LightningModule to implement `training_step` for `trainer.fit`.")
        if not is_overridden("configure_optimizers", model, LightningModule):
            raise ValueError(
                "Expected the LightningModule to implement `configure_optimizers` for `trainer.fit`."
            )
    if fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
        step = "validation_step" if fn == TrainerFn.VALIDATING else "test_step"
        if not is_overridden(step, model, LightningModule):
            raise ValueError(f"Expected the LightningModule to implement `{step}` for `trainer.{fn.value}`.")
    if not model.automatic_optimization and (
        trainer.accumulate_grad_batches != 1 or trainer.gradient_clip_val
    ):
        raise ValueError(
            "Expected accumulate_grad_batches=1 and no gradient_clip_val with manual optimization"
            f" (automatic_optimization=False), received accumulate_grad_batches={trainer.accumulate_grad_batches},"
            f" gradient_clip_val={trainer.gradient_clip_val}; do both inside `training_step`."
        )


def _attach_model_callbacks(trainer: Trainer, model: LightningModule) -> None:
    from lightning_lib.callbacks.model_checkpoint import Checkpoint

    extra = model.configure_callbacks()
    if extra:
        extra = list(extra) if isinstance(extra, list | tuple) else [extra]
        replaced = {type(cb) for cb in extra}
        trainer.callbacks = [cb for cb in trainer.callbacks if type(cb) not in replaced] + extra
    # checkpoints last, so they see every metric the other callbacks logged
    trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, Checkpoint)] + [
        cb for cb in trainer.callbacks if isinstance(cb, Checkpoint)
    ]
    _attach_logging_functions(trainer, model)


def _attach_logging_functions(trainer: Trainer, model: LightningModule) -> None:
    """Callbacks log through the module, as in Lightning: ``self.log`` inside a callback hook."""
    for callback in trainer.callbacks:
        callback.log = model.log  # type: ignore[attr-defined]
        callback.log_dict = model.log_dict  # type: ignore[attr-defined]


def _setup_optimizers(trainer: Trainer, model: LightningModule) -> None:
    conf = trainer._hooks.module("configure_optimizers")
    trainer.optimizers, trainer.lr_scheduler_configs = parse_optimizers(
        conf, model.automatic_optimization, trainer._hooks.module_overrides("lr_scheduler_step")
    )
    if model.automatic_optimization and len(trainer.optimizers) > 1:
        raise ValueError(
            "Expected one optimizer with automatic optimization, received"
            f" {len(trainer.optimizers)}; set `self.automatic_optimization = False` and step them in"
            " `training_step`."
        )
    trainer.strategy._lightning_optimizers = [LightningOptimizer(opt, trainer) for opt in trainer.optimizers]


def _log_hyperparams(
    trainer: Trainer, model: LightningModule, datamodule: LightningDataModule | None
) -> None:
    if not trainer.loggers:
        return
    params: dict[str, Any] = {}
    if not trainer.enable_autolog_hparams:
        pass  # log_graph still runs: loggers learn about the module there
    elif datamodule is not None and getattr(datamodule, "_log_hyperparams", True):
        params.update(datamodule.hparams_initial)
    if trainer.enable_autolog_hparams and getattr(model, "_log_hyperparams", True):
        model_params = model.hparams_initial
        clash = [k for k in model_params if k in params and params[k] != model_params[k]]
        if clash:
            raise ValueError(
                f"Expected the model and datamodule hyper-parameters to agree, received different values for {clash}."
            )
        params.update(model_params)
    for logger in trainer.loggers:
        if params:
            logger.log_hyperparams(params)
        logger.log_graph(model)
        logger.save()


def _print_results(trainer: Trainer, results: list[dict[str, Any]], stage: RunningStage) -> None:
    if not trainer.is_global_zero:
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


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored inside the block (main thread only: signals cannot be handled elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler installed from C, which Python cannot reinstate
            signal.signal(signal.SIGINT, previous)


@contextmanager
def _sigterm_stops_at_batch_boundary(trainer: Trainer) -> Iterator[None]:
    """While fitting, SIGTERM only sets a flag: the fit loop stops at the next batch boundary, after
    on_exception callbacks (a checkpoint) had their say. Signals can only be handled on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        log.warning("Received SIGTERM: stopping at the next batch boundary.")
        trainer._run_state.received_sigterm = True

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
