"""The predict loop: ``predict_step`` over every predict loader, in Lightning's hook order."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.callbacks.prediction_writer import BasePredictionWriter
from lightning_lib.loop.loaders import IndexRecordingBatchSampler, LimitedFetcher, with_batch_indices
from lightning_lib.loop.step import batch_transfer
from lightning_lib.loop.views import EvaluationLoopView
from lightning_lib.trainer.states import RunningStage

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


class PredictLoop(EvaluationLoopView):
    """``trainer.predict_loop``: its progress and limits (the view every evaluation loop has) and what
    prediction writers read while ``trainer.predict`` runs (Lightning's names).

    ``current_batch_indices`` are the dataset indices of the batch being predicted and
    ``epoch_batch_indices`` those of every batch so far, per dataloader; both are recorded only while a
    ``BasePredictionWriter`` wants them. ``predictions`` are the predictions kept so far (a flat list
    for one dataloader, a list per dataloader for several).
    """

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer, "predict")
        self.epoch_batch_indices: list[list[list[int]]] = []
        self.current_batch_indices: list[int] = []
        self.return_predictions = False
        self._predictions: list[list[Any]] = []

    @property
    def predictions(self) -> list[Any]:
        if not self._predictions:
            return []
        return self._predictions[0] if len(self._predictions) == 1 else self._predictions

    def _reset(self, num_dataloaders: int, return_predictions: bool) -> None:
        self.return_predictions = return_predictions
        self.epoch_batch_indices = [[] for _ in range(num_dataloaders)]
        self._predictions = [[] for _ in range(num_dataloaders)]

    def _record_batch_indices(
        self,
        trainer: Trainer,
        loader: Any,
        batch_idx: int,
        dataloader_idx: int,
        on_batch: bool,
        on_epoch: bool,
    ) -> None:
        sampler = getattr(loader, "batch_sampler", None)
        if not isinstance(sampler, IndexRecordingBatchSampler):
            message = (
                f"Couldn't infer the batch indices fetched from your dataloader: `{type(loader).__name__}`"
            )
            if message not in trainer._run_state.warnings_seen:
                trainer._run_state.warnings_seen.add(message)
                warnings.warn(message, UserWarning, stacklevel=3)
            return
        indices = sampler.seen_batch_indices[batch_idx]
        if on_epoch:
            self.epoch_batch_indices[dataloader_idx].append(indices)
        if on_batch:
            self.current_batch_indices = indices

    def _end(self) -> None:
        if not self.return_predictions:
            self._predictions = []
        self.epoch_batch_indices = []


def run_predict(trainer: Trainer, return_predictions: bool) -> list[Any] | None:
    """Prediction over every loader; a flat list for one loader, a list per loader for several."""
    hooks = trainer._hooks
    loaders = source = trainer._data.eval_loaders(RunningStage.PREDICTING)
    limits = trainer._data.eval_limits(RunningStage.PREDICTING)
    if not loaders or all(limit == 0 for limit in limits):
        return [] if return_predictions else None
    writers = [cb for cb in trainer.callbacks if isinstance(cb, BasePredictionWriter)]
    on_batch = any(w.interval.on_batch for w in writers)
    on_epoch = any(w.interval.on_epoch for w in writers)
    if writers:
        # the loader's batch sampler records each batch's dataset indices for the writers
        loaders = [with_batch_indices(dl) for dl in loaders]
    state = trainer.predict_loop
    state._reset(len(loaders), return_predictions)
    keep = return_predictions or on_epoch
    grad_context = torch.inference_mode() if trainer.inference_mode else torch.no_grad()
    multiple = len(loaders) > 1
    precision = trainer.precision_plugin
    counts = trainer._run_state.loops.predict
    counts.reset_on_run()
    with grad_context:
        fetchers = [LimitedFetcher(dl, limit) for dl, limit in zip(loaders, limits)]
        fetchers[0].start()
        hooks.module("on_predict_model_eval")
        hooks.callbacks("on_predict_start")
        if trainer._data.eval_loaders(RunningStage.PREDICTING) is not source:
            # a callback (BatchSizeFinder) changed the batch size at the start: run with the loaders it left
            for fetcher in fetchers:
                fetcher.close()
            loaders = trainer._data.eval_loaders(RunningStage.PREDICTING)
            limits = trainer._data.eval_limits(RunningStage.PREDICTING)
            if writers:
                loaders = [with_batch_indices(dl) for dl in loaders]
            state._reset(len(loaders), return_predictions)
            fetchers = [LimitedFetcher(dl, limit) for dl, limit in zip(loaders, limits)]
            fetchers[0].start()
        hooks.module("on_predict_start")
        # a tuner at on_predict_start puts the counters it saved back (new objects): count into those
        counts = trainer._run_state.loops.predict
        hooks.callbacks("on_predict_epoch_start")
        hooks.module("on_predict_epoch_start")
        for dl_idx, fetcher in enumerate(fetchers):
            if dl_idx:
                fetcher.start()
            transfer = batch_transfer(trainer, dataloader_idx=dl_idx)
            predictions = state._predictions[dl_idx]
            batch_idx = 0
            while True:
                try:
                    with hooks.profile("[_PredictionLoop].predict_next"):
                        batch = next(fetcher)
                except StopIteration:
                    break
                batch = transfer(batch)
                if writers:
                    state._record_batch_indices(
                        trainer, fetcher.loader, batch_idx, dl_idx, on_batch, on_epoch
                    )
                hook_args: tuple[Any, ...] = (batch, batch_idx, dl_idx) if multiple else (batch, batch_idx)
                counts.increment_ready()
                hooks.callbacks("on_predict_batch_start", *hook_args)
                hooks.module("on_predict_batch_start", *hook_args)
                counts.increment_started()
                with precision.forward_context():
                    output = hooks.module("predict_step", *hook_args)
                counts.increment_processed()
                hooks.callbacks("on_predict_batch_end", output, *hook_args)
                hooks.module("on_predict_batch_end", output, *hook_args)
                counts.increment_completed()
                if keep:
                    predictions.append(output)
                batch_idx += 1
            fetcher.close()
        hooks.callbacks("on_predict_epoch_end")
        hooks.module("on_predict_epoch_end")
        results = state.predictions if return_predictions else None
        state._end()
        hooks.callbacks("on_predict_end")
        hooks.module("on_predict_end")
    return results
