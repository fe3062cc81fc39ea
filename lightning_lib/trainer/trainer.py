"""Trainer: validates its arguments up front; fit / validate / test / predict are thin entry points."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.callbacks.callback import Callback
from lightning_lib.checkpoint._writer import CheckpointWriter
from lightning_lib.distributed.strategy import build_strategy
from lightning_lib.loop import run as _run
from lightning_lib.loop.data import DataConnector
from lightning_lib.loop.fit import estimated_stepping_batches
from lightning_lib.loop.hooks import HookDispatcher
from lightning_lib.loop.logger_connector import LoggerConnector
from lightning_lib.loop.predict import PredictLoop
from lightning_lib.loop.state import FitProgress, RunState
from lightning_lib.loop.views import EvaluationLoopView, FitLoopView, loops_state_dict
from lightning_lib.plugins.precision import build_precision
from lightning_lib.profilers import Profiler
from lightning_lib.trainer.arguments import (
    BAREBONES_INFO,
    MAX_NUM_NODES,
    batch_limit,
    build_profiler,
    check_barebones,
    check_choice,
    check_fast_dev_run,
    check_gradient_clip_algorithm,
    check_gradient_clip_val,
    check_int,
    check_reload_every_n_epochs,
    check_strategy,
    check_val_every_n_epoch_arg,
    defaults_from_env_vars,
    expand_local_path,
    parse_devices,
    parse_duration,
    precision_from_plugins,
    resolve_accelerator,
)
from lightning_lib.trainer.states import RunningStage, TrainerFn, TrainerState
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from lightning_lib.core.datamodule import LightningDataModule
    from lightning_lib.core.module import LightningModule
    from lightning_lib.distributed import DDPStrategy
    from lightning_lib.loggers.logger import Logger

log = logging.getLogger(__name__)


class Trainer:
    """Runs a LightningModule's fit, validate, test and predict loops (pytorch_lightning's arguments).

    The Trainer holds its arguments and the collaborators of a run: the run state the loops write
    (``_run_state``), the data (``_data``), the hook dispatcher (``_hooks``), the metric bookkeeping
    (``_logger_connector``) and the background checkpoint writer (``_checkpoint_writer``). The loops
    are functions in ``lightning_lib.loop`` over those.
    """

    loggers: list[Logger]

    @defaults_from_env_vars
    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str | DDPStrategy = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        precision: str | int | None = None,
        logger: Logger | Iterable[Logger] | bool | None = None,
        callbacks: Callback | Iterable[Callback] | None = None,
        fast_dev_run: int | bool = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: str | timedelta | dict[str, int] | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | str | timedelta | dict[str, int] | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Profiler | str | None = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Any = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | Path | None = None,
        enable_autolog_hparams: bool = True,
        model_registry: str | None = None,
    ) -> None:
        check_strategy(strategy)
        check_int("num_nodes", num_nodes, 1, maximum=MAX_NUM_NODES)
        self.barebones = bool(barebones)
        if barebones:
            check_barebones(
                enable_checkpointing=enable_checkpointing,
                logger=logger,
                enable_progress_bar=enable_progress_bar,
                log_every_n_steps=log_every_n_steps,
                enable_model_summary=enable_model_summary,
                num_sanity_val_steps=num_sanity_val_steps,
                fast_dev_run=fast_dev_run,
                detect_anomaly=detect_anomaly,
                profiler=profiler,
            )
            enable_checkpointing = enable_progress_bar = enable_model_summary = logger = False
            log_every_n_steps = num_sanity_val_steps = 0
        self.sync_batchnorm = bool(sync_batchnorm)
        device_type = resolve_accelerator(accelerator)
        self.strategy = build_strategy(strategy, parse_devices(device_type, devices), num_nodes, self)
        self.precision_plugin = build_precision(precision_from_plugins(precision, plugins), device_type)
        self.precision = self.precision_plugin.name

        self.max_steps = check_int("max_steps", max_steps, -1)
        # None until a fit resolves it (1000, or -1 with max_steps or max_time), as in Lightning
        self.max_epochs: int | None = check_int("max_epochs", max_epochs, -1, allow_none=True)
        self.min_epochs = check_int("min_epochs", min_epochs, 0, allow_none=True)
        self.min_steps = check_int("min_steps", min_steps, 0, allow_none=True)
        self.max_time: timedelta | None = parse_duration("max_time", max_time)
        self.check_val_every_n_epoch = check_val_every_n_epoch_arg(
            check_val_every_n_epoch, val_check_interval
        )
        self.limit_train_batches = batch_limit("limit_train_batches", limit_train_batches, announce=True)
        self.limit_val_batches = batch_limit("limit_val_batches", limit_val_batches, announce=True)
        self.limit_test_batches = batch_limit("limit_test_batches", limit_test_batches, announce=True)
        self.limit_predict_batches = batch_limit(
            "limit_predict_batches", limit_predict_batches, announce=True
        )
        self.overfit_batches = batch_limit("overfit_batches", overfit_batches, announce=True)
        self._val_check_time_interval: float | None = None
        if isinstance(val_check_interval, str | timedelta | dict):
            interval = parse_duration("val_check_interval", val_check_interval)
            assert interval is not None
            self._val_check_time_interval = interval.total_seconds()
            self.val_check_interval: int | float = 1.0
        else:
            self.val_check_interval = batch_limit("val_check_interval", val_check_interval, announce=True)
            if self.val_check_interval == 0:
                raise MisconfigurationException("Expected val_check_interval > 0, received 0.")
        self.num_sanity_val_steps: int | float = check_int(
            "num_sanity_val_steps", 2 if num_sanity_val_steps is None else num_sanity_val_steps, -1
        )
        if self.num_sanity_val_steps == -1:
            self.num_sanity_val_steps = float("inf")
        self.log_every_n_steps = check_int(
            "log_every_n_steps", 50 if log_every_n_steps is None else log_every_n_steps, 0
        )
        self.accumulate_grad_batches = check_int("accumulate_grad_batches", accumulate_grad_batches, 1)
        self.gradient_clip_val = check_gradient_clip_val(gradient_clip_val)
        self.gradient_clip_algorithm = check_gradient_clip_algorithm(gradient_clip_algorithm)
        check_choice("deterministic", deterministic, (None, True, False, "warn"))
        self.deterministic = deterministic
        self._configure_determinism(deterministic, benchmark)
        self.inference_mode = bool(inference_mode)
        self.use_distributed_sampler = use_distributed_sampler
        self.detect_anomaly = self._detect_anomaly = bool(detect_anomaly)
        if detect_anomaly:
            rank_zero_info(
                "You have turned on `Trainer(detect_anomaly=True)`. This will significantly slow down compute"
                " speed and is recommended only for model debugging."
            )
        self.reload_dataloaders_every_n_epochs = check_reload_every_n_epochs(
            reload_dataloaders_every_n_epochs
        )
        self.enable_autolog_hparams = enable_autolog_hparams
        self._default_root_dir = os.fspath(default_root_dir) if default_root_dir is not None else os.getcwd()
        self.fast_dev_run: int | bool = check_fast_dev_run(fast_dev_run)
        self.profiler: Profiler = build_profiler(profiler)
        self._apply_debug_flags()

        self.state = TrainerState()
        self.lightning_module: Any = None
        self.datamodule: Any = None
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_scheduler_configs: list[Any] = []
        self._run_state = RunState()
        # Lightning's name: prediction writers read the batch indices and kept predictions from it
        self._predict_loop = PredictLoop(self)
        # Lightning's loop objects: their restarting flags live as long as the Trainer, as its loops do
        self._fit_loop = FitLoopView(self)
        self._validate_loop = EvaluationLoopView(self, "validate")
        self._test_loop = EvaluationLoopView(self, "test")
        self._data = DataConnector(self)
        self._hooks = HookDispatcher(self)
        self._checkpoint_writer = CheckpointWriter()
        self._logger_connector = LoggerConnector(self)
        self._init_callbacks_and_loggers(
            callbacks, logger, enable_checkpointing, enable_progress_bar, enable_model_summary
        )
        if self.fast_dev_run:
            rank_zero_info(
                f"Running in `fast_dev_run` mode: will run the requested loop using {int(self.fast_dev_run)}"
                " batch(es). Logging and checkpointing is suppressed."
            )
        if barebones:
            rank_zero_info(BAREBONES_INFO)

    # ---- entry points --------------------------------------------------------------------------------
    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train ``model``; ``ckpt_path`` ("last", "best" or a path) resumes from a checkpoint.

        ``weights_only`` is passed to ``torch.load`` for ``ckpt_path``: None and True accept plain data only.
        """
        from lightning_lib.core.datamodule import LightningDataModule

        if isinstance(train_dataloaders, LightningDataModule):
            if datamodule is not None:
                raise ValueError("Expected one datamodule, received one positionally and one as datamodule=.")
            datamodule, train_dataloaders = train_dataloaders, None
        if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
            raise ValueError(
                "Expected either dataloaders or a datamodule in `trainer.fit`, received both; pass only one."
            )
        self._run_entry_point(
            TrainerFn.FITTING,
            model,
            datamodule,
            {"train": train_dataloaders, "val": val_dataloaders},
            ckpt_path,
            _weights_only(weights_only),
        )

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run the validation loop once; returns one dict of epoch metrics per dataloader."""
        return self._evaluate(
            TrainerFn.VALIDATING, model, dataloaders, ckpt_path, verbose, datamodule, weights_only
        )

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run the test loop once; returns one dict of epoch metrics per dataloader."""
        return self._evaluate(
            TrainerFn.TESTING, model, dataloaders, ckpt_path, verbose, datamodule, weights_only
        )

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
    ) -> list[Any] | None:
        """Run ``predict_step`` over the predict dataloaders and return the predictions."""
        dataloaders, datamodule = self._split_datamodule(dataloaders, datamodule)
        provided = model is not None
        model = self._model_or_previous(model, "predict")
        result: list[Any] | None = self._run_entry_point(
            TrainerFn.PREDICTING,
            model,
            datamodule,
            {"predict": dataloaders},
            ckpt_path,
            _weights_only(weights_only),
            return_predictions=True if return_predictions is None else return_predictions,
            model_provided=provided,
        )
        return result

    def _evaluate(
        self,
        fn: TrainerFn,
        model: LightningModule | None,
        dataloaders: Any,
        ckpt_path: str | Path | None,
        verbose: bool,
        datamodule: LightningDataModule | None,
        weights_only: bool | None,
    ) -> list[dict[str, float]]:
        dataloaders, datamodule = self._split_datamodule(dataloaders, datamodule)
        provided = model is not None
        model = self._model_or_previous(model, fn.value)
        key = "test" if fn == TrainerFn.TESTING else "val"
        results: list[dict[str, float]] = self._run_entry_point(
            fn,
            model,
            datamodule,
            {key: dataloaders},
            ckpt_path,
            _weights_only(weights_only),
            verbose=verbose,
            model_provided=provided,
        )
        return results

    def _run_entry_point(self, fn: TrainerFn, *args: Any, **kwargs: Any) -> Any:
        """The run in this process, or, for strategy="ddp_spawn", in the processes its launcher spawns."""
        launcher = getattr(self.strategy, "launcher", None)
        if launcher is not None and not getattr(self.strategy, "_spawned", False):
            return launcher.launch(self, fn, _run.run, *args, **kwargs)
        return _run.run(self, fn, *args, **kwargs)

    @staticmethod
    def _split_datamodule(
        dataloaders: Any, datamodule: LightningDataModule | None
    ) -> tuple[Any, LightningDataModule | None]:
        from lightning_lib.core.datamodule import LightningDataModule

        if isinstance(dataloaders, LightningDataModule):
            if datamodule is not None:
                raise ValueError("Expected one datamodule, received one positionally and one as datamodule=.")
            return None, dataloaders
        if dataloaders is not None and datamodule is not None:
            raise ValueError("Expected either dataloaders or a datamodule, received both; pass only one.")
        return dataloaders, datamodule

    def _model_or_previous(self, model: LightningModule | None, fn: str) -> LightningModule:
        from lightning_lib.core.module import LightningModule

        if model is None:
            if self.lightning_module is None:
                raise ValueError(
                    f"Expected a LightningModule for `trainer.{fn}()`, received none and none was fit."
                )
            previous: LightningModule = self.lightning_module
            return previous
        if not isinstance(model, LightningModule):
            raise TypeError(
                f"Expected a LightningModule for `trainer.{fn}()`, received {type(model).__name__}."
            )
        return model

    # ---- attributes users read -----------------------------------------------------------------------
    @property
    def fit_loop(self) -> FitLoopView:
        """Lightning's ``trainer.fit_loop``: the fit's limits (settable) and progress counters."""
        return self._fit_loop

    def _fit_loop_states(self) -> dict[str, Any]:
        """Lightning's ``checkpoint["loops"]`` (what the checkpoint format saves)."""
        return loops_state_dict(self)

    @property
    def validate_loop(self) -> EvaluationLoopView:
        return self._validate_loop

    @property
    def test_loop(self) -> EvaluationLoopView:
        return self._test_loop

    @property
    def predict_loop(self) -> PredictLoop:
        return self._predict_loop

    @property
    def progress(self) -> FitProgress:
        """The fit loop's counters, down to the batch within the epoch."""
        return self._run_state.progress

    @property
    def current_epoch(self) -> int:
        return self._run_state.progress.current_epoch

    @property
    def global_step(self) -> int:
        return self._run_state.progress.global_step

    @property
    def should_stop(self) -> bool:
        """Set by callbacks (EarlyStopping, Timer) or users to end fit once min_epochs/min_steps allow."""
        return self._run_state.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self._run_state.should_stop = value

    @property
    def sanity_checking(self) -> bool:
        return self._run_state.sanity_checking

    @property
    def is_last_batch(self) -> bool:
        return self._run_state.is_last_batch

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint the running (or last) entry point loaded, if any."""
        return self._run_state.ckpt_path

    @ckpt_path.setter
    def ckpt_path(self, value: str | None) -> None:
        self._run_state.ckpt_path = value

    @property
    def num_training_batches(self) -> int | float:
        return self._data.num_training_batches

    @property
    def val_check_batch(self) -> int | float:
        return self._data.val_check_batch

    @property
    def num_val_batches(self) -> list[int | float]:
        return self._data.batch_counts("val")

    @property
    def num_test_batches(self) -> list[int | float]:
        return self._data.batch_counts("test")

    @property
    def num_predict_batches(self) -> list[int | float]:
        return self._data.batch_counts("predict")

    @property
    def num_sanity_val_batches(self) -> list[int | float]:
        return [min(self.num_sanity_val_steps, n) for n in self._data.eval_limits(RunningStage.VALIDATING)]

    @property
    def train_dataloader(self) -> Any:
        """The train dataloader(s) of the fit, as given (a loader, or the list or dict of them)."""
        return self._data.train_iterables

    @property
    def val_dataloaders(self) -> Any:
        return self._data.iterables("val")

    @property
    def predict_dataloaders(self) -> Any:
        return self._data.iterables("predict")

    @property
    def test_dataloaders(self) -> Any:
        return self._data.iterables("test")

    @property
    def enable_validation(self) -> bool:
        return self._data.enable_validation

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        return self._logger_connector.callback_metrics

    @property
    def logged_metrics(self) -> dict[str, torch.Tensor]:
        return self._logger_connector.logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, Any]:
        return self._logger_connector.progress_bar_metrics

    @property
    def estimated_stepping_batches(self) -> int | float:
        """The optimizer steps the fit will take (Lightning's estimate), loading the train data if needed."""
        unbounded = self.max_epochs == -1 or (self.max_epochs is None and self.max_steps != -1)
        if not unbounded and self._data.train_loader is None and self.lightning_module is not None:
            rank_zero_info("Loading `train_dataloader` to estimate number of stepping batches.")
            self._data.setup_train_data()
        return estimated_stepping_batches(self)

    @property
    def model(self) -> Any:
        return self.lightning_module

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @property
    def validating(self) -> bool:
        return self.state.stage == RunningStage.VALIDATING

    @property
    def testing(self) -> bool:
        return self.state.stage == RunningStage.TESTING

    @property
    def predicting(self) -> bool:
        return self.state.stage == RunningStage.PREDICTING

    @property
    def evaluating(self) -> bool:
        return self.state.stage is not None and self.state.stage.evaluating

    @property
    def interrupted(self) -> bool:
        return self.state.status.value == "interrupted"

    @property
    def default_root_dir(self) -> str:
        """Where logs and checkpoints go when no logger or callback says otherwise; ``~`` is expanded."""
        return expand_local_path(self._default_root_dir)

    @property
    def logger(self) -> Any:
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger: Any) -> None:
        self.loggers = [] if logger is None else [logger]

    @property
    def log_dir(self) -> str:
        if self.logger is None:
            return self.default_root_dir
        found = getattr(self.logger, "log_dir", None) or getattr(self.logger, "save_dir", None)
        return str(found) if found is not None else self.default_root_dir

    @property
    def checkpoint_callbacks(self) -> list[Any]:
        from lightning_lib.callbacks.model_checkpoint import Checkpoint

        return [cb for cb in self.callbacks if isinstance(cb, Checkpoint)]

    @property
    def checkpoint_callback(self) -> Any:
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def early_stopping_callbacks(self) -> list[Any]:
        from lightning_lib.callbacks.early_stopping import EarlyStopping

        return [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]

    @property
    def early_stopping_callback(self) -> Any:
        found = self.early_stopping_callbacks
        return found[0] if found else None

    @property
    def progress_bar_callback(self) -> Any:
        from lightning_lib.callbacks.progress import ProgressBar

        return next((cb for cb in self.callbacks if isinstance(cb, ProgressBar)), None)

    @property
    def is_global_zero(self) -> bool:
        return bool(self.strategy.is_global_zero)

    @property
    def global_rank(self) -> int:
        return int(self.strategy.global_rank)

    @property
    def local_rank(self) -> int:
        return int(self.strategy.local_rank)

    @property
    def node_rank(self) -> int:
        return int(self.strategy.node_rank)

    @property
    def world_size(self) -> int:
        return int(self.strategy.world_size)

    @property
    def num_nodes(self) -> int:
        return int(self.strategy.num_nodes)

    @property
    def num_devices(self) -> int:
        return len(self.device_ids)

    @property
    def device_ids(self) -> list[int]:
        devices = getattr(self.strategy, "parallel_devices", None) or [self.strategy.root_device]
        return [(d.index or 0) if d.type == "cuda" else i for i, d in enumerate(devices)]

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.is_global_zero:
            print(*args, **kwargs)

    def save_checkpoint(
        self, filepath: str | Path, weights_only: bool = False, storage_options: Any = None
    ) -> None:
        """Write the full training state (or only the weights) to ``filepath``."""
        from lightning_lib.checkpoint._format import save_checkpoint

        if self.lightning_module is None:
            raise RuntimeError(
                "Expected a model attached by fit/validate/test/predict before save_checkpoint."
            )
        save_checkpoint(self, filepath, weights_only)

    # ---- pickling --------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # the checkpoint writer holds a thread and locks: a copy gets its own, idle writer
        state = self.__dict__.copy()
        state.pop("_checkpoint_writer", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._checkpoint_writer = CheckpointWriter()

    # ---- construction helpers ------------------------------------------------------------------------
    def _configure_determinism(self, deterministic: Any, benchmark: bool | None) -> None:
        if deterministic is not None and deterministic is not False:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        elif deterministic is False:
            torch.use_deterministic_algorithms(False)
        if benchmark is None:
            benchmark = False if deterministic else torch.backends.cudnn.benchmark
        elif benchmark and deterministic:
            log.warning(
                "benchmark=True with deterministic=True: cudnn benchmark is disabled for reproducibility."
            )
            benchmark = False
        torch.backends.cudnn.benchmark = bool(benchmark)
        self.benchmark = benchmark

    def _apply_debug_flags(self) -> None:
        if self.fast_dev_run:
            n = int(self.fast_dev_run)
            if not self.overfit_batches > 0:
                self.limit_train_batches = self.limit_val_batches = n
            self.limit_test_batches = self.limit_predict_batches = n
            self.max_steps = n
            self.num_sanity_val_steps = 0
            self.max_epochs = 1
            self.val_check_interval = 1.0
            self._val_check_time_interval = None
            self.check_val_every_n_epoch = 1
            self.log_every_n_steps = 1
        if self.overfit_batches > 0:
            self.limit_train_batches = self.overfit_batches
            self.limit_val_batches = self.overfit_batches

    def _init_callbacks_and_loggers(
        self,
        callbacks: Any,
        logger: Any,
        enable_checkpointing: bool | None,
        enable_progress_bar: bool | None,
        enable_model_summary: bool | None,
    ) -> None:
        from lightning_lib.callbacks.model_checkpoint import Checkpoint, ModelCheckpoint
        from lightning_lib.callbacks.model_summary import ModelSummary
        from lightning_lib.callbacks.progress import ProgressBar, RichProgressBar, TQDMProgressBar
        from lightning_lib.callbacks.rich_model_summary import RichModelSummary
        from lightning_lib.callbacks.timer import Timer
        from lightning_lib.loggers import CSVLogger, Logger

        if callbacks is None:
            user: list[Callback] = []
        elif isinstance(callbacks, Callback):
            user = [callbacks]
        elif isinstance(callbacks, Iterable):
            user = list(callbacks)
        else:
            raise TypeError(
                f"Expected callbacks to be a Callback or a list of them, received {type(callbacks).__name__}."
            )
        for cb in user:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"Expected every callback to be a lightning_lib Callback, received {type(cb).__name__}."
                )
        found: list[Callback] = list(user)
        # any checkpoint callback (OnExceptionCheckpoint too) stands in for the default ModelCheckpoint, as in Lightning
        has_checkpoint = any(isinstance(cb, Checkpoint) for cb in found)
        if enable_checkpointing is False and has_checkpoint:
            raise MisconfigurationException(
                "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in"
                " callbacks list. Expected enable_checkpointing=True (or None) with a checkpoint callback, or no"
                " checkpoint callback."
            )
        if enable_checkpointing is not False and not has_checkpoint:
            found.append(ModelCheckpoint())
        if enable_model_summary is not False and not any(isinstance(cb, ModelSummary) for cb in found):
            # a rich progress bar brings the rich summary with it, as in Lightning
            rich = any(isinstance(cb, RichProgressBar) for cb in found)
            found.append(RichModelSummary() if rich else ModelSummary())
        bars = [cb for cb in found if isinstance(cb, ProgressBar)]
        if len(bars) > 1:
            raise ValueError(f"Expected at most one progress bar callback, received {len(bars)}.")
        if enable_progress_bar is False and bars:
            raise ValueError(
                "Expected no progress bar callback with enable_progress_bar=False, received one."
            )
        if enable_progress_bar is not False and not bars:
            found.append(TQDMProgressBar())
        if self.max_time is not None:
            if any(isinstance(cb, Timer) for cb in found):
                rank_zero_info(
                    f"Ignoring `Trainer(max_time={self.max_time})`, callbacks list already contains a Timer."
                )
            else:
                found.append(Timer(duration=self.max_time, interval="step"))
        # checkpoints last, as in Lightning, so they see what every other callback logged or changed
        found = [cb for cb in found if not isinstance(cb, ModelCheckpoint)] + [
            cb for cb in found if isinstance(cb, ModelCheckpoint)
        ]
        self.callbacks: list[Callback] = found
        if logger is None or logger is True:
            self.loggers = [CSVLogger(save_dir=self.default_root_dir)]
        elif logger is False:
            self.loggers = []
        elif isinstance(logger, Logger):
            self.loggers = [logger]
        elif isinstance(logger, Iterable) and all(isinstance(lg, Logger) for lg in logger):
            self.loggers = list(logger)
        else:
            raise TypeError(
                f"Expected logger to be a Logger, a list of them, True or False, received {logger!r}."
            )
        if self.fast_dev_run:
            from lightning_lib.loggers.logger import DummyLogger

            self.loggers = [DummyLogger()] if self.loggers else []


def _weights_only(value: bool | None) -> bool:
    """Lightning's ``weights_only=None`` means torch's default, which is True for the torch versions supported."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"Expected weights_only to be True, False or None, received {value!r}.")
    return True if value is None else value
