"""Crash recovery end to end on a work pool, against real servers on 127.0.0.1 (``prefect server start``,
``mlflow server``, the S3 endpoint): a process work pool created with ``prefect work-pool create``, the
deployments registered on it by ``lightning-lib serve --work-pool`` from the project's folder, and a
``lightning-lib worker`` process running their flow runs, as in production (infra/docker-compose.yml): Prefect's
process worker, each run's process forked from a forkserver that imported the flows.

Shown here (issue 13):

- the worker's flow-run process SIGKILLed mid-fit: the worker reports it Crashed, the re-run automation
  that ``deploy`` set up schedules the same flow run again, the worker runs it again and the fit resumes
  from the last committed checkpoint in S3 under the same run key, in the same MLflow run (the dead
  attempt's ended KILLED first), and ends with the metrics of an uninterrupted run; nobody acts;
- the worker and its flow-run process SIGKILLed together with the automatic re-run paused: nobody is left
  to report the crash, the heartbeat automation marks the flow run Crashed, and ``prefect flow-run retry``
  (the CLI, as the README says) schedules it again; a worker started again resumes it under its run key.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.recovery import CRASHED_AUTOMATION, RERUN_AFTER_ENV, RERUN_AUTOMATION
from flows.training import TrainingResult
from tasks.config import TrainConfig
from tasks.run_key import config_digest
from tasks.runs import TAG_CRASHED_ATTEMPTS
from tests.flows.conftest import DIGITS_CSV, REPO
from tests.prefect_server import PrefectServer, kill_group, spawn
from tests.services import MlflowServer
from tests.support import wait_for

# the first test also starts the servers: on a loaded 2-core machine that and the recovery take 7 minutes
pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]

POOL = "e2e-process-pool"
FORKSERVER_READY = "Flow runs start from a forkserver that has imported the flows."
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STEPS = 30  # 2 epochs of 15 batches
CRASH_AFTER_S = 50


class WorkerStack:
    """The servers, the deployments on a process work pool, and a restartable worker."""

    def __init__(self, root: Path, prefect: PrefectServer, mlflow: MlflowServer, bucket: str) -> None:
        self.root = root
        self.prefect = prefect
        self.mlflow = mlflow
        self.bucket = bucket
        self.worker: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            **prefect.env(),
            "MLFLOW_TRACKING_URI": mlflow.uri,
            "PREFECT_LOCAL_STORAGE_PATH": str(root / "results"),
            # the worker asks for scheduled runs every second (10 s by default)
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            # Prefect's shortest heartbeat, and a flow run silent for 50 s is Crashed (90 s by default);
            # read by ``deploy``, which puts the heartbeat into the pool's job variables
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            "LIGHTNING_LIB_CRASH_AFTER_S": str(CRASH_AFTER_S),
            "LIGHTNING_LIB_ALLOWED_IMPORTS": "tests.flows.",
            "PYTHONPATH": str(REPO),
        }
        self.env.pop(RERUN_AFTER_ENV, None)  # the default wait before a re-run is under test

    def run(self, *command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, *command],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
        return done

    def start_worker(self) -> None:
        command = [sys.executable, "-m", "flows.cli", "worker", "--pool", POOL]
        self.worker = spawn(command, self.root / "worker.log", self.env, self.root)
        # its runs start from the forkserver once it has imported the flows (before that, Prefect's way)
        wait_for(lambda: FORKSERVER_READY in self.log(), 300, "the worker's forkserver to be ready")

    def log(self) -> str:
        return (self.root / "worker.log").read_text(errors="replace")

    def kill_worker(self) -> None:
        if self.worker is not None:
            kill_group(self.worker)
            self.worker = None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[WorkerStack]:
    """Servers, pool, deployments and a worker, shared by this module's tests (starting them takes about a
    minute)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    root = tmp_path_factory.mktemp("e2e-worker")
    prefect = PrefectServer(root / "prefect")
    mlflow = MlflowServer(root / "mlflow")
    stack = WorkerStack(root, prefect, mlflow, s3_endpoint)
    allowed = pytest.MonkeyPatch()
    allowed.setenv("LIGHTNING_LIB_ALLOWED_IMPORTS", "tests.flows.")  # the slow test model, here as well
    try:
        prefect.start()
        mlflow.start()
        # what an operator types: a process pool, then the deployments on it with the code's folder as
        # their source (the worker changes into it and imports the flows from there)
        stack.run("-m", "prefect", "work-pool", "create", POOL, "--type", "process")
        stack.run("-m", "flows.cli", "serve", "--work-pool", POOL, "--source", str(REPO))
        stack.start_worker()
        with temporary_settings(
            updates={PREFECT_API_URL: prefect.api_url, PREFECT_LOCAL_STORAGE_PATH: str(root / "results")}
        ):
            yield stack
    finally:
        allowed.undo()
        stack.kill_worker()
        with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}):
            _sigkill(_flow_run_processes_of(prefect.api_url))
        mlflow.stop()
        prefect.stop()


@pytest.fixture(scope="module")
def reference(stack: WorkerStack) -> Any:
    """An uninterrupted run of the same config through the same worker, submitted once for the module
    (it trains while the first test's run is killed and recovered)."""
    from prefect.deployments import run_deployment

    config = _config(stack.bucket).model_copy(update={"run_key": "worker-reference"})
    return run_deployment(
        "training/training", parameters={"config": config.model_dump(mode="json")}, timeout=0
    )


def _config(bucket: str) -> TrainConfig:
    data: dict[str, Any] = {
        "model": "tests.flows.slow_model:SlowDigitsClassifier",
        "model_kwargs": {"hidden": 32, "t_max": 2, "step_sleep": 0.15},
        "datamodule_kwargs": {"batch_size": 64, "min_std": 1.0},
        "data": {"source": str(DIGITS_CSV), "target": "target"},
        "trainer": {"max_epochs": 2, "limit_train_batches": 15, "limit_val_batches": 2,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "accelerator": "cpu"},
        "checkpoint": {"every_n_train_steps": 3},
        "checkpoint_root": f"{bucket}/e2e-worker/checkpoints",
        "mlflow": {"experiment_name": "e2e-worker"},
    }  # fmt: skip
    return TrainConfig.model_validate(data)


def _flow_run(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _state(flow_run_id: Any) -> str:
    run = _flow_run(flow_run_id)
    return run.state.type.value if run.state else ""


def _wait_state(flow_run_id: Any, states: set[str], timeout: float, what: str) -> Any:
    return wait_for(
        lambda: (run := _flow_run(flow_run_id)).state and run.state.type.value in states and run,
        timeout,
        f"flow run {flow_run_id} {what}",
    )


def _history(flow_run_id: Any) -> list[tuple[str, str]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
    return [(s.type.value, s.message or "") for s in states]


def _committed_step(checkpoint_dir: str) -> int:
    from lightning_lib.checkpoint._commit import list_committed
    from lightning_lib.storage import open_store

    try:
        return max((c.step for c in list_committed(open_store(checkpoint_dir))), default=-1)
    except Exception:
        return -1


def _environ(pid: str) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _stat_field(pid: str | int, index: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[index])  # state, ppid, pgrp, session, ...
    except (OSError, IndexError, ValueError):
        return None


def _session(pid: str | int) -> int | None:
    return _stat_field(pid, 3)


def _parent(pid: str | int) -> int | None:
    return _stat_field(pid, 1)


def _flow_run_processes(flow_run_id: Any) -> list[int]:
    """The processes of one flow run (Linux): the one the worker started, whose pid the worker records as
    the run's infrastructure pid, and anything it started (the worker gives each run a session of its own).
    A process forked from the worker's forkserver keeps the server's original environment in /proc, so the
    run's id is not found there."""
    leader = _flow_run(flow_run_id).infrastructure_pid
    if not leader:
        return []
    return [int(pid) for pid in filter(str.isdigit, os.listdir("/proc")) if _session(pid) == int(leader)]


def _flow_run_processes_of(api_url: str) -> list[int]:
    """Flow-run processes of the server at ``api_url`` (in their own sessions, so stopping the worker's
    group leaves them): those of every flow run it knows, and any process started Prefect's way (a fresh
    interpreter, with the run's id in its environment)."""
    from prefect.client.orchestration import get_client

    server = f"PREFECT_API_URL={api_url}".encode()
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        environ = _environ(pid)
        if server in environ and any(item.startswith(b"PREFECT__FLOW_RUN_ID=") for item in environ):
            found.add(int(pid))
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        for run in client.read_flow_runs():
            found.update(_flow_run_processes(run.id))
    return sorted(found)


def _sigkill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(_alive(pid) for pid in pids), 30, f"processes {pids} to die")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _submit_and_kill_mid_fit(stack: WorkerStack, *, with_worker: bool) -> tuple[Any, str, int]:
    """Submit a training run, wait for a mid-fit commit, SIGKILL its process (and the worker when
    ``with_worker``); returns the flow run, its run key and the last committed step."""
    from prefect.deployments import run_deployment

    config = _config(stack.bucket)
    flow_run = run_deployment(
        "training/training", parameters={"config": config.model_dump(mode="json")}, timeout=0
    )
    run_key = f"training-{flow_run.id}-{config_digest(config)}"
    checkpoint_dir = f"{config.checkpoint_root}/{run_key}"
    wait_for(lambda: _committed_step(checkpoint_dir) >= 6, 300, "a committed checkpoint at step >= 6")
    processes = _flow_run_processes(flow_run.id)
    assert processes, f"no process of flow run {flow_run.id}"
    # forked by the worker's forkserver (Prefect's start would make them the worker's own children)
    assert stack.worker is not None and stack.worker.pid not in {_parent(pid) for pid in processes}
    if with_worker:
        stack.kill_worker()
    _sigkill(processes)
    killed_at = _committed_step(checkpoint_dir)
    assert 6 <= killed_at < STEPS, killed_at
    return flow_run, run_key, killed_at


def _check_resumed(stack: WorkerStack, final: Any, run_key: str, killed_at: int) -> TrainingResult:
    """Completed on its second run, resumed from a checkpoint under the same run key, one MLflow run."""
    import mlflow

    assert final.state.type.value == "COMPLETED", final.state.message
    assert final.run_count == 2
    result = final.state.result()
    assert isinstance(result, TrainingResult)  # the worker imported flows.training, as the client does
    fitted = result.fit
    assert result.run_key == fitted.run_key == run_key and fitted.global_step == STEPS
    assert fitted.resumed_from is not None and 0 < fitted.steps_this_attempt <= STEPS - killed_at
    client = mlflow.MlflowClient(stack.mlflow.uri)
    runs = client.search_runs([fitted.mlflow_experiment_id], filter_string=f"tags.run_key = '{run_key}'")
    assert [r.info.run_id for r in runs] == [fitted.mlflow_run_id]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags[TAG_CRASHED_ATTEMPTS] == "1"  # the dead attempt's run ended KILLED, reopened
    return result


def _reference(reference: Any) -> TrainingResult:
    final = _wait_state(reference.id, TERMINAL, 400, "(the uninterrupted reference) to finish")
    assert final.state.type.value == "COMPLETED", final.state.message
    result = final.state.result()
    assert result.fit.steps_this_attempt == STEPS and result.fit.resumed_from is None
    return result


def test_a_killed_flow_run_process_is_rerun_by_the_worker_and_resumes(
    stack: WorkerStack, reference: Any
) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # set up by `serve --work-pool`, once each
        [rerun] = client.read_automations_by_name(RERUN_AUTOMATION)
        assert rerun.enabled and len(client.read_automations_by_name(CRASHED_AUTOMATION)) == 1
        deployment = client.read_deployment_by_name("training/training")
    assert deployment.work_pool_name == POOL and deployment.entrypoint == "flows.training.training"
    assert deployment.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"

    flow_run, run_key, killed_at = _submit_and_kill_mid_fit(stack, with_worker=False)
    assert "Flow runs start Prefect's way" not in stack.log()
    # the worker saw its process die and reports the crash; once the run stayed Crashed for the default
    # 60 s (the worker's second report of the same death, after it ran the crash hooks, has then been
    # refused), the automation schedules the same flow run again; the worker runs it again. Nobody acts.
    final = _wait_state(flow_run.id, TERMINAL - {"CRASHED"}, 400, "to be rerun and finish")
    history = _history(flow_run.id)
    kinds = [kind for kind, _ in history]
    assert kinds.count("CRASHED") == 1 and kinds.count("RUNNING") == 2, history
    crashed_at = kinds.index("CRASHED")
    assert "status code: -9" in history[crashed_at][1], history  # SIGKILL, as the worker saw it
    assert history[crashed_at + 1] == (
        "SCHEDULED",
        "Crashed: scheduled again by lightning-lib's crash recovery.",
    )
    result = _check_resumed(stack, final, run_key, killed_at)

    # exactly where an uninterrupted run of the same config ends, bit for bit
    expected = _reference(reference)
    assert result.fit.metrics == expected.fit.metrics
    assert result.validation_metrics == expected.validation_metrics
    assert result.test_metrics == expected.test_metrics


def test_a_run_crashed_with_its_worker_is_marked_by_the_automation_and_retried_by_the_cli(
    stack: WorkerStack, reference: Any
) -> None:
    from prefect.client.orchestration import get_client

    # the uninterrupted run must be over before the worker is killed (in module order it long is)
    expected = _reference(reference)
    with get_client(sync_client=True) as client:
        [rerun] = client.read_automations_by_name(RERUN_AUTOMATION)
        client.pause_automation(rerun.id)  # no automatic re-run: a person retries this one
    try:
        flow_run, run_key, killed_at = _submit_and_kill_mid_fit(stack, with_worker=True)
        assert _state(flow_run.id) == "RUNNING"  # nobody left to say otherwise
        # the CLI refuses a RUNNING run; the heartbeat automation marks it Crashed once it is silent
        # (50 s after its last beat, at most 30 s before the kill)
        crashed = _wait_state(flow_run.id, TERMINAL, 300, "to be marked Crashed")
        assert crashed.state.type.value == "CRASHED"
        assert crashed.state.message == f"No heartbeat for {CRASH_AFTER_S} s: the flow run's process is gone."
        time.sleep(5)  # the paused re-run automation leaves it Crashed
        assert _state(flow_run.id) == "CRASHED"

        retried = stack.run("-m", "prefect", "flow-run", "retry", str(flow_run.id))
        assert "scheduled for retry" in retried.stdout, retried.stdout
        stack.start_worker()  # the worker comes back (a restarted machine) and picks the run up
        final = _wait_state(flow_run.id, TERMINAL, 400, "to be retried and finish")
    finally:
        with get_client(sync_client=True) as client:
            client.resume_automation(rerun.id)
        if stack.worker is None:
            stack.start_worker()
    assert [kind for kind, _ in _history(flow_run.id)].count("CRASHED") == 1
    result = _check_resumed(stack, final, run_key, killed_at)
    assert result.fit.metrics == expected.fit.metrics and result.test_metrics == expected.test_metrics
