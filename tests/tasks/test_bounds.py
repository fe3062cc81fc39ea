"""Issue 14, point 9: every resource a parameter controls is bounded before anything starts.

The config (and so the flow's JSON schema, the Prefect form) carries fixed bounds; what depends on the
machine (its CPUs, its CUDA devices) is checked by the Trainer's argument checks on the worker, before
torchrun is launched, and refused as a permanent error (never retried).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import tasks.distributed_fit as distributed_fit
from lightning_lib.trainer.arguments import MAX_DEVICES_PER_NODE, MAX_NUM_NODES
from tasks.config import MAX_BATCH_SIZE, MAX_DATALOADER_WORKERS, TrainConfig
from tasks.data import prepare
from tasks.retry import is_transient
from tasks.trainer_config import MAX_COUNT
from tasks.training import fit_model
from tests.tasks.configs import make, only_error


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "devices",
            100_000,
            f"Expected devices (devices per node) <= {MAX_DEVICES_PER_NODE}, received 100000.",
        ),
        # 10**11 made validation itself build a list of that many devices (out of memory)
        ("devices", 10**11, f"<= {MAX_DEVICES_PER_NODE}, received 100000000000."),
        ("devices", "100000000000", f"<= {MAX_DEVICES_PER_NODE}, received 100000000000."),
        ("devices", [0, 10**9], f"Expected device indices < {MAX_DEVICES_PER_NODE}, received 1000000000."),
        ("devices", list(range(1000)), f"at most {MAX_DEVICES_PER_NODE} device indices"),
        ("num_nodes", 100_000, f"Expected num_nodes <= {MAX_NUM_NODES}, received 100000."),
        ("max_epochs", 2**63, f"Expected max_epochs <= {MAX_COUNT}, received {2**63}."),
        ("max_steps", 10**12, f"Expected max_steps <= {MAX_COUNT}, received {10**12}."),
        ("accumulate_grad_batches", 10**12, f"Expected accumulate_grad_batches <= {MAX_COUNT}"),
        ("limit_train_batches", 10**12, f"Expected limit_train_batches <= {MAX_COUNT} batches"),
        ("val_check_interval", 10**12, f"Expected val_check_interval <= {MAX_COUNT} batches"),
        # an OverflowError escaped validation (and the CLI's input-error handling) before
        ("max_time", "9999999999:00:00:00", "Expected max_time to be at most 3650 days"),
        ("gradient_clip_val", float("nan"), "Expected gradient_clip_val to be a finite number >= 0"),
    ],
)
def test_trainer_resources_are_bounded_naming_field_bound_and_value(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        make(trainer={field: value})
    error = only_error(exc)
    assert error["loc"] == ("trainer", field)
    assert message in error["msg"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"num_workers": 100_000},
            f"Expected datamodule_kwargs.num_workers to be an int in [0, {MAX_DATALOADER_WORKERS}], received 100000.",
        ),
        ({"num_workers": -1}, "num_workers to be an int in [0, "),
        ({"num_workers": "8"}, "num_workers to be an int in [0, "),
        (
            {"batch_size": 10**9},
            f"Expected datamodule_kwargs.batch_size to be an int in [1, {MAX_BATCH_SIZE}], received 1000000000.",
        ),
        ({"batch_size": 0}, "batch_size to be an int in [1, "),
    ],
)
def test_dataloader_workers_and_batch_size_are_bounded(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(datamodule_kwargs=kwargs)
    error = only_error(exc)
    assert error["loc"] == ("datamodule_kwargs",)
    assert message in error["msg"]
    assert make(datamodule_kwargs={"num_workers": 2, "batch_size": 64}).datamodule_kwargs["num_workers"] == 2


def test_the_json_schema_carries_the_bounds() -> None:
    # the Prefect UI's form refuses what the config refuses, before a run is even created
    defs = TrainConfig.model_json_schema()["$defs"]
    trainer = defs["TrainerConfig"]["properties"]
    int_devices = next(s for s in trainer["devices"]["anyOf"] if s.get("type") == "integer")
    assert int_devices["maximum"] == MAX_DEVICES_PER_NODE
    list_devices = next(s for s in trainer["devices"]["anyOf"] if s.get("type") == "array")
    assert list_devices["maxItems"] == MAX_DEVICES_PER_NODE
    assert trainer["num_nodes"]["maximum"] == MAX_NUM_NODES
    assert trainer["max_steps"]["maximum"] == MAX_COUNT
    assert trainer["accumulate_grad_batches"]["minimum"] == 1
    max_epochs = next(s for s in trainer["max_epochs"]["anyOf"] if s.get("type") == "integer")
    assert (max_epochs["minimum"], max_epochs["maximum"]) == (-1, MAX_COUNT)
    assert defs["CheckpointConfig"]["properties"]["every_n_train_steps"]["anyOf"][0]["maximum"] == MAX_COUNT


def test_fit_refuses_more_cpu_processes_than_the_worker_has_before_launching_torchrun(
    csv_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # devices=100 is within the form's bound (a GPU worker elsewhere may validate it); the worker that
    # trains knows it has 2 CPUs and refuses before torchrun starts, with an error that is not retried
    monkeypatch.setattr(distributed_fit, "usable_cpus", lambda: 2)

    def no_launch(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("torchrun was launched")

    monkeypatch.setattr(distributed_fit.subprocess, "Popen", no_launch)
    config = make(
        data={"source": str(csv_file), "target": "label"},
        checkpoint_root=str(tmp_path / "ckpt"),
        trainer={"accelerator": "cpu", "devices": 100},
    )
    prepared = prepare(config)
    with pytest.raises(
        ValueError, match=r"Expected trainer.devices <= 2 \(the CPUs this worker may use\)"
    ) as exc:
        fit_model(config, prepared, "too-many-devices")
    assert "received 100 (100 processes)" in str(exc.value)
    assert not is_transient(exc.value)
    assert not (tmp_path / "ckpt" / "too-many-devices").exists()
