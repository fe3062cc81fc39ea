"""The predict loop: ``predict_step`` over every predict loader, in Lightning's hook order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.loop.loaders import LimitedFetcher
from lightning_lib.loop.step import batch_transfer
from lightning_lib.trainer.states import RunningStage

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


def run_predict(trainer: Trainer, return_predictions: bool) -> list[Any] | None:
    """Prediction over every loader; a flat list for one loader, a list per loader for several."""
    hooks = trainer._hooks
    loaders = trainer._data.eval_loaders(RunningStage.PREDICTING)
    limits = trainer._data.eval_limits(RunningStage.PREDICTING)
    if not loaders or all(limit == 0 for limit in limits):
        return [] if return_predictions else None
    grad_context = torch.inference_mode() if trainer.inference_mode else torch.no_grad()
    all_predictions: list[list[Any]] = []
    multiple = len(loaders) > 1
    precision = trainer.precision_plugin
    with grad_context:
        fetchers = [LimitedFetcher(dl, limit) for dl, limit in zip(loaders, limits)]
        fetchers[0].start()
        hooks.module("on_predict_model_eval")
        hooks.callbacks("on_predict_start")
        hooks.module("on_predict_start")
        hooks.callbacks("on_predict_epoch_start")
        hooks.module("on_predict_epoch_start")
        for dl_idx, fetcher in enumerate(fetchers):
            if dl_idx:
                fetcher.start()
            transfer = batch_transfer(trainer, dataloader_idx=dl_idx)
            predictions: list[Any] = []
            batch_idx = 0
            while True:
                try:
                    with hooks.profile("[_PredictionLoop].predict_next"):
                        batch = next(fetcher)
                except StopIteration:
                    break
                batch = transfer(batch)
                hook_args: tuple[Any, ...] = (batch, batch_idx, dl_idx) if multiple else (batch, batch_idx)
                hooks.callbacks("on_predict_batch_start", *hook_args)
                hooks.module("on_predict_batch_start", *hook_args)
                with precision.forward_context():
                    output = hooks.module("predict_step", *hook_args)
                if return_predictions:
                    predictions.append(output)
                hooks.callbacks("on_predict_batch_end", output, *hook_args)
                hooks.module("on_predict_batch_end", output, *hook_args)
                batch_idx += 1
            fetcher.close()
            all_predictions.append(predictions)
        hooks.callbacks("on_predict_epoch_end")
        hooks.module("on_predict_epoch_end")
        hooks.callbacks("on_predict_end")
        hooks.module("on_predict_end")
    if not return_predictions:
        return None
    return all_predictions if multiple else all_predictions[0]
