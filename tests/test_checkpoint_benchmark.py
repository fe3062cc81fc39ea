"""``benchmarks/checkpoint.py --quick`` still runs end to end and keeps its JSON keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.services  # starts its own moto server on 127.0.0.1
def test_checkpoint_benchmark_quick_prints_json() -> None:
    pytest.importorskip("moto.server")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "checkpoint.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert report["state_bytes"] > 0
    for part, baseline in (
        ("a_stall", "baseline_sync_save_upload_s"),
        ("b_upload", "baseline_upload_file_MBps"),
        ("c_resume_local", "baseline_s"),
        ("c_resume_s3", "baseline_s"),
    ):
        assert report[part]["ratio"] > 0 and report[part][baseline] > 0, part
    assert report["d_memory"]["extra_peak_over_state"] > 0
