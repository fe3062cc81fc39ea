"""DeviceStatsMonitor: which stats are logged, under which keys and at which steps; CPU stats without psutil."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import DeviceStatsMonitor
from lightning_lib.callbacks import device_stats_monitor as dsm
from tests.helpers import classification_data, make_classes, quiet_trainer_kwargs, reference_lightning

CPU_KEYS = {"cpu_percent", "cpu_vm_percent", "cpu_swap_percent"}


def _logged(pl: ModuleType, root: Path, **monitor_kwargs: Any) -> list[tuple[int | None, dict[str, Any]]]:
    records: list[tuple[int | None, dict[str, Any]]] = []

    class Recorder(pl.loggers.Logger):
        @property
        def name(self) -> str:
            return "recorder"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            if any(k.startswith("DeviceStatsMonitor") for k in metrics):
                records.append((step, dict(metrics)))

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

    pl.seed_everything(0)
    model = make_classes(pl)["ClassifierModel"]()
    kwargs = quiet_trainer_kwargs(
        root, max_epochs=1, limit_train_batches=6, limit_val_batches=2, log_every_n_steps=2, logger=Recorder()
    )
    trainer = pl.Trainer(callbacks=[pl.callbacks.DeviceStatsMonitor(**monitor_kwargs)], **kwargs)
    data = DataLoader(classification_data(64), batch_size=8)
    trainer.fit(model, data, DataLoader(classification_data(16, seed=1), batch_size=8))
    return records


@pytest.mark.parity
def test_logs_the_keys_and_steps_lightning_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pl = reference_lightning()
    # Lightning reads the CPU stats with psutil, which this environment lacks: give it fixed ones
    import pytorch_lightning.accelerators.cpu as pl_cpu
    import pytorch_lightning.callbacks.device_stats_monitor as pl_dsm

    monkeypatch.setattr(pl_dsm, "_PSUTIL_AVAILABLE", True)
    monkeypatch.setattr(pl_cpu, "get_cpu_stats", lambda: dict.fromkeys(CPU_KEYS, 1.0))
    ours = _logged(lightning_lib, tmp_path / "ours")
    theirs = _logged(pl, tmp_path / "theirs")
    assert [(step, sorted(m)) for step, m in ours] == [(step, sorted(m)) for step, m in theirs]
    keys = {k for _, m in ours for k in m}
    assert "DeviceStatsMonitor.on_train_batch_start/cpu_percent" in keys
    assert "DeviceStatsMonitor.on_validation_batch_end/cpu_swap_percent" in keys
    assert all(0.0 <= v <= 100.0 for _, m in ours for v in m.values())


def test_cpu_stats_false_logs_nothing_on_the_cpu(tmp_path: Path) -> None:
    assert _logged(lightning_lib, tmp_path, cpu_stats=False) == []


def test_needs_a_logger(tmp_path: Path) -> None:
    model = make_classes(lightning_lib)["BoringModel"]()
    trainer = lightning_lib.Trainer(
        callbacks=[DeviceStatsMonitor()], **quiet_trainer_kwargs(tmp_path, max_epochs=1)
    )
    with pytest.raises(
        ValueError, match=r"Cannot use `DeviceStatsMonitor` callback with `Trainer\(logger=False\)`"
    ):
        trainer.fit(model)


def test_cpu_stats_from_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat, meminfo = tmp_path / "stat", tmp_path / "meminfo"
    monkeypatch.setattr(dsm, "_PROC_STAT", str(stat))
    monkeypatch.setattr(dsm, "_PROC_MEMINFO", str(meminfo))
    meminfo.write_text(
        "MemTotal:       1000 kB\nMemFree:   100 kB\nMemAvailable:    250 kB\nSwapTotal: 400 kB\nSwapFree: 300 kB\n"
    )
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 50 0 0 0 30 0\ncpu0 1 2 3 4\n")
    monitor = DeviceStatsMonitor()
    first = monitor._cpu_stats_now()
    assert first == {"cpu_vm_percent": 75.0, "cpu_percent": 0.0, "cpu_swap_percent": 25.0}
    stat.write_text("cpu  160 0 70 900 70 0 0 0 30 0\n")  # +80 busy, +120 idle and iowait
    assert monitor._cpu_stats_now()["cpu_percent"] == 40.0
    meminfo.write_text("MemTotal: 1000 kB\nMemAvailable: 1000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    assert monitor._cpu_stats_now()["cpu_vm_percent"] == 0.0
    assert monitor._cpu_stats_now()["cpu_swap_percent"] == 0.0
