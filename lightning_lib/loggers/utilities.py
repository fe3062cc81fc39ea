"""Helpers the loggers share (Lightning's ``loggers.utilities`` module path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _scan_checkpoints(
    checkpoint_callback: Any, logged_model_time: dict[Any, float]
) -> list[tuple[float, Any, Any, str]]:
    """The checkpoints of ``checkpoint_callback`` to log now, oldest first: ``(mtime, path, score, tag)``.

    The candidates are the latest (``last_model_path``, tag ``"latest"``), the best (``"best"``) and each of
    the best k (``"best_k"``); a path that appears twice keeps the last tag. Only local files that exist are
    returned, and only those not in ``logged_model_time`` (path -> mtime when logged) or modified since:
    ``last.ckpt`` keeps its name when it is rewritten.
    """
    candidates: dict[Any, tuple[Any, str]] = {}
    if hasattr(checkpoint_callback, "last_model_path") and hasattr(checkpoint_callback, "current_score"):
        candidates[checkpoint_callback.last_model_path] = (checkpoint_callback.current_score, "latest")
    if hasattr(checkpoint_callback, "best_model_path") and hasattr(checkpoint_callback, "best_model_score"):
        candidates[checkpoint_callback.best_model_path] = (checkpoint_callback.best_model_score, "best")
    for path, score in getattr(checkpoint_callback, "best_k_models", {}).items():
        candidates[path] = (score, "best_k")
    found = []
    for path, (score, tag) in candidates.items():
        if path and Path(path).is_file():
            found.append((Path(path).stat().st_mtime, path, score, tag))
    found.sort(key=lambda item: (item[0], str(item[1])))
    return [
        item for item in found if item[1] not in logged_model_time or logged_model_time[item[1]] < item[0]
    ]
