"""GPU tests (skipped without CUDA) and the helper that runs ``benchmarks/gpu.py --quick``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_quick_gpu_benchmark(device: str, *extra: str, timeout: float) -> Any:
    """``benchmarks/gpu.py --quick --device DEVICE``'s JSON report (asserting the script succeeded)."""
    # the script imports lightning_lib from this checkout even where it is not installed
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}
    command = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--quick", "--device", device, *extra]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)
