"""On a CUDA device: mixed and true low precision, pinned non-blocking batch copies, no host-device
sync in the steady training loop, exact resume, and the GPU benchmark's smoke run.

Skipped without CUDA. Every fit is a tiny model for a few dozen steps: this file and
``benchmarks/gpu.py`` share one 15-minute GPU session (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import lightning_lib as pl
from tests.gpu import run_quick_gpu_benchmark
from tests.helpers import ClassifierModel, Crash, CrashAfter, classification_data, quiet_trainer_kwargs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = torch.device("cuda")


def _trainer(root: Path, **overrides: Any) -> pl.Trainer:
    kwargs = quiet_trainer_kwargs(root, accelerator=DEVICE.type, devices=1, max_epochs=1)
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def _loader(n: int = 96, batch_size: int = 16, pin: bool = True, shuffle: bool = True) -> DataLoader:
    return DataLoader(classification_data(n), batch_size=batch_size, shuffle=shuffle, pin_memory=pin)


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


class Probe(pl.LightningModule):
    """Linear 32->10 trained on the mean square of its output (small gradients: no fp16 overflow);
    records the precision-relevant facts of every training_step and can make one batch's loss inf."""

    def __init__(self, inf_batch: int = -1, lr: float = 0.1) -> None:
        super().__init__()
        self.net = torch.nn.Linear(32, 10)
        self.inf_batch = inf_batch
        self.lr = lr
        self.seen: list[dict[str, Any]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.net(x)
        self.seen.append(
            {
                "x": (x.device.type, x.dtype),
                "y": (y.device.type, y.dtype),
                "out": out.dtype,
                "param": self.net.weight.dtype,
                "autocast": torch.is_autocast_enabled(DEVICE.type) and torch.get_autocast_dtype(DEVICE.type),
            }
        )
        loss = out.float().pow(2).mean()
        if batch_idx == self.inf_batch:
            loss = loss * float("inf")  # every gradient becomes inf or nan
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class ScalerSteps(pl.Callback):
    """Per batch: whether any weight changed, and the GradScaler's scale before and after."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[bool, float, float]] = {}
        self._before: list[torch.Tensor] = []
        self._scale = 0.0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._before = _snapshot(pl_module)
        self._scale = trainer.precision_plugin.scaler.get_scale()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        changed = any(not torch.equal(a, b) for a, b in zip(self._before, pl_module.parameters()))
        self.steps[batch_idx] = (changed, self._scale, trainer.precision_plugin.scaler.get_scale())


def test_16_mixed_skips_the_step_whose_gradients_are_inf(tmp_path: Path) -> None:
    inf_batch = 3
    model, recorder = Probe(inf_batch=inf_batch), ScalerSteps()
    trainer = _trainer(tmp_path, precision="16-mixed", callbacks=[recorder])
    trainer.fit(model, _loader())
    assert isinstance(trainer.precision_plugin.scaler, torch.amp.GradScaler)
    assert {s["out"] for s in model.seen} == {torch.float16}  # autocast to fp16 ...
    assert {s["param"] for s in model.seen} == {torch.float32}  # ... over fp32 weights
    assert sorted(recorder.steps) == list(range(6))
    changed, before, after = recorder.steps[inf_batch]
    assert not changed, "the optimizer stepped on inf gradients"
    assert after < before, f"the scale did not back off after inf gradients: {before} -> {after}"
    for batch_idx, (changed, before, after) in recorder.steps.items():
        if batch_idx != inf_batch:
            assert changed, f"finite batch {batch_idx} did not update the weights"
            assert after == before, f"finite batch {batch_idx} changed the scale: {before} -> {after}"


def test_bf16_mixed_autocasts_to_bf16_over_fp32_weights(tmp_path: Path) -> None:
    model = Probe()
    initial = _snapshot(model)
    trainer = _trainer(tmp_path, precision="bf16-mixed")
    trainer.fit(model, _loader())
    assert trainer.precision_plugin.scaler is None  # bf16 has fp32's range: nothing to scale
    assert {s["autocast"] for s in model.seen} == {torch.bfloat16}
    assert {s["out"] for s in model.seen} == {torch.bfloat16}
    assert {s["param"] for s in model.seen} == {torch.float32}
    assert {s["x"] for s in model.seen} == {(DEVICE.type, torch.float32)}
    assert all(not torch.equal(a, b.cpu()) for a, b in zip(initial, model.parameters()))


def test_bf16_true_puts_parameters_and_inputs_in_bf16(tmp_path: Path) -> None:
    model = Probe(lr=0.5)
    initial = [p.to(torch.bfloat16) for p in _snapshot(model)]
    trainer = _trainer(tmp_path, precision="bf16-true")
    trainer.fit(model, _loader())
    assert {s["param"] for s in model.seen} == {torch.bfloat16}
    assert {s["x"] for s in model.seen} == {(DEVICE.type, torch.bfloat16)}
    assert {s["y"] for s in model.seen} == {(DEVICE.type, torch.int64)}  # integer targets stay integers
    assert {s["out"] for s in model.seen} == {torch.bfloat16}
    assert {s["autocast"] for s in model.seen} == {False}
    params = list(model.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert all(not torch.equal(a, b.cpu()) for a, b in zip(initial, params))


# bf16-true converts the inputs' dtype: that must happen on the device, after the pinned copy (as
# pytorch_lightning does in Strategy.training_step), not on the CPU into fresh pageable memory.
@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_pinned_batches_are_copied_to_cuda_without_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    copies: list[tuple[bool, bool]] = []  # (source pinned, non_blocking) of each host-to-device .to()
    recording = [False]
    original = torch.Tensor.to

    def spy(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        if recording[0] and self.device.type == "cpu" and out.device.type == "cuda":
            non_blocking = bool(kwargs.get("non_blocking")) or any(a is True for a in args)
            copies.append((self.is_pinned(), non_blocking))
        return out

    class Record(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            recording[0] = True

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            recording[0] = False

    monkeypatch.setattr(torch.Tensor, "to", spy)
    model = Probe()
    trainer = _trainer(tmp_path, precision=precision, callbacks=[Record()])
    trainer.fit(model, _loader(pin=True))
    monkeypatch.undo()
    assert {s["x"][0] for s in model.seen} == {s["y"][0] for s in model.seen} == {"cuda"}
    assert len(copies) >= 2 * len(model.seen), f"expected x and y of each batch copied with .to(): {copies}"
    assert all(pinned for pinned, _ in copies), "a batch reached the transfer outside pinned memory"
    assert all(non_blocking for _, non_blocking in copies), f"blocking host-to-device copies: {copies}"


@contextlib.contextmanager
def sync_watch() -> Iterator[list[str]]:
    """CUDA's sync debug mode in "warn" for the block; yields the syncs found, each with its stack.

    "warn" rather than "error": one run then lists every synchronising call site, not just the first.
    """
    found: list[str] = []

    def record(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if "synchroniz" in str(message):
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.endswith("warnings.py")]
            found.append(f"{message}\n{''.join(traceback.format_list(frames[-12:]))}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")


class SyncWatch(pl.Callback):
    """Watches for syncs from the start of batch ``warmup`` to the end of the training epoch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.found: list[str] = []
        self.watched_batches = 0
        self._stack = contextlib.ExitStack()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.found = self._stack.enter_context(sync_watch())
        if batch_idx >= self.warmup:
            self.watched_batches += 1

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stack.close()


class Steady(pl.LightningModule):
    """A small classifier that logs like user code does; fused Adam under fp16 (see the test)."""

    def __init__(self, precision: str, on_epoch: bool = False) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        self.fused = precision == "16-mixed"
        self.on_epoch = on_epoch

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, prog_bar=True, on_epoch=self.on_epoch)
        self.log("train_acc", (logits.argmax(-1) == y).float().mean(), on_epoch=self.on_epoch)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3, fused=self.fused or None)


def _raw_steps_sync(precision: str) -> list[str]:
    """The syncs of plain PyTorch doing the same steps: what no framework can avoid."""
    model, loader = Steady(precision).to(DEVICE), _loader(pin=True)
    optimizer = model.configure_optimizers()
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(DEVICE.type) if precision == "16-mixed" else None
    for i, (x, y) in enumerate(loader):
        watch: contextlib.AbstractContextManager[list[str]] = (
            sync_watch() if i >= 2 else contextlib.nullcontext([])
        )
        with watch as found:  # the first two steps warm up (lazy state, GradScaler scale)
            x, y = x.to(DEVICE, non_blocking=True), y.to(DEVICE, non_blocking=True)
            with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model.net(x), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # as the Trainer does, for clipping and hooks
                scaler.step(optimizer)
                scaler.update()
        if found:
            return found
    return []


def _fit_watching_syncs(tmp_path: Path, precision: str, batches: int, on_epoch: bool) -> SyncWatch:
    raw = _raw_steps_sync(precision)
    if raw:
        pytest.skip(f"plain PyTorch already syncs in a {precision} step; first:\n{raw[0]}")
    watch = SyncWatch(warmup=5)
    trainer = _trainer(tmp_path, precision=precision, callbacks=[watch], log_every_n_steps=10_000)
    try:
        trainer.fit(Steady(precision, on_epoch), _loader(n=16 * batches, pin=True))
    finally:
        watch.stop()  # also when the fit fails: the debug mode must not outlive the test
    assert watch.watched_batches == batches - 5
    return watch


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_no_host_device_sync_in_steady_training_steps(tmp_path: Path, precision: str) -> None:
    # 16-mixed uses fused Adam: GradScaler.step reads found_inf with .item() for other optimizers,
    # in a raw loop as much as in any Trainer, and the control run would skip the test.
    watch = _fit_watching_syncs(tmp_path, precision, batches=40, on_epoch=False)
    assert not watch.found, f"{len(watch.found)} syncs in the steady steps; first:\n{watch.found[0]}"


def test_no_host_device_sync_with_epoch_level_logging(tmp_path: Path) -> None:
    # More than 256 steps in one epoch: epoch accumulators fold their pending values every 256.
    watch = _fit_watching_syncs(tmp_path, "32-true", batches=300, on_epoch=True)
    assert not watch.found, f"{len(watch.found)} syncs in the steady steps; first:\n{watch.found[0]}"


def _resumable_fit(
    root: Path, precision: str, crash_at: int | None, ckpt_path: Any
) -> tuple[Any, pl.Trainer]:
    pl.seed_everything(7)
    model = ClassifierModel(dropout=0.3)  # dropout draws from the CUDA generator: its state must resume
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=str(root / "ckpt"), save_top_k=-1, every_n_train_steps=4, save_last=True
    )
    callbacks: list[Any] = [checkpoint] + ([CrashAfter(crash_at)] if crash_at is not None else [])
    trainer = _trainer(
        root, precision=precision, max_epochs=2, enable_checkpointing=True, callbacks=callbacks
    )
    loader = _loader(n=96, batch_size=8, pin=True)
    if crash_at is None:
        trainer.fit(model, loader, ckpt_path=ckpt_path)
    else:
        with pytest.raises(Crash):
            trainer.fit(model, loader, ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_resume_on_cuda_equals_an_uninterrupted_run(tmp_path: Path, precision: str) -> None:
    reference, ref_trainer = _resumable_fit(tmp_path / "ref", precision, None, None)
    _resumable_fit(tmp_path / "run", precision, 10, None)  # last checkpoint at step 8, mid-epoch
    resumed, trainer = _resumable_fit(tmp_path / "run", precision, None, "last")
    assert trainer.global_step == ref_trainer.global_step == 24
    assert {p.device.type for p in resumed.parameters()} == {DEVICE.type}
    for ours, ref in zip(resumed.parameters(), reference.parameters()):
        assert torch.equal(ours, ref), f"max difference {(ours - ref).abs().max().item()}"
    if precision == "16-mixed":
        assert (
            trainer.precision_plugin.scaler.state_dict() == ref_trainer.precision_plugin.scaler.state_dict()
        )


def test_gpu_benchmark_quick_runs_on_cuda() -> None:
    report = run_quick_gpu_benchmark("cuda", timeout=300)
    assert report["device"]["type"] == "cuda" and report["device"]["name"]
    for case in ("tiny_mlp", "compute_bound"):
        figures = report["cases"][case]
        for impl in ("raw", "lightning_lib", "pytorch_lightning"):
            assert figures["ms_per_step"][impl] > 0, (case, impl)
            assert figures["peak_memory_mib"][impl] > 0, (case, impl)
