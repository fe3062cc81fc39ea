"""The tags that say where a run came from: code version, library versions, seed, orchestrator.

MLflow guesses the git commit from ``sys.argv[0]``, which under an orchestrator (a Prefect worker, a
pytest run, ``python -m``) points into the orchestrator's installation, not the user's project. Here it
is computed from the project folder itself (the working directory unless told otherwise). Every value
goes through the secret scrubber before it is sent (a remote URL may carry a token).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import subprocess
import sys
from typing import Any

TAG_RUN_KEY = "run_key"
TAG_SEED = "seed"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_BRANCH = "mlflow.source.git.branch"
TAG_GIT_REPO_URL = "mlflow.source.git.repoURL"
TAG_GIT_DIRTY = "git.dirty"
TAG_LIBRARY_VERSION = "lightning_lib.version"
TAG_TORCH_VERSION = "torch.version"
TAG_PYTHON_VERSION = "python.version"
TAG_PREFECT_FLOW_RUN_ID = "prefect.flow_run.id"
TAG_PREFECT_FLOW_RUN_NAME = "prefect.flow_run.name"
TAG_PREFECT_FLOW_RUN_URL = "prefect.flow_run.url"
TAG_EXCEPTION = "lightning_lib.exception"


def _git(path: str, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", path, *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_tags(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Commit, branch, remote URL and dirty flag of the git work tree holding ``path`` (default: cwd).

    "Dirty" means tracked files differ from the commit; untracked files (data, logs, ``mlruns/``) do not
    count, or every run that writes its logs inside the project would look dirty.
    """
    where = os.fspath(path) if path is not None else os.getcwd()
    commit = _git(where, "rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {TAG_GIT_COMMIT: commit}
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        tags[TAG_GIT_DIRTY] = "true" if status else "false"
    branch = _git(where, "rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags[TAG_GIT_BRANCH] = branch
    remote = _git(where, "config", "--get", "remote.origin.url")
    if remote:
        tags[TAG_GIT_REPO_URL] = remote
    return tags


def version_tags() -> dict[str, str]:
    """Versions of this library, torch and Python."""
    import torch

    from lightning_lib.checkpoint._format import LIBRARY_VERSION

    return {
        TAG_LIBRARY_VERSION: str(LIBRARY_VERSION),
        TAG_TORCH_VERSION: str(torch.__version__),
        TAG_PYTHON_VERSION: platform.python_version(),
    }


def seed_tags() -> dict[str, str]:
    """The seed ``seed_everything`` set (it exports ``PL_GLOBAL_SEED``), when there is one."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return {TAG_SEED: seed} if seed else {}


def source_tags() -> dict[str, str]:
    """The user and entry point, as MLflow records them for its UI."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": sys.argv[0] if sys.argv else ""}
    with contextlib.suppress(Exception):  # no user name in some containers
        tags["mlflow.user"] = getpass.getuser()
    return tags


def prefect_tags() -> dict[str, str]:
    """The Prefect flow run this process runs in, if any.

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
        url = _prefect_flow_run_url(str(flow_run.id))
        if url:
            tags[TAG_PREFECT_FLOW_RUN_URL] = url
        return tags
    except Exception:  # an unexpected Prefect version must not stop training
        return {}


def _prefect_flow_run_url(flow_run_id: str) -> str | None:
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


def environment_tags(git_path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """All the tags above, unscrubbed (the caller scrubs them with the user's tags)."""
    tags: dict[str, str] = {}
    tags.update(source_tags())
    tags.update(git_tags(git_path))
    tags.update(version_tags())
    tags.update(seed_tags())
    tags.update(prefect_tags())
    return tags
