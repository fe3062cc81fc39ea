"""The tags that say where a run came from: code version, library versions, seed, orchestrator run.

MLflow guesses the git commit from ``sys.argv[0]``, which under an orchestrator (a workflow engine's
worker, a pytest run, ``python -m``) points into the orchestrator's installation, not the user's project.
Here it is computed from the project folder itself (the working directory unless told otherwise). The
orchestrator run's tags come from whatever the application registered
(:mod:`lightning_lib.utilities.orchestration`). Every value goes through the secret scrubber before it is
sent (a remote URL may carry a token).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import subprocess
import sys

from lightning_lib.utilities.orchestration import orchestrator_run_tags

TAG_RUN_KEY = "run_key"
TAG_SEED = "seed"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_BRANCH = "mlflow.source.git.branch"
TAG_GIT_REPO_URL = "mlflow.source.git.repoURL"
TAG_GIT_DIRTY = "git.dirty"
TAG_LIBRARY_VERSION = "lightning_lib.version"
TAG_TORCH_VERSION = "torch.version"
TAG_PYTHON_VERSION = "python.version"
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


def environment_tags(git_path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """All the tags above, then the registered orchestrators', unscrubbed (the caller scrubs them)."""
    tags: dict[str, str] = {}
    tags.update(source_tags())
    tags.update(git_tags(git_path))
    tags.update(version_tags())
    tags.update(seed_tags())
    tags.update(orchestrator_run_tags())
    return tags
