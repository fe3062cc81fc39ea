"""Fixtures of the task tests: one Prefect test server for the whole session, small tables on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary Prefect server and database (``prefect_test_harness``), started once: it takes seconds.

    Results (and so the cache records) go to a temporary folder, never to ``~/.prefect``; the folder is
    yielded so a test can look at what was persisted.
    """
    prefect_settings = pytest.importorskip("prefect.settings")
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    updates = {
        prefect_settings.PREFECT_LOCAL_STORAGE_PATH: str(storage),
        prefect_settings.PREFECT_SERVER_ANALYTICS_ENABLED: False,  # no network from tests
    }
    with prefect_settings.temporary_settings(updates=updates), prefect_test_harness():
        yield storage


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
