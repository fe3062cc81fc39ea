"""CometLogger: Lightning's Comet logger, with its arguments, defaults and metric layout.

``comet_ml`` is an optional extra (``pip install 'lightning-lib[comet]'``), imported when a logger is
built, never by ``import lightning_lib``. What it adds to Lightning's logger:

- logging calls never wait for the client: they are queued for a sender thread
  (:mod:`lightning_lib.loggers._sender`) that makes them in order; reading ``experiment`` first waits
  for what is queued;
- ``online=False`` writes an offline archive (``<offline_directory>/<key>-*.zip``, for ``comet upload``):
  pytorch_lightning 2.6 also sets ``disabled=True`` then, so its offline logger records nothing;
- ``finalize`` ends the experiment (Lightning only flushes it), so the offline archive is written and no
  Comet thread is left running; a later call (``trainer.test`` after ``fit``) continues the same
  experiment key;
- comet_ml is imported with its framework auto-logging and its error reporting turned off, for that
  import only (Lightning sets ``COMET_DISABLE_AUTO_LOGGING`` for the whole process); hyper-parameters are
  scrubbed of credentials (:mod:`lightning_lib.loggers.redact`), and the API key is never logged.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from argparse import Namespace
from collections.abc import Mapping
from typing import Any, Literal

import torch

from lightning_lib.loggers._sender import CallSender
from lightning_lib.loggers.logger import Logger, _convert_params, _detached_values
from lightning_lib.loggers.redact import redact_nested
from lightning_lib.utilities.rank_zero import rank_zero_only

log = logging.getLogger(__name__)

FRAMEWORK_NAME = "pytorch-lightning"
_FINALIZE_TIMEOUT = 120.0
# set while comet_ml is first imported, unless the user set them: no monkey-patching of torch & co., no
# error reports sent to Comet's Sentry (which would also leave a thread running)
_IMPORT_ENVIRONMENT = {"COMET_DISABLE_AUTO_LOGGING": "1", "COMET_ERROR_TRACKING_ENABLE": "false"}


def _import_comet() -> Any:
    """``comet_ml``, imported with ``_IMPORT_ENVIRONMENT``; the environment is restored afterwards."""
    if sys.modules.get("comet_ml") is not None:
        return sys.modules["comet_ml"]
    if importlib.util.find_spec("comet_ml") is None:
        raise ModuleNotFoundError(
            "CometLogger needs the `comet_ml` package: pip install 'lightning-lib[comet]'."
        )
    added = [name for name in _IMPORT_ENVIRONMENT if name not in os.environ]
    os.environ.update({name: _IMPORT_ENVIRONMENT[name] for name in added})
    try:
        import comet_ml
    finally:
        for name in added:
            os.environ.pop(name, None)
    return comet_ml


class CometLogger(Logger):
    """Log to `Comet <https://www.comet.com>`_ (see the module docstring for what it adds).

    Args:
        api_key: Comet API key (better configured with ``comet login`` or ``COMET_API_KEY``).
        workspace: Comet workspace; default the user's default workspace.
        project: Comet project; default ``Uncategorized``.
        experiment_key: Key of the experiment to continue, or of the new one (32-50 alphanumerics).
        mode: ``"get_or_create"``, ``"get"`` (continue ``experiment_key``) or ``"create"``.
        online: ``False`` writes an offline archive instead of sending to the server; default ``True``.
        prefix: Put in front of every metric name.
        **kwargs: Passed to ``comet_ml.ExperimentConfig`` (``name``, ``offline_directory``, ``log_code``,
            ``tags``, ...). The deprecated ``experiment_name``, ``project_name``, ``offline`` and ``save_dir``
            are still accepted, with a warning.

    Raises:
        ModuleNotFoundError: ``comet_ml`` is not installed.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        workspace: str | None = None,
        project: str | None = None,
        experiment_key: str | None = None,
        mode: Literal["get_or_create", "get", "create"] | None = None,
        online: bool | None = None,
        prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        comet_ml = _import_comet()
        super().__init__()
        if "experiment_name" in kwargs:
            log.warning("The parameter `experiment_name` is deprecated, please use `name` instead.")
            experiment_name = kwargs.pop("experiment_name")
            if "name" not in kwargs:
                kwargs["name"] = experiment_name
            else:
                log.warning(
                    "You specified both `experiment_name` and `name` parameters, please use `name` only"
                )
        if "project_name" in kwargs:
            log.warning("The parameter `project_name` is deprecated, please use `project` instead.")
            if project is None:
                project = kwargs.pop("project_name")
            else:
                log.warning(
                    "You specified both `project_name` and `project` parameters, please use `project` only"
                )
        if "offline" in kwargs:
            log.warning("The parameter `offline is deprecated, please use `online` instead.")
            if online is None:
                # ``offline=True`` asks for what ``online=False`` means
                online = not kwargs.pop("offline")
            else:
                log.warning("You specified both `offline` and `online` parameters, please use `online` only")
        if "save_dir" in kwargs:
            log.warning("The parameter `save_dir` is deprecated, please use `offline_directory` instead.")
            if "offline_directory" not in kwargs:
                kwargs["offline_directory"] = kwargs.pop("save_dir")
            else:
                log.warning(
                    "You specified both `save_dir` and `offline_directory` parameters, "
                    "please use `offline_directory` only"
                )
        self._api_key = api_key
        self._experiment: Any = None
        self._workspace = workspace
        self._mode = mode
        self._online = online
        self._project_name = project
        self._experiment_key = experiment_key
        self._prefix = prefix
        self._kwargs = kwargs
        self._ended_key: str | None = None  # the key of the experiment finalize ended
        self._comet_config = comet_ml.ExperimentConfig(**kwargs)
        self._sender = CallSender("comet-logger-sender")
        if rank_zero_only.rank != 0:  # the experiment lives on global rank zero only
            return
        self._create_experiment()

    def _create_experiment(self) -> None:
        comet_ml = _import_comet()
        experiment = comet_ml.start(
            api_key=self._api_key,
            workspace=self._workspace,
            project=self._project_name,
            experiment_key=self._experiment_key,
            mode=self._mode,
            online=self._online,
            experiment_config=self._comet_config,
        )
        if experiment is None:
            raise comet_ml.exceptions.ExperimentNotFound("Failed to create Comet experiment.")
        self._experiment = experiment
        self._experiment_key = experiment.get_key()
        self._project_name = experiment.project_name
        experiment.log_other("Created from", FRAMEWORK_NAME)

    @property
    def experiment(self) -> Any:
        """The Comet experiment (online, or offline with ``online=False``); a dummy on non-zero ranks.

        Created again (continuing the same key) when used after ``finalize``; what the logger has queued is
        sent first, so calls on the experiment come after the logger's.
        """
        if not self._experiment:
            self._create_experiment()
        elif self._sender.pending:
            self._sender.flush()
        return self._experiment

    def _current(self) -> Any:
        return self._experiment if self._experiment else self.experiment

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Log ``params`` as the experiment's parameters (nested ones flattened by Comet)."""
        parameters = redact_nested(_convert_params(params))
        experiment = self._current()
        self._sender.submit(
            experiment.__internal_api__log_parameters__,
            parameters=parameters,
            framework=FRAMEWORK_NAME,
            flatten_nested=True,
            source="manual",
        )

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log ``metrics`` at ``step``; an ``epoch`` entry becomes the epoch of the values, not a metric."""
        values = _detached_values(metrics)
        epoch = values.pop("epoch", None)
        experiment = self._current()
        self._sender.submit(
            experiment.__internal_api__log_metrics__,
            values,
            step=step,
            epoch=epoch,
            prefix=self._prefix,
            framework=FRAMEWORK_NAME,
        )

    def log_graph(self, model: torch.nn.Module, input_array: torch.Tensor | None = None) -> None:
        """Record the model's structure (its text form) as the experiment's graph."""
        if self._experiment is not None:
            self._sender.submit(
                self._experiment.__internal_api__set_model_graph__, graph=model, framework=FRAMEWORK_NAME
            )

    def finalize(self, status: str) -> None:
        """Send what is queued and end the experiment (writing the offline archive); nothing keeps running."""
        if self._experiment is None:
            return  # this process never created one (a non-zero rank, or finalized already)
        experiment = self._experiment
        self._sender.close(_FINALIZE_TIMEOUT)
        self._experiment = None
        self._ended_key = experiment.get_key()
        self._experiment_key = self._ended_key
        experiment.end()

    @property
    def save_dir(self) -> str | None:
        """The offline archive's folder (``offline_directory``), if one was given."""
        directory = self._comet_config.offline_directory
        return None if directory is None else str(directory)

    @property
    def name(self) -> str | None:
        """The project name."""
        return self._project_name

    @property
    def version(self) -> str | None:
        """The experiment key, once an experiment exists."""
        if self._experiment is not None:
            key: str = self._experiment.get_key()
            return key
        return self._ended_key

    def __getstate__(self) -> dict[str, Any]:
        # the experiment holds connections and threads; an unpickled copy continues it by its key
        state = self.__dict__.copy()
        if self._experiment is not None:
            state["_experiment_key"] = self._experiment.get_key()
        state["_experiment"] = None
        del state["_sender"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sender = CallSender("comet-logger-sender")


__all__ = ["FRAMEWORK_NAME", "CometLogger"]
