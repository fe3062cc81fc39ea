"""Prefect as ``lightning_lib`` sees it: the flow run's tags on MLflow runs, and its programs never
relaunched as DDP ranks.

The library names no orchestrator; ``tasks`` registers :data:`PREFECT` with
:mod:`lightning_lib.utilities.orchestration` when it is imported (every flow, the fit task and
``python -m tasks.distributed_fit`` under torchrun import ``tasks``). Registering imports no Prefect:
the tags are read only in a process that has imported Prefect already.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from lightning_lib.utilities.orchestration import Orchestrator, register_orchestrator

TAG_PREFECT_FLOW_RUN_ID = "prefect.flow_run.id"
TAG_PREFECT_FLOW_RUN_NAME = "prefect.flow_run.name"
TAG_PREFECT_FLOW_RUN_URL = "prefect.flow_run.url"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
CLI_PROGRAM = "lightning-lib"
# a worker runs a flow run as `python -m prefect.engine`, this project's programs run as `-m flows.*` and
# `-m tasks.*`: running any of them again for a DDP rank would run a second copy of the flow run
ENTRY_MODULES = ("prefect", "flows", "tasks")


def prefect_run_tags() -> dict[str, str]:
    """The Prefect flow run this process runs in, if any: its id, name and UI URL, and the run's source
    (:func:`source_tags`).

    Prefect is only consulted when the process has imported it already: a process that runs inside a
    flow always has, and one that does not should not pay for importing it (or depend on it).
    """
    if "prefect" not in sys.modules:
        return {}
    try:
        from prefect.context import FlowRunContext

        context: Any = FlowRunContext.get()
        flow_run = getattr(context, "flow_run", None)
        if flow_run is None:
            return {}
        tags = {TAG_PREFECT_FLOW_RUN_ID: str(flow_run.id)}
        if getattr(flow_run, "name", None):
            tags[TAG_PREFECT_FLOW_RUN_NAME] = str(flow_run.name)
        url = _flow_run_url(str(flow_run.id))
        if url:
            tags[TAG_PREFECT_FLOW_RUN_URL] = url
        tags.update(source_tags(getattr(context, "flow", None), flow_run))
        return tags
    except Exception:  # an unexpected Prefect version must not stop training
        return {}


def _flow_run_url(flow_run_id: str) -> str | None:
    try:
        from prefect.runtime import flow_run as runtime_flow_run

        url = getattr(runtime_flow_run, "ui_url", None)
        if url:
            return str(url)
    except Exception:
        pass
    try:
        from prefect.settings import PREFECT_UI_URL

        base = PREFECT_UI_URL.value()
        return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None
    except Exception:
        return None


def entry_point(flow_module: str, argv: list[str] | None = None) -> str:
    """What started the run, as a person would type or open it: ``lightning-lib train`` when the CLI did,
    else the flow's source file (``flows/training.py``)."""
    args = sys.argv if argv is None else argv
    program = os.path.basename(args[0]) if args else ""
    if program == CLI_PROGRAM or (args and args[0].replace("\\", "/").endswith("flows/cli.py")):
        command = next((a for a in args[1:] if not a.startswith("-")), "")
        return f"{CLI_PROGRAM} {command}".strip()
    if flow_module == "__main__":
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        return os.path.relpath(main) if main else (args[0] if args else "")
    return flow_module.replace(".", "/") + ".py"


def source_tags(flow: Any, flow_run: Any) -> dict[str, str]:
    """MLflow's source tags for a run started inside ``flow``: its entry point instead of the engine
    module MLflow would infer, ``JOB`` for a deployment's run and ``LOCAL`` otherwise."""
    module = getattr(getattr(flow, "fn", None), "__module__", None)
    if not module:
        return {}
    deployed = getattr(flow_run, "deployment_id", None) is not None
    return {TAG_SOURCE_NAME: entry_point(module), TAG_SOURCE_TYPE: "JOB" if deployed else "LOCAL"}


PREFECT = Orchestrator("prefect", run_tags=prefect_run_tags, entry_modules=ENTRY_MODULES)


def register_prefect() -> None:
    """Tell ``lightning_lib`` about Prefect (idempotent: registering again replaces the registration)."""
    register_orchestrator(PREFECT)


__all__ = [
    "ENTRY_MODULES",
    "PREFECT",
    "TAG_PREFECT_FLOW_RUN_ID",
    "TAG_PREFECT_FLOW_RUN_NAME",
    "TAG_PREFECT_FLOW_RUN_URL",
    "TAG_SOURCE_NAME",
    "TAG_SOURCE_TYPE",
    "entry_point",
    "prefect_run_tags",
    "register_prefect",
    "source_tags",
]
