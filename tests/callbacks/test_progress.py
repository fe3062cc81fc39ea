"""Progress bars: what is drawn or printed, how often metrics are read, totals, and Lightning parity."""

from __future__ import annotations

import copy
import io
import math
from types import SimpleNamespace
from typing import Any

import pytest

import lightning_lib.callbacks.progress.tqdm_progress as progress
from lightning_lib.callbacks.progress import ProgressBar, Tqdm, TQDMProgressBar, get_standard_metrics


class FakeTrainer:
    """The attributes the progress bars read; counts reads of the (host-syncing) metrics."""

    def __init__(self, **overrides: Any) -> None:
        self.current_epoch = 0
        self.global_step = 0
        self.max_epochs = 2
        self.max_steps = -1
        self.num_training_batches: int | float = 10
        self.num_val_batches = [3]
        self.num_sanity_val_batches = [2]
        self.num_test_batches = [4, 5]
        self.num_predict_batches = [6]
        self.sanity_checking = False
        self.is_global_zero = True
        self.enable_validation = True
        self.check_val_every_n_epoch = 1
        self.loggers = [SimpleNamespace(version=7)]
        self.state = SimpleNamespace(fn="fit")
        self.metric_reads = 0
        self.__dict__.update(overrides)

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        self.metric_reads += 1
        return {"loss": 0.25}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    # the bar's redraw throttle reads perf_counter (a patched time.monotonic in a user's test stays theirs)
    monkeypatch.setattr(progress.time, "perf_counter", clock.monotonic)
    return clock


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Pretend stdout is a terminal and capture what the bars draw."""
    out = io.StringIO()
    # Replace the module's view of `sys`: pytest re-installs its own sys.stdout when the test body starts.
    monkeypatch.setattr(progress, "sys", SimpleNamespace(stdout=out))
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    return out


def run_fit(
    bar: TQDMProgressBar, trainer: FakeTrainer, clock: Clock | None = None, step_s: float = 0.0
) -> None:
    """Drive the hooks in Lightning's fit order: sanity check, then epochs with validation at the end."""
    bar.setup(trainer, None, "fit")  # type: ignore[arg-type]
    trainer.sanity_checking = True
    bar.on_sanity_check_start(trainer, None)  # type: ignore[arg-type]
    bar.on_validation_start(trainer, None)  # type: ignore[arg-type]
    for i in range(trainer.num_sanity_val_batches[0]):
        bar.on_validation_batch_start(trainer, None, None, i)  # type: ignore[arg-type]
        bar.on_validation_batch_end(trainer, None, None, None, i)  # type: ignore[arg-type]
    bar.on_validation_end(trainer, None)  # type: ignore[arg-type]
    bar.on_sanity_check_end(trainer, None)  # type: ignore[arg-type]
    trainer.sanity_checking = False
    bar.on_train_start(trainer, None)  # type: ignore[arg-type]
    for epoch in range(trainer.max_epochs):
        trainer.current_epoch = epoch
        bar.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
        for i in range(int(trainer.num_training_batches)):
            if clock is not None:
                clock.now += step_s
            bar.on_train_batch_end(trainer, None, None, None, i)  # type: ignore[arg-type]
        bar.on_validation_start(trainer, None)  # type: ignore[arg-type]
        for i in range(trainer.num_val_batches[0]):
            bar.on_validation_batch_start(trainer, None, None, i)  # type: ignore[arg-type]
            bar.on_validation_batch_end(trainer, None, None, None, i)  # type: ignore[arg-type]
        bar.on_validation_end(trainer, None)  # type: ignore[arg-type]
        bar.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    bar.on_train_end(trainer, None)  # type: ignore[arg-type]


def test_not_a_terminal_prints_one_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = FakeTrainer(num_training_batches=50)
    run_fit(TQDMProgressBar(), trainer)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 0: 50/50 batches, ") and lines[0].endswith("s, v_num=7, loss=0.25")
    assert trainer.metric_reads == 2  # once per epoch line, never per step


def test_disabled_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    for bar in (TQDMProgressBar(refresh_rate=0), TQDMProgressBar()):
        bar.disable() if bar.refresh_rate else None
        trainer = FakeTrainer()
        run_fit(bar, trainer)
        assert trainer.metric_reads == 0
    assert capsys.readouterr().out == ""


def test_terminal_draws_bars(terminal: io.StringIO, clock: Clock) -> None:
    bar = TQDMProgressBar()
    trainer = FakeTrainer()
    run_fit(bar, trainer, clock, step_s=1.0)
    out = terminal.getvalue()
    for text in (
        "Sanity Checking DataLoader 0",
        "Epoch 0: 100%",
        "Epoch 1: 100%",
        "10/10",
        "Validation DataLoader 0",
    ):
        assert text in out, text
    assert "v_num=7, loss=0.250" in out  # postfix floats padded like Lightning's
    assert bar.train_progress_bar.n == 10


def test_redraws_are_throttled_by_time_and_refresh_rate(terminal: io.StringIO, clock: Clock) -> None:
    trainer = FakeTrainer(num_training_batches=1000, max_epochs=1)
    run_fit(TQDMProgressBar(), trainer, clock, step_s=0.001)  # 1000 steps in 1 s
    # ~10 redraws a second, + the last batch, + validation end and epoch end.
    assert 9 <= trainer.metric_reads <= 14
    trainer = FakeTrainer(num_training_batches=100, max_epochs=1)
    run_fit(TQDMProgressBar(refresh_rate=25), trainer, clock, step_s=10.0)
    assert trainer.metric_reads == 4 + 2  # batches 25, 50, 75, 100 + validation end + epoch end


def test_epoch_end_shows_batches_skipped_by_the_throttle(terminal: io.StringIO, clock: Clock) -> None:
    trainer = FakeTrainer(num_training_batches=math.inf, max_epochs=1)
    bar = TQDMProgressBar()
    bar.setup(trainer, None, "fit")  # type: ignore[arg-type]
    bar.on_train_start(trainer, None)  # type: ignore[arg-type]
    bar.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
    assert bar.train_progress_bar.total is None
    for i in range(7):
        bar.on_train_batch_end(trainer, None, None, None, i)  # type: ignore[arg-type]
    assert bar.train_progress_bar.n == 1  # only the first redraw happened
    bar.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert bar.train_progress_bar.n == 7


def test_leave_keeps_one_bar_per_epoch(terminal: io.StringIO) -> None:
    bars = []
    bar = TQDMProgressBar(leave=True)
    trainer = FakeTrainer()
    orig = bar.init_train_tqdm
    bar.init_train_tqdm = lambda: bars.append(orig()) or bars[-1]  # type: ignore[method-assign]
    run_fit(bar, trainer)
    assert len(bars) == 3  # on_train_start + one per epoch
    out = terminal.getvalue()
    assert "Epoch 0: 100%" in out and "Epoch 1: 100%" in out


def test_eval_bars_totals_and_descriptions(terminal: io.StringIO) -> None:
    bar = TQDMProgressBar()
    trainer = FakeTrainer(state=SimpleNamespace(fn="test"))
    bar.setup(trainer, None, "test")  # type: ignore[arg-type]
    bar.on_test_start(trainer, None)  # type: ignore[arg-type]
    for dl, n in enumerate(trainer.num_test_batches):
        for i in range(n):
            bar.on_test_batch_start(trainer, None, None, i, dl)  # type: ignore[arg-type]
            bar.on_test_batch_end(trainer, None, None, None, i, dl)  # type: ignore[arg-type]
        assert bar.test_progress_bar.total == n and bar.test_progress_bar.n == n
    bar.on_test_end(trainer, None)  # type: ignore[arg-type]
    assert "Testing DataLoader 1" in terminal.getvalue()
    bar.on_predict_start(trainer, None)  # type: ignore[arg-type]
    bar.on_predict_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    assert bar.predict_progress_bar.total == 6
    bar.on_predict_end(trainer, None)  # type: ignore[arg-type]
    trainer.state.fn = "validate"
    assert bar.init_validation_tqdm().pos == 0  # no train bar above it


def test_totals() -> None:
    bar = ProgressBar()
    with pytest.raises(TypeError, match="reference has not been set yet"):
        _ = bar.trainer
    trainer = FakeTrainer(max_epochs=-1, max_steps=25, global_step=20)
    bar.setup(trainer, None, "fit")  # type: ignore[arg-type]
    assert bar.total_train_batches == 5
    trainer.max_epochs = 3
    assert bar.total_train_batches == 10
    assert bar.total_val_batches == 3
    trainer.check_val_every_n_epoch = 2
    assert bar.total_val_batches == 0
    with pytest.raises(TypeError, match="_train_progress_bar` reference has not been set yet"):
        _ = TQDMProgressBar().train_progress_bar


def test_get_metrics_and_v_num() -> None:
    trainer = FakeTrainer()
    bar = TQDMProgressBar()
    assert bar.get_metrics(trainer, None) == {"v_num": 7, "loss": 0.25}  # type: ignore[arg-type]
    assert get_standard_metrics(SimpleNamespace(loggers=[SimpleNamespace(version="version_12345")])) == {
        "v_num": "2345"
    }  # type: ignore[arg-type]
    two = [SimpleNamespace(version=1), SimpleNamespace(version="1"), SimpleNamespace(version=2)]
    assert get_standard_metrics(SimpleNamespace(loggers=two)) == {"v_num": "1_2"}  # type: ignore[arg-type]
    assert get_standard_metrics(SimpleNamespace(loggers=[])) == {}  # type: ignore[arg-type]

    class Dup(FakeTrainer):
        @property
        def progress_bar_metrics(self) -> dict[str, float]:
            return {"v_num": 1.0}

    with pytest.warns(UserWarning, match="already tracks a metric with the name"):
        assert bar.get_metrics(Dup(), None) == {"v_num": 1.0}  # type: ignore[arg-type]


def test_enable_disable_refresh_rate_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    bar = TQDMProgressBar()
    bar.disable()
    assert bar.is_disabled
    bar.enable()
    assert bar.is_enabled
    assert TQDMProgressBar(refresh_rate=0).is_disabled
    monkeypatch.setenv("TQDM_MINITERS", "8")
    assert TQDMProgressBar(refresh_rate=2).refresh_rate == 8
    bar.setup(FakeTrainer(is_global_zero=False), None, "fit")  # type: ignore[arg-type]
    assert bar.is_disabled


def test_print_goes_through_the_active_bar(terminal: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    bar = TQDMProgressBar()
    bar.print("no bar yet")
    bar.setup(FakeTrainer(), None, "fit")  # type: ignore[arg-type]
    bar.on_train_start(FakeTrainer(), None)  # type: ignore[arg-type]
    bar.print("hello", "world")
    assert "hello world" in terminal.getvalue()
    clone = copy.deepcopy(bar)  # tqdm objects are dropped, not copied
    assert clone._train_progress_bar is None


@pytest.mark.parity
@pytest.mark.parametrize("value", [1, 0.5, 12.0, 1e-7, 123456.789, "ab", "1", 0.25, 3])
def test_number_padding_matches_lightning(value: Any) -> None:
    tqdm_progress = pytest.importorskip("pytorch_lightning.callbacks.progress.tqdm_progress")
    assert Tqdm.format_num(value) == tqdm_progress.Tqdm.format_num(value)


# ---- with the real Trainer ------------------------------------------------------------------------------


def _run_all_stages(tmp_path: Any, **trainer_kwargs: Any) -> Any:
    import lightning_lib
    from tests.helpers import make_classes, quiet_trainer_kwargs

    classes = make_classes(lightning_lib)
    kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=5, enable_progress_bar=True)
    kwargs.update(trainer_kwargs)
    trainer = lightning_lib.Trainer(**kwargs)
    model, datamodule = classes["ClassifierModel"](), classes["ClassifierDataModule"]()
    trainer.fit(model, datamodule=datamodule)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    assert len(trainer.predict(model, datamodule=datamodule)) == 4
    return trainer


def test_fit_without_terminal_prints_epoch_lines(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = _run_all_stages(tmp_path)
    assert isinstance(trainer.progress_bar_callback, TQDMProgressBar)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Epoch 0", "Epoch 1"]
    assert "5/5 batches" in lines[0] and "train_loss_step=" in lines[0] and "val_loss=" in lines[0]


def test_fit_in_terminal_draws_every_bar(tmp_path: Any, terminal: io.StringIO) -> None:
    _run_all_stages(tmp_path)
    out = terminal.getvalue()
    for text in (
        "Sanity Checking DataLoader 0: 100%",
        "Epoch 0: 100%",
        "Epoch 1: 100%",
        "| 5/5 [",
        "Validation DataLoader 0: 100%",
        "Testing DataLoader 0: 100%",
        "Predicting DataLoader 0: 100%",
        "val_loss=",
    ):
        assert text in out, text


def test_disabled_progress_bar_prints_nothing(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _run_all_stages(tmp_path, enable_progress_bar=False)
    assert "Epoch" not in capsys.readouterr().out


def test_lightning_s_module_paths() -> None:
    from lightning_lib.callbacks import progress as package
    from lightning_lib.callbacks.progress.progress_bar import ProgressBar as BaseAtPath
    from lightning_lib.callbacks.progress.tqdm_progress import Tqdm as TqdmAtPath
    from lightning_lib.callbacks.progress.tqdm_progress import TQDMProgressBar as BarAtPath

    assert (BaseAtPath, TqdmAtPath, BarAtPath) == (package.ProgressBar, package.Tqdm, package.TQDMProgressBar)
    assert issubclass(BarAtPath, BaseAtPath)
