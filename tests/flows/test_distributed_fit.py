"""The fit task over two processes: torchrun launched from the task, a killed rank, Prefect's retry resuming.

The unit half checks how the task classifies what its ranks reported (retry or not) without launching.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

import tasks.distributed_fit as distributed_fit
from lightning_lib.checkpoint import list_committed
from lightning_lib.storage import LocalStore
from tasks.config import TrainConfig
from tasks.data import prepare
from tasks.retry import DistributedFitFailed, DistributedFitRefused, is_transient
from tasks.training import FitResult, fit


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_fit_task_runs_ddp_under_torchrun_and_its_retry_resumes_after_a_killed_rank(
    make_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTNING_LIB_ALLOWED_IMPORTS", "examples.,tests.flows.")  # the ranks inherit it
    marker = tmp_path / "killed-once"
    config = make_config(
        **{
            "model": "tests.flows.ddp_kill_model:KillOnceDigitsClassifier",
            "model_kwargs": {"hidden": 32, "t_max": 2, "marker": str(marker), "kill_step": 5},
            "trainer.devices": 2,
            "trainer.strategy": "ddp",
            "checkpoint.every_n_train_steps": 2,
        }
    )
    prepared = prepare(config)

    @flow(name="ddp-fit-test")
    def run() -> FitResult:
        return fit(config, prepared, "ddp-run")

    result = run()
    assert marker.exists()  # the first launch lost rank 1 at step 5
    # 2 epochs x 4 batches per rank; the retry resumed from the commit at step 4, not from scratch
    assert result.global_step == 8 and result.epochs == 2
    assert result.steps_this_attempt == 4
    assert result.resumed_from is not None and "last" in result.resumed_from  # "last" was at step 4
    assert {"val_loss", "val_acc", "train_loss"} <= set(result.metrics)
    assert result.mlflow_run_id not in ("", "None")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.mlflow.tracking_uri)
    runs = client.search_runs([result.mlflow_experiment_id], "tags.run_key = 'ddp-run'")
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id]  # one run, written by rank zero only
    history = client.get_metric_history(result.mlflow_run_id, "val_loss")
    # epoch ends, at Lightning's step (one before); never twice. The first attempt's step-3 point is there
    # when rank 0 delivered it before torchrun stopped it after rank 1's death: on a loaded machine torchrun's
    # SIGKILL can come first, and the resumed attempt (from step 4) does not log step 3 again
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)) and 7 in steps and set(steps) <= {3, 7}


def _fake_launch(monkeypatch: pytest.MonkeyPatch, reports: list[dict[str, Any]], returncode: int) -> None:
    def fake(command: list[str], progress_file: Path, description: str, **options: Any) -> tuple[int, str]:
        spec = json.loads(Path(command[-1]).read_text())
        for report in reports:
            Path(spec["workdir"], f"error-rank{report['rank']}.json").write_text(json.dumps(report))
        assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        return returncode, "last lines of torchrun's output"

    monkeypatch.setattr(distributed_fit, "_run_forwarding", fake)


def test_a_rank_failing_on_bad_input_is_not_retried_and_a_lost_rank_is(
    make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(**{"trainer.devices": 2})
    assert distributed_fit.needs_launch(config) and distributed_fit.processes_per_node(config) == 2
    assert not distributed_fit.needs_launch(make_config(**{"trainer.devices": 1}))
    prepared = prepare(config)

    echo = {"rank": 0, "type": "RuntimeError", "message": "gloo: Connection reset by peer"}
    echo |= {"transient": False, "collateral": True}
    refused = {"rank": 1, "type": "NonFiniteLossError", "message": "loss is nan", "transient": False}
    refused["collateral"] = False
    _fake_launch(monkeypatch, [echo, refused], 1)
    with pytest.raises(DistributedFitRefused, match="Rank 1 failed: NonFiniteLossError: loss is nan") as err:
        distributed_fit.launch_fit(config, prepared, "k", None)
    assert not is_transient(err.value)

    _fake_launch(monkeypatch, [echo], -9)  # rank 1 was killed (no report); rank 0 only saw it go
    with pytest.raises(
        DistributedFitFailed, match=r"exited with code -9.*rank 0: RuntimeError: gloo"
    ) as lost:
        distributed_fit.launch_fit(config, prepared, "k", None)
    assert is_transient(lost.value)


def test_a_worker_reports_whether_its_error_is_worth_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")

    def report(exc: BaseException) -> tuple[bool, bool]:
        distributed_fit._report_error(tmp_path, exc)
        found = json.loads((tmp_path / "error-rank1.json").read_text())
        return found["transient"], found["collateral"]

    assert report(ValueError("bad column")) == (False, False)
    assert report(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) == (
        False,
        False,
    )  # a bug: no retry
    assert report(RuntimeError("[gloo] Read error: Connection reset by peer")) == (False, True)
    assert report(ConnectionError("MLflow unreachable")) == (True, False)


@pytest.mark.slow
def test_the_multinode_entry_point_runs_under_torchrun_with_a_config_file(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    """What each node of infra/k8s/multinode-training.yaml runs (here one node of two processes)."""
    import subprocess
    import sys

    import yaml
    from mlflow.tracking import MlflowClient

    config = make_config(**{"trainer.devices": 2, "trainer.strategy": "ddp"})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command += ["-m", "tasks.distributed_fit", "--config", str(path), "--run-key", "multinode-1"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = tmp_path / "checkpoints" / "multinode-1"
    committed = [c.name for c in list_committed(LocalStore(folder))]
    assert "epoch=1-step=8.ckpt" in committed
    client = MlflowClient(config.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
    runs = client.search_runs([experiment.experiment_id], "tags.run_key = 'multinode-1'")
    assert len(runs) == 1 and runs[0].data.metrics["val_loss"] > 0  # rank 0's run, with synced metrics
