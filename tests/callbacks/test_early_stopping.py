"""EarlyStopping: criteria, hook selection and state, on a fake trainer; parity with Lightning."""

from __future__ import annotations

import logging
import math
import random
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from lightning_lib.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason


class _Strategy:
    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


def fake_trainer(**overrides: Any) -> SimpleNamespace:
    trainer = SimpleNamespace(
        current_epoch=0,
        should_stop=False,
        sanity_checking=False,
        fast_dev_run=False,
        state=SimpleNamespace(fn="fit"),
        callback_metrics={},
        strategy=_Strategy(),
        val_check_interval=1.0,
        check_val_every_n_epoch=1,
        world_size=1,
        global_rank=0,
    )
    for key, value in overrides.items():
        setattr(trainer, key, value)
    return trainer


def run_checks(callback: Any, values: list[float], key: str = "val_loss", trainer: Any = None) -> Any:
    """Feed one value per epoch through the hooks, stopping when the callback says so."""
    trainer = trainer or fake_trainer()
    callback.setup(trainer, None, "fit")
    for epoch, value in enumerate(values):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {key: torch.tensor(value), "other": torch.tensor(0.0)}
        callback.on_validation_end(trainer, None)
        callback.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            break
    return trainer


def test_patience_in_min_mode() -> None:
    es = EarlyStopping("val_loss", patience=2)
    trainer = run_checks(es, [1.0, 0.5, 0.6, 0.7, 0.1])
    assert trainer.should_stop and es.stopped_epoch == 3
    assert es.wait_count == 2 and es.best_score.item() == 0.5
    assert es.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert "did not improve in the last 2 records" in (es.stopping_reason_message or "")


def test_improvement_resets_wait_count() -> None:
    es = EarlyStopping("val_loss", patience=2)
    trainer = run_checks(es, [1.0, 1.1, 0.9, 1.0, 0.8, 0.85])
    assert not trainer.should_stop and es.stopped_epoch == 0
    assert es.wait_count == 1 and es.best_score.item() == pytest.approx(0.8)


def test_min_delta_in_max_mode() -> None:
    es = EarlyStopping("acc", mode="max", min_delta=0.1, patience=1)
    assert es.min_delta == 0.1
    trainer = run_checks(es, [0.5, 0.55], key="acc")  # +0.05 is not an improvement
    assert trainer.should_stop and es.stopped_epoch == 1 and es.best_score.item() == 0.5


def test_min_delta_sign_in_min_mode() -> None:
    es = EarlyStopping("val_loss", min_delta=0.1, patience=1)
    assert es.min_delta == -0.1
    run_checks(es, [1.0, 0.85])
    assert es.best_score.item() == pytest.approx(0.85) and es.wait_count == 0


def test_strict_error_names_available_metrics() -> None:
    es = EarlyStopping("missing")
    trainer = fake_trainer(callback_metrics={"val_loss": torch.tensor(1.0), "acc": torch.tensor(0.5)})
    es.setup(trainer, None, "fit")
    with pytest.raises(RuntimeError, match=r"`missing` which is not available.*`val_loss`, `acc`"):
        es.on_train_epoch_end(trainer, None)


def test_not_strict_skips_missing_metric() -> None:
    es = EarlyStopping("missing", strict=False, patience=1)
    trainer = run_checks(es, [1.0, 2.0, 3.0])
    assert not trainer.should_stop and es.wait_count == 0


def test_non_finite_stops() -> None:
    es = EarlyStopping("val_loss", patience=10)
    trainer = run_checks(es, [1.0, math.nan, 0.5])
    assert trainer.should_stop and es.stopped_epoch == 1
    assert es.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC
    es2 = EarlyStopping("val_loss", patience=10, check_finite=False)
    assert not run_checks(es2, [1.0, math.inf, 0.5]).should_stop


def test_thresholds() -> None:
    es = EarlyStopping("val_loss", stopping_threshold=0.2, patience=10)
    trainer = run_checks(es, [1.0, 0.5, 0.1, 0.05])
    assert trainer.should_stop and es.stopped_epoch == 2
    assert es.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD
    es = EarlyStopping("val_loss", divergence_threshold=5.0, patience=10)
    trainer = run_checks(es, [1.0, 4.0, 6.0, 1.0])
    assert trainer.should_stop and es.stopped_epoch == 2
    assert es.stopping_reason is EarlyStoppingReason.DIVERGENCE_THRESHOLD
    assert "Divergence threshold reached: val_loss = 6.0 < 5.0" in (es.stopping_reason_message or "")


def test_skips_sanity_check_other_stages_and_fast_dev_run() -> None:
    for overrides in (
        {"sanity_checking": True},
        {"state": SimpleNamespace(fn="validate")},
        {"fast_dev_run": 1},
    ):
        es = EarlyStopping("val_loss", patience=1)
        trainer = run_checks(es, [1.0, 2.0, 3.0], trainer=fake_trainer(**overrides))
        assert not trainer.should_stop and es.wait_count == 0


@pytest.mark.parametrize(
    ("val_check_interval", "every_n", "expected"),
    [(1.0, 1, True), (0.5, 1, False), (1.0, 2, False), (10, 1, False)],
)
def test_check_on_train_epoch_end_resolution(val_check_interval: float, every_n: int, expected: bool) -> None:
    es = EarlyStopping("val_loss", patience=1)
    trainer = fake_trainer(val_check_interval=val_check_interval, check_val_every_n_epoch=every_n)
    es.setup(trainer, None, "fit")
    assert es._check_on_train_epoch_end is expected
    trainer.callback_metrics = {"val_loss": torch.tensor(1.0)}
    # Exactly one of the two hooks runs the check.
    es.on_validation_end(trainer, None)
    es.on_train_epoch_end(trainer, None)
    assert es.best_score.item() == 1.0
    trainer.callback_metrics = {"val_loss": torch.tensor(2.0)}
    (es.on_train_epoch_end if expected else es.on_validation_end)(trainer, None)
    assert trainer.should_stop
    es2 = EarlyStopping("val_loss", check_on_train_epoch_end=False)
    es2.setup(trainer, None, "fit")
    assert es2._check_on_train_epoch_end is False


def test_state_dict_round_trip() -> None:
    es = EarlyStopping("val_loss", patience=3)
    run_checks(es, [1.0, 0.5, 0.7])
    state = es.state_dict()
    assert set(state) >= {"wait_count", "stopped_epoch", "best_score", "patience"}
    assert state["wait_count"] == 1 and state["best_score"].item() == 0.5
    restored = EarlyStopping("val_loss", patience=99)
    restored.load_state_dict(state)
    assert restored.wait_count == 1 and restored.patience == 3 and restored.best_score.item() == 0.5
    assert es.state_key == "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="`mode` can be min, max, got avg"):
        EarlyStopping("x", mode="avg")


def test_verbose_logs(caplog: pytest.LogCaptureFixture) -> None:
    es = EarlyStopping("val_loss", patience=1, verbose=True)
    with caplog.at_level(logging.INFO, logger="lightning_lib.callbacks.early_stopping"):
        run_checks(es, [1.0, 0.5, 0.7])
    text = caplog.text
    assert "Metric val_loss improved. New best score: 1.000" in text
    assert "Metric val_loss improved by 0.500 >= min_delta = 0.0. New best score: 0.500" in text
    assert "did not improve in the last 1 records. Best score: 0.500. Signaling Trainer to stop." in text


@pytest.mark.parity
@pytest.mark.parametrize("seed", range(5))
def test_parity_with_lightning_on_random_sequences(seed: int) -> None:
    """Same metric sequences through Lightning's callback and ours: same decisions and state."""
    pl_callbacks = pytest.importorskip("pytorch_lightning.callbacks")
    rng = random.Random(seed)
    values = [
        rng.choice([rng.uniform(0, 2), 1.0, math.nan if rng.random() < 0.05 else 0.7]) for _ in range(40)
    ]
    kwargs = {
        "monitor": "m",
        "patience": rng.randint(1, 4),
        "mode": rng.choice(["min", "max"]),
        "min_delta": rng.choice([0.0, 0.05]),
        "stopping_threshold": rng.choice([None, 0.05]),
        "divergence_threshold": rng.choice([None, 1.9]),
    }
    ours, theirs = EarlyStopping(**kwargs), pl_callbacks.EarlyStopping(**kwargs)
    t1, t2 = run_checks(ours, values, key="m"), run_checks(theirs, values, key="m")
    assert t1.should_stop == t2.should_stop
    for name in ("wait_count", "stopped_epoch", "patience", "stopping_reason_message"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.stopping_reason.value == theirs.stopping_reason.value
    torch.testing.assert_close(ours.best_score, theirs.best_score, equal_nan=True)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert ours.state_key == theirs.state_key


# ---- with the real Trainer ------------------------------------------------------------------------------

ES_CASES = {
    "default": ({"patience": 2}, {}, "val_loss"),
    "after_validation": ({"patience": 2, "check_on_train_epoch_end": False}, {}, "val_loss"),
    "val_twice_per_epoch": ({"patience": 2}, {"val_check_interval": 0.5}, "val_loss"),
    "max_every_2_epochs": (
        {"patience": 1, "mode": "max", "min_delta": 0.01},
        {"check_val_every_n_epoch": 2},
        "val_acc",
    ),
    "no_validation": ({"patience": 1, "min_delta": 0.05}, {"limit_val_batches": 0}, "train_loss"),
    "threshold": ({"patience": 3, "stopping_threshold": 1.5}, {}, "val_loss"),
}


def _fit_with_early_stopping(pl: Any, tmp_path: Any, case: str) -> tuple[Any, Any]:
    from tests.helpers import make_classes, quiet_trainer_kwargs

    es_kwargs, trainer_kwargs, monitor = ES_CASES[case]
    pl.seed_everything(7)
    classes = make_classes(pl)
    es = pl.callbacks.EarlyStopping(monitor, **es_kwargs)
    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=12, callbacks=[es], **trainer_kwargs)
    trainer = pl.Trainer(**kwargs)
    trainer.fit(classes["ClassifierModel"](lr=0.05), datamodule=classes["ClassifierDataModule"]())
    return es, trainer


def test_fit_stops_early(tmp_path: Any) -> None:
    import lightning_lib

    es, trainer = _fit_with_early_stopping(lightning_lib, tmp_path, "default")
    assert isinstance(es, EarlyStopping)
    assert trainer.should_stop and 0 < es.stopped_epoch < 11
    assert trainer.current_epoch == es.stopped_epoch + 1
    assert es.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(ES_CASES))
def test_fit_parity_with_lightning(tmp_path: Any, case: str) -> None:
    import lightning_lib

    reference = pytest.importorskip("pytorch_lightning")
    ours, our_trainer = _fit_with_early_stopping(lightning_lib, tmp_path / "ours", case)
    theirs, their_trainer = _fit_with_early_stopping(reference, tmp_path / "theirs", case)
    assert (ours.stopped_epoch, ours.wait_count) == (theirs.stopped_epoch, theirs.wait_count)
    assert ours._check_on_train_epoch_end == theirs._check_on_train_epoch_end
    assert ours.stopping_reason.value == theirs.stopping_reason.value
    torch.testing.assert_close(ours.best_score, theirs.best_score, rtol=1e-5, atol=1e-6)
    assert (our_trainer.current_epoch, our_trainer.global_step) == (
        their_trainer.current_epoch,
        their_trainer.global_step,
    )
