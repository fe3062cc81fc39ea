"""``BatchSizeFinder``: the batch size search as a callback, run when fit, validate, test or predict starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_lib.callbacks.callback import Callback
from lightning_lib.trainer.states import RunningStage, TrainerFn
from lightning_lib.tuner.batch_size_scaling import _scale_batch_size
from lightning_lib.utilities.exceptions import MisconfigurationException, _TunerExitException
from lightning_lib.utilities.parsing import lightning_hasattr
from lightning_lib.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

_PREFIX = {RunningStage.VALIDATING: "val", RunningStage.TESTING: "test", RunningStage.PREDICTING: "predict"}


class BatchSizeFinder(Callback):
    """Finds the largest batch size that fits in memory before the loop starts, and runs with it.

    Args:
        mode: ``"power"`` doubles the batch size until it runs out of memory; ``"binsearch"`` then
            bisects between the last size that fit and the first that did not.
        steps_per_trial: batches run with each batch size.
        init_val: the batch size the search starts from.
        max_trials: at most this many trials.
        batch_arg_name: the attribute of the model, its hparams or the datamodule that the dataloader
            hooks read the batch size from.
        margin: ``binsearch`` takes this fraction off the size found, as a safety buffer.
        max_val: the search never tries a larger batch size.

    The dataloaders must come from the LightningModule or the LightningDataModule (they are requested
    again for each trial). The size found is :attr:`optimal_batch_size`.
    """

    SUPPORTED_MODES = ("power", "binsearch")

    def __init__(
        self,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"Expected margin in [0, 1), received {margin}.")
        self.optimal_batch_size: int | None = init_val
        self._mode = mode
        self._steps_per_trial = steps_per_trial
        self._init_val = init_val
        self._max_trials = max_trials
        self._batch_arg_name = batch_arg_name
        self._margin = margin
        self._max_val = max_val
        # the Tuner sets it: the run ends once the search is done
        self._early_exit = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str | None = None) -> None:
        if _is_distributed(trainer):
            raise MisconfigurationException(
                "The Batch size finder is not supported with distributed strategies."
            )
        if "train" in trainer._data.sources:
            raise MisconfigurationException(
                "The Batch size finder cannot be used with dataloaders passed directly to `.fit()`. Please disable"
                " the feature or incorporate the dataloader into your LightningModule or LightningDataModule."
            )
        if stage != "fit":
            running = trainer.state.stage
            if running in _PREFIX and len(trainer._data.eval_loaders(running)) > 1:
                raise MisconfigurationException(
                    f"The Batch size finder cannot be used with multiple {_PREFIX[running]} dataloaders."
                )
        if not lightning_hasattr(pl_module, self._batch_arg_name):
            raise MisconfigurationException(
                f"Field {self._batch_arg_name} not found in `model`, `datamodule`, nor their `hparams` attributes."
            )
        hparams = getattr(pl_module, "hparams", None)
        if (
            hasattr(pl_module, self._batch_arg_name)
            and hparams is not None
            and self._batch_arg_name in hparams
        ):
            rank_zero_warn(
                f"Field `model.{self._batch_arg_name}` and `model.hparams.{self._batch_arg_name}` are mutually"
                f" exclusive! `model.{self._batch_arg_name}` will be used as the initial batch size for scaling."
                " If this is not the intended behavior, please remove either one."
            )

    def scale_batch_size(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the search now and keep the size found in :attr:`optimal_batch_size`."""
        self.optimal_batch_size = _scale_batch_size(
            trainer,
            self._mode,
            self._steps_per_trial,
            self._init_val,
            self._max_trials,
            self._batch_arg_name,
            self._margin,
            self._max_val,
        )
        if self._early_exit:
            raise _TunerExitException()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # not for the sanity check nor the validation inside fit: the fit's search covered them
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.VALIDATING:
            return
        self.scale_batch_size(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)


def _is_distributed(trainer: Trainer) -> bool:
    """A strategy that runs several processes (DDP, even on one device) or a world of several."""
    from lightning_lib.distributed import DDPStrategy

    return isinstance(trainer.strategy, DDPStrategy) or trainer.world_size > 1
