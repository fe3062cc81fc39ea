"""``benchmarks/gpu.py --quick --device cpu`` still runs end to end and keeps its JSON keys (no GPU needed)."""

from __future__ import annotations

import math

import pytest

from tests.gpu import run_quick_gpu_benchmark


@pytest.mark.slow
def test_gpu_benchmark_quick_on_cpu_prints_json() -> None:
    report = run_quick_gpu_benchmark("cpu", "--repeats", "1", timeout=120)
    assert report["device"]["type"] == "cpu" and report["precision"] == "32-true"
    assert report["lightning_trainer_flags"]["logger"] is False
    assert set(report["cases"]) == {"tiny_mlp", "compute_bound"}
    for name, case in report["cases"].items():
        assert set(case["ms_per_step"]) == {"raw", "lightning_lib", "pytorch_lightning"}, name
        for impl, ms in case["ms_per_step"].items():
            assert ms is not None and math.isfinite(ms) and ms > 0, (name, impl)
            assert case["peak_memory_mib"][impl] is None, (name, impl)  # no CUDA memory on CPU
        assert case["vs_raw"]["lightning_lib"] > 0 and case["vs_raw"]["pytorch_lightning"] > 0, name
        assert case["target_lightning_lib_vs_raw"] == report["targets_lightning_lib_vs_raw"][name]
