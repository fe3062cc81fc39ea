"""``benchmarks/fingerprint.py --quick`` still runs end to end and keeps its JSON keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.services  # starts its own moto server on 127.0.0.1
def test_fingerprint_benchmark_quick_prints_json() -> None:
    pytest.importorskip("moto.server")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fingerprint.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=True,
    )
    report = json.loads(proc.stdout)
    s3, local = report["s3"], report["local"]
    assert s3["objects"] == 2000 and s3["ratio"] > 0 and s3["baseline_list_s"] > 0
    assert s3["compare_message"].endswith('"') and " changed: size " in s3["compare_message"]
    assert s3["select_partitions_found"] == 2 and s3["listing_artifact_bytes"] > 0
    assert local["files"] == 50 and local["ratio"] > 0 and local["baseline_scandir_stat_s"] > 0
    assert local["apparent_bytes"] == 50 * 10 * 1024 * 1024
    assert local["read_sha256_all_extrapolated_s"] > 0
