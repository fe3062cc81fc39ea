"""The MLflow run of a crashed attempt (tasks.runs.end_crashed_attempt): ended KILLED when still RUNNING,
with the crash counted, and left alone otherwise."""

from __future__ import annotations

from pathlib import Path

from tasks.runs import TAG_CRASHED_ATTEMPTS, TAG_LAST_CRASH, end_crashed_attempt


def test_a_running_keyed_run_ends_killed_at_the_crash_and_counts_it(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("crash", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment, tags={"run_key": "k1"})
    other = client.create_run(experiment, tags={"run_key": "k2"})

    assert (
        end_crashed_attempt(uri, "crash", "k1", 1_700_000_000.5, "its process 42 is gone") == run.info.run_id
    )
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED" and ended.info.end_time == 1_700_000_000_500
    assert ended.data.tags[TAG_CRASHED_ATTEMPTS] == "1"
    assert ended.data.tags[TAG_LAST_CRASH] == "its process 42 is gone"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another key's run is untouched

    # ended already (or reopened and finished by the resumed fit): nothing to do
    assert end_crashed_attempt(uri, "crash", "k1", 1_700_000_100.0, "again") is None
    client.update_run(run.info.run_id, status="RUNNING")  # the resumed fit reopened it, then died too
    end_crashed_attempt(uri, "crash", "k1", 1_700_000_200.0, "twice")
    assert client.get_run(run.info.run_id).data.tags[TAG_CRASHED_ATTEMPTS] == "2"
    assert end_crashed_attempt(uri, "crash", "unknown-key", 0.0, "none") is None
    assert end_crashed_attempt(uri, "no-such-experiment", "k1", 0.0, "none") is None
