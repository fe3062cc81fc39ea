"""The orchestrator extension point: registration, run tags, the launcher's refusal of entry modules."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from lightning_lib.utilities.orchestration import (
    Orchestrator,
    orchestrator_of_module,
    orchestrator_run_tags,
    register_orchestrator,
    registered_orchestrators,
    unregister_orchestrator,
)

NAME = "test-scheduler"


@pytest.fixture
def registered() -> Iterator[list[Orchestrator]]:
    """Orchestrators a test registers, unregistered afterwards (the registry is process-wide)."""
    added: list[Orchestrator] = []
    yield added
    for orchestrator in added:
        unregister_orchestrator(orchestrator.name)


def _register(added: list[Orchestrator], orchestrator: Orchestrator) -> None:
    register_orchestrator(orchestrator)
    added.append(orchestrator)


def test_run_tags_of_the_registered_orchestrators_are_merged(registered: list[Orchestrator]) -> None:
    before = orchestrator_run_tags()
    _register(registered, Orchestrator(NAME, run_tags=lambda: {"scheduler.job": "42"}))
    _register(registered, Orchestrator(NAME + "-2", run_tags=lambda: {"scheduler.queue": "gpu"}))
    _register(registered, Orchestrator(NAME + "-3"))  # no tags: only entry modules, or nothing
    assert orchestrator_run_tags() == {**before, "scheduler.job": "42", "scheduler.queue": "gpu"}
    # registering under the same name replaces, so a module imported twice does not register twice
    _register(registered, Orchestrator(NAME, run_tags=lambda: {"scheduler.job": "43"}))
    assert orchestrator_run_tags()["scheduler.job"] == "43"
    assert [o.name for o in registered_orchestrators()].count(NAME) == 1
    assert unregister_orchestrator(NAME) is not None and unregister_orchestrator(NAME) is None
    assert "scheduler.job" not in orchestrator_run_tags()


def test_a_failing_run_tags_provider_costs_its_tags_not_the_run(
    registered: list[Orchestrator], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("API unreachable")

    _register(registered, Orchestrator(NAME, run_tags=broken))
    _register(registered, Orchestrator(NAME + "-ok", run_tags=lambda: {"scheduler.job": "7"}))
    with caplog.at_level(logging.WARNING, logger="lightning_lib"):
        tags = orchestrator_run_tags()
    assert tags["scheduler.job"] == "7"
    assert f"orchestrator '{NAME}' failed (RuntimeError: API unreachable)" in caplog.text


def test_entry_modules_are_matched_by_prefix(registered: list[Orchestrator]) -> None:
    scheduler = Orchestrator(NAME, entry_modules=("sched_worker", "sched_jobs"))
    assert orchestrator_of_module("sched_jobs.train") is None
    _register(registered, scheduler)
    assert orchestrator_of_module("sched_jobs.train") is scheduler
    assert orchestrator_of_module("sched_worker") is scheduler
    assert orchestrator_of_module("my_project.train") is None


def test_registrations_are_checked_before_they_count() -> None:
    with pytest.raises(ValueError, match="Expected name to be a non-empty string, received ''"):
        Orchestrator("")
    with pytest.raises(TypeError, match=r"Expected run_tags to be a function .* received 'tags'"):
        Orchestrator(NAME, run_tags="tags")  # type: ignore[arg-type]
    # a bare string would be a tuple of one-letter prefixes, refusing nearly every module
    with pytest.raises(TypeError, match=r"Expected entry_modules to be a tuple .* received 'sched'"):
        Orchestrator(NAME, entry_modules="sched")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"received \('sched', ''\)"):
        Orchestrator(NAME, entry_modules=("sched", ""))
    with pytest.raises(TypeError, match="Expected orchestrator to be an Orchestrator, received 'sched'"):
        register_orchestrator("sched")  # type: ignore[arg-type]
    assert NAME not in [o.name for o in registered_orchestrators()]


def test_concurrent_registration_keeps_every_orchestrator(registered: list[Orchestrator]) -> None:
    names = [f"{NAME}-{i}" for i in range(32)]
    threads = [
        threading.Thread(target=register_orchestrator, args=(Orchestrator(name, entry_modules=(name,)),))
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registered.extend(o for o in registered_orchestrators() if o.name in names)
    assert sorted(o.name for o in registered) == sorted(names)


def test_the_library_names_no_orchestrator() -> None:
    # a fresh interpreter: only the library, none of the application packages that register one
    code = (
        "import sys, lightning_lib; from lightning_lib.loggers import MLFlowLogger;"
        " from lightning_lib.utilities.orchestration import registered_orchestrators as r;"
        " print(r(), sorted(m for m in ('prefect', 'tasks', 'flows') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "() []"
