"""Table checks and the split behind ``prepare_data``: pandas and numpy only, no storage, no Prefect.

Each check raises :class:`DataValidationError` naming the offending column, what was expected and what
was found, so a bad file is diagnosed from the task's failure message alone.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import pandas as pd

_MAX_LISTED = 20  # columns named in an error before the list is cut short


class DataValidationError(ValueError):
    """The input table does not fit the config; ``column`` names the offending column when there is one."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


def _listing(columns: list[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:_MAX_LISTED])
    more = len(columns) - _MAX_LISTED
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


def parse_table(raw: bytes, fmt: Literal["csv", "parquet"], source: str) -> pd.DataFrame:
    """Read CSV (header row first) or Parquet bytes into a DataFrame."""
    try:
        if fmt == "csv":
            frame = pd.read_csv(io.BytesIO(raw))
        else:
            frame = pd.read_parquet(io.BytesIO(raw))
    except (ValueError, OSError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise DataValidationError(f"Could not read {source!r} as {fmt.upper()}: {err}") from err
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DataValidationError(f"Expected at least one data row in {source!r}, found none.")
    return frame


def _check_numeric(series: pd.Series, role: str, source: str) -> None:
    name = str(series.name)
    if not pd.api.types.is_numeric_dtype(series.dtype):
        coerced = pd.to_numeric(series, errors="coerce")
        bad = series[coerced.isna() & series.notna()]
        example = f"; e.g. {bad.iloc[0]!r} at row {bad.index[0]}" if len(bad) else ""
        raise DataValidationError(
            f"Expected {role} column {name!r} in {source!r} to be numeric (int, float or bool), "
            f"found dtype {series.dtype}{example}.",
            column=name,
        )
    missing = series.isna()
    if missing.any():
        raise DataValidationError(
            f"Expected no missing values (NaN or empty) in {role} column {name!r} in {source!r}, "
            f"found {int(missing.sum())} (first at row {series.index[missing.to_numpy()][0]}).",
            column=name,
        )
    if pd.api.types.is_float_dtype(series.dtype):
        infinite = np.isinf(series.to_numpy())
        if infinite.any():
            raise DataValidationError(
                f"Expected finite values in {role} column {name!r} in {source!r}, found "
                f"{int(infinite.sum())} infinite (first at row {series.index[infinite][0]}).",
                column=name,
            )


def check_schema(frame: pd.DataFrame, features: list[str] | None, target: str, source: str) -> list[str]:
    """Check the columns the run needs; return the feature columns (all but the target if not given).

    Rows are numbered from 0 in the messages, in file order (a CSV's header line is not a row).
    """
    columns = list(frame.columns)
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataValidationError(f"Expected unique column names in {source!r}, found {duplicated} repeated.")
    wanted = [c for c in columns if c != target] if features is None else list(features)
    _require_column(frame, target, "target", source)
    if not wanted:
        raise DataValidationError(f"Expected at least one feature column besides {target!r} in {source!r}.")
    for name in wanted:
        _require_column(frame, name, "feature", source)
    _check_numeric(frame[target], "target", source)
    return check_features(frame, wanted, source)


def check_features(frame: pd.DataFrame, features: list[str], source: str) -> list[str]:
    """Check that every feature column is there and numeric (scoring data has no target); return them."""
    for name in features:
        _require_column(frame, name, "feature", source)
    for name in features:
        _check_numeric(frame[name], "feature", source)
    return list(features)


def _require_column(frame: pd.DataFrame, name: str, role: str, source: str) -> None:
    if name not in frame.columns:
        raise DataValidationError(
            f"Expected {role} column {name!r} in {source!r}; its columns are {_listing(list(frame.columns))}.",
            column=name,
        )


def check_labels(series: pd.Series, num_classes: int, source: str) -> None:
    """A classifier's target: whole numbers in ``[0, num_classes)``; otherwise the error names the column,
    how many rows are wrong and the first such value with its row (found here, not inside the fit)."""
    name = str(series.name)
    values = series.to_numpy()
    if values.dtype.kind in "iub":
        whole = np.ones(len(values), dtype=bool)
    else:
        whole = np.isfinite(values) & (np.floor(values) == values)
    bad = ~whole | (values < 0) | (values >= num_classes)
    count = int(bad.sum())
    if count:
        first = int(np.flatnonzero(bad)[0])
        value = values[first].item()
        raise DataValidationError(
            f"Expected class labels in [0, {num_classes - 1}] (whole numbers, {num_classes} classes) in target "
            f"column {name!r} in {source!r}, found {count} row(s) outside (first {value!r} at row "
            f"{series.index[first]}).",
            column=name,
        )
    if values.dtype.kind == "f":
        raise DataValidationError(
            f"Expected class labels in target column {name!r} in {source!r} to be stored as integers, found "
            f"dtype {series.dtype} (e.g. {values[0].item()!r}): the data module would train on it as a "
            "regression target.",
            column=name,
        )


def split_indices(
    rows: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, val and test: a permutation by a private generator, each part sorted.

    A ``numpy.random.Generator`` of its own keeps the split a pure function of ``seed`` and leaves the
    global RNG (which seeds model initialisation) untouched. Sorting keeps each split in file order.
    """
    order = np.random.default_rng(seed).permutation(rows)
    n_val, n_test = round(rows * val_fraction), round(rows * test_fraction)
    if n_val < 1 or n_test < 1 or rows - n_val - n_test < 1:
        raise DataValidationError(
            f"Expected at least one row in each of train, val and test; {rows} rows with val_fraction="
            f"{val_fraction} and test_fraction={test_fraction} give {rows - n_val - n_test}, {n_val} "
            f"and {n_test}."
        )
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return np.sort(train), np.sort(val), np.sort(test)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as Parquet, without the index: the same frame gives the same bytes (and digest)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()
