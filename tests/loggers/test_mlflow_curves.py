"""The metric-curve PNG (``plots/metric_curves.png``): drawn with Pillow, one chart per metric."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from lightning_lib.loggers.mlflow._curves import MAX_PLOTTED_METRICS, nice_ticks, plot_metric_curves


def test_ticks_are_round_values_covering_the_range() -> None:
    assert nice_ticks(0, 600) == [0, 200, 400, 600]
    assert nice_ticks(0.095, 0.905) == [0.25, 0.5, 0.75]  # steps of 1, 2, 2.5 or 5 times a power of ten
    assert nice_ticks(-0.04, 0.0) == [-0.04, -0.03, -0.02, -0.01, 0.0]
    assert nice_ticks(3.0, 3.0) == [3.0]
    assert nice_ticks(math.nan, 1.0) == []


def test_one_chart_per_metric_three_to_a_row_without_the_epoch(tmp_path: Path) -> None:
    history = {f"m{i}": [(s, float(s * i)) for s in range(30)] for i in range(4)}
    history["epoch"] = [(0, 0.0), (10, 1.0)]
    path = tmp_path / "curves.png"
    assert plot_metric_curves(history, str(path))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (3 * 450, 2 * 300)
        # the curve's colour is drawn in the fourth chart (second row), the sixth slot stays blank
        assert (31, 119, 180) in {image.getpixel((x, y)) for x in range(450) for y in range(330, 560, 3)}
        assert {image.getpixel((x, y)) for x in range(920, 1340, 7) for y in range(310, 590, 7)} == {
            (255, 255, 255)
        }


def test_non_finite_flat_and_single_values_are_drawn_and_nothing_means_no_file(tmp_path: Path) -> None:
    history = {
        "gaps": [(0, math.nan), (1, 1.0), (2, math.inf), (3, 2.0), (4, 3.0)],
        "flat": [(s, 1e-3) for s in range(100)],
        "single": [(7, 0.25)],
        "none": [(0, math.nan)],
    }
    assert plot_metric_curves(history, str(tmp_path / "a.png"))
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_metric_curves({"epoch": [(0, 0.0)], "empty": []}, str(tmp_path / "b.png"))
    assert not (tmp_path / "b.png").exists()


def test_at_most_the_first_metrics_by_name_are_drawn(tmp_path: Path) -> None:
    history = {f"m{i:02d}": [(0, 1.0), (1, 2.0)] for i in range(MAX_PLOTTED_METRICS + 5)}
    assert plot_metric_curves(history, str(tmp_path / "a.png"))
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (3 * 450, math.ceil(MAX_PLOTTED_METRICS / 3) * 300)


def test_without_pillow_there_is_no_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pillow(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("PIL"):
            raise ImportError("no Pillow here")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_pillow)
    assert not plot_metric_curves({"loss": [(0, 1.0)]}, str(tmp_path / "a.png"))
