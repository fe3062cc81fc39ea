"""SIGTERM (what Prefect, Kubernetes and spot reclaim send) saves a checkpoint and exits non-zero."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _job(root: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.scripts.train_job", str(root), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigterm_saves_last_checkpoint_exits_nonzero_and_resumes_exactly(tmp_path: Path) -> None:
    reference = tmp_path / "reference.pt"
    assert _job(tmp_path / "ref", "--out", str(reference)).wait(timeout=120) == 0
    proc = _job(tmp_path / "run", "--steps-sleep", "0.05", "--every", "1000")
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step 7"):
            proc.send_signal(signal.SIGTERM)
            break
    output = proc.stdout.read()
    code = proc.wait(timeout=120)
    assert code == 128 + signal.SIGTERM, output
    last = tmp_path / "run" / "ckpt" / "last.ckpt"
    assert last.exists(), output
    from lightning_lib.checkpoint._format import load_file

    saved_step = load_file(last)["global_step"]
    assert 7 <= saved_step < 36  # saved at the batch boundary after the signal, before the end
    resumed = tmp_path / "resumed.pt"
    started = time.monotonic()
    assert _job(tmp_path / "run", "--resume", "--out", str(resumed)).wait(timeout=120) == 0
    assert time.monotonic() - started < 120
    for ours, ref in zip(torch.load(resumed, weights_only=True), torch.load(reference, weights_only=True)):
        assert torch.equal(ours, ref)
