"""MLFlowLogger and what the applications around it read back from its runs.

The logger's parts are private modules: ``_logger`` (the logger, its identity and logging calls), ``_run``
(starting or finding the run), ``_end`` (ending it), ``_context`` (the tags saying where a run came from),
``_params`` (fitting names and values to MLflow's limits), ``_worker`` and ``_transport`` (the background
sender and its requests), ``_checkpoints``, ``_artifacts`` and ``_model`` (what is recorded besides
numbers). ``import lightning_lib`` does not import mlflow; these modules import it when a run needs it.
"""

from lightning_lib.loggers.mlflow._context import TAG_GIT_COMMIT, TAG_GIT_DIRTY, TAG_RUN_KEY, git_tags
from lightning_lib.loggers.mlflow._logger import MLFlowLogger

__all__ = [
    "TAG_GIT_COMMIT",
    "TAG_GIT_DIRTY",
    "TAG_RUN_KEY",
    "MLFlowLogger",
    "git_tags",
]
