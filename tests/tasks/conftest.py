"""Fixtures of the task tests: small tables on disk (the Prefect harness is in tests/prefect_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def make_frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small numeric table: three float features, an int feature and an int class target."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "f0": rng.normal(size=rows),
            "f1": rng.normal(size=rows),
            "f2": rng.uniform(size=rows),
            "count": rng.integers(0, 10, size=rows),
            "label": rng.integers(0, 3, size=rows),
        }
    )


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "table.csv"
    path.parent.mkdir()
    make_frame().to_csv(path, index=False)
    return path
