"""Fitting params, tags and metric names into what an MLflow server accepts, with warnings, not errors.

MLflow rejects a whole ``log_batch`` request when one name has a character outside
``[A-Za-z0-9_ ./-:]``, is not a normalised path (``a//b``, ``./a``, ``a/``), is longer than 250
characters, or when a param value is longer than 6000 characters; a rejected request would cost the
other values in it. So everything is made acceptable here, before it is queued.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from lightning_lib.loggers.redact import redact_mapping

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# Lightning's metric-name rule (it drops other characters); ':' is left out as well because Windows
# servers refuse it and a run should be readable from every client.
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_/. -]+")

T = TypeVar("T")


def clean_name(name: str, replacement: str = "") -> str:
    """``name`` as a valid MLflow metric/param/tag key: allowed characters, a normalised relative path.

    Bad characters are removed (Lightning's behaviour for metric names) or replaced by ``replacement``;
    empty, ``.`` and ``..`` path segments are dropped; a key too long is cut and given a short hash of the
    full name, so two long names that share a beginning stay distinct.
    """
    cleaned = _BAD_NAME_CHARS.sub(replacement, name)
    cleaned = "/".join(seg for seg in cleaned.split("/") if seg not in ("", ".", ".."))
    if not cleaned.strip():
        cleaned = "_"
    if len(cleaned) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: MAX_KEY_LENGTH - 9]}~{digest}"
    return cleaned


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _fit(values: Mapping[str, Any], max_value_length: int, what: str) -> list[tuple[str, str]]:
    """Clean the names, stringify and cut the values, keep names unique; warn once per call."""
    out: dict[str, str] = {}
    renamed: list[str] = []
    truncated: list[str] = []
    for name, value in values.items():
        key = clean_name(str(name), replacement="_")
        if key != name:
            renamed.append(f"{name!r} -> {key!r}")
        base, n = key, 2
        while key in out:  # two names that clean to the same key: keep both
            key = f"{base[: MAX_KEY_LENGTH - 4]}_{n}"
            n += 1
        text = "" if value is None else str(value)
        if len(text) > max_value_length:
            text = text[: max_value_length - 3] + "..."
            truncated.append(key)
        out[key] = text
    if renamed:
        _warn(
            f"MLflow {what} names may only hold letters, digits, '_', '-', '.', ' ' and '/'; renamed: {renamed}."
        )
    if truncated:
        _warn(f"MLflow {what} values are limited to {max_value_length} characters; truncated: {truncated}.")
    return list(out.items())


def prepare_params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flat params -> scrubbed, valid ``(key, value)`` pairs; warns about what it had to change."""
    clean, redacted = redact_mapping(params)
    if redacted:
        _warn(f"Params that look like credentials were replaced by '***': {sorted(redacted)}.")
    return _fit(clean, MAX_PARAM_VALUE_LENGTH, "param")


def prepare_tags(tags: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Tags -> scrubbed, valid ``(key, value)`` pairs (keys beginning with ``mlflow.`` are kept as is)."""
    clean, redacted = redact_mapping(tags)
    if redacted:
        _warn(f"Tags that look like credentials were replaced by '***': {sorted(redacted)}.")
    return _fit(clean, MAX_TAG_VALUE_LENGTH, "tag")


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
