"""The hooks of a fit, validate, test and predict run, in order, are pytorch_lightning's."""

from __future__ import annotations

from typing import Any

import pytest

import lightning_lib
from tests.helpers import make_classes, quiet_trainer_kwargs, recording_classes, reference_lightning

pytestmark = pytest.mark.parity


def _record(pl: Any, tmp_path: Any, run: str, **trainer_kwargs: Any) -> list[str]:
    calls: list[str] = []
    base = make_classes(pl)["BoringModel"]
    model_cls, callback_cls = recording_classes(pl, base, calls)
    model = model_cls()
    trainer = pl.Trainer(callbacks=[callback_cls()], **quiet_trainer_kwargs(tmp_path, **trainer_kwargs))
    getattr(trainer, run)(model)
    return calls


@pytest.mark.parametrize(
    ("run", "kwargs"),
    [
        (
            "fit",
            {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "num_sanity_val_steps": 1},
        ),
        (
            "fit",
            {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, "accumulate_grad_batches": 2},
        ),
        ("fit", {"max_steps": 3, "limit_val_batches": 1, "val_check_interval": 2, "gradient_clip_val": 1.0}),
        ("validate", {"limit_val_batches": 2}),
        ("test", {"limit_test_batches": 2}),
        ("predict", {"limit_predict_batches": 2}),
    ],
)
def test_hook_order_matches_lightning(tmp_path: Any, run: str, kwargs: dict[str, Any]) -> None:
    reference = _record(reference_lightning(), tmp_path / "pl", run, **kwargs)
    ours = _record(lightning_lib, tmp_path / "ours", run, **kwargs)
    assert len(reference) > 10  # the recorder saw the run
    assert ours == reference
