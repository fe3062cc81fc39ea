"""MLFlowLogger and what the applications around it read back from its runs.

The logger's parts are private modules: ``_logger`` (the logger, its identity and logging calls), ``_run``
(starting or finding the run), ``_end`` (ending it), ``_context`` (the tags saying where a run came from),
``_params`` (fitting names and values to MLflow's limits), ``_worker`` and ``_transport`` (the background
sender and its requests), ``_checkpoints``, ``_artifacts`` and ``_model`` (what is recorded besides
numbers). ``import lightning_lib`` does not import mlflow; these modules import it when a run needs it.
"""

from lightning_lib.loggers.mlflow._context import TAG_GIT_COMMIT, TAG_GIT_DIRTY, TAG_RUN_KEY, git_tags
from lightning_lib.loggers.mlflow._end import warm_end_of_fit
from lightning_lib.loggers.mlflow._flavor import import_pytorch_flavor
from lightning_lib.loggers.mlflow._logger import MLFlowLogger
from lightning_lib.loggers.mlflow._model import example_input, log_pytorch_model, serving_parts
from lightning_lib.loggers.mlflow._params import clean_name

# example_input, serving_parts and log_pytorch_model: an application logs the model of a finished run with
# them when the logger could not (the tracking server was away at the end of the fit). import_pytorch_flavor:
# ``mlflow.pytorch`` without the 3-4 s of pytorch_lightning it imports when that is installed. clean_name: a
# metric name as the logger records it, for an application that logs to a logger's run directly.
# warm_end_of_fit: what the end of a fit imports, imported ahead by a process that prepares runs.
__all__ = [
    "TAG_GIT_COMMIT",
    "TAG_GIT_DIRTY",
    "TAG_RUN_KEY",
    "MLFlowLogger",
    "clean_name",
    "example_input",
    "git_tags",
    "import_pytorch_flavor",
    "log_pytorch_model",
    "serving_parts",
    "warm_end_of_fit",
]
