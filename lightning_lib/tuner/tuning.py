"""``Tuner``: the learning rate range test and the batch size search over a Trainer (Lightning's ``tuner.tuning``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from lightning_lib.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from lightning_lib.core.datamodule import LightningDataModule
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer
    from lightning_lib.tuner.lr_finder import _LRFinder

_Method = Literal["fit", "validate", "test", "predict"]
_METHODS = ("fit", "validate", "test", "predict")


class Tuner:
    """Tunes a model's learning rate (:meth:`lr_find`) and batch size (:meth:`scale_batch_size`) with
    short runs of ``trainer``; the model and the Trainer are put back as they were afterwards."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def scale_batch_size(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: _Method = "fit",
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> int | None:
        """The largest batch size (from ``init_val``, at most ``max_val``) with which ``method`` runs
        ``steps_per_trial`` batches without running out of memory; it is also set on the attribute
        ``batch_arg_name`` of the model, its hparams or the datamodule. See :class:`BatchSizeFinder`."""
        from lightning_lib.callbacks.batch_size_finder import BatchSizeFinder

        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        self._check_scale_batch_size_configuration()
        finder = BatchSizeFinder(
            mode=mode,
            steps_per_trial=steps_per_trial,
            init_val=init_val,
            max_trials=max_trials,
            batch_arg_name=batch_arg_name,
            margin=margin,
            max_val=max_val,
        )
        finder._early_exit = True
        self._run_with(finder, model, method, train_dataloaders, val_dataloaders, dataloaders, datamodule)
        return finder.optimal_batch_size

    def lr_find(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: _Method = "fit",
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> _LRFinder | None:
        """The learning rate range test: ``num_training`` optimizer steps with the learning rate growing
        from ``min_lr`` to ``max_lr``; returns the finder (``results``, ``suggestion()``, ``plot()``),
        None under ``fast_dev_run``. See :class:`LearningRateFinder`."""
        from lightning_lib.callbacks.lr_finder import LearningRateFinder

        if method != "fit":
            raise MisconfigurationException("method='fit' is the only valid configuration to run lr finder.")
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        if any(isinstance(cb, LearningRateFinder) for cb in self._trainer.callbacks):
            raise ValueError(
                "Trainer is already configured with a `LearningRateFinder` callback."
                "Please remove it if you want to use the Tuner."
            )
        finder = LearningRateFinder(
            min_lr=min_lr,
            max_lr=max_lr,
            num_training_steps=num_training,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=update_attr,
            attr_name=attr_name,
        )
        finder._early_exit = True
        self._run_with(finder, model, "fit", train_dataloaders, val_dataloaders, None, datamodule)
        return finder.optimal_lr

    def _check_scale_batch_size_configuration(self) -> None:
        from lightning_lib.callbacks.batch_size_finder import BatchSizeFinder, _is_distributed

        if _is_distributed(self._trainer):
            raise ValueError("Tuning the batch size is currently not supported with distributed strategies.")
        if any(isinstance(cb, BatchSizeFinder) for cb in self._trainer.callbacks):
            raise ValueError(
                "Trainer is already configured with a `BatchSizeFinder` callback."
                "Please remove it if you want to use the Tuner."
            )

    def _run_with(
        self,
        finder: Any,
        model: LightningModule,
        method: str,
        train_dataloaders: Any,
        val_dataloaders: Any,
        dataloaders: Any,
        datamodule: LightningDataModule | None,
    ) -> None:
        """Run ``method`` with ``finder`` first among the callbacks; it ends the run once it has its answer."""
        trainer = self._trainer
        trainer.callbacks = [finder, *trainer.callbacks]
        try:
            if method == "fit":
                trainer.fit(model, train_dataloaders, val_dataloaders, datamodule)
            elif method == "validate":
                trainer.validate(model, dataloaders, datamodule=datamodule)
            elif method == "test":
                trainer.test(model, dataloaders, datamodule=datamodule)
            else:
                trainer.predict(model, dataloaders, datamodule=datamodule)
        finally:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not finder]


def _check_tuner_configuration(
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    dataloaders: Any = None,
    method: str = "fit",
) -> None:
    """The dataloader arguments that fit ``method``: train/val loaders for fit, ``dataloaders`` otherwise."""
    if method not in _METHODS:
        raise ValueError(f"method {method!r} is invalid. Should be one of {_METHODS}.")
    if method == "fit":
        if dataloaders is not None:
            raise MisconfigurationException(
                f"In tuner with method={method!r}, `dataloaders` argument should be None,"
                " please consider setting `train_dataloaders` and `val_dataloaders` instead."
            )
    elif train_dataloaders is not None or val_dataloaders is not None:
        raise MisconfigurationException(
            f"In tuner with `method`={method!r}, `train_dataloaders` and `val_dataloaders`"
            " arguments should be None, please consider setting `dataloaders` instead."
        )
