"""Two fits of one run key never mix: a second fit while the first trains is refused up front, naming the
holder, and writes nothing; once the first is SIGKILLed its lease is taken over and the run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lightning_lib.checkpoint import list_committed
from lightning_lib.storage import open_store
from tasks.config import TrainConfig
from tasks.data import prepare
from tasks.factory import checkpoint_dir
from tasks.lease import RunKeyBusyError
from tasks.tracking import tracking_uri
from tasks.training import fit_model
from tests.flows.conftest import REPO, digits_config

FIRST_FIT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tasks.data import prepare
    from tasks.training import fit_model
    from tests.flows.test_run_key_lease import slow_config
    config = slow_config(Path(sys.argv[1]))
    fit_model(config, prepare(config), "k1")
    """
)


def slow_config(root: Path) -> TrainConfig:
    return digits_config(
        root,
        run_key="k1",
        model="tests.flows.slow_model:SlowDigitsClassifier",
        **{
            "model_kwargs.step_sleep": 0.1,
            "trainer.max_epochs": 3,
            "trainer.limit_train_batches": 8,
            "trainer.log_every_n_steps": 1,
            "checkpoint.every_n_train_steps": 2,
        },
    )


@pytest.fixture
def first_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    monkeypatch.setenv("LIGHTNING_LIB_ALLOWED_IMPORTS", "tests.flows.")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", FIRST_FIT, str(tmp_path)], stdout=log, stderr=log, env=env
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _state(config: TrainConfig, run_id: str) -> tuple[list[str], list[tuple[int, float]]]:
    """The checkpoint folder's objects but the lease's, and the run's loss history."""
    keys = [i.key for i in open_store(checkpoint_dir(config, "k1")).list() if not i.key.startswith("lease-")]
    history = MlflowClient(tracking_uri(config)).get_metric_history(run_id, "train_loss_step")
    return sorted(keys), sorted((m.step, m.value) for m in history)


def test_a_second_fit_is_refused_naming_the_holder_and_a_sigkilled_holder_is_taken_over(
    tmp_path: Path, first_fit: subprocess.Popen[bytes]
) -> None:
    config = slow_config(tmp_path)
    store = open_store(checkpoint_dir(config, "k1"))
    deadline = time.monotonic() + 120
    while not list_committed(store):
        assert first_fit.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint committed by the first fit within 120 s"
        time.sleep(0.2)
    first_fit.send_signal(signal.SIGSTOP)  # frozen mid-fit: still the live holder, and nothing moves
    try:
        client = MlflowClient(tracking_uri(config))
        experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
        (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.run_key = 'k1'")
        before = _state(config, run.info.run_id)
        prepared = prepare(config)
        with pytest.raises(RunKeyBusyError) as refused:
            fit_model(config, prepared, "k1")
        assert f"pid {first_fit.pid}" in str(refused.value) and "since" in str(refused.value)
        assert _state(config, run.info.run_id) == before  # no checkpoint, no metric of a second fit
    finally:
        first_fit.send_signal(signal.SIGKILL)
    first_fit.wait(timeout=30)

    # the holder died without releasing its lease: this machine sees its process is gone and takes over
    resumed = fit_model(config, prepared, "k1")
    assert resumed.resumed_from is not None and resumed.global_step == 24
    assert 0 < resumed.steps_this_attempt < 24
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.run_key = 'k1'")
    assert [r.info.run_id for r in runs] == [run.info.run_id] == [resumed.mlflow_run_id]
