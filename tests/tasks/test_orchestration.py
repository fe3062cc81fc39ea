"""Prefect as the library sees it (tasks.orchestration): flow-run tags, and no flow process relaunched as a rank."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from lightning_lib.distributed._launcher import script_command
from lightning_lib.loggers.mlflow._context import environment_tags
from lightning_lib.utilities.orchestration import orchestrator_of_module, registered_orchestrators
from tasks.orchestration import PREFECT, prefect_run_tags


def test_prefect_tags_only_inside_a_flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "prefect", raising=False)
    assert prefect_run_tags() == {}  # never imports prefect itself
    flow_run = types.SimpleNamespace(id="0b1c", name="brave-otter")
    context = types.SimpleNamespace(flow_run=flow_run)
    fake_context = types.ModuleType("prefect.context")
    fake_context.FlowRunContext = types.SimpleNamespace(get=lambda: context)  # type: ignore[attr-defined]
    fake_runtime = types.ModuleType("prefect.runtime")
    fake_runtime.flow_run = types.SimpleNamespace(ui_url="http://prefect/runs/flow-run/0b1c")  # type: ignore[attr-defined]
    for name, module in (("prefect", types.ModuleType("prefect")), ("prefect.context", fake_context),
                         ("prefect.runtime", fake_runtime)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    expected = {
        "prefect.flow_run.id": "0b1c",
        "prefect.flow_run.name": "brave-otter",
        "prefect.flow_run.url": "http://prefect/runs/flow-run/0b1c",
    }
    assert prefect_run_tags() == expected
    # through the library: importing tasks registered Prefect, so an MLflow run started here carries them
    assert environment_tags().items() >= expected.items()
    context.flow_run = None
    assert prefect_run_tags() == {}
    assert "prefect.flow_run.id" not in environment_tags()


def test_importing_tasks_registers_prefect_without_importing_it() -> None:
    code = (
        "import sys, tasks; from lightning_lib.utilities.orchestration import registered_orchestrators as r;"
        " print([o.name for o in r()], 'prefect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['prefect'] False"
    assert PREFECT in registered_orchestrators()


@pytest.mark.parametrize("module", ["prefect.engine", "flows.cli", "flows", "tasks.distributed_fit"])
def test_a_flow_process_is_never_relaunched_as_a_rank(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name=f"{module}.__main__" if "." not in module else module)  # type: ignore[assignment]
    main.__file__ = f"/somewhere/{module.replace('.', '/')}.py"
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert orchestrator_of_module(module) is PREFECT
    with pytest.raises(RuntimeError, match=rf"started as '{module}' \(.*an orchestrator\).*torchrun"):
        script_command()
