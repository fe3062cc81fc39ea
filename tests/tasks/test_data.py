"""prepare_data: schema errors name the column, deterministic splits, local and S3, Prefect cache and retries."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tasks.data as data_module
from lightning_lib.storage import (
    AccessDeniedError,
    BucketNotFound,
    ObjectNotFound,
    S3Store,
    StorageError,
    join_uri,
)
from tasks.config import TrainConfig
from tasks.data import PreparedData, load_prepared, prepare, prepare_cache_key, read_uri
from tasks.retry import is_transient, retry_on_transient
from tasks.tabular import DataValidationError, split_indices
from tests.tasks.conftest import make_frame

REPO = Path(__file__).resolve().parents[2]
DIGITS_CSV = REPO / "examples" / "data" / "digits.csv"


def config_for(source: str | Path, root: str | Path, **data: Any) -> TrainConfig:
    return TrainConfig(
        model="examples.digits:DigitsClassifier",
        checkpoint_root=f"{root}/checkpoints",
        data={"source": str(source), "target": "label", **data},
    )


def split_frames(result: PreparedData) -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_parquet(io.BytesIO(read_uri(getattr(result, name).uri)))
        for name in ("train", "val", "test")
    }


def assert_consistent(result: PreparedData, source: pd.DataFrame) -> None:
    """Digests match the stored bytes; the splits partition the rows; the manifest says the same."""
    frames = split_frames(result)
    for name, frame in frames.items():
        split = getattr(result, name)
        assert hashlib.sha256(read_uri(split.uri)).hexdigest() == split.sha256
        assert len(frame) == split.rows
        assert list(frame.columns) == [*result.features, result.target]
    combined = pd.concat(frames.values()).sort_values(list(source.columns)).reset_index(drop=True)
    expected = source[[*result.features, result.target]].sort_values(list(source.columns))
    pd.testing.assert_frame_equal(combined, expected.reset_index(drop=True), check_dtype=False)
    assert load_prepared(result.manifest_uri) == result


def test_csv_local(csv_file: Path, tmp_path: Path) -> None:
    config = config_for(csv_file, tmp_path)
    result = prepare(config)
    assert result.input_sha256 == hashlib.sha256(csv_file.read_bytes()).hexdigest()
    assert result.features == ["f0", "f1", "f2", "count"]  # all but the target, in file order
    assert (result.train.rows, result.val.rows, result.test.rows) == (42, 9, 9)
    assert result.train.uri == str(tmp_path / "data" / result.dataset_id / "train.parquet")
    assert_consistent(result, make_frame())
    kwargs = result.datamodule_kwargs()
    assert kwargs["train_uri"] == result.train.uri and kwargs["sha256"]["test"] == result.test.sha256


def test_parquet_local_with_chosen_features(tmp_path: Path) -> None:
    source = tmp_path / "table.parquet"
    make_frame().to_parquet(source, index=False)
    result = prepare(config_for(source, tmp_path, features=["f2", "f0"]))
    assert result.features == ["f2", "f0"]
    assert_consistent(result, make_frame()[["f2", "f0", "label"]])


def test_split_is_deterministic_and_leaves_the_global_rng_alone(csv_file: Path, tmp_path: Path) -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = prepare(config_for(csv_file, tmp_path / "a"))
    again = prepare(config_for(csv_file, tmp_path / "b"))
    assert np.array_equal(np.random.get_state()[1], before)
    assert first.dataset_id == again.dataset_id
    assert [s.sha256 for s in (first.train, first.val, first.test)] == [
        s.sha256 for s in (again.train, again.val, again.test)
    ]
    other = prepare(config_for(csv_file, tmp_path / "a", split_seed=1))
    assert other.dataset_id != first.dataset_id and other.test.sha256 != first.test.sha256


def test_split_indices_partition_the_rows() -> None:
    train, val, test = split_indices(100, 0.2, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    assert all(np.all(np.diff(part) > 0) for part in (train, val, test))
    assert all(np.array_equal(a, b) for a, b in zip(split_indices(100, 0.2, 0.1, 3), (train, val, test)))
    with pytest.raises(DataValidationError, match="at least one row in each of train, val and test"):
        split_indices(4, 0.1, 0.1, seed=0)


def write_csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("mutate", "features", "column", "message"),
    [
        (lambda f: f.drop(columns=["f1"]), None, None, None),  # fine: features default to the rest
        (lambda f: f.drop(columns=["f1"]), ["f0", "f1"], "f1", "Expected feature column 'f1'"),
        (lambda f: f.drop(columns=["label"]), None, "label", "Expected target column 'label'"),
        (
            lambda f: f.assign(f2=["x"] + [1.0] * 59),
            None,
            "f2",
            "to be numeric (int, float or bool), found dtype",
        ),
        (lambda f: f.assign(label=["cat"] * 60), None, "label", "Expected target column 'label'"),
        (
            lambda f: f.assign(f0=[np.nan] + [1.0] * 59),
            None,
            "f0",
            "no missing values (NaN or empty) in feature column 'f0'",
        ),
        (
            lambda f: f.assign(f0=[1.0, np.inf] + [1.0] * 58),
            None,
            "f0",
            "finite values in feature column 'f0'",
        ),
    ],
    ids=[
        "default-features",
        "missing-feature",
        "missing-target",
        "text-feature",
        "text-target",
        "nan",
        "inf",
    ],
)
def test_schema_errors_name_the_column(
    tmp_path: Path, mutate: Any, features: list[str] | None, column: str | None, message: str | None
) -> None:
    path = write_csv(tmp_path, mutate(make_frame()))
    config = config_for(path, tmp_path, features=features)
    if column is None:
        assert prepare(config).features == ["f0", "f2", "count"]
        return
    with pytest.raises(DataValidationError, match=re.escape(message or "")) as exc:
        prepare(config)
    assert exc.value.column == column
    assert str(path) in str(exc.value)


def test_non_numeric_error_shows_an_example_value_and_row(tmp_path: Path) -> None:
    frame = make_frame().astype({"count": object})
    frame.loc[7, "count"] = "seven"
    with pytest.raises(DataValidationError, match=r"e\.g\. 'seven' at row 7") as exc:
        prepare(config_for(write_csv(tmp_path, frame), tmp_path))
    assert exc.value.column == "count"


def test_missing_column_lists_what_is_there(tmp_path: Path) -> None:
    path = write_csv(tmp_path, make_frame())
    with pytest.raises(DataValidationError, match=r"its columns are \['f0', 'f1', 'f2', 'count', 'label'\]"):
        prepare(config_for(path, tmp_path, features=["f0", "height"]))


def test_unreadable_and_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataValidationError, match="Could not read"):
        prepare(config_for(tmp_path / "empty.csv", tmp_path))
    (tmp_path / "header.csv").write_text("f0,label\n")
    with pytest.raises(DataValidationError, match="at least one data row"):
        prepare(config_for(tmp_path / "header.csv", tmp_path))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataValidationError, match="as PARQUET"):
        prepare(config_for(tmp_path / "junk.parquet", tmp_path))
    with pytest.raises(ObjectNotFound):
        prepare(config_for(tmp_path / "absent.csv", tmp_path))


@pytest.mark.services
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_s3_source_and_outputs(s3_endpoint: str, fmt: str) -> None:
    raw_store = S3Store(join_uri(s3_endpoint, "raw"))
    buffer = io.BytesIO()
    if fmt == "csv":
        make_frame().to_csv(buffer, index=False)
    else:
        make_frame().to_parquet(buffer, index=False)
    raw_store.put_bytes(f"table.{fmt}", buffer.getvalue())
    config = TrainConfig(
        model="examples.digits:DigitsClassifier",
        checkpoint_root=f"{s3_endpoint}/ml/checkpoints",
        data={"source": f"{s3_endpoint}/raw/table.{fmt}", "target": "label"},
    )
    result = prepare(config)
    assert result.train.uri == f"{s3_endpoint}/ml/data/{result.dataset_id}/train.parquet"
    assert result.input_sha256 == hashlib.sha256(buffer.getvalue()).hexdigest()
    assert_consistent(result, make_frame())


@pytest.mark.services
def test_s3_splits_feed_the_tabular_datamodule(s3_endpoint: str) -> None:
    from examples.tabular import TabularDataModule

    S3Store(join_uri(s3_endpoint, "raw")).put_bytes("digits.csv", DIGITS_CSV.read_bytes())
    config = TrainConfig(
        model="examples.digits:DigitsClassifier",
        checkpoint_root=f"{s3_endpoint}/digits/checkpoints",
        data={"source": f"{s3_endpoint}/raw/digits.csv", "target": "target"},
    )
    result = prepare(config)
    datamodule = TabularDataModule(**result.datamodule_kwargs(), batch_size=32, min_std=1.0)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (32, 64) and y.dtype.is_floating_point is False


def test_tabular_datamodule_trains_the_digits_classifier(tmp_path: Path) -> None:
    import lightning_lib as pl
    from examples.digits import DigitsClassifier
    from examples.tabular import TabularDataModule

    config = TrainConfig(
        model="examples.digits:DigitsClassifier",
        checkpoint_root=str(tmp_path / "checkpoints"),
        data={"source": str(DIGITS_CSV), "target": "target"},
    )
    result = prepare(config)
    assert (result.train.rows, result.val.rows, result.test.rows) == (1257, 270, 270)
    datamodule = TabularDataModule(**result.datamodule_kwargs(), batch_size=64, min_std=1.0)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    pl.seed_everything(0, verbose=False)
    model = DigitsClassifier()
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    assert metrics["test_acc"] > 0.8
    # The statistics travel in the checkpoint: a module without the train split predicts the same way.
    restored = TabularDataModule(test_uri=result.test.uri, features=result.features, target="target")
    restored.load_state_dict(datamodule.state_dict())
    restored.setup("test")
    assert restored.mean is not None and datamodule.mean is not None
    assert bool((restored.mean == datamodule.mean).all())
    tampered = TabularDataModule(**{**result.datamodule_kwargs(), "sha256": {"train": "0" * 64}})
    with pytest.raises(ValueError, match="content has changed"):
        tampered.setup("fit")


def test_shipped_digits_csv_is_sklearns_digits() -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    assert DIGITS_CSV.stat().st_size < 1_000_000
    frame = pd.read_csv(DIGITS_CSV)
    digits = sklearn_datasets.load_digits()
    assert list(frame.columns) == [f"pixel_{i}" for i in range(64)] + ["target"]
    assert np.array_equal(frame.iloc[:, :64].to_numpy(), digits.data)
    assert np.array_equal(frame["target"].to_numpy(), digits.target)


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (StorageError("S3 request failed: 503 SlowDown"), True),
        (ConnectionError("reset"), True),
        (TimeoutError("read timed out"), True),
        (DataValidationError("bad column", column="x"), False),
        (ValueError("bad config"), False),
        (ObjectNotFound("gone"), False),
        (BucketNotFound("no bucket"), False),
        (AccessDeniedError("denied"), False),
        (RuntimeError("NaN loss"), False),
    ],
)
def test_retry_condition(exc: BaseException, transient: bool) -> None:
    from prefect.states import Failed

    assert is_transient(exc) is transient
    assert retry_on_transient(None, None, Failed(data=exc)) is transient
    assert retry_on_transient(None, None, SimpleNamespace(data=None)) is False


# -- under Prefect ----------------------------------------------------------------------------------


class CountingPrepare:
    """Stands in for ``tasks.data.prepare`` inside the task: counts calls, optionally fails first."""

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.calls = 0
        self.failures = list(failures or [])

    def __call__(self, config: TrainConfig) -> PreparedData:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return prepare(config)


def test_second_run_on_unchanged_input_is_a_cache_hit(
    prefect_harness: Path, csv_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    counter = CountingPrepare()
    monkeypatch.setattr(data_module, "prepare", counter)

    @flow
    def pipeline(config: TrainConfig) -> Any:
        return data_module.prepare_data(config, return_state=True)

    config = config_for(csv_file, tmp_path)
    first = pipeline(config)
    second = pipeline(config)
    assert first.is_completed() and first.name == "Completed"
    assert second.is_completed() and second.name == "Cached"
    assert counter.calls == 1  # the second run did no work
    assert isinstance(second.result(), PreparedData) and second.result() == first.result()

    # New content under the same name is new data: a miss, prepared again into another folder.
    make_frame(seed=1).to_csv(csv_file, index=False)
    third = pipeline(config)
    assert third.name == "Completed" and counter.calls == 2
    assert third.result().dataset_id != first.result().dataset_id

    # A cached result whose folder was deleted is prepared again (and the cache refreshed).
    @flow
    def through_the_flows_helper(config: TrainConfig) -> Any:
        return data_module.run_prepare_data(config)

    shutil.rmtree(Path(third.result().manifest_uri).parent)
    again = through_the_flows_helper(config)
    assert counter.calls == 3 and Path(again.manifest_uri).exists()
    through_the_flows_helper(config)
    assert counter.calls == 3  # refreshed: served from the cache again
    # And the key follows content and split parameters, not the run's other settings.
    key = prepare_cache_key(None, {"config": config})
    assert key == prepare_cache_key(None, {"config": config.with_overrides(["trainer.max_epochs=9"])})
    assert key != prepare_cache_key(None, {"config": config.with_overrides(["data.val_fraction=0.2"])})


def test_transient_storage_faults_are_retried_and_bad_data_is_not(
    prefect_harness: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    @flow
    def fast(config: TrainConfig) -> PreparedData:
        task = data_module.prepare_data.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
        return task(config)

    flaky = CountingPrepare([StorageError("S3 request failed: 503"), ConnectionError("reset")])
    monkeypatch.setattr(data_module, "prepare", flaky)
    source = write_csv(tmp_path, make_frame(seed=11))
    assert isinstance(fast(config_for(source, tmp_path)), PreparedData)
    assert flaky.calls == 3

    bad = tmp_path / "bad"
    bad.mkdir()
    broken = CountingPrepare()
    monkeypatch.setattr(data_module, "prepare", broken)
    config = config_for(write_csv(bad, make_frame(seed=12).drop(columns=["f0"])), bad, features=["f0"])
    with pytest.raises(DataValidationError, match="Expected feature column 'f0'"):
        fast(config)
    assert broken.calls == 1  # refused at once: retrying would not change the data


def test_cached_preparation_is_keyed_on_the_absolute_folder_and_its_presence(
    csv_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative data root in another working directory, or a deleted output folder, is not a cache hit
    (the cached result's URIs would point at files that are not there)."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    config = config_for(csv_file, "runs")  # relative, as the embedded defaults are
    monkeypatch.chdir(one)
    here = prepare_cache_key(None, {"config": config})
    result = prepare(config)
    assert result.train.uri.startswith(str(one))  # absolute: readable from any working directory
    monkeypatch.chdir(two)
    assert prepare_cache_key(None, {"config": config}) != here


@pytest.mark.parametrize(
    ("labels", "first", "count"),
    [
        ({3: 999, 7: 999, 11: -1}, "999 at row 3", 3),
        ({5: 0.5}, "0.5 at row 5", 1),
        ({0: 10}, "10 at row 0", 1),  # one past the last class: an IndexError deep inside the fit before
    ],
    ids=["out-of-range", "fraction", "one-past"],
)
def test_labels_outside_the_models_classes_are_refused_when_preparing(
    tmp_path: Path, labels: dict[int, float], first: str, count: int
) -> None:
    frame = make_frame()
    frame["label"] = frame["label"].astype(float if any(v % 1 for v in labels.values()) else int)
    for row, value in labels.items():
        frame.loc[row, "label"] = value
    path = write_csv(tmp_path, frame)
    config = config_for(path, tmp_path)  # DigitsClassifier declares num_classes = 10
    assert config.class_count() == 10
    with pytest.raises(DataValidationError) as exc:
        prepare(config)
    message = str(exc.value)
    assert exc.value.column == "label"
    assert "Expected class labels in [0, 9]" in message and "target column 'label'" in message
    assert f"found {count} row(s) outside (first {first})" in message
    assert not (tmp_path / "data").exists()  # nothing was written


def test_the_class_count_comes_from_the_config_then_the_model(tmp_path: Path) -> None:
    path = write_csv(tmp_path, make_frame())  # labels 0..2
    with pytest.raises(DataValidationError, match=r"labels in \[0, 1\].*first 2 at row"):
        prepare(config_for(path, tmp_path, num_classes=2))
    by_kwargs = config_for(path, tmp_path).model_copy(update={"model_kwargs": {"num_classes": 2}})
    assert by_kwargs.class_count() == 2
    assert prepare(config_for(path, tmp_path, num_classes=3)).train.rows > 0
    # whole-number floats would train as a regression target: refused for a classifier, with the reason
    floats = make_frame()
    floats["label"] = floats["label"].astype(float)
    with pytest.raises(DataValidationError, match=r"to be stored as integers, found dtype float64"):
        prepare(config_for(write_csv(tmp_path, floats), tmp_path))
