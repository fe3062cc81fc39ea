"""tasks.tabular: the streamed checks say what the pandas checks say on the whole table (same message, same
column, rows numbered over the whole file), CSV columns get the dtype pandas infers over the whole file,
and the one-byte-per-row split has the membership of the permutation it replaced."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.data as data_module
from tasks.config import TrainConfig
from tasks.data import prepare, read_uri
from tasks.tabular import (
    TEST,
    TRAIN,
    VAL,
    DataValidationError,
    check_labels,
    check_schema,
    mangle_csv_header,
    parse_table,
    split_assignment,
    split_indices,
)

ROWS = 40


def base_frame(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "id": np.arange(rows),
            "x": rng.normal(size=rows).round(3),
            "n": rng.integers(0, 9, size=rows),
            "label": rng.integers(0, 3, size=rows),
        }
    )


def with_cells(column: str, cells: dict[int, Any], dtype: Any = object) -> Callable[[pd.DataFrame], Any]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: dtype})
        for row, value in cells.items():
            frame.loc[row, column] = value
        return frame

    return mutate


def csv_text(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def edited(text: Callable[[str], str]) -> Callable[[pd.DataFrame], bytes]:
    return lambda frame: text(frame.to_csv(index=False)).encode()


# (name, how to build the CSV from base_frame(), data config overrides)
CSV_CASES: list[tuple[str, Callable[[pd.DataFrame], Any], dict[str, Any]]] = [
    ("clean", lambda f: f, {}),
    ("int-column-turns-float-late", with_cells("n", {35: 2.5}), {}),
    ("int-column-missing-late", with_cells("n", {35: None}), {}),
    ("text-late", with_cells("x", {33: "oops"}), {}),
    ("text-first-then-numbers", with_cells("x", {0: "head"}), {}),
    ("bool-feature", lambda f: f.assign(flag=[bool(i % 2) for i in range(ROWS)]), {}),
    (
        "bool-with-missing",
        lambda f: f.assign(flag=[None if i == 30 else bool(i % 2) for i in range(ROWS)]),
        {},
    ),
    ("bool-then-ints", lambda f: f.assign(flag=[True] * 10 + [1] * (ROWS - 10)), {}),
    ("ints-then-bool", lambda f: f.assign(flag=[1] * 30 + [False] * (ROWS - 30)), {}),
    ("infinite", with_cells("x", {5: np.inf, 30: -np.inf}, float), {}),
    ("nan-spelled", with_cells("x", {7: "nan", 21: "NA", 30: ""}), {}),
    ("nan-spelled-as-text", with_cells("x", {9: "NAN"}), {}),
    ("all-empty", lambda f: f.assign(gone=[None] * ROWS), {}),
    ("labels-out-of-range", with_cells("label", {12: 7, 38: -1}, int), {"num_classes": 3}),
    ("labels-whole-floats", with_cells("label", {}, float), {"num_classes": 3}),
    ("labels-fraction-late", with_cells("label", {36: 1.5}, float), {"num_classes": 3}),
    ("labels-bool", lambda f: f.assign(label=[bool(i % 2) for i in range(ROWS)]), {"num_classes": 2}),
    (
        "labels-missing-and-feature-text",
        lambda f: with_cells("x", {3: "t"})(f.assign(label=f.label.where(f.index != 20))),
        {},
    ),
    ("text-target", with_cells("label", {25: "cat"}), {}),
    ("missing-feature", lambda f: f, {"features": ["id", "height"]}),
    ("missing-target", lambda f: f.drop(columns=["label"]), {}),
    ("chosen-features", lambda f: f.assign(note=["a"] * ROWS), {"features": ["id", "n"]}),
    ("repeated-header", edited(lambda t: t.replace("id,x,n,label", "id,x,x,label", 1)), {}),
    ("empty-header-name", edited(lambda t: t.replace("id,x,n,label", "id,,n,label", 1)), {}),
    (
        "quoted-newlines",
        lambda f: f.assign(note=[f"line {i}\nnext, with comma" for i in range(ROWS)]),
        {"features": ["id", "x"]},
    ),
    (
        "spaces-around-numbers",
        edited(lambda t: t.replace(",", " , ").replace("id , x , n , label", "id,x,n,label")),
        {},
    ),
    ("signed-and-hex", with_cells("n", {4: "+5", 6: "-0"}), {}),
    ("hex-is-text", with_cells("n", {8: "0x10"}), {}),
    ("header-only", lambda f: f.iloc[:0], {}),
]


def verdicts(raw: bytes, fmt: str, source: str, data: dict[str, Any]) -> Any:
    """What the pandas checks say of the whole table: an error, or the frame of the needed columns."""
    try:
        frame = parse_table(raw, fmt, source)  # type: ignore[arg-type]
        features = check_schema(frame, data.get("features"), "label", source)
        if "num_classes" in data:
            check_labels(frame["label"], data["num_classes"], source)
    except DataValidationError as exc:
        return ("error", str(exc), exc.column)
    return ("ok", frame[[*features, "label"]])


def streamed(path: Path, root: Path, data: dict[str, Any]) -> Any:
    config = TrainConfig(
        model="examples.digits:DigitsClassifier",
        checkpoint_root=str(root / "checkpoints"),
        data={"source": str(path), "target": "label", "split_seed": 4, **data},
    )
    try:
        result = prepare(config)
    except DataValidationError as exc:
        return ("error", str(exc), exc.column)
    parts = [pd.read_parquet(io.BytesIO(read_uri(getattr(result, s).uri))) for s in ("train", "val", "test")]
    return ("ok", pd.concat(parts).sort_values("id").reset_index(drop=True))


def assert_same(expected: Any, got: Any) -> None:
    assert got[0] == expected[0], (expected, got)
    if expected[0] == "error":
        assert got[1:] == expected[1:]
    else:
        pd.testing.assert_frame_equal(got[1], expected[1].reset_index(drop=True))  # dtypes included


@pytest.fixture(params=[160, None], ids=["many-batches", "one-batch"])
def small_batches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param is not None:
        monkeypatch.setattr(data_module, "_CSV_BLOCK_BYTES", request.param)
        monkeypatch.setattr(data_module, "_PARQUET_BATCH_ROWS", 3)


@pytest.mark.parametrize(("name", "build", "data"), CSV_CASES, ids=[case[0] for case in CSV_CASES])
def test_streamed_csv_checks_match_the_pandas_checks(
    tmp_path: Path, small_batches: None, name: str, build: Callable[[pd.DataFrame], Any], data: dict[str, Any]
) -> None:
    built = build(base_frame())
    raw = built if isinstance(built, bytes) else csv_text(built)
    path = tmp_path / "table.csv"
    path.write_bytes(raw)
    expected = verdicts(raw, "csv", str(path), data)
    assert_same(expected, streamed(path, tmp_path, data))


def test_the_cases_cover_what_they_name(tmp_path: Path) -> None:
    """The oracle cases are not vacuous: late failures are reported at their global row."""
    messages = {}
    for name, build, data in CSV_CASES:
        built = build(base_frame())
        raw = built if isinstance(built, bytes) else csv_text(built)
        messages[name] = verdicts(raw, "csv", "t.csv", data)
    assert messages["int-column-turns-float-late"][1]["n"].dtype == np.float64
    assert "found 1 (first at row 35)" in messages["int-column-missing-late"][1]
    assert "e.g. 'oops' at row 33" in messages["text-late"][1]
    assert "found 2 infinite (first at row 5)" in messages["infinite"][1]
    assert "found 2 row(s) outside (first 7 at row 12)" in messages["labels-out-of-range"][1]
    assert "first 1.5 at row 36" in messages["labels-fraction-late"][1]
    assert "target column 'label'" in messages["labels-missing-and-feature-text"][1]
    assert "found dtype object." in messages["bool-with-missing"][1]
    assert "e.g. 'True' at row 0" in messages["bool-then-ints"][1]
    assert "e.g. 'False' at row 30" in messages["ints-then-bool"][1]
    assert "found 3 (first at row 7)" in messages["nan-spelled"][1]
    assert "e.g. 'NAN' at row 9" in messages["nan-spelled-as-text"][1]
    assert list(messages["repeated-header"][1].columns) == ["id", "x", "x.1", "label"]
    assert list(messages["empty-header-name"][1].columns) == ["id", "Unnamed: 1", "n", "label"]
    assert messages["spaces-around-numbers"][1]["n"].dtype == np.int64
    assert messages["signed-and-hex"][1]["n"].dtype == np.int64
    assert "e.g. '0x10' at row 8" in messages["hex-is-text"][1]


def parquet_cases() -> list[tuple[str, pa.Table, dict[str, Any]]]:
    frame = base_frame()
    return [
        ("clean", pa.Table.from_pandas(frame, preserve_index=False), {}),
        (
            "narrow-types-kept",
            pa.table(
                {
                    "id": pa.array(frame.id, pa.int32()),
                    "x": pa.array(frame.x, pa.float32()),
                    "b": pa.array([bool(i % 2) for i in range(ROWS)]),
                    "label": pa.array(frame.label, pa.uint8()),
                }
            ),
            {"num_classes": 3},
        ),
        ("strings", pa.Table.from_pandas(with_cells("x", {17: "abc"})(frame).astype({"x": str})), {}),
        (
            "null-int-late",
            pa.table(
                {
                    "id": frame.id,
                    "n": pa.array([None if i == 37 else 1 for i in range(ROWS)]),
                    "label": frame.label,
                }
            ),
            {},
        ),
        (
            "null-bool",
            pa.table(
                {
                    "id": frame.id,
                    "b": pa.array([None if i == 2 else True for i in range(ROWS)]),
                    "label": frame.label,
                }
            ),
            {},
        ),
        ("index-saved", pa.Table.from_pandas(frame.set_index(frame.id + 100)), {}),
        (
            "float-labels",
            pa.Table.from_pandas(frame.astype({"label": "float32"}), preserve_index=False),
            {"num_classes": 3},
        ),
        ("no-rows", pa.Table.from_pandas(frame.iloc[:0], preserve_index=False), {}),
    ]


@pytest.mark.parametrize("case", range(len(parquet_cases())), ids=[c[0] for c in parquet_cases()])
def test_streamed_parquet_checks_match_the_pandas_checks(
    tmp_path: Path, small_batches: None, case: int
) -> None:
    _, table, data = parquet_cases()[case]
    path = tmp_path / "table.parquet"
    pq.write_table(table, path, row_group_size=7)  # several row groups, batches across them
    expected = verdicts(path.read_bytes(), "parquet", str(path), data)
    assert_same(expected, streamed(path, tmp_path, data))


def test_csv_header_names_as_pandas_gives_them() -> None:
    assert mangle_csv_header(["a", "b", "a", "", "a", "a.1"]) == ["a", "b", "a.2", "Unnamed: 3", "a.3", "a.1"]
    for header in ("a,b,a,,a", "a,a,a.1", "x,,y"):
        names = list(
            pd.read_csv(io.StringIO(header + "\n" + ",".join("1" * (header.count(",") + 1)))).columns
        )
        assert mangle_csv_header(header.split(",")) == names


@pytest.mark.parametrize(
    ("rows", "val", "test", "seed"),
    [
        (3, 0.34, 0.34, 0),
        (60, 0.15, 0.15, 0),
        (1797, 0.15, 0.15, 42),
        (10_001, 0.2, 0.05, 7),
        (5, 0.2, 0.2, 3),
    ],
)
def test_split_assignment_has_the_permutations_membership(
    rows: int, val: float, test: float, seed: int
) -> None:
    # the rule split_indices always had: the first n_test rows of permutation(rows) are the test split,
    # the next n_val the validation split
    order = np.random.default_rng(seed).permutation(rows)
    n_val, n_test = round(rows * val), round(rows * test)
    expected = (
        np.sort(order[n_test + n_val :]),
        np.sort(order[n_test : n_test + n_val]),
        np.sort(order[:n_test]),
    )
    codes = split_assignment(rows, val, test, seed)
    assert codes.dtype == np.int8 and codes.shape == (rows,)
    for code, part in zip((TRAIN, VAL, TEST), expected, strict=True):
        assert np.array_equal(np.flatnonzero(codes == code), part)
    for got, part in zip(split_indices(rows, val, test, seed), expected, strict=True):
        assert np.array_equal(got, part)


def test_split_assignment_refuses_an_empty_split() -> None:
    with pytest.raises(
        DataValidationError, match=r"4 rows with val_fraction=0.1 and test_fraction=0.1 give 4, 0"
    ):
        split_assignment(4, 0.1, 0.1, seed=0)
