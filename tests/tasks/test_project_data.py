"""A project's own data module in the pipeline: config, construction, identity (issue 11, points 1 and 2)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.retraining import with_window
from tasks.config import TrainConfig
from tasks.factory import build_datamodule
from tasks.imports import ALLOWED_IMPORTS_ENV
from tasks.project_data import declared_sources, identify
from tasks.sources import SourceNotFound
from tests.tasks import project_datamodule

DATAMODULE = "tests.tasks.project_datamodule:FolderDataModule"
MODEL = "tests.tasks.project_datamodule:Regressor"


@pytest.fixture(autouse=True)
def _allow_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_IMPORTS_ENV, "tests.tasks.")
    project_datamodule.PREPARE_CALLS.clear()


def project_config(tmp_path: Path, **kwargs: Any) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": MODEL,
            "datamodule": DATAMODULE,
            "datamodule_kwargs": {"root": str(tmp_path / "data"), **kwargs},
            "checkpoint_root": str(tmp_path / "runs" / "checkpoints"),
        }
    )


def test_a_config_with_a_project_data_module_needs_no_table(tmp_path: Path) -> None:
    config = project_config(tmp_path)
    assert config.data is None
    again = TrainConfig.from_flat_params(config.to_flat_params())
    assert again == config  # what reproduce reads back from MLflow
    with pytest.raises(ValueError, match=r"Expected a table \(data\) for this step"):
        config.table()


def test_a_config_with_neither_a_table_nor_a_data_module_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"Expected data .* or datamodule .* received neither"):
        TrainConfig.model_validate({"model": MODEL})


def test_the_project_data_module_gets_its_own_arguments_and_the_run_seed(tmp_path: Path) -> None:
    config = project_config(tmp_path, batch_size=8).model_copy(update={"seed": 7})
    datamodule = build_datamodule(config, None)
    assert (datamodule.batch_size, datamodule.seed, datamodule.root) == (8, 7, str(tmp_path / "data"))
    assert dict(datamodule.hparams) == {
        "root": str(tmp_path / "data"),
        "rows": 64,
        "batch_size": 8,
        "seed": 7,
        "declare": True,
    }


def test_an_argument_the_data_module_does_not_take_is_named_before_it_is_built(tmp_path: Path) -> None:
    config = project_config(tmp_path, batchsize=8)
    with pytest.raises(TypeError, match=r"received \['batchsize'\]; it takes \[.*'batch_size'.*\]"):
        build_datamodule(config, None)


def test_a_class_that_is_not_a_data_module_is_refused(tmp_path: Path) -> None:
    config = project_config(tmp_path).model_copy(update={"datamodule": MODEL})
    with pytest.raises(TypeError, match="LightningDataModule"):
        build_datamodule(config, None)


def test_identify_runs_prepare_data_then_fingerprints_the_declared_sources(tmp_path: Path) -> None:
    config = project_config(tmp_path)
    first = identify(config)
    assert [str(tmp_path / "data")] == project_datamodule.PREPARE_CALLS  # once, before the fingerprint
    assert first.fingerprint is not None and first.fingerprint.objects == 3
    assert first.digest == first.fingerprint.digest and first.dataset_id == first.digest[:24]
    listing = first.listing()
    assert listing is not None and listing.fingerprint == first.fingerprint
    assert identify(config).digest == first.digest  # nothing changed: the same identity

    train = tmp_path / "data" / "train.pt"
    stat = train.stat()
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched, bytes unread
    assert identify(config).digest != first.digest


def test_a_data_module_without_sources_is_identified_by_its_arguments(tmp_path: Path) -> None:
    config = project_config(tmp_path, declare=False)
    data = identify(config)
    assert data.fingerprint is None and data.digest is None
    assert data.dataset_id.startswith("args-")
    assert identify(project_config(tmp_path, declare=False, rows=32)).dataset_id != data.dataset_id


def test_a_declared_source_that_does_not_exist_fails_before_training(tmp_path: Path) -> None:
    class Missing:
        def data_sources(self) -> list[str]:
            return [str(tmp_path / "nowhere")]

    from tasks.sources import fingerprint_sources

    with pytest.raises(SourceNotFound, match="nowhere"):
        fingerprint_sources(declared_sources(Missing()) or [])


def test_data_sources_must_be_a_list_of_paths() -> None:
    class Bad:
        def data_sources(self) -> list[int]:
            return [1]

    with pytest.raises(TypeError, match=r"data_sources\(\) to return a list of non-empty paths"):
        declared_sources(Bad())
    assert declared_sources(object()) is None


def test_the_retraining_window_fills_the_data_module_arguments(tmp_path: Path) -> None:
    config = project_config(tmp_path).model_copy(
        update={"datamodule_kwargs": {"root": str(tmp_path / "dt={window_start}"), "rows": 8}}
    )
    windowed = with_window(config, dt.date(2026, 12, 6), window_days=3)
    assert windowed.datamodule_kwargs == {"root": str(tmp_path / "dt=2026-12-03"), "rows": 8}
    untouched = project_config(tmp_path)
    assert with_window(untouched, dt.date(2026, 12, 6), 1) is untouched
