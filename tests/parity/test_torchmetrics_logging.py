"""``self.log`` of torchmetrics objects behaves as in pytorch_lightning: per-step values from the metric's
forward, epoch values from ``compute()`` over the whole epoch, and a reset before the next epoch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from tests.helpers import classification_data, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity

torchmetrics = pytest.importorskip("torchmetrics")


def _run(pl: Any, tmp_path: Any, sync_dist: bool) -> dict[str, Any]:
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    class Recorder(pl.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[int | None, dict[str, float]]] = []

        @property
        def name(self) -> str:
            return "recorder"

        @property
        def version(self) -> int:
            return 0

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.rows.append((step, {k: float(v) for k, v in sorted(metrics.items())}))

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(32, 10)
            self.train_acc = MulticlassAccuracy(10)
            self.step_acc = MulticlassAccuracy(10, average="micro")
            self.train_scores = torchmetrics.MetricCollection(
                {"acc": MulticlassAccuracy(10), "f1": MulticlassF1Score(10)}, prefix="scores_"
            )
            self.val_acc = MulticlassAccuracy(10)
            self.test_acc = MulticlassAccuracy(10, average="micro")
            self.val_at_epoch_end: list[float] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            logits = self(x)
            self.train_acc(logits, y)
            self.log("train_acc", self.train_acc, on_step=True, on_epoch=True, sync_dist=sync_dist)
            self.step_acc(logits, y)
            self.log("step_acc", self.step_acc)  # training_step's default: this step's value only
            self.train_scores(logits, y)
            self.log_dict(self.train_scores, on_epoch=True)
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.val_acc.update(self(x), y)
            self.log("val_acc", self.val_acc, prog_bar=True, sync_dist=sync_dist)

        def on_validation_epoch_end(self) -> None:
            self.val_at_epoch_end.append(float(self.trainer.callback_metrics.get("val_acc", -1.0)))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.test_acc(self(x), y)
            self.log("test_acc", self.test_acc)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    pl.seed_everything(0)
    recorder = Recorder()
    model = Model()
    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=3, num_sanity_val_steps=2, log_every_n_steps=3)
    kwargs["logger"] = recorder
    trainer = pl.Trainer(**kwargs)
    train = DataLoader(classification_data(160, seed=0), batch_size=16, shuffle=True)
    val = DataLoader(classification_data(70, seed=1), batch_size=16)  # a short last batch
    trainer.fit(model, train, val)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    validated = trainer.validate(model, val, verbose=False)
    tested = trainer.test(model, val, verbose=False)
    return {
        "rows": recorder.rows,
        "fit_metrics": fit_metrics,
        "validate": validated,
        "test": tested,
        "val_at_epoch_end": model.val_at_epoch_end,
        # how many updates each metric holds now: what was reset and when
        "update_counts": {
            name: metric._update_count
            for name, metric in model.named_modules()
            if isinstance(metric, torchmetrics.Metric)
        },
    }


def _assert_close(ours: Any, ref: Any, path: str = "") -> None:
    if isinstance(ref, dict):
        assert set(ours) == set(ref), f"{path}: keys differ: {sorted(ours)} vs {sorted(ref)}"
        for key in ref:
            _assert_close(ours[key], ref[key], f"{path}.{key}")
    elif isinstance(ref, list | tuple):
        assert len(ours) == len(ref), f"{path}: length {len(ours)} vs {len(ref)}"
        for i, (a, b) in enumerate(zip(ours, ref)):
            _assert_close(a, b, f"{path}[{i}]")
    elif isinstance(ref, float):
        assert ours == pytest.approx(ref, rel=1e-6, abs=1e-7), path
    else:
        assert ours == ref, path


@pytest.mark.parametrize("sync_dist", [False, True])
def test_metric_objects_log_like_lightning(tmp_path: Any, sync_dist: bool) -> None:
    reference = _run(reference_lightning(), tmp_path / "pl", sync_dist)
    ours = _run(lightning_lib, tmp_path / "ours", sync_dist)
    assert len(reference["rows"]) > 5 and "val_acc" in reference["fit_metrics"]
    _assert_close(ours, reference)
