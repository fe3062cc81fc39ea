"""``benchmarks/parquet_stream.py --quick`` still runs end to end and keeps its JSON keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_parquet_stream_benchmark_quick_prints_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "parquet_stream.py"),
            "--quick",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=True,
    )
    report = json.loads(proc.stdout)
    rows = report["dataset"]["rows"]
    for part in ("baseline_pyarrow_iter_batches", "epoch_workers_0", "epoch_workers_2"):
        assert report[part]["rows"] == rows and report[part]["rows_per_s"] > 0, part
    assert report["epoch_workers_2"]["worker_processes_seen"] == 2
    assert report["ratio_rows_per_s_workers_0_over_baseline"] > 0
    assert report["fit_50_steps_workers_2"]["steps_per_s"] > 0
    assert report["meets_target"] is True
    assert list(tmp_path.iterdir()) == []  # the dataset is removed afterwards
