"""TensorBoardLogger: metrics, hyper-parameters and the model graph as TensorBoard event files.

``tensorboard`` is an optional extra (``pip install lightning_lib[tensorboard]``), imported when the
logger first writes, never by ``import lightning_lib``. The events go through torch's ``SummaryWriter``,
whose writer thread does the file I/O: a logging call only queues an event. ``finalize`` (called at the
end of every fit / validate / test, successful or not) flushes and closes the writer, joining that
thread; a later run opens a new event file in the same ``log_dir``.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import yaml

from lightning_lib.loggers.logger import (
    Logger,
    _add_prefix,
    _convert_params,
    _flatten_dict,
    _plain_data,
    _sanitize_params,
)
from lightning_lib.storage import is_remote

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from lightning_lib.callbacks.model_checkpoint import ModelCheckpoint


def _require_tensorboard() -> None:
    # looked up, not imported: the import (torch's SummaryWriter writes through it) waits for the first event
    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError(
            "TensorBoardLogger needs the `tensorboard` package: pip install 'lightning_lib[tensorboard]'."
        )


class TensorBoardLogger(Logger):
    """Log to ``save_dir/name/version_N`` (``/sub_dir``) in TensorBoard's format (Lightning's arguments).

    Args:
        save_dir: local folder holding the experiments (``~`` and environment variables are expanded).
        name: experiment name; ``None`` or ``""`` puts the versions directly in ``save_dir``.
        version: ``None`` picks the next free ``version_N``; an int N means ``version_N``; a str is the
            folder name as is.
        log_graph: add the model's graph (traced with ``model.example_input_array``) when training starts.
        default_hp_metric: log ``hp_metric = -1`` with the hyper-parameters when no metric is given, so
            TensorBoard's HParams tab lists the run.
        prefix: put in front of every metric key, joined with ``"-"``.
        sub_dir: a folder under the version folder for the event files.
        **kwargs: passed to ``SummaryWriter`` (``max_queue``, ``flush_secs``, ``filename_suffix``, ...).
    """

    NAME_HPARAMS_FILE = "hparams.yaml"
    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        root = os.fspath(save_dir)
        if is_remote(root):
            raise ValueError(
                f"Expected a local save_dir for TensorBoardLogger, received {root!r}: remote event files are not"
                " supported in this version (CSVLogger and MLFlowLogger write to object storage)."
            )
        _require_tensorboard()
        self._root_dir = root
        self._name = name or ""
        self._version = version
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._kwargs = kwargs
        self._experiment: SummaryWriter | None = None
        self.hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        """The experiment name (``""`` when none was given)."""
        return self._name

    @property
    def version(self) -> int | str:
        """The experiment version; when not given, the next free number, fixed at first access."""
        if self._version is None:
            self._version = self._get_next_version()
        return self._version

    @property
    def save_dir(self) -> str:
        """The directory given as ``save_dir``."""
        return self._root_dir

    @property
    def root_dir(self) -> str:
        """``save_dir/name``: the parent of all versions of this experiment."""
        return os.path.join(self._root_dir, self.name)

    @property
    def log_dir(self) -> str:
        """``root_dir/version_N`` (or ``root_dir/<version>``), then ``sub_dir``: where the event files go."""
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        log_dir = os.path.join(self.root_dir, version)
        if isinstance(self.sub_dir, str):
            log_dir = os.path.join(log_dir, self.sub_dir)
        return os.path.expanduser(os.path.expandvars(log_dir))

    @property
    def sub_dir(self) -> str | None:
        """The folder under the version folder for the event files, if any."""
        return self._sub_dir

    @property
    def experiment(self) -> SummaryWriter:
        """The ``SummaryWriter`` (created on first use, with its folders); use it for images, histograms, ..."""
        if self._experiment is None:
            from torch.utils.tensorboard import SummaryWriter

            if self.root_dir:
                os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Add each metric as a scalar at ``step`` (a dict value becomes ``add_scalars``)."""
        for key, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if isinstance(value, dict):
                self.experiment.add_scalars(key, value, step)
                continue
            try:
                self.experiment.add_scalar(key, value, step)
            except Exception as err:
                raise ValueError(
                    f"\n you tried to log {value} which is currently not supported. Try a dict or a scalar/tensor."
                ) from err

    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace | None,
        metrics: dict[str, Any] | float | None = None,
        step: int | None = None,
    ) -> None:
        """Record ``params`` for the HParams tab, with ``metrics`` (or ``hp_metric = -1``); kept for hparams.yaml.

        TensorBoard shows hyper-parameters only for runs that logged them before their metrics; logs of
        runs with and without them are not shown together.
        """
        converted = _convert_params(params)
        self.hparams.update(converted)
        # TensorBoard takes numbers, bools and strings: anything else is shown as its str()
        flat = _sanitize_params(_flatten_dict(converted))
        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else None
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if not metrics:
            return
        self.log_metrics(metrics, step)
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, session_end = hparams(flat, metrics)
        writer = self.experiment._get_file_writer()
        for summary in (experiment, session_start, session_end):
            writer.add_summary(summary, step)

    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Add ``model``'s graph, traced with ``input_array`` or ``model.example_input_array`` (with ``log_graph``)."""
        if not self._log_graph:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `model.example_input_array` attribute"
                " is not set or `input_array` was not given.",
                UserWarning,
                stacklevel=2,
            )
            return
        if not isinstance(input_array, torch.Tensor | tuple):
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `input_array` or `model.example_input_array`"
                f" has type {type(input_array)} which can't be traced by TensorBoard. Make the input array a tuple"
                " representing the positional arguments to the model's `forward()` implementation.",
                UserWarning,
                stacklevel=2,
            )
            return
        input_array = _to_model_device(model, input_array)
        self.experiment.add_graph(model, input_array)

    def save(self) -> None:
        """Flush the events; write ``hparams.yaml`` into ``log_dir`` once it exists (never rewritten)."""
        if self._experiment is not None:
            self._experiment.flush()
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if os.path.isdir(self.log_dir) and not os.path.isfile(hparams_file):
            with open(hparams_file, "w", encoding="utf-8", newline="") as handle:
                yaml.safe_dump(_plain_data(self.hparams), handle)

    def finalize(self, status: str) -> None:
        """Flush and close the writer (its thread ends); on success write ``hparams.yaml`` if not yet there."""
        if self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
        if status == "success":
            self.save()

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """Checkpoints are not logged to TensorBoard."""

    def _get_next_version(self) -> int:
        try:
            entries = os.listdir(self.root_dir)
        except OSError:
            return 0
        existing = [
            int(entry[len("version_") :])
            for entry in entries
            if entry.startswith("version_")
            and entry[len("version_") :].isdigit()
            and os.path.isdir(os.path.join(self.root_dir, entry))
        ]
        return max(existing, default=-1) + 1

    def __getstate__(self) -> dict[str, Any]:
        # the writer holds a thread and open files: a pickled or copied logger opens its own when it logs
        state = self.__dict__.copy()
        state["_experiment"] = None
        return state


def _to_model_device(model: torch.nn.Module, input_array: Any) -> Any:
    """The example input on the model's device, through the module's batch-transfer hooks when it has them."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    before = getattr(model, "on_before_batch_transfer", None)
    transfer = getattr(model, "transfer_batch_to_device", None)
    after = getattr(model, "on_after_batch_transfer", None)
    if callable(before) and callable(transfer) and callable(after):
        return after(transfer(before(input_array, 0), device, 0), 0)
    if isinstance(input_array, torch.Tensor):
        return input_array.to(device)
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in input_array)
