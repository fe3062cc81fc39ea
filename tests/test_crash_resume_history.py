"""One clean history: SIGKILL a logged fit after MLflow and metrics.csv received steps beyond its last
committed checkpoint, resume it, and find each metric's steps once, with an uninterrupted run's values.

The job (``tests/scripts/train_job.py --log-dir``) logs every step to MLflow (a SQLite store, run key
``job``) and to a CSVLogger flushing every row. Epoch 0 ends at step 12, checkpoints are committed at steps
8, 16 and 24 only (no ``last.ckpt``, which validation would also save at step 12); the job is killed once MLflow has the end of epoch 0 and step 12, so the resumed fit (from
step 8) replays steps already recorded, the epoch's validation and epoch metrics among them.
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from lightning_lib.checkpoint import list_committed
from lightning_lib.storage import open_store
from tests.test_crash_resume import Job

pytestmark = pytest.mark.slow

EVERY = 8  # checkpoints at steps 8, 16 and 24: epoch 0 (12 steps) ends between the first two
KILL_AFTER_LOGGED_STEP = 12  # the first step of epoch 1, as MLflow numbers it (the epoch ends at 11)
STEP_SLEEP = 0.5  # seconds per step of the killed attempt: the next checkpoint stays 3 steps away
TIMEOUT = 240.0

History = dict[str, list[tuple[int, float]]]


def _env() -> dict[str, str]:
    # the job's MLflow logger must use its own SQLite store, whatever the machine is configured with
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(root: Path, *extra: str) -> Job:
    args = [
        sys.executable, "-m", "tests.scripts.train_job", str(root), "--max-epochs", "2",
        "--every", str(EVERY), "--hidden", "64", "--log-dir", str(root / "logs"), "--no-last", *extra,
    ]  # fmt: skip
    return Job(args, _env())


def _db(root: Path) -> Path:
    return root / "logs" / "mlruns" / "mlflow.db"


def _histories(root: Path) -> tuple[History, list[tuple[str, str]]]:
    """Each metric's points sorted by (step, value), and every run of the store (id, status)."""
    with sqlite3.connect(_db(root)) as db:
        runs = db.execute("SELECT run_uuid, status FROM runs").fetchall()
        history: History = {}
        for key, step, value in db.execute("SELECT key, step, value FROM metrics ORDER BY step, value"):
            history.setdefault(key, []).append((int(step), float(value)))
    return history, runs


def _last_logged(root: Path, key: str) -> int:
    if not _db(root).exists():
        return -1
    try:
        with sqlite3.connect(_db(root), timeout=1.0) as db:
            (step,) = db.execute("SELECT max(step) FROM metrics WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:  # the job is still creating its tables
        return -1
    return -1 if step is None else int(step)


def _csv_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "logs" / "csv" / "version_0" / "metrics.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _finish(job: Job) -> None:
    assert job.finish() == 0, "\n".join(job.output[-40:])


def test_a_killed_fit_resumed_records_each_step_once_in_mlflow_and_metrics_csv(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    _finish(_start(reference, "--out", str(reference / "weights.pt")))
    expected, _ = _histories(reference)
    expected_rows = _csv_rows(reference)

    root = tmp_path / "killed"
    job = _start(root, "--steps-sleep", str(STEP_SLEEP))
    deadline = time.monotonic() + TIMEOUT
    try:
        while (line := job.next_line(deadline)) is not None:
            if re.fullmatch(r"step (\d+)", line) and int(line.split()[1]) > KILL_AFTER_LOGGED_STEP:
                break
        assert line is not None, "\n".join(job.output[-40:])
        while _last_logged(root, "train_loss_step") < KILL_AFTER_LOGGED_STEP:
            assert time.monotonic() < deadline, "MLflow never received the step"
            time.sleep(0.02)
    finally:
        job.kill()

    committed = max(ckpt.step for ckpt in list_committed(open_store(str(root / "ckpt"))))
    before, _ = _histories(root)
    rows_before = _csv_rows(root)
    # the premise: MLflow and the CSV have steps beyond the last committed checkpoint, an epoch end among them
    assert committed == EVERY
    assert max(step for step, _ in before["train_loss_step"]) >= KILL_AFTER_LOGGED_STEP > committed
    assert [step for step, _ in before["train_loss_epoch"]] == [KILL_AFTER_LOGGED_STEP - 1]
    assert max(int(row["step"]) for row in rows_before) >= KILL_AFTER_LOGGED_STEP

    _finish(_start(root, "--resume", "--out", str(root / "weights.pt")))
    after, runs = _histories(root)
    assert len(runs) == 1 and runs[0][1] == "FINISHED"  # one MLflow run, continued
    assert after.keys() == expected.keys()
    for key, points in expected.items():
        if key == "epoch":
            # logged with every call: at an epoch's last step once per call (train step, validation,
            # epoch end) in any run, so its points and steps are what compares
            assert set(after[key]) == set(points)
        else:
            assert after[key] == points, key  # each step once, the uninterrupted run's values
            assert len({step for step, _ in points}) == len(points), key
    for key, points in before.items():  # nothing the killed attempt recorded was recorded again
        counts = Counter(step for step, _ in after[key])
        for step, count in Counter(step for step, _ in points).items():
            assert counts[step] == count, (key, step)

    assert _csv_rows(root) == expected_rows
    resumed = torch.load(root / "weights.pt", weights_only=True)
    uninterrupted = torch.load(reference / "weights.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted, strict=True))
