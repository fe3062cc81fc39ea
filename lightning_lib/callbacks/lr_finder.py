"""``LearningRateFinder``: the learning rate range test as a callback, run when the fit starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_lib.callbacks.callback import Callback
from lightning_lib.tuner.lr_finder import _lr_find, _LRFinder
from lightning_lib.utilities.exceptions import _TunerExitException
from lightning_lib.utilities.seed import isolate_rng

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


class LearningRateFinder(Callback):
    """Runs the learning rate range test at ``on_fit_start`` (override ``on_fit_start`` or call
    :meth:`lr_find` from another hook to run it elsewhere, e.g. at chosen epochs).

    Args:
        min_lr: the learning rate the test starts from.
        max_lr: the learning rate it ends at.
        num_training_steps: how many learning rates (optimizer steps) it tries.
        mode: ``"exponential"`` or ``"linear"`` growth of the learning rate.
        early_stop_threshold: the test stops once the loss exceeds this multiple of the best loss;
            None never stops early.
        update_attr: set the suggestion on the model's learning rate attribute and on the optimizer.
        attr_name: that attribute; by default ``lr`` or ``learning_rate`` on the model or its hparams.

    The result is :attr:`optimal_lr` (with ``results`` and ``suggestion()``). The global RNG is left as
    it was before the test.
    """

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        self._min_lr = min_lr
        self._max_lr = max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr = update_attr
        self._attr_name = attr_name
        # the Tuner sets it: the run ends once the test is done
        self._early_exit = False
        self.optimal_lr: _LRFinder | None = None

    def lr_find(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the range test now and keep its result in :attr:`optimal_lr`."""
        with isolate_rng():
            self.optimal_lr = _lr_find(
                trainer,
                pl_module,
                min_lr=self._min_lr,
                max_lr=self._max_lr,
                num_training=self._num_training_steps,
                mode=self._mode,
                early_stop_threshold=self._early_stop_threshold,
                update_attr=self._update_attr,
                attr_name=self._attr_name,
            )
        if self._early_exit:
            raise _TunerExitException()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.lr_find(trainer, pl_module)
