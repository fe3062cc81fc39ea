"""The profilers: what ``Trainer(profiler=...)`` records, and the reports it writes."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

import lightning_lib as pl
from lightning_lib.demos.boring_classes import BoringDataModule, BoringModel
from lightning_lib.profilers import (
    AdvancedProfiler,
    PassThroughProfiler,
    Profiler,
    PyTorchProfiler,
    SimpleProfiler,
    XLAProfiler,
)
from tests.helpers import quiet_trainer_kwargs


def _fit(tmp_path: Path, profiler: Any, **kwargs: Any) -> pl.Trainer:
    settings = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, **kwargs}
    trainer = pl.Trainer(profiler=profiler, **quiet_trainer_kwargs(tmp_path, **settings))
    trainer.fit(BoringModel(), datamodule=BoringDataModule())
    return trainer


def test_the_default_profiler_records_nothing(tmp_path: Path) -> None:
    trainer = _fit(tmp_path, None)
    assert isinstance(trainer.profiler, PassThroughProfiler)
    assert trainer.profiler.summary() == ""


def test_simple_profiler_times_hooks_steps_and_fetches(tmp_path: Path) -> None:
    trainer = _fit(tmp_path, "simple")
    profiler = trainer.profiler
    assert isinstance(profiler, SimpleProfiler)
    recorded = profiler.recorded_durations
    assert len(recorded["[Strategy]SingleDeviceStrategy.training_step"]) == 2
    assert len(recorded["[_TrainingEpochLoop].train_dataloader_next"]) == 2
    assert len(recorded["run_training_batch"]) == 2
    assert len(recorded["[LightningDataModule]BoringDataModule.setup"]) == 1
    assert "[Callback]ModelSummary.on_fit_start" not in recorded  # not enabled in these runs
    assert all(d >= 0 for durations in recorded.values() for d in durations)
    report = profiler.summary()
    assert report.startswith("FIT Profiler Report")
    assert "Mean duration (s)" in report and "Num calls" in report and "[Strategy]" in report


def test_the_report_goes_to_a_file_when_a_filename_is_given(tmp_path: Path) -> None:
    _fit(tmp_path, SimpleProfiler(dirpath=tmp_path / "prof", filename="perf", extended=False))
    [report] = (tmp_path / "prof").iterdir()
    assert report.name == "fit-perf.txt"
    text = report.read_text()
    assert "Total time (s)" in text and "Num calls" not in text


def test_advanced_profiler_reports_functions_per_action(tmp_path: Path) -> None:
    profiler = AdvancedProfiler(dirpath=tmp_path, filename="adv", line_count_restriction=5)
    _fit(tmp_path, profiler, limit_val_batches=0)
    text = (tmp_path / "fit-adv.txt").read_text()
    assert "Profile stats for: [Strategy]SingleDeviceStrategy.training_step" in text
    assert "function calls" in text
    copy = pickle.loads(pickle.dumps(profiler))
    assert copy.filename == "adv" and copy.line_count_restriction == 5


def test_pytorch_profiler_records_operators(tmp_path: Path) -> None:
    profiler = PyTorchProfiler(dirpath=tmp_path, filename="torch", row_limit=30)
    _fit(tmp_path, profiler, limit_val_batches=0)
    text = (tmp_path / "fit-torch.txt").read_text()
    # the table truncates long names; the Trainer's actions are ranges of their own
    assert "[pl][profile]run_training_batch" in text
    assert "[pl][profile][Strategy]SingleDeviceStrategy.training" in text
    assert (tmp_path / "fit-torch-trace.json").stat().st_size > 0  # the chrome trace
    with pytest.raises(ValueError, match="sort_by_key"):
        PyTorchProfiler(sort_by_key="nonsense")


def test_a_custom_profiler_gets_start_and_stop_in_pairs(tmp_path: Path) -> None:
    class Counting(Profiler):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []
            self.done: list[str] = []

        def start(self, action_name: str) -> None:
            self.open.append(action_name)

        def stop(self, action_name: str) -> None:
            assert self.open.pop() == action_name  # actions nest
            self.done.append(action_name)

    profiler = Counting()
    _fit(tmp_path, profiler)
    assert profiler.open == [] and "[Strategy]SingleDeviceStrategy.validation_step" in profiler.done


def test_profilers_lightning_does_not_support_here_refuse_to_start() -> None:
    with pytest.raises(NotImplementedError, match="XLAProfiler needs TPUs"):
        XLAProfiler()
    with pytest.raises(ValueError, match=r"profiler to be one of \['simple'"):
        pl.Trainer(profiler="fancy")
    with pytest.raises(ValueError, match="already started"):
        profiler = SimpleProfiler()
        profiler.start("a")
        profiler.start("a")
    with pytest.raises(ValueError, match="never started"):
        SimpleProfiler().stop("b")
