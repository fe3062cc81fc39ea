"""Prefect fixtures shared by the task and flow tests (registered in tests/conftest.py).

``prefect_harness``: one temporary Prefect API and database (``prefect_test_harness``) for the session;
results go to a temporary folder, never to ``~/.prefect``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    prefect_settings = pytest.importorskip("prefect.settings")
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    updates = {
        prefect_settings.PREFECT_LOCAL_STORAGE_PATH: str(storage),
        prefect_settings.PREFECT_SERVER_ANALYTICS_ENABLED: False,  # no network from tests
    }
    # the harness waits 30 s for its server by default: too short on a loaded 2-core machine
    with (
        prefect_settings.temporary_settings(updates=updates),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield storage
