"""``lightning-lib worker`` (flows.worker): Prefect's process worker polling every second, its runs forked
from the preloaded forkserver through Prefect's workspace supervisor, and Prefect's own start wherever the
forked process could differ from a fresh one. The end-to-end runs (crash, re-run, resume) on this worker are
in test_e2e_worker.py."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio
import pytest

from flows import _forkserver, cli, worker
from flows._forkserver import (
    ENGINE_ARGS,
    SUPERVISOR_ARGS,
    ForkserverStarts,
    _run_engine,
    _run_supervisor,
    engine_sys_path,
)
from tests.flows.conftest import REPO
from tests.flows.test_cli_errors import one_error_line, run_cli

# every test leaves Prefect's engine starter as it found it (some install the forkserver's)
pytestmark = pytest.mark.usefixtures("prefect_start_restored")


def test_the_worker_polls_every_second_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(worker.WORKER_POLL_VARIABLE, raising=False)
    assert worker.worker_poll_seconds() == worker.WORKER_POLL_SECONDS == 1.0
    monkeypatch.setenv(worker.WORKER_POLL_VARIABLE, "10")
    assert worker.worker_poll_seconds() == 10.0
    monkeypatch.setenv(worker.WORKER_POLL_VARIABLE, "0")
    with pytest.raises(ValueError, match=worker.WORKER_POLL_VARIABLE):
        worker.worker_poll_seconds()


def test_run_worker_runs_prefect_s_process_worker_with_the_forkserver_and_the_poll_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefect.workers.process as process
    from prefect.settings import PREFECT_API_URL, PREFECT_WORKER_QUERY_SECONDS, temporary_settings

    events: list[Any] = []

    class Starts:
        def uninstall(self) -> None:
            events.append("uninstalled")

    class FakeWorker:
        def __init__(self, **kwargs: Any) -> None:
            events.append(kwargs)

        async def start(self) -> None:
            events.append(("polls every", PREFECT_WORKER_QUERY_SECONDS.value()))

    async def pool_checked(pool: str) -> None:
        events.append(("checked", pool))

    monkeypatch.delenv(worker.WORKER_POLL_VARIABLE, raising=False)
    monkeypatch.setattr(process, "ProcessWorker", FakeWorker)
    monkeypatch.setattr(worker, "_check_pool", pool_checked)

    def install(preload: Any) -> Starts:
        events.append(preload)
        return Starts()

    monkeypatch.setattr(worker, "install_forkserver_starts", install)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        worker.run_worker("cpu", name="w1", limit=2)
    assert events == [
        ("checked", "cpu"),
        worker.SERVE_PRELOAD,  # the same imports as serve's forkserver
        {"work_pool_name": "cpu", "name": "w1", "limit": 2},
        ("polls every", 1.0),
        "uninstalled",
    ]


def test_the_worker_command_refuses_bad_input_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setattr(worker, "install_forkserver_starts", lambda preload: pytest.fail("started"))
    code, err = run_cli(capsys, "worker")
    assert code == 2 and "--pool" in err and "Traceback" not in err
    with temporary_settings(updates={PREFECT_API_URL: ""}):
        line = one_error_line(*run_cli(capsys, "worker", "--pool", "cpu"), "worker")
    assert "Expected PREFECT_API_URL to name the Prefect server of the work pool" in line
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        line = one_error_line(*run_cli(capsys, "worker", "--pool", "cpu", "--limit", "0"), "worker")
    assert line == "lightning-lib worker: Expected --limit >= 1, received 0."


def test_prefect_still_starts_work_pool_runs_the_way_the_override_relies_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins the Prefect internals (prefect==3.9.1 in constraints.txt): a process worker without a
    configured command starts each run with the workspace-resolving starter, which runs
    ``[python, "-m", "prefect.runner._workspace_supervisor", CONFIG]`` through the engine-command starter's
    module-level ``run_process``; the supervisor's ``main(argv)`` runs the pull steps and hands the engine's
    command, working directory and environment to its module-level ``_launch_engine``. If this fails after
    an upgrade, a worker's runs start Prefect's way: adapt flows/_forkserver.py to the new Prefect."""
    import prefect.runner._starter_engine as starter
    import prefect.runner._workspace_supervisor as supervisor
    from prefect.client.schemas.objects import FlowRun
    from prefect.runner._workspace_starter import WorkspaceResolvingEngineCommandStarter
    from prefect.workers.process import ProcessWorker

    run_source = inspect.getsource(ProcessWorker.run)
    assert "WorkspaceResolvingEngineCommandStarter(" in run_source and "command=None" in run_source
    seen: dict[str, Any] = {}

    async def fake_run_process(command: list[str], **kwargs: Any) -> None:
        seen.update(command=command, kwargs=kwargs)

    monkeypatch.setattr(starter, "run_process", fake_run_process)
    workspace = WorkspaceResolvingEngineCommandStarter(workspace_root=Path("/tmp"), environment={})
    try:
        anyio.run(workspace.start, FlowRun(flow_id=uuid4()))
    finally:
        workspace.close()
    command = seen["command"]
    assert command[:3] == [sys.executable, *SUPERVISOR_ARGS] and len(command) == 4
    assert ForkserverStarts._target(_stub(), command) == (_run_supervisor, (command[3],))
    assert seen["kwargs"]["start_new_session"] is True
    assert set(seen["kwargs"]) <= _forkserver._SUPPORTED_OPTIONS | {
        "stream_output", "task_status", "task_status_handler"
    }  # fmt: skip
    assert list(inspect.signature(supervisor.main).parameters) == ["argv"]
    assert list(inspect.signature(supervisor._launch_engine).parameters) == ["command", "cwd", "environment"]
    supervise = inspect.getsource(supervisor.supervise)
    assert "return await _launch_engine(" in supervise
    assert '[get_sys_executable(), "-m", "prefect.engine"]' in supervise
    assert not isinstance(_forkserver._supervisor_layout(), str)


class _StartsStub:
    """Just what ``ForkserverStarts._target`` reads."""

    _supervisor_off: str | None = None


def _stub() -> Any:
    return _StartsStub()


def test_only_the_engine_and_the_supervisor_commands_are_forked() -> None:
    stub = _stub()
    engine = [sys.executable, *ENGINE_ARGS]
    assert ForkserverStarts._target(stub, engine) == (_run_engine, ())
    assert ForkserverStarts._target(stub, [sys.executable, *SUPERVISOR_ARGS, "c.json"]) == (
        _run_supervisor,
        ("c.json",),
    )
    for other in ([sys.executable, *SUPERVISOR_ARGS], [sys.executable, *SUPERVISOR_ARGS, "a", "b"]):
        assert ForkserverStarts._target(stub, other) is None
    stub._supervisor_off = "gone"
    assert ForkserverStarts._target(stub, [sys.executable, *SUPERVISOR_ARGS, "c.json"]) is None


def test_the_engine_runs_in_the_forked_process_only_where_a_fresh_one_imports_the_same_modules(
    tmp_path: Path,
) -> None:
    import flows.training  # noqa: F401  (imported, as in the forkserver)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(REPO)}
    engine = [sys.executable, *ENGINE_ARGS]
    sys_path = engine_sys_path(engine, REPO, env)
    # as "python -m" in the project's folder: that folder first, then PYTHONPATH, then the site's entries
    assert isinstance(sys_path, list) and sys_path[:2] == [str(REPO), str(REPO)]
    assert any(entry.endswith("site-packages") for entry in sys_path)

    # another checkout of the project: the fresh engine would import its flows, not the server's
    other = tmp_path / "other-checkout"
    (other / "flows").mkdir(parents=True)
    (other / "flows" / "__init__.py").write_text("")
    # (the project's other packages too, unless an editable install of this checkout finds them anyway)
    refused = engine_sys_path(engine, other, env | {"PYTHONPATH": str(other)})
    assert isinstance(refused, str) and refused.endswith(" than the worker's")
    assert refused.startswith("it would import other copies of ")
    names = set(refused.removeprefix("it would import other copies of ").split(" than ")[0].split(", "))
    assert (
        {"flows", "tests"} <= names <= {"flows", "lightning_lib", "tasks", "tests", "datamodules", "examples"}
    )
    # a PYTHONPATH entry that shadows a library the server imported (here: torch)
    (tmp_path / "shadow" / "torch").mkdir(parents=True)
    (tmp_path / "shadow" / "torch" / "__init__.py").write_text("")
    shadowed = engine_sys_path(engine, REPO, env | {"PYTHONPATH": f"{tmp_path / 'shadow'}:{REPO}"})
    assert isinstance(shadowed, str) and "torch" in shadowed
    # another command or interpreter: exec'd as Prefect does
    for command in ([sys.executable, "-m", "other.module"], ["/usr/bin/python3", *ENGINE_ARGS]):
        assert engine_sys_path(command, REPO, env) == f"the engine command is {' '.join(command)!r}"


def test_the_compose_worker_runs_lightning_lib_worker() -> None:
    import yaml

    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    for service, pool in (("prefect-worker", "cpu"), ("prefect-worker-gpu", "gpu")):
        assert compose["services"][service]["command"] == [
            "python", "-m", "flows.cli", "worker", "--pool", pool
        ]  # fmt: skip
    # a forked run imports the flows the worker imported: the worker's folder is the deployments' source
    assert "WORKDIR /opt/lightning-lib" in (REPO / "infra" / "Dockerfile").read_text()
    assert cli.build_parser().parse_args(["worker", "--pool", "cpu"]).pool == "cpu"
