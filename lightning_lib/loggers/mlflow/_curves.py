"""The metric-curve PNG of a fit (``plots/metric_curves.png``), drawn with Pillow.

One small chart per metric (value against step): title, framed plot area, about five "nice" ticks per
axis with grid lines and labels, the curve (with dots when it has few points). Drawn directly with Pillow
rather than matplotlib because the chart is drawn after the last training step, on the path to ``fit``
returning: matplotlib spends about 35 ms of CPU per chart building tick and text objects (a quarter of a
second for the digits example's metrics), Pillow a few milliseconds. Pillow comes with matplotlib (a
requirement of it) and with torchvision, so wherever the ``mlflow`` extra is installed it is there.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("lightning_lib.loggers.mlflow._logger")

MAX_PLOTTED_METRICS = 24
_WIDTH, _HEIGHT = 450, 300  # one chart, in pixels
_COLUMNS = 3
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 14, 28, 38  # margins of the plot area inside a chart
_TICKS = 5
_CURVE = (31, 119, 180)
_GRID = (222, 222, 222)
_FRAME = (90, 90, 90)
_TEXT = (30, 30, 30)


def nice_ticks(low: float, high: float, count: int = _TICKS) -> list[float]:
    """About ``count`` round values (steps of 1, 2, 2.5 or 5 times a power of ten) within ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(1, count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _label(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


@functools.cache
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font with FreeType (Pillow >= 10.1)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _bounds(values: Sequence[float]) -> tuple[float, float] | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    if high == low:  # a flat curve sits in the middle of a small range
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _chart(
    draw: Any, fonts: tuple[Any, Any], x0: int, y0: int, key: str, points: Sequence[tuple[int, float]]
) -> None:
    title_font, tick_font = fonts
    left, top = x0 + _LEFT, y0 + _TOP
    right, bottom = x0 + _WIDTH - _RIGHT, y0 + _HEIGHT - _BOTTOM
    draw.text(((left + right) / 2, y0 + 6), key, fill=_TEXT, font=title_font, anchor="ma")
    draw.text(((left + right) / 2, y0 + _HEIGHT - 4), "step", fill=_TEXT, font=tick_font, anchor="md")
    steps = [float(s) for s, _ in points]
    values = [float(v) for _, v in points]
    ybounds = _bounds(values)
    if ybounds is None:
        draw.rectangle((left, top, right, bottom), outline=_FRAME)
        draw.text(
            ((left + right) / 2, (top + bottom) / 2),
            "no finite values",
            fill=_TEXT,
            font=tick_font,
            anchor="mm",
        )
        return
    xlow, xhigh = min(steps), max(steps)
    if xhigh == xlow:
        xlow, xhigh = xlow - 1, xhigh + 1
    ylow, yhigh = ybounds

    def px(step: float) -> float:
        return left + (step - xlow) / (xhigh - xlow) * (right - left)

    def py(value: float) -> float:
        return bottom - (value - ylow) / (yhigh - ylow) * (bottom - top)

    for tick in nice_ticks(xlow, xhigh):
        x = px(tick)
        draw.line((x, top, x, bottom), fill=_GRID)
        draw.text((x, bottom + 4), _label(tick), fill=_TEXT, font=tick_font, anchor="ma")
    for tick in nice_ticks(ylow, yhigh):
        y = py(tick)
        draw.line((left, y, right, y), fill=_GRID)
        draw.text((left - 5, y), _label(tick), fill=_TEXT, font=tick_font, anchor="rm")
    # a non-finite value breaks the curve, as a gap
    segment: list[tuple[float, float]] = []
    segments = [segment]
    for step, value in zip(steps, values, strict=True):
        if math.isfinite(value):
            segment.append((px(step), py(value)))
        elif segment:
            segment = []
            segments.append(segment)
    for part in segments:
        if len(part) > 1:
            draw.line(part, fill=_CURVE, width=2, joint="curve")
    if len(points) < 50:
        for part in segments:
            for x, y in part:
                draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=_CURVE)
    draw.rectangle((left, top, right, bottom), outline=_FRAME)


def warm_up() -> None:
    """Import Pillow and load the fonts (a first use costs tens of milliseconds in a fresh process)."""
    from PIL import Image, ImageDraw  # noqa: F401

    _font(13), _font(11)


def plot_metric_curves(history: Mapping[str, list[tuple[int, float]]], path: str) -> bool:
    """Draw one chart per metric (value against step, ``epoch`` left out) into a PNG at ``path``.

    False when there is nothing to draw or Pillow is missing. Draws on the caller's thread (the logger's
    end of fit calls it on a thread of its own)."""
    keys = sorted(k for k, points in history.items() if points and k != "epoch")[:MAX_PLOTTED_METRICS]
    if not keys:
        return False
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        log.info("Pillow is not installed: no metric-curve PNG.")
        return False
    columns = min(_COLUMNS, len(keys))
    rows = (len(keys) + columns - 1) // columns
    image = Image.new("RGB", (_WIDTH * columns, _HEIGHT * rows), "white")
    draw = ImageDraw.Draw(image)
    fonts = (_font(13), _font(11))
    for index, key in enumerate(keys):
        row, column = divmod(index, columns)
        _chart(draw, fonts, column * _WIDTH, row * _HEIGHT, key, history[key])
    image.save(path, format="PNG", compress_level=1)  # zlib level 6 costs more than the drawing
    return True


__all__ = ["MAX_PLOTTED_METRICS", "nice_ticks", "plot_metric_curves", "warm_up"]
