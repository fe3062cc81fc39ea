"""RichProgressBar and RichModelSummary: bars, counts, the summary table, optional rich, as in Lightning."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import ModelSummary, RichModelSummary, RichProgressBar
from lightning_lib.callbacks.progress.rich_progress import RichProgressBarTheme
from tests.helpers import RandomDataset, make_classes, quiet_trainer_kwargs, reference_lightning

rich = pytest.importorskip("rich")


@pytest.fixture
def console_out() -> Iterator[io.StringIO]:
    """rich's global console writes to a buffer during the test (and is put back after)."""
    buffer = io.StringIO()
    rich.reconfigure(**_console(buffer))
    yield buffer
    rich.reconfigure()


def _console(buffer: io.StringIO) -> dict[str, Any]:
    # a bar reconfigures rich's global console with its console_kwargs when it starts
    return {"file": buffer, "force_terminal": True, "width": 120}


def _fit(pl: ModuleType, root: Any, bar: Any, **trainer_args: Any) -> tuple[Any, Any]:
    model = make_classes(pl)["BoringModel"]()
    kwargs = quiet_trainer_kwargs(
        root, max_epochs=2, limit_train_batches=5, limit_val_batches=3, enable_progress_bar=True
    )
    kwargs.update(trainer_args)
    trainer = pl.Trainer(callbacks=[bar], **kwargs)
    trainer.fit(model)
    return model, trainer


def _task_view(task: Any) -> tuple[Any, ...]:
    return (task.description, task.total, task.completed, task.visible)


@pytest.mark.parity
@pytest.mark.parametrize("leave", [False, True])
def test_bars_like_lightning(tmp_path: Any, console_out: io.StringIO, leave: bool) -> None:
    pl = reference_lightning()
    ours_bar = RichProgressBar(leave=leave, console_kwargs=_console(console_out))
    theirs_bar = pl.callbacks.RichProgressBar(leave=leave, console_kwargs=_console(io.StringIO()))
    _fit(lightning_lib, tmp_path / "ours", ours_bar)
    _fit(pl, tmp_path / "theirs", theirs_bar)
    for attr in ("train_progress_bar", "val_progress_bar"):
        assert _task_view(getattr(ours_bar, attr)) == _task_view(getattr(theirs_bar, attr)), attr
    assert ours_bar.train_progress_bar.description == "Epoch 1/1 "
    assert ours_bar.progress is not None and not ours_bar.progress.live.is_started
    assert "Epoch 1/1" in console_out.getvalue()


@pytest.mark.parity
def test_test_and_predict_bars_like_lightning(tmp_path: Any, console_out: io.StringIO) -> None:
    pl = reference_lightning()
    views = []
    for lib in (lightning_lib, pl):
        bar = lib.callbacks.RichProgressBar(console_kwargs=_console(io.StringIO()))
        trainer = lib.Trainer(
            callbacks=[bar],
            **quiet_trainer_kwargs(
                tmp_path, limit_test_batches=4, limit_predict_batches=2, enable_progress_bar=True
            ),
        )
        model = make_classes(lib)["BoringModel"]()
        trainer.test(model, verbose=False)
        test_view = _task_view(bar.test_progress_bar)
        trainer.predict(model, DataLoader(RandomDataset(32, 8), batch_size=2))
        views.append((test_view, _task_view(bar.progress.tasks[bar.predict_progress_bar_id])))
    assert views[0] == views[1]


def test_metrics_shown_next_to_the_train_bar(tmp_path: Any, console_out: io.StringIO) -> None:
    theme = RichProgressBarTheme(metrics_format=".1e", metrics_text_delimiter=" | ")

    class Logging(make_classes(lightning_lib)["BoringModel"]):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().training_step(batch, batch_idx)
            self.log("shown", 1234.5, prog_bar=True)
            return out

    bar = RichProgressBar(theme=theme, console_kwargs=_console(console_out))
    trainer = lightning_lib.Trainer(
        callbacks=[bar], **quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0,
                                               enable_progress_bar=True)
    )  # fmt: skip
    trainer.fit(Logging())
    assert "shown: 1.2e+03" in console_out.getvalue()
    assert bar._metric_component is not None
    assert str(bar._metric_component.render(bar.train_progress_bar)) == "shown: 1.2e+03"


def test_no_thread_left_and_stopped_on_failure(tmp_path: Any, console_out: io.StringIO) -> None:
    before = threading.active_count()

    class Failing(make_classes(lightning_lib)["BoringModel"]):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    bar = RichProgressBar()
    trainer = lightning_lib.Trainer(
        callbacks=[bar],
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=5, enable_progress_bar=True),
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Failing())
    assert bar.progress is not None and not bar.progress.live.is_started
    assert threading.active_count() == before


def test_disabled_bar_draws_nothing(tmp_path: Any, console_out: io.StringIO) -> None:
    bar = RichProgressBar(refresh_rate=0, console_kwargs=_console(console_out))
    assert bar.is_disabled
    _fit(lightning_lib, tmp_path, bar)
    assert bar.progress is None
    assert "Epoch" not in console_out.getvalue()


def test_bar_pickles_without_its_display(console_out: io.StringIO) -> None:
    bar = RichProgressBar(refresh_rate=5)
    bar._init_progress(None)  # type: ignore[arg-type]
    assert bar.progress is not None
    try:
        copy = pickle.loads(pickle.dumps(bar))
    finally:
        bar._stop_progress()
    assert copy.progress is None and copy.refresh_rate == 5


def test_configure_columns_override(tmp_path: Any, console_out: io.StringIO) -> None:
    from rich.progress import TextColumn

    class OneColumn(RichProgressBar):
        def configure_columns(self, trainer: Any) -> list[Any]:
            return [TextColumn("[progress.description]{task.description}")]

    bar = OneColumn()
    _fit(lightning_lib, tmp_path, bar, max_epochs=1)
    assert len(bar.progress.columns) == 2  # the custom one and the metrics


def test_rich_summary_table(tmp_path: Any, console_out: io.StringIO) -> None:
    model = make_classes(lightning_lib)["BoringModel"]()
    trainer = lightning_lib.Trainer(
        callbacks=[RichModelSummary(header_style="bold red")],
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                               enable_model_summary=True),
    )  # fmt: skip
    trainer.fit(model)
    out = console_out.getvalue()
    for text in ("Name", "Type", "Params", "Mode", "layer", "Linear", "Trainable params", "Total params",
                 "Total estimated model params size (MB)", "Modules in train mode", "Modules in eval mode"):  # fmt: skip
        assert text in out, text


def test_rich_bar_brings_the_rich_summary(tmp_path: Any, console_out: io.StringIO) -> None:
    trainer = lightning_lib.Trainer(callbacks=[RichProgressBar()], default_root_dir=tmp_path, logger=False)
    summaries = [cb for cb in trainer.callbacks if isinstance(cb, ModelSummary)]
    assert [type(cb) for cb in summaries] == [RichModelSummary]
    plain = lightning_lib.Trainer(default_root_dir=tmp_path, logger=False)
    assert [type(cb) for cb in plain.callbacks if isinstance(cb, ModelSummary)] == [ModelSummary]


def test_missing_rich_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install lightning-lib\[rich\]"):
        RichProgressBar()
    with pytest.raises(ModuleNotFoundError, match=r"pip install lightning-lib\[rich\]"):
        RichModelSummary()


def test_import_does_not_import_rich() -> None:
    code = "import sys, lightning_lib, lightning_lib.callbacks; sys.exit(int('rich' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_progress_name_resolves_to_rich() -> None:
    from lightning_lib.callbacks.progress import rich_progress

    assert rich_progress.Progress is rich.progress.Progress
    assert issubclass(rich_progress.CustomProgress, rich.progress.Progress)
    with pytest.raises(AttributeError):
        rich_progress.NotAName  # noqa: B018


def test_infinite_train_loader(tmp_path: Any, console_out: io.StringIO) -> None:
    class Endless(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[torch.Tensor]:
            while True:
                yield torch.randn(32)

    bar = RichProgressBar(console_kwargs=_console(console_out))
    model = make_classes(lightning_lib)["BoringModel"]()
    trainer = lightning_lib.Trainer(
        callbacks=[bar],
        **quiet_trainer_kwargs(tmp_path, max_steps=3, limit_val_batches=0, enable_progress_bar=True),
    )
    trainer.fit(model, DataLoader(Endless(), batch_size=2))
    # as in Lightning: max_steps bounds the bar of an endless loader, max_epochs=-1 shows as "/-2"
    assert _task_view(bar.train_progress_bar) == ("Epoch 0/-2", 3, 3, True)
    assert "3/3" in console_out.getvalue()


def test_theme_styles_reach_the_columns(console_out: io.StringIO) -> None:
    from lightning_lib.callbacks.progress import rich_progress

    theme = RichProgressBarTheme(
        progress_bar="red", batch_progress="green", time="blue", processing_speed="bold"
    )
    bar = RichProgressBar(theme=theme, console_kwargs=_console(console_out))
    bar._init_progress(None)  # type: ignore[arg-type]
    try:
        columns = bar.progress.columns
        bar_column = next(c for c in columns if isinstance(c, rich_progress.CustomBarColumn))
        assert bar_column.complete_style == "red"
        styles = {type(c).__name__: getattr(c, "style", None) for c in columns}
        assert styles["BatchesProcessedColumn"] == "green"
        assert styles["CustomTimeColumn"] == "blue"
        assert styles["ProcessingSpeedColumn"] == "bold"
    finally:
        bar._stop_progress()


def test_display_stopped_once_and_flag_switches_rich_off(
    tmp_path: Any, console_out: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_lib.callbacks.progress import rich_progress

    stops: list[int] = []
    original = rich_progress.Progress.stop
    monkeypatch.setattr(rich_progress.Progress, "stop", lambda self: (stops.append(1), original(self)))

    class Failing(make_classes(lightning_lib)["BoringModel"]):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            raise RuntimeError("boom")

    trainer = lightning_lib.Trainer(
        callbacks=[RichProgressBar(console_kwargs=_console(console_out))],
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, enable_progress_bar=True),
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Failing())
    assert stops == [1]  # by on_exception; no teardown hooks run after a failure, as in Lightning
    monkeypatch.setattr(rich_progress, "_RICH_AVAILABLE", False)
    with pytest.raises(ModuleNotFoundError, match=r"`RichProgressBar` requires `rich` >= 10\.2\.2"):
        RichProgressBar()
