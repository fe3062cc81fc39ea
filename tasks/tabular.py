"""Table checks and the split behind ``prepare_data``: no storage, no Prefect.

Each check raises :class:`DataValidationError` naming the offending column, what was expected and what
was found, so a bad file is diagnosed from the task's failure message alone.

Two forms of the same checks live here. The pandas functions (:func:`parse_table`, :func:`check_schema`,
:func:`check_labels`) check a whole DataFrame held in memory (``predict`` scores tables that way).
:class:`TableScan` runs them over a table streamed in Arrow record batches, keeping only a few counters
per column, so ``prepare_data`` checks a table of any size; both raise the same messages, row numbers
counted from 0 over the whole file.

CSV type inference when streaming: every column is read as text and each batch is classified (``int``,
``float``, ``bool``, text); the column's type is decided over the whole file, as pandas' reader does:
whole numbers throughout are int64, any fractional (or exponent, ``inf``) value, or a missing value in
a column of whole numbers, makes it float64, ``True``/``False`` spellings throughout are bool, anything
else is text (refused). So a column that is int in the first batches and float later is float64, the
dtype pandas gives it. Numbers are parsed with Arrow's rules after trimming surrounding whitespace, which
agree with pandas' on the usual spellings (``-3``, ``+5``, ``1.5e-3``, ``inf``, ``Infinity``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_MAX_LISTED = 20  # columns named in an error before the list is cut short

# What pandas' CSV reader treats as a missing value by default (its ``na_values``); passed to Arrow's
# reader so both agree on which cells are empty.
CSV_NULL_VALUES = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]
_TRUE = ["True", "TRUE", "true"]
_BOOL = [*_TRUE, "False", "FALSE", "false"]

Kind = Literal["int", "float", "bool", "text"]
_NUMERIC_KINDS = ("int", "float", "bool")


class DataValidationError(ValueError):
    """The input table does not fit the config; ``column`` names the offending column when there is one."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


def _listing(columns: list[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:_MAX_LISTED])
    more = len(columns) - _MAX_LISTED
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


# -- the messages, shared by the pandas checks and the streaming scan ----------------------------------


def unreadable_error(source: str, fmt: str, err: BaseException) -> DataValidationError:
    """The source is not a table of the expected format."""
    return DataValidationError(f"Could not read {source!r} as {fmt.upper()}: {err}")


def no_rows_error(source: str) -> DataValidationError:
    """The table has a header (or schema) but no data row."""
    return DataValidationError(f"Expected at least one data row in {source!r}, found none.")


def _duplicated_error(columns: list[str], source: str) -> DataValidationError | None:
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        return DataValidationError(
            f"Expected unique column names in {source!r}, found {duplicated} repeated."
        )
    return None


def _absent_error(columns: list[str], name: str, role: str, source: str) -> DataValidationError | None:
    if name not in columns:
        return DataValidationError(
            f"Expected {role} column {name!r} in {source!r}; its columns are {_listing(columns)}.",
            column=name,
        )
    return None


def _non_numeric_error(
    name: str, role: str, source: str, dtype: str, example: tuple[Any, int] | None
) -> DataValidationError:
    shown = f"; e.g. {example[0]!r} at row {example[1]}" if example is not None else ""
    return DataValidationError(
        f"Expected {role} column {name!r} in {source!r} to be numeric (int, float or bool), "
        f"found dtype {dtype}{shown}.",
        column=name,
    )


def _missing_error(name: str, role: str, source: str, count: int, first: int) -> DataValidationError:
    return DataValidationError(
        f"Expected no missing values (NaN or empty) in {role} column {name!r} in {source!r}, "
        f"found {count} (first at row {first}).",
        column=name,
    )


def _infinite_error(name: str, role: str, source: str, count: int, first: int) -> DataValidationError:
    return DataValidationError(
        f"Expected finite values in {role} column {name!r} in {source!r}, found "
        f"{count} infinite (first at row {first}).",
        column=name,
    )


def _labels_error(
    name: str, source: str, num_classes: int, count: int, value: Any, row: int
) -> DataValidationError:
    return DataValidationError(
        f"Expected class labels in [0, {num_classes - 1}] (whole numbers, {num_classes} classes) in target "
        f"column {name!r} in {source!r}, found {count} row(s) outside (first {value!r} at row {row}).",
        column=name,
    )


def _float_labels_error(name: str, source: str, dtype: str, value: Any) -> DataValidationError:
    return DataValidationError(
        f"Expected class labels in target column {name!r} in {source!r} to be stored as integers, found "
        f"dtype {dtype} (e.g. {value!r}): the data module would train on it as a regression target.",
        column=name,
    )


def _wanted_columns(columns: list[str], features: list[str] | None, target: str, source: str) -> list[str]:
    """The header checks of :func:`check_schema`, in its order; the feature columns."""
    error = _duplicated_error(columns, source)
    if error is not None:
        raise error
    wanted = [c for c in columns if c != target] if features is None else list(features)
    error = _absent_error(columns, target, "target", source)
    if error is not None:
        raise error
    if not wanted:
        raise DataValidationError(f"Expected at least one feature column besides {target!r} in {source!r}.")
    for name in wanted:
        error = _absent_error(columns, name, "feature", source)
        if error is not None:
            raise error
    return wanted


# -- whole tables in pandas (predict) -----------------------------------------------------------------


def parse_table(raw: bytes, fmt: Literal["csv", "parquet"], source: str) -> pd.DataFrame:
    """Read CSV (header row first) or Parquet bytes into a DataFrame."""
    try:
        if fmt == "csv":
            frame = pd.read_csv(io.BytesIO(raw))
        else:
            frame = pd.read_parquet(io.BytesIO(raw))
    except (ValueError, OSError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise unreadable_error(source, fmt, err) from err
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise no_rows_error(source)
    return frame


def _check_numeric(series: pd.Series, role: str, source: str) -> None:
    name = str(series.name)
    if not pd.api.types.is_numeric_dtype(series.dtype):
        coerced = pd.to_numeric(series, errors="coerce")
        bad = series[coerced.isna() & series.notna()]
        example = (bad.iloc[0], bad.index[0]) if len(bad) else None
        raise _non_numeric_error(name, role, source, str(series.dtype), example)
    missing = series.isna()
    if missing.any():
        first = series.index[missing.to_numpy()][0]
        raise _missing_error(name, role, source, int(missing.sum()), first)
    if pd.api.types.is_float_dtype(series.dtype):
        infinite = np.isinf(series.to_numpy())
        if infinite.any():
            raise _infinite_error(name, role, source, int(infinite.sum()), series.index[infinite][0])


def check_schema(frame: pd.DataFrame, features: list[str] | None, target: str, source: str) -> list[str]:
    """Check the columns the run needs; return the feature columns (all but the target if not given).

    Rows are numbered from 0 in the messages, in file order (a CSV's header line is not a row).
    """
    wanted = _wanted_columns(list(frame.columns), features, target, source)
    _check_numeric(frame[target], "target", source)
    return check_features(frame, wanted, source)


def check_features(frame: pd.DataFrame, features: list[str], source: str) -> list[str]:
    """Check that every feature column is there and numeric (scoring data has no target); return them."""
    for name in features:
        error = _absent_error(list(frame.columns), name, "feature", source)
        if error is not None:
            raise error
    for name in features:
        _check_numeric(frame[name], "feature", source)
    return list(features)


def check_labels(series: pd.Series, num_classes: int, source: str) -> None:
    """A classifier's target: whole numbers in ``[0, num_classes)``; otherwise the error names the column,
    how many rows are wrong and the first such value with its row (found here, not inside the fit)."""
    name = str(series.name)
    values = series.to_numpy()
    bad = _bad_labels(values, num_classes)
    count = int(bad.sum())
    if count:
        first = int(np.flatnonzero(bad)[0])
        raise _labels_error(name, source, num_classes, count, values[first].item(), series.index[first])
    if values.dtype.kind == "f":
        raise _float_labels_error(name, source, str(series.dtype), values[0].item())


def _bad_labels(values: np.ndarray, num_classes: int) -> np.ndarray:
    """Which labels are not a whole number in ``[0, num_classes)``."""
    if values.dtype.kind in "iub":
        whole = np.ones(len(values), dtype=bool)
    else:
        whole = np.isfinite(values) & (np.floor(values) == values)
    return ~whole | (values < 0) | (values >= num_classes)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as Parquet, without the index: the same frame gives the same bytes (and digest)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


# -- tables streamed in record batches (prepare_data) -------------------------------------------------


def mangle_csv_header(names: list[str]) -> list[str]:
    """Column names as pandas' CSV reader gives them: an empty name becomes ``Unnamed: <i>`` and a
    repeated one ``<name>.1``, ``<name>.2``, ... (Arrow's reader keeps them as they are)."""
    out: list[str] = []
    taken = set()
    for i, raw in enumerate(names):
        name = raw or f"Unnamed: {i}"
        if name in taken:
            n = 1
            while f"{name}.{n}" in taken or f"{name}.{n}" in names:
                n += 1
            name = f"{name}.{n}"
        taken.add(name)
        out.append(name)
    return out


def _cast(values: pa.Array, to: pa.DataType) -> pa.Array | None:
    try:
        return pc.cast(values, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _as_numbers(text: pa.Array, to: pa.DataType) -> pa.Array | None:
    """The cells of a text column as ``to`` (int64 or float64) the way pandas reads numbers, or None if one
    is not such a number. Surrounding whitespace and an integer's leading ``+`` are allowed; Arrow's
    hexadecimal integers (``0x10``) and NaN spellings outside the missing-value list (``NAN``) are text to
    pandas, so they are here too. The common case is one cast; the rest only runs when it fails."""
    values = _cast(text, to)
    if values is None:
        text = pc.utf8_trim_whitespace(text)
        if pa.types.is_integer(to) and pc.any(pc.starts_with(text, "+")).as_py():
            text = pc.replace_substring_regex(text, r"^\+", "")
        values = _cast(text, to)
        if values is None:
            return None
    if pa.types.is_integer(to):
        if pc.any(pc.starts_with(text, "0x")).as_py() or pc.any(pc.starts_with(text, "0X")).as_py():
            return None
    elif pc.any(pc.is_nan(values)).as_py():
        return None
    return values


def _classify_text(text: pa.Array, try_int: bool) -> tuple[Kind, pa.Array | None]:
    """The kind of one batch of a CSV column read as text, and its values parsed as that kind."""
    if try_int:
        ints = _as_numbers(text, pa.int64())
        if ints is not None:
            return "int", ints
    floats = _as_numbers(text, pa.float64())
    if floats is not None:
        return "float", floats
    trimmed = pc.utf8_trim_whitespace(text)
    if pc.all(pc.is_in(trimmed.drop_null(), value_set=pa.array(_BOOL))).as_py():
        return "bool", pc.is_in(trimmed, value_set=pa.array(_TRUE))
    return "text", None


def _first_unparsable(text: pa.Array) -> int | None:
    """Index of the first non-empty cell that is not a number, found by bisection (a few casts)."""
    if _as_numbers(text, pa.float64()) is not None:
        return None
    lo, hi = 0, len(text)  # the first failure lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _as_numbers(text.slice(lo, mid - lo), pa.float64()) is None:
            hi = mid
        else:
            lo = mid
    return lo


def _first_true(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


@dataclass
class _Column:
    """What the checks need to know of one column, accumulated batch by batch."""

    name: str
    role: str
    source_type: pa.DataType | None = None  # Parquet: the stored type; CSV: None (read as text)
    kinds: frozenset[str] = frozenset()
    missing: int = 0
    first_missing: int | None = None
    infinite: int = 0
    first_infinite: int | None = None
    unparsable: tuple[Any, int] | None = None  # the first cell that is not a number, and its row
    bad_labels: int = 0
    first_bad_label: tuple[Any, int] | None = None
    first_value: Any = None

    def dtype(self) -> str:
        """The dtype pandas would give the whole column (named in the messages)."""
        kinds = self.kinds
        if self.source_type is not None:
            return _parquet_dtype(self.source_type, self.missing > 0)
        if "text" in kinds or ("bool" in kinds and kinds & {"int", "float"}):
            return "str"
        if "bool" in kinds:
            return "object" if self.missing else "bool"
        if "float" in kinds or self.missing or not kinds:
            return "float64"
        return "int64"

    def numeric(self) -> bool:
        dtype = self.dtype()
        return dtype == "bool" or dtype.startswith(("int", "uint", "float"))

    def output_type(self) -> pa.DataType:
        """The Arrow type of this column in the prepared splits."""
        if self.source_type is not None:
            return self.source_type
        return {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64()}[self.dtype()]


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)


def _parquet_kind(dtype: pa.DataType) -> Kind:
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "bool"
    return "text"


def _parquet_dtype(dtype: pa.DataType, has_missing: bool) -> str:
    """The pandas dtype of a Parquet column (pandas' own conversion: integers with nulls become
    float64, booleans with nulls object, strings ``str``)."""
    kind = _parquet_kind(dtype)
    if kind == "int" and has_missing:
        return "float64"
    if kind == "bool" and has_missing:
        return "object"
    if _is_text(dtype):
        return "str"
    try:
        return str(np.dtype(dtype.to_pandas_dtype()))
    except (NotImplementedError, TypeError):
        return "object"


class TableScan:
    """The checks of :func:`check_schema` (and :func:`check_labels` given ``num_classes``) over a table read
    in record batches: memory per column is a few counters, whatever the number of rows.

    ``columns`` are the table's column names in file order; ``types`` the stored Arrow types of a Parquet
    table (None for CSV, whose needed columns are read as text). The header checks run here, so a missing
    column is refused before any row is read. Feed :meth:`add` the batches of :attr:`needed` in file
    order, then :meth:`finish` raises the first error :func:`check_schema` would raise on the whole table,
    with the same message, and returns the schema of the prepared splits.
    """

    def __init__(
        self,
        columns: list[str],
        features: list[str] | None,
        target: str,
        source: str,
        *,
        num_classes: int | None = None,
        types: dict[str, pa.DataType] | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.num_classes = num_classes
        self.features = _wanted_columns(columns, features, target, source)
        self.needed = [*self.features, target]
        self.rows = 0
        self._columns = {
            name: _Column(name, role, None if types is None else types[name])
            for name, role in [*((f, "feature") for f in self.features), (target, "target")]
        }

    def add(self, batch: pa.RecordBatch) -> None:
        """Account for the next ``batch`` (the :attr:`needed` columns, in that order)."""
        for name, values in zip(self.needed, batch.columns, strict=True):
            self._add_column(self._columns[name], values)
        self.rows += batch.num_rows

    def _add_column(self, column: _Column, values: pa.Array) -> None:
        offset = self.rows
        if column.source_type is None:
            if "text" in column.kinds:
                return  # refused whatever follows; its first unparsable cell is known
            kind, typed = _classify_text(values, try_int="float" not in column.kinds)
            if kind == "text":
                at = _first_unparsable(values)
                if column.unparsable is None and at is not None:
                    column.unparsable = (values[at].as_py(), offset + at)
            elif kind == "bool" and column.unparsable is None:
                # a True/False cell is no number: if the column ends up mixed, pandas names it
                at = _first_true(~values.is_null().to_numpy(zero_copy_only=False))
                if at is not None:
                    column.unparsable = (values[at].as_py(), offset + at)
        else:
            kind = _parquet_kind(column.source_type)
            typed = values if kind in _NUMERIC_KINDS else None
            if typed is None and column.unparsable is None and _is_text(values.type):
                at = _first_unparsable(values)
                if at is not None:
                    column.unparsable = (values[at].as_py(), offset + at)
        if values.null_count < len(values):
            column.kinds = column.kinds | {kind}
        if column.first_value is None and offset == 0 and len(values):
            column.first_value = (values if typed is None else typed)[0].as_py()
        missing = (
            values.is_null().to_numpy(zero_copy_only=False)
            if values.null_count
            else np.zeros(len(values), bool)
        )
        if typed is not None and kind == "float":
            floats = typed.to_numpy(zero_copy_only=False)
            missing = missing | np.isnan(floats)
            infinite = np.isinf(floats)
            self._count(column, "infinite", infinite, offset)
        self._count(column, "missing", missing, offset)
        if typed is not None and self.num_classes is not None and column.role == "target":
            self._add_labels(column, typed, missing, offset)

    @staticmethod
    def _count(column: _Column, what: str, mask: np.ndarray, offset: int) -> None:
        count = int(mask.sum())
        if count:
            setattr(column, what, getattr(column, what) + count)
            first = f"first_{what}"
            if getattr(column, first) is None:
                setattr(column, first, offset + _first_true(mask))  # type: ignore[operator]

    def _add_labels(self, column: _Column, typed: pa.Array, missing: np.ndarray, offset: int) -> None:
        assert self.num_classes is not None
        values = typed.fill_null(False if pa.types.is_boolean(typed.type) else 0).to_numpy(
            zero_copy_only=False
        )
        bad = _bad_labels(values, self.num_classes) & ~missing  # missing cells are refused before this
        count = int(bad.sum())
        if count:
            column.bad_labels += count
            if column.first_bad_label is None:
                at = int(np.flatnonzero(bad)[0])
                column.first_bad_label = (values[at].item(), offset + at)

    def finish(self) -> pa.Schema:
        """Raise the first error of the checks, in :func:`check_schema`'s order; else return the schema of
        the prepared splits (features, then the target)."""
        if self.rows == 0:
            raise no_rows_error(self.source)
        for name in [self.target, *self.features]:
            self._check_numeric(self._columns[name])
        if self.num_classes is not None:
            self._check_labels(self._columns[self.target], self.num_classes)
        return pa.schema([(name, self._columns[name].output_type()) for name in self.needed])

    def _check_numeric(self, column: _Column) -> None:
        name, role, source = column.name, column.role, self.source
        if not column.numeric():
            dtype = column.dtype()
            example = column.unparsable if dtype == "str" else None
            raise _non_numeric_error(name, role, source, dtype, example)
        if column.missing:
            assert column.first_missing is not None
            raise _missing_error(name, role, source, column.missing, column.first_missing)
        if column.infinite:
            assert column.first_infinite is not None
            raise _infinite_error(name, role, source, column.infinite, column.first_infinite)

    def _check_labels(self, column: _Column, num_classes: int) -> None:
        dtype = column.dtype()
        is_float = dtype.startswith("float")
        if column.bad_labels:
            assert column.first_bad_label is not None
            value, row = column.first_bad_label
            value = float(value) if is_float else value
            raise _labels_error(column.name, self.source, num_classes, column.bad_labels, value, row)
        if is_float:
            raise _float_labels_error(column.name, self.source, dtype, float(column.first_value))

    def convert(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """A batch of :attr:`needed` columns with the types of ``schema`` (from :meth:`finish`): CSV text
        parsed the way the scan classified it, Parquet columns as stored."""
        arrays = []
        for field, values in zip(schema, batch.columns, strict=True):
            if self._columns[field.name].source_type is None:
                if pa.types.is_boolean(field.type):
                    values = pc.is_in(pc.utf8_trim_whitespace(values), value_set=pa.array(_TRUE))
                else:
                    parsed = _as_numbers(values, field.type)
                    if parsed is None:  # it parsed when checked: the file changed in between
                        raise DataValidationError(
                            f"Expected column {field.name!r} of {self.source!r} to parse as {field.type} as "
                            "it did when checked; the file changed while it was being prepared.",
                            column=field.name,
                        )
                    values = parsed
            arrays.append(values)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- the split --------------------------------------------------------------------------------------


TRAIN, VAL, TEST = 0, 1, 2  # the codes of :func:`split_assignment`
SPLIT_CODES = (TRAIN, VAL, TEST)


def _split_order(
    rows: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, int, int]:
    """The shuffled row numbers and the sizes of val and test; refuses a split that leaves one empty.

    A ``numpy.random.Generator`` of its own keeps the split a pure function of ``seed`` and leaves the
    global RNG (which seeds model initialisation) untouched. Shuffling ``arange`` in place draws the same
    numbers as ``permutation(rows)`` whatever the integer type, so 32-bit row numbers give the same
    order at half the memory.
    """
    n_val, n_test = round(rows * val_fraction), round(rows * test_fraction)
    if n_val < 1 or n_test < 1 or rows - n_val - n_test < 1:
        raise DataValidationError(
            f"Expected at least one row in each of train, val and test; {rows} rows with val_fraction="
            f"{val_fraction} and test_fraction={test_fraction} give {rows - n_val - n_test}, {n_val} "
            f"and {n_test}."
        )
    order = np.arange(rows, dtype=np.uint32 if rows <= np.iinfo(np.uint32).max else np.uint64)
    np.random.default_rng(seed).shuffle(order)
    return order, n_val, n_test


def split_indices(
    rows: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, val and test: a permutation by a private generator, each part sorted (so
    each split keeps file order). The first ``test`` shuffled rows are the test split, the next ``val``
    the validation split."""
    codes = split_assignment(rows, val_fraction, test_fraction, seed)
    train, val, test = (np.flatnonzero(codes == code) for code in SPLIT_CODES)
    return train, val, test


def split_assignment(rows: int, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Which split each row goes to (``TRAIN``, ``VAL`` or ``TEST``), as one int8 per row: the same
    membership as :func:`split_indices`, in the memory a streamed split needs."""
    order, n_val, n_test = _split_order(rows, val_fraction, test_fraction, seed)
    codes = np.full(rows, TRAIN, dtype=np.int8)
    codes[order[:n_test]] = TEST
    codes[order[n_test : n_test + n_val]] = VAL
    return codes
