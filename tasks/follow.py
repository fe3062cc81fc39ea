"""What a person following a run reads in its log: the MLflow link, and a loud warning when the code is
not a git checkout.

Lines go to Prefect's run logger when the code runs in a flow or task run (the flow run's Logs tab; the
CLI prints them too), else to this module's logger.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lightning_lib.loggers.mlflow import TAG_GIT_COMMIT, git_tags
from tasks.tracking import run_url, ui_command

log = logging.getLogger(__name__)

TAG_NO_GIT = "lightning_lib.warning.no_git"


def run_logger() -> Any:
    """Prefect's logger of the current flow or task run, else this module's logger."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
            from prefect.logging import get_run_logger

            return get_run_logger()
    except Exception:  # no Prefect run: the plain logger
        pass
    return log


def say(message: str, *args: Any, level: int = logging.INFO) -> None:
    """Log ``message`` where a person following the run reads it."""
    run_logger().log(level, message, *args)


def mlflow_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page, and for a local store the command that serves it."""
    link = run_url(tracking_uri, experiment_id, run_id)
    command = ui_command(tracking_uri)
    return f"{link} (open with: {command})" if command else link


def no_git_warning(path: str | os.PathLike[str] | None = None) -> str | None:
    """The warning to give when ``path`` (default: the working directory) is not in a git checkout, else None."""
    if git_tags(path).get(TAG_GIT_COMMIT):
        return None
    where = os.path.abspath(os.fspath(path)) if path is not None else os.getcwd()
    return (
        f"The code at {where} is not a git checkout: this run carries no git commit "
        f"({TAG_GIT_COMMIT}), so `reproduce` will refuse it (unless --allow-code-change). Run the worker "
        "from the project's git checkout to make its runs reproducible."
    )


def warn_if_no_git(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Warn loudly (Prefect's run log, which its console handler also prints, else this module's log)
    when the code is not a git checkout; return the MLflow tag that records the warning on the run (empty
    when it is a checkout)."""
    message = no_git_warning(path)
    if message is None:
        return {}
    run_logger().warning(message)
    return {TAG_NO_GIT: message}


__all__ = ["TAG_NO_GIT", "mlflow_link", "no_git_warning", "run_logger", "say", "warn_if_no_git"]
