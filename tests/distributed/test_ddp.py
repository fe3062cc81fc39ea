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

from lightning_lib.checkpoint import list_committed
from lightning_lib.storage import LocalStore, open_store
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


def rank_files(out: Path, world: int = 2) -> list[Any]:
    return [json.loads(Path(f"{out}.rank{rank}").read_text()) for rank in range(world)]


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
    return run_ok(work / "out.json", "--shuffle", "--dropout", "0.1", "--ckpt-dir", str(work / "ckpt"))


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

    ranks = rank_files(tmp_path / "two.json")
    # accumulation: the first backward of each window ran under no_sync, so one all-reduce per step
    assert [r["allreduces"] for r in ranks] == [12, 12]
    for r in ranks:  # sync_dist with max / sum, identical on every rank
        assert r["fit_metrics"]["rank_max"] == 1.0 and r["fit_metrics"]["rank_sum"] == 1.0
        assert r["validated"] == ranks[0]["validated"]
    (single,) = rank_files(tmp_path / "one.json", world=1)
    assert ranks[0]["validated"][0]["val_loss"] == pytest.approx(single["validated"][0]["val_loss"], rel=1e-5)
    # prediction is sharded without repeats: the two ranks together score every sample once
    assert sum(r["predicted_rows"] for r in ranks) == single["predicted_rows"] == ddp_program.SAMPLES


def test_a_killed_rank_fails_the_run_quickly_and_a_restart_resumes_from_the_last_commit(
    tmp_path: Path, uninterrupted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = tmp_path / "ckpt"
    started = time.monotonic()
    proc, result = run_program(
        tmp_path / "killed.json",
        *("--shuffle", "--dropout", "0.1", "--ckpt-dir", str(ckpt), "--kill-rank", "1", "--kill-step", "5"),
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0 and result is None
    assert "RankFailedError" in proc.stderr
    assert "rank 1 (pid" in proc.stderr and "was killed by signal 9" in proc.stderr
    assert elapsed < 60, elapsed  # bounded: no collective waits for the dead rank's 30-minute timeout
    committed = sorted(c.name for c in list_committed(LocalStore(ckpt)))
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

    resumed = run_ok(
        tmp_path / "resumed.json", "--shuffle", "--dropout", "0.1", "--ckpt-dir", str(ckpt), "--resume"
    )
    assert resumed["start_step"] == 4 and resumed["global_step"] == 12
    # step 4 was mid-epoch (8 steps per epoch): each rank continued its own shard and its own dropout stream
    assert resumed["weights"] == uninterrupted["weights"]
    for step, loss in resumed["losses"].items():
        assert loss == uninterrupted["losses"][step], step


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_batch_with_a_checkpoint(
    tmp_path: Path, uninterrupted: Any
) -> None:
    """A preempted pod's SIGTERM reaches the ranks at different moments; they must stop together."""
    ckpt = tmp_path / "ckpt"
    common = ("--shuffle", "--dropout", "0.1", "--ckpt-dir", str(ckpt))
    proc, result = run_program(
        tmp_path / "stopped.json", *common, "--kill-rank", "1", "--kill-step", "5", "--signal", "SIGTERM"
    )
    assert proc.returncode == 128 + 15 and result is None, proc.stderr[-3000:]
    assert "RankFailedError" not in proc.stderr
    # saved at the step where rank 1 got the signal, by both
    assert [c.step for c in list_committed(LocalStore(ckpt)) if c.name.startswith("last")] == [5]
    resumed = run_ok(tmp_path / "resumed.json", *common, "--resume")
    assert resumed["start_step"] == 5 and resumed["weights"] == uninterrupted["weights"]


def test_checkpoint_and_resume_under_ddp_on_s3(tmp_path: Path, uninterrupted: Any, s3_endpoint: str) -> None:
    prefix = f"{s3_endpoint}/ddp-{os.getpid()}"
    common = ("--shuffle", "--dropout", "0.1", "--monitor", "--ckpt-dir", prefix)
    first = run_ok(tmp_path / "first.json", *common, "--max-steps", "6")
    assert first["global_step"] == 6
    resumed = run_ok(tmp_path / "second.json", *common, "--resume")
    assert resumed["start_step"] == 6 and resumed["global_step"] == 12
    assert resumed["weights"] == uninterrupted["weights"]
    # the top-k by val_loss (rank zero's value, broadcast) and the file names are the same on every rank
    ranks = rank_files(tmp_path / "second.json")
    assert ranks[0]["best_model_path"] == ranks[1]["best_model_path"] != ""
    assert ranks[0]["last_model_path"] == ranks[1]["last_model_path"]

    import boto3

    bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
    keys = [
        o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=key_prefix)["Contents"]
    ]
    files = {k.rsplit("/", 1)[-1] for k in keys if k.endswith(".ckpt")}
    # committed by rank zero alone (a second writer of a name is refused), every file sealed and valid
    assert files and {c.name for c in list_committed(open_store(prefix))} == files
