"""DDP with the gloo backend and two real processes (the Trainer's local launcher re-runs ddp_program.py).

Shown: the same losses as one process with the same global batch; checkpoint and exact mid-epoch resume
under DDP, local and on S3; a killed rank fails the run quickly with an error naming it, and a restart
resumes from the last commit; resuming with another world size mid-epoch is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.distributed import ddp_program

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = Path(ddp_program.__file__).resolve()
pytestmark = pytest.mark.slow


def run_program(out: Path, *args: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LIGHTNING_LIB_LAUNCHED"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=out.parent,
    )
    result = json.loads(out.read_text()) if out.exists() else None
    return proc, result


def run_ok(out: Path, *args: str) -> Any:
    proc, result = run_program(out, *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert result is not None
    return result


def run_in_process(out: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setattr(sys, "argv", ["ddp_program.py", "--out", str(out), *args])
    ddp_program.main()
    return json.loads(out.read_text())


def assert_close(a: list[list[float]], b: list[list[float]], tol: float) -> None:
    worst = max(abs(x - y) for pa, pb in zip(a, b, strict=True) for x, y in zip(pa, pb, strict=True))
    assert worst <= tol, worst


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two processes, shuffled data, a checkpoint every 2 steps, 12 steps (1.5 epochs), never stopped."""
    work = tmp_path_factory.mktemp("ddp-uninterrupted")
    return run_ok(work / "out.json", "--shuffle", "--ckpt-dir", str(work / "ckpt"))


def test_two_processes_give_the_losses_of_one_with_the_same_global_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # accumulation too: the window's first backward must not all-reduce (no_sync), the last one must
    two = run_ok(tmp_path / "two.json", "--devices", "2", "--global-batch", "8", "--accumulate", "2")
    one = run_in_process(
        tmp_path / "one.json", monkeypatch, "--devices", "1", "--global-batch", "8", "--accumulate", "2"
    )
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_step"] == one["global_step"] == 12
    assert two["losses"].keys() == one["losses"].keys()
    for step, loss in one["losses"].items():
        assert two["losses"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
    assert_close(two["weights"], one["weights"], 1e-5)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)


def test_a_killed_rank_fails_the_run_quickly_and_a_restart_resumes_from_the_last_commit(
    tmp_path: Path, uninterrupted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = tmp_path / "ckpt"
    started = time.monotonic()
    proc, result = run_program(
        tmp_path / "killed.json", "--shuffle", "--ckpt-dir", str(ckpt), "--kill-rank", "1", "--kill-step", "5"
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0 and result is None
    assert "RankFailedError" in proc.stderr
    assert "rank 1 (pid" in proc.stderr and "was killed by signal 9" in proc.stderr
    assert elapsed < 60, elapsed  # bounded: no collective waits for the dead rank's 30-minute timeout
    committed = sorted(p.name for p in ckpt.iterdir() if (p / "MANIFEST.json").exists())
    assert "epoch=0-step=4.ckpt" in committed and not any("step=6" in name for name in committed)

    # resuming with another world size in the middle of an epoch is refused before any step
    mismatch = tmp_path / "mismatch"
    shutil.copytree(ckpt, mismatch)
    with pytest.raises(
        ValueError, match=r"world size the checkpoint was written with \(2 processes\), received 1"
    ):
        run_in_process(
            tmp_path / "one.json",
            monkeypatch,
            "--devices",
            "1",
            "--shuffle",
            "--ckpt-dir",
            str(mismatch),
            "--resume",
        )

    resumed = run_ok(tmp_path / "resumed.json", "--shuffle", "--ckpt-dir", str(ckpt), "--resume")
    assert resumed["start_step"] == 4 and resumed["global_step"] == 12
    # step 4 was mid-epoch (8 steps per epoch): each rank continued its own shard exactly
    assert resumed["weights"] == uninterrupted["weights"]
    for step, loss in resumed["losses"].items():
        assert loss == uninterrupted["losses"][step], step


def test_checkpoint_and_resume_under_ddp_on_s3(tmp_path: Path, uninterrupted: Any, s3_endpoint: str) -> None:
    prefix = f"{s3_endpoint}/ddp-{os.getpid()}"
    first = run_ok(tmp_path / "first.json", "--shuffle", "--ckpt-dir", prefix, "--max-steps", "6")
    assert first["global_step"] == 6
    resumed = run_ok(tmp_path / "second.json", "--shuffle", "--ckpt-dir", prefix, "--resume")
    assert resumed["start_step"] == 6 and resumed["global_step"] == 12
    assert resumed["weights"] == uninterrupted["weights"]

    import boto3

    bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
    keys = [
        o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=key_prefix)["Contents"]
    ]
    manifests = [k for k in keys if k.endswith("MANIFEST.json")]
    # committed once each (rank zero), never twice: one manifest per checkpoint folder
    assert len(manifests) == len({k.rsplit("/", 2)[-2] for k in manifests})
