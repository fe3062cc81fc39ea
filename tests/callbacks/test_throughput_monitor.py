"""ThroughputMonitor and Throughput: the metrics, their keys and the steps they are logged at, as in Lightning."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import ThroughputMonitor
from lightning_lib.callbacks.throughput_monitor import Throughput
from tests.helpers import classification_data, make_classes, quiet_trainer_kwargs, reference_lightning

# the totals of each update: time, batches, samples, lengths, flops of the step
UPDATES = [(0.5 * i + 0.1 * (i % 3), i, 4 * i, 40 * i + i, 1000 + 10 * i) for i in range(1, 9)]


def _feed(throughput: Any, lengths: bool, flops: bool) -> list[dict[str, Any]]:
    out = []
    for time, batches, samples, length, step_flops in UPDATES:
        throughput.update(
            time=time,
            batches=batches,
            samples=samples,
            lengths=length if lengths else None,
            flops=step_flops if flops else None,
        )
        out.append(throughput.compute())
    return out


@pytest.mark.parity
@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize(("lengths", "flops"), [(False, False), (True, True)])
def test_throughput_computes_what_lightning_computes(world_size: int, lengths: bool, flops: bool) -> None:
    reference_lightning()
    from lightning_fabric.utilities.throughput import Throughput as TheirThroughput

    kwargs = {"available_flops": 5e4, "world_size": world_size, "window_size": 3, "separator": "|"}
    ours = _feed(Throughput(**kwargs), lengths, flops)
    theirs = _feed(TheirThroughput(**kwargs), lengths, flops)
    assert len(ours) == len(theirs)
    for our_metrics, their_metrics in zip(ours, theirs):
        assert our_metrics == pytest.approx(their_metrics)
    assert "device|mfu" in ours[-1] if flops else "device|samples_per_sec" in ours[-1]


def test_throughput_refuses_inconsistent_counters() -> None:
    throughput = Throughput(window_size=2)
    throughput.update(time=1.0, batches=1, samples=2)
    with pytest.raises(ValueError, match=r"Expected the value to increase, last: 1\.0, current: 1\.0"):
        throughput.update(time=1.0, batches=2, samples=4)
    with pytest.raises(ValueError, match=r"Expected samples \(1\) to be greater or equal than batches \(3\)"):
        throughput.update(time=2.0, batches=3, samples=1)
    with pytest.raises(ValueError, match="Expected window_size >= 2, received 1"):
        Throughput(window_size=1)
    throughput.reset()
    throughput.update(time=0.5, batches=1, samples=1)
    assert throughput.compute() == {"time": 0.5, "batches": 1, "samples": 1}


def _logged(pl: ModuleType, root: Any, every: int) -> list[tuple[int | None, dict[str, Any]]]:
    records: list[tuple[int | None, dict[str, Any]]] = []

    class Recorder(pl.loggers.Logger):
        @property
        def name(self) -> str:
            return "recorder"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            records.append((step, dict(metrics)))

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

    pl.seed_everything(0)
    model = make_classes(pl)["ClassifierModel"]()
    model.flops_per_batch = 100
    monitor = pl.callbacks.ThroughputMonitor(batch_size_fn=lambda batch: batch[0].shape[0], window_size=2)
    kwargs = quiet_trainer_kwargs(
        root,
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=3,
        log_every_n_steps=every,
        logger=Recorder(),
    )
    kwargs["accumulate_grad_batches"] = 2
    trainer = pl.Trainer(callbacks=[monitor], **kwargs)
    data = DataLoader(classification_data(32), batch_size=8)
    val = DataLoader(classification_data(16, seed=1), batch_size=4)
    trainer.fit(model, data, val)
    trainer.test(model, val)
    return [(step, m) for step, m in records if any("/" in k and k.split("/")[0] in _STAGES for k in m)]


_STAGES = {"train", "validate", "test", "predict"}
_TIMELESS = ("batches", "samples", "epoch")


@pytest.mark.parity
@pytest.mark.parametrize("every", [1, 2])
def test_a_fit_logs_what_lightning_logs(tmp_path: Any, every: int) -> None:
    pl = reference_lightning()
    ours = _logged(lightning_lib, tmp_path / "ours", every)
    theirs = _logged(pl, tmp_path / "theirs", every)
    assert [sorted(m) for _, m in ours] == [sorted(m) for _, m in theirs]
    timeless = [[(k, v) for k, v in m.items() if k.endswith(_TIMELESS)] for _, m in ours]
    assert timeless == [[(k, v) for k, v in m.items() if k.endswith(_TIMELESS)] for _, m in theirs]
    assert [step for step, _ in ours] == [step for step, _ in theirs]
    assert any("train/device/samples_per_sec" in m for _, m in ours)


def test_warns_once_without_flops_per_batch(tmp_path: Any) -> None:
    model = make_classes(lightning_lib)["ClassifierModel"]()
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].shape[0])
    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3)
    with pytest.warns(UserWarning, match="you need to define a `flops_per_batch` attribute") as record:
        lightning_lib.Trainer(callbacks=[monitor], **kwargs).fit(
            model, DataLoader(classification_data(32), batch_size=8)
        )
    assert len([w for w in record if "flops_per_batch" in str(w.message)]) == 1
