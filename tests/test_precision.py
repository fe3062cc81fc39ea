"""Precision plugins: names and aliases, autocast and true-dtype training on CPU, the GradScaler logic."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import lightning_lib as pl
from lightning_lib.plugins.precision import (
    MixedPrecision,
    Precision,
    TruePrecision,
    build_precision,
    normalize_precision,
)
from tests.support import CountingModel, loader, trainer_kwargs


class _Recording(CountingModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = self(batch)
        self.seen["train"] = (
            batch.dtype,
            out.dtype,
            self.layer.weight.dtype,
            torch.get_default_dtype(),
            torch.is_autocast_enabled("cpu"),
        )
        loss = out.float().sum()
        self.log("loss", loss)
        return loss

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self.seen["predict"] = (batch.dtype, torch.get_default_dtype())
        return self(batch)


def _fit_with(tmp_path: Any, precision: Any) -> tuple[pl.Trainer, _Recording]:
    model = _Recording()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, precision=precision, limit_val_batches=0))
    trainer.fit(model)
    return trainer, model


def test_bf16_mixed_autocasts_on_cpu_and_trains(tmp_path: Any) -> None:
    before = _Recording().layer.weight
    trainer, model = _fit_with(tmp_path, "bf16-mixed")
    assert trainer.precision == "bf16-mixed"
    assert model.seen["train"] == (torch.float32, torch.bfloat16, torch.float32, torch.float32, True)
    assert trainer.global_step == 2 and model.layer.weight.dtype == torch.float32
    assert not torch.equal(before, model.layer.weight)
    predictions = trainer.predict(model, loader(4))
    assert predictions is not None and predictions[0].dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")  # the context does not leak


@pytest.mark.parametrize(
    ("precision", "dtype"), [("64-true", torch.float64), (64, torch.float64), ("bf16-true", torch.bfloat16)]
)
def test_true_precision_converts_module_inputs_and_defaults(
    tmp_path: Any, precision: Any, dtype: torch.dtype
) -> None:
    trainer, model = _fit_with(tmp_path, precision)
    assert model.seen["train"] == (dtype, dtype, dtype, dtype, False)
    assert torch.get_default_dtype() == torch.float32  # restored after each step
    predictions = trainer.predict(model, loader(4))
    assert model.seen["predict"] == (dtype, dtype)
    assert predictions is not None and predictions[0].dtype == dtype


def test_16_mixed_on_cpu_falls_back_to_bf16_with_a_warning(tmp_path: Any) -> None:
    with pytest.warns(UserWarning, match=r"'16-mixed'` is not supported on CPU.*'bf16-mixed'"):
        trainer, model = _fit_with(tmp_path, "16-mixed")
    assert trainer.precision == "bf16-mixed"
    assert isinstance(trainer.precision_plugin, MixedPrecision) and trainer.precision_plugin.scaler is None
    assert model.seen["train"][1] == torch.bfloat16


@pytest.mark.parametrize(
    ("given", "name", "warns"),
    [
        (None, "32-true", False),
        (32, "32-true", False),
        ("32", "32-true", False),
        (64, "64-true", False),
        ("64", "64-true", False),
        ("bf16", "bf16-mixed", True),
        (16, "bf16-mixed", True),  # discouraged alias, then the CPU fallback
        ("16", "bf16-mixed", True),
        ("16-true", "16-true", False),
    ],
)
def test_aliases(given: Any, name: str, warns: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert normalize_precision(given, "cpu") == name
    assert bool(caught) == warns
    if given in (16, "16", "bf16"):
        assert "historical reasons" in str(caught[0].message)


def test_16_mixed_on_cuda_keeps_fp16() -> None:
    assert normalize_precision("16-mixed", "cuda") == "16-mixed"
    with pytest.warns(UserWarning, match=r"historical reasons"):
        assert normalize_precision(16, "cuda") == "16-mixed"


def test_build_precision_types() -> None:
    assert type(build_precision(None, "cpu")) is Precision
    assert isinstance(build_precision("bf16-true", "cpu"), TruePrecision)
    plugin = build_precision("bf16-mixed", "cpu")
    assert isinstance(plugin, MixedPrecision) and plugin.scaler is None and plugin.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"precision to be one of .*received 'fp8'"):
        build_precision("fp8", "cpu")


def test_true_precision_leaves_integer_inputs_alone() -> None:
    plugin = TruePrecision("64-true")
    batch = {"x": torch.zeros(2, dtype=torch.float32), "y": torch.zeros(2, dtype=torch.long)}
    converted = plugin.convert_input(batch)
    assert converted["x"].dtype == torch.float64 and converted["y"].dtype == torch.long


# ---- GradScaler logic, with a fake scaler (no GPU here) ---------------------------------------------------
class FakeScaler:
    """Records the calls a GradScaler receives; ``found_inf`` makes ``step`` skip as a real one does."""

    def __init__(self, scale: float = 8.0) -> None:
        self.scale_factor = scale
        self.found_inf = False
        self.calls: list[str] = []
        self.loaded: dict[str, Any] | None = None

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        self.calls.append("scale")
        return loss * self.scale_factor

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self.calls.append("unscale")
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self.scale_factor)

    def step(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Any:
        self.calls.append("step")
        if self.found_inf:
            return None
        return optimizer.step(**kwargs)

    def update(self) -> None:
        self.calls.append("update")

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale_factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state


def _one_step(
    scaler: FakeScaler, closure_returns: bool = True, automatic: bool = True
) -> tuple[Any, list[str], Any]:
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=1.0)
    events: list[str] = []

    def closure() -> Any:
        events.append("closure")
        loss = plugin.scale_loss((param * 2).sum())
        loss.backward()
        return loss.detach() if closure_returns else None

    def after_closure() -> None:
        events.append(f"after_closure grad={param.grad.tolist()}")

    plugin.optimizer_step(optimizer, closure, after_closure, automatic)
    return param, events, scaler.calls


def test_scaler_scales_unscales_before_hooks_then_steps() -> None:
    scaler = FakeScaler()
    param, events, calls = _one_step(scaler)
    # hooks and clipping see true-sized gradients
    assert events == ["closure", "after_closure grad=[2.0, 2.0, 2.0]"]
    assert calls == ["scale", "unscale", "step", "update"]
    torch.testing.assert_close(param.detach(), torch.full((3,), -1.0))


def test_scaler_skips_the_step_on_overflow() -> None:
    scaler = FakeScaler()
    scaler.found_inf = True
    param, _, calls = _one_step(scaler)
    assert calls == ["scale", "unscale", "step", "update"]
    torch.testing.assert_close(param.detach(), torch.ones(3))


def test_scaler_does_not_step_when_training_step_returned_none() -> None:
    scaler = FakeScaler()
    param, _, calls = _one_step(scaler, closure_returns=False)
    assert "step" not in calls and calls[-1] == "update"
    torch.testing.assert_close(param.detach(), torch.ones(3))


def test_scaler_steps_under_manual_optimization() -> None:
    # manual optimization: the closure returns nothing but the backward already ran
    scaler = FakeScaler()
    param, _, calls = _one_step(scaler, closure_returns=False, automatic=False)
    assert calls == ["scale", "unscale", "step", "update"]
    torch.testing.assert_close(param.detach(), torch.full((3,), -1.0))


def test_scaler_state_round_trip() -> None:
    scaler = FakeScaler(scale=4.0)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    assert plugin.state_dict() == {"scale": 4.0}
    plugin.load_state_dict({"scale": 2.0})
    assert scaler.loaded == {"scale": 2.0}
    plugin.load_state_dict({})
    assert scaler.loaded == {"scale": 2.0}  # an empty state is ignored
    assert MixedPrecision("bf16-mixed", "cpu").state_dict() == {}


def test_real_grad_scaler_on_cpu() -> None:
    plugin = MixedPrecision("16-mixed", "cpu")
    assert isinstance(plugin.scaler, torch.amp.GradScaler)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=1.0)
    seen: list[list[float]] = []

    def closure() -> Any:
        loss = plugin.scale_loss(param.sum())
        loss.backward()
        return loss.detach()

    plugin.optimizer_step(optimizer, closure, lambda: seen.append(param.grad.tolist()))
    assert seen == [[1.0, 1.0, 1.0]]  # unscaled before the hooks
    torch.testing.assert_close(param.detach(), torch.zeros(3))

    def overflowing() -> Any:
        optimizer.zero_grad()
        loss = plugin.scale_loss(param.sum() * float("inf"))
        loss.backward()
        return loss.detach()

    scale_before = plugin.scaler.get_scale()
    plugin.optimizer_step(optimizer, overflowing, lambda: None)
    torch.testing.assert_close(param.detach(), torch.zeros(3))  # step skipped
    assert plugin.scaler.get_scale() < scale_before  # and the scale backed off


def test_fake_scaler_through_a_manual_fit(tmp_path: Any) -> None:
    class Manual(CountingModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(self(batch).sum())
            opt.step()
            return None

    model = Manual()
    before = model.layer.weight.detach().clone()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, precision="bf16-mixed"))
    scaler = FakeScaler()
    trainer.precision_plugin = MixedPrecision("bf16-mixed", "cpu", scaler=scaler)
    trainer.fit(model)
    assert scaler.calls == ["scale", "unscale", "step", "update"] * 2
    assert not torch.equal(before, model.layer.weight)
    assert trainer.global_step == 2


def test_fake_scaler_through_an_automatic_fit_with_clipping(tmp_path: Any) -> None:
    class Model(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            # d(sum(100 * layer(batch)))/d(weight) has rows 100 * batch.sum(0)
            self.seen["expected"] = float(100 * 2**0.5 * batch.sum(0).norm())
            return self(batch).sum() * 100

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.seen["norm"] = float(self.layer.weight.grad.norm())

        def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
            super().optimizer_step(*args, **kwargs)
            total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters()]))
            self.seen["clipped"] = float(total)

    model = Model()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, gradient_clip_val=1.0, limit_train_batches=1))
    scaler = FakeScaler(scale=1024.0)
    # bf16 autocast keeps the range that fp16 (the real 16-mixed) would overflow on CPU
    trainer.precision_plugin = MixedPrecision("bf16-mixed", "cpu", scaler=scaler)
    trainer.fit(model)
    assert scaler.calls == ["scale", "unscale", "step", "update"]
    # on_before_optimizer_step saw the unscaled gradient, and clipping applied to it
    assert model.seen["norm"] == pytest.approx(model.seen["expected"], rel=2e-2)
    assert model.seen["clipped"] == pytest.approx(1.0, rel=1e-4)
