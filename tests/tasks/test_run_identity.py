"""One run key, one run (tasks.run_identity): a fit of a run key with another config, or whose checkpoints
were lost while its MLflow run has history, is refused before anything is trained or logged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from lightning_lib.callbacks import Callback
from lightning_lib.storage import open_store
from tasks.config import TrainConfig
from tasks.data import prepare
from tasks.factory import checkpoint_dir
from tasks.run_identity import RECORD_NAME, LostCheckpointsError, RunConfigMismatchError, differences
from tasks.tracking import tracking_uri
from tasks.training import fit_model
from tests.flows.conftest import digits_config


def _fit(config: TrainConfig, **kwargs: Any) -> Any:
    return fit_model(config, prepare(config), config.run_key or "", **kwargs)


def _history(config: TrainConfig, run_id: str) -> list[tuple[int, float]]:
    client = MlflowClient(tracking_uri(config))
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train_loss_epoch"))


def _folder(config: TrainConfig) -> list[str]:
    """The checkpoint folder's objects but the lease's (which every fit renews, a refused one too)."""
    keys = (info.key for info in open_store(checkpoint_dir(config, "k1")).list())
    return sorted(key for key in keys if not key.startswith("lease-"))


def test_a_changed_config_is_refused_naming_each_field_and_the_same_config_resumes(tmp_path: Path) -> None:
    config = digits_config(tmp_path, run_key="k1", **{"trainer.max_epochs": 1})
    first = _fit(config)
    before, folder = _history(config, first.mlflow_run_id), _folder(config)

    changed = digits_config(
        tmp_path, run_key="k1", **{"trainer.max_epochs": 2, "model_kwargs.lr": 0.5, "seed": 3}
    )
    with pytest.raises(RunConfigMismatchError) as refused:
        _fit(changed)
    message = str(refused.value)
    assert "trainer.max_epochs: started with '1', now '2'" in message
    assert "model_kwargs.lr: started with (absent), now '0.5'" in message
    assert "seed: started with '0', now '3'" in message
    # nothing trained, committed or logged
    assert _history(config, first.mlflow_run_id) == before and _folder(config) == folder

    # the record in the checkpoint folder lost: the MLflow run's params still know the config
    (Path(checkpoint_dir(config, "k1")) / RECORD_NAME).unlink()
    with pytest.raises(RunConfigMismatchError, match=f"params of its MLflow run {first.mlflow_run_id}"):
        _fit(changed)

    # locations may move; the config it started with resumes the same run
    again = _fit(
        digits_config(
            tmp_path, run_key="k1", **{"trainer.max_epochs": 1, "trainer.enable_progress_bar": True}
        )
    )
    assert again.steps_this_attempt == 0 and again.mlflow_run_id == first.mlflow_run_id
    assert "run.json" in _folder(config)  # written again


def test_lost_checkpoints_are_refused_naming_the_mlflow_run_its_last_step_and_the_folder(
    tmp_path: Path,
) -> None:
    config = digits_config(tmp_path, run_key="k1")
    first = _fit(config)
    before = _history(config, first.mlflow_run_id)
    shutil.rmtree(checkpoint_dir(config, "k1"))  # the bucket wiped, the folder deleted

    with pytest.raises(LostCheckpointsError) as refused:
        _fit(config)
    message = str(refused.value)
    assert first.mlflow_run_id in message and checkpoint_dir(config, "k1") in message
    # Lightning logs an epoch's metrics at the step of its last batch: 7 of 0..7
    assert f"history up to step {first.global_step - 1}" in message
    assert "mlflow runs delete --run-id" in message and "new run_key" in message
    assert _history(config, first.mlflow_run_id) == before  # no second copy of any metric
    assert _folder(config) == []  # only the (released) lease: nothing trained or committed
    runs = MlflowClient(tracking_uri(config)).search_runs(
        [first.mlflow_experiment_id], filter_string="tags.run_key = 'k1'"
    )
    assert [r.info.run_id for r in runs] == [first.mlflow_run_id]


class _DieEarly(Callback):
    """Fails the first attempt at its third batch, before any checkpoint was committed."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 2:
            raise ConnectionError("the node went away")


def test_a_first_attempt_that_died_before_its_first_checkpoint_is_retried_from_step_0(tmp_path: Path) -> None:
    config = digits_config(tmp_path, run_key="k1", **{"trainer.log_every_n_steps": 1})
    with pytest.raises(ConnectionError):
        _fit(config, extra_callbacks=[_DieEarly()])
    assert "run.json" in _folder(config)
    retried = _fit(config)  # MLflow has steps 0..1 but no checkpoint was ever recorded: not a loss
    assert retried.resumed_from is None and retried.steps_this_attempt == retried.global_step == 8


def test_a_run_recorded_before_a_config_field_existed_resumes_and_the_field_compares_as_its_default(
    tmp_path: Path,
) -> None:
    config = digits_config(tmp_path, run_key="k1", **{"trainer.max_epochs": 1})
    first = _fit(config)
    # run.json as a version before data.num_classes existed wrote it
    record_path = Path(checkpoint_dir(config, "k1")) / RECORD_NAME
    record = json.loads(record_path.read_text())
    del record["params"]["config.data.num_classes"]
    record_path.write_text(json.dumps(record))

    again = _fit(config)
    assert again.mlflow_run_id == first.mlflow_run_id and again.steps_this_attempt == 0

    # set to anything but its default, the new field is a difference like any other
    with pytest.raises(RunConfigMismatchError, match=r"data\.num_classes: started with 'null', now '10'"):
        _fit(digits_config(tmp_path, run_key="k1", **{"trainer.max_epochs": 1, "data.num_classes": 10}))


def test_a_record_that_no_longer_validates_still_gets_the_defaults_of_fields_it_predates(
    tmp_path: Path,
) -> None:
    current = digits_config(tmp_path, run_key="k1").to_flat_params()
    recorded = {k: v for k, v in current.items() if k != "config.data.num_classes"}
    assert differences(recorded, current) == []
    recorded["config.data.since_removed"] = "1"  # fails validation now: only the fallback applies
    assert differences(recorded, current) == ["data.since_removed: started with '1', now (absent)"]
    current["config.model_kwargs.extra"] = "2"  # a model kwarg has no default: absent is a difference
    assert "model_kwargs.extra: started with (absent), now '2'" in differences(recorded, current)


def test_neither_a_first_nor_a_later_attempt_warns_about_the_run_s_own_folder(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    config = digits_config(tmp_path, run_key="k1")
    _fit(config)  # the record and the lease are in the folder before the fit starts
    assert _folder(config)  # the run's checkpoints are there for the next attempt, which resumes at its end
    _fit(config)
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]
