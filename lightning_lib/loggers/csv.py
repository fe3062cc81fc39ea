"""CSVLogger: metrics to ``metrics.csv`` and hyper-parameters to ``hparams.yaml``.

``save_dir`` is a local folder or an ``s3://bucket[/prefix]`` URI; remote logs go through
:mod:`lightning_lib.storage` (see :class:`RemoteExperimentWriter`).

A fit that resumes from a checkpoint into a version that already has a ``metrics.csv`` keeps its rows and
continues the file: the rows the resumed fit replays (steps the earlier attempt had saved) are not written
again. Lightning's own logger deletes the file then, losing the history before the resume.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from argparse import Namespace
from typing import Any

import torch
import yaml

from lightning_lib.loggers.logger import Logger, _add_prefix, _convert_params, _plain_data
from lightning_lib.storage import ObjectNotFound, ObjectStore, is_remote, join_uri, open_store

_VERSION_DIR = re.compile(r"version_(\d+)", re.ASCII)
_REUSED_WARNING = (
    "Log directory {log_dir} exists and is not empty: its metrics.csv is replaced when new rows are saved"
    " (a fit resuming from a checkpoint keeps and continues it instead), and its hparams.yaml when"
    " hyper-parameters are logged."
)


class ExperimentWriter:
    """Buffers metric rows and writes them to ``log_dir/metrics.csv``; writes ``log_dir/hparams.yaml``.

    Creating the writer creates ``log_dir``. If ``log_dir`` already holds files (a reused version), a
    warning is issued and the old ``metrics.csv`` is replaced by the first save, so a run never appends to
    another run's rows, unless :meth:`continue_existing` (a resumed fit) keeps them first.
    """

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[dict[str, Any]] = []  # rows logged but not yet written
        self.metrics_keys: list[str] = []  # the header of the file, sorted
        self.hparams: dict[str, Any] = {}
        self._rows_logged = 0
        # An earlier metrics.csv is replaced at the first save rather than deleted now: a fit resuming
        # from a checkpoint learns that it resumes only after the writer exists, and then keeps the file.
        self._replace_existing = False
        # Kept rows: each metric's last saved step; None when nothing is to be skipped (see log_metrics).
        self._recorded: dict[str, int] | None = None
        self._recorded_upto = -1
        self._prepare_log_dir()

    def _prepare_log_dir(self) -> None:
        if os.path.isdir(self.log_dir) and os.listdir(self.log_dir):
            # stacklevel: the user call that first logged
            warnings.warn(_REUSED_WARNING.format(log_dir=self.log_dir), UserWarning, stacklevel=5)
            self._replace_existing = os.path.isfile(self.metrics_file_path)
        os.makedirs(self.log_dir, exist_ok=True)

    def continue_existing(self) -> None:
        """Keep the ``metrics.csv`` found when the writer was created, and skip what it already holds.

        For a fit resuming from a checkpoint: the resume is exact, so the rows it replays up to where the
        earlier attempt stopped are the ones already saved. From now on, until :meth:`stop_skipping`, a
        row is dropped when every metric in it is at or before the last step that metric has in the file.
        A last line cut short by a crash is removed. Does nothing once the writer has saved rows itself.
        """
        if not self._replace_existing:
            return
        self._replace_existing = False
        text = self._read_existing()
        if text is None:
            return
        complete = text[: text.rfind("\n") + 1]  # a kill mid-write can leave half a row
        reader = csv.DictReader(io.StringIO(complete, newline=""))
        recorded: dict[str, int] = {}
        for row in reader:
            try:
                step = int(row.get("step") or "")
            except ValueError:
                continue  # not a row this writer wrote: it cannot be replayed either
            for key, value in row.items():
                if key != "step" and value != "" and recorded.get(key, -1) < step:
                    recorded[key] = step
        self._keep_existing(complete, rewrite=complete != text)
        self.metrics_keys = list(reader.fieldnames or [])
        self._recorded = recorded or None
        self._recorded_upto = max(recorded.values(), default=-1)

    def stop_skipping(self) -> None:
        """End the replay that :meth:`continue_existing` started: every row logged from now on is new."""
        self._recorded = None

    def _read_existing(self) -> str | None:
        if not os.path.isfile(self.metrics_file_path):
            return None
        with open(self.metrics_file_path, encoding="utf-8", newline="") as f:
            return f.read()

    def _keep_existing(self, text: str, rewrite: bool) -> None:
        if not rewrite:
            return
        # through a temporary file and a rename, so a crash now cannot lose the complete rows either
        tmp_path = self.metrics_file_path + ".tmp"
        with open(tmp_path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp_path, self.metrics_file_path)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        """Buffer one row; tensors become Python numbers now so later in-place updates do not leak in."""
        recorded = self._recorded
        if recorded is not None and step is not None:
            if step > self._recorded_upto:
                self._recorded = None  # past the kept rows: nothing more to skip
            elif all(step <= recorded.get(key, -1) for key in metrics_dict):
                return  # saved by the earlier attempt
        if step is None:
            # a running count, so rows logged without a step keep distinct steps across flushes
            step = self._rows_logged
        row = {
            key: value.item() if isinstance(value, torch.Tensor) else value
            for key, value in metrics_dict.items()
        }
        row["step"] = step
        self.metrics.append(row)
        self._rows_logged += 1

    def log_hparams(self, params: dict[str, Any]) -> None:
        """Merge ``params`` into the recorded hyper-parameters and rewrite ``hparams.yaml``."""
        self.hparams.update(_plain_data(params))
        with open(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), "w", encoding="utf-8", newline="") as f:
            yaml.safe_dump(self.hparams, f)

    def save(self) -> None:
        """Write the buffered rows; when they bring new keys, rewrite the file under the widened header."""
        if not self.metrics:
            return
        if self._replace_existing:
            self.metrics_keys = []  # the old file's header goes with it
        new_keys = set().union(*self.metrics) - set(self.metrics_keys)
        file_exists = os.path.isfile(self.metrics_file_path) and not self._replace_existing
        self._replace_existing = False
        if new_keys:
            self.metrics_keys = sorted(set(self.metrics_keys) | new_keys)
        if new_keys and file_exists:
            self._rewrite_with_rows(self.metrics)
        else:
            with open(self.metrics_file_path, "a" if file_exists else "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                if not file_exists:
                    writer.writeheader()
                writer.writerows(self.metrics)
        self.metrics = []

    def _rewrite_with_rows(self, rows: list[dict[str, Any]]) -> None:
        # The header is the first line, so a new column means rewriting the file. Go through a temporary
        # file and an atomic rename so a crash mid-write cannot lose the rows already on disk.
        with open(self.metrics_file_path, encoding="utf-8", newline="") as f:
            old_rows = list(csv.DictReader(f))
        tmp_path = self.metrics_file_path + ".tmp"
        with open(tmp_path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(old_rows)
            writer.writerows(rows)
        os.replace(tmp_path, self.metrics_file_path)


class RemoteExperimentWriter(ExperimentWriter):
    """An :class:`ExperimentWriter` whose ``log_dir`` is an ``s3://`` URI, written through an ``ObjectStore``.

    Object stores cannot append to an object, so every :meth:`save` uploads the whole ``metrics.csv``
    again with one ``put_bytes`` (each put is atomic: readers see the previous or the new file, never a
    partial one). The file's text is kept in memory for that; a CSV of scalar metrics stays small, but
    each flush costs one upload of the whole file, so raise ``flush_logs_every_n_steps`` for very long runs.
    The bytes written are the same as the local writer's. Nothing is uploaded until rows are saved or
    hyper-parameters logged: an object store has no folders to create.
    """

    def __init__(self, log_dir: str) -> None:
        self._store: ObjectStore = open_store(log_dir)
        self._text = ""  # the content of metrics.csv as last uploaded (or to be uploaded)
        super().__init__(log_dir)
        self.metrics_file_path = join_uri(log_dir, self.NAME_METRICS_FILE)

    @property
    def store(self) -> ObjectStore:
        """The object store rooted at ``log_dir``."""
        return self._store

    def _prepare_log_dir(self) -> None:
        listing = self._store.list()
        if listing:
            # stacklevel: the user call that first logged
            warnings.warn(_REUSED_WARNING.format(log_dir=self.log_dir), UserWarning, stacklevel=5)
            # _text stays empty, so the first save uploads a new file over it
            self._replace_existing = any(info.key == self.NAME_METRICS_FILE for info in listing)

    def _read_existing(self) -> str | None:
        try:
            return self._store.get_bytes(self.NAME_METRICS_FILE).decode("utf-8")
        except ObjectNotFound:
            return None

    def _keep_existing(self, text: str, rewrite: bool) -> None:
        self._text = text  # what the next save uploads the new rows after
        if rewrite:
            self._store.put_bytes(self.NAME_METRICS_FILE, text.encode("utf-8"))

    def log_hparams(self, params: dict[str, Any]) -> None:
        """Merge ``params`` into the recorded hyper-parameters and upload ``hparams.yaml`` again."""
        self.hparams.update(_plain_data(params))
        self._store.put_bytes(self.NAME_HPARAMS_FILE, yaml.safe_dump(self.hparams).encode("utf-8"))

    def save(self) -> None:
        """Upload the whole ``metrics.csv``: the rows saved before, then the buffered ones.

        On an upload error the buffered rows stay buffered, so the next ``save`` retries them.
        """
        if not self.metrics:
            return
        self._replace_existing = False  # _text is empty then: the upload below replaces the old file
        new_keys = set().union(*self.metrics) - set(self.metrics_keys)
        keys = sorted(set(self.metrics_keys) | new_keys)
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=keys)
        if new_keys or not self._text:
            # A new column changes the header (the first line), so every row is written again under it.
            writer.writeheader()
            writer.writerows(list(csv.DictReader(io.StringIO(self._text, newline=""))))
        else:
            out.write(self._text)
        writer.writerows(self.metrics)
        text = out.getvalue()
        self._store.put_bytes(self.NAME_METRICS_FILE, text.encode("utf-8"))
        self._text, self.metrics_keys, self.metrics = text, keys, []


class CSVLogger(Logger):
    """Log ``save_dir/name/version_N/metrics.csv`` and ``hparams.yaml``, locally or to object storage.

    Args:
        save_dir: Directory that holds the experiments, or an ``s3://bucket[/prefix]`` URI. Remote logs
            are written through :mod:`lightning_lib.storage`; ``root_dir`` and ``log_dir`` are then URIs.
        name: Experiment name; ``None`` or ``""`` puts the versions directly in ``save_dir``.
        version: ``None`` picks the next free ``version_N`` (one past the highest existing N); an int N means
            ``version_N``; a str is used as the folder name as is.
        prefix: Put in front of every metric key, joined with ``"-"``.
        flush_logs_every_n_steps: Write buffered rows to disk after this many ``log_metrics`` calls.

    Nothing is created on disk until something is logged or saved. On object storage, which has no
    folders, nothing is uploaded until metric rows are saved or hyper-parameters logged, and since objects
    cannot be appended to, each save uploads the whole ``metrics.csv`` again (see
    :class:`RemoteExperimentWriter`).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        if flush_logs_every_n_steps < 1:
            raise ValueError(f"Expected flush_logs_every_n_steps >= 1, received {flush_logs_every_n_steps}.")
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._flush_logs_every_n_steps = flush_logs_every_n_steps
        self._experiment: ExperimentWriter | None = None
        self._remote = is_remote(self._save_dir)

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
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``save_dir/name``: the parent of all versions of this experiment."""
        if self._remote:
            return join_uri(self.save_dir, self.name)
        return os.path.join(self.save_dir, self.name)

    @property
    def log_dir(self) -> str:
        """``root_dir/version_N``, or ``root_dir/<version>`` for a str version."""
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        if self._remote:
            return join_uri(self.root_dir, version)
        return os.path.join(self.root_dir, version)

    @property
    def experiment(self) -> ExperimentWriter:
        """The :class:`ExperimentWriter`; created (with the log directory, when local) on first use."""
        if self._experiment is None:
            if self._remote:
                self._experiment = RemoteExperimentWriter(self.log_dir)
                return self._experiment
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ExperimentWriter(self.log_dir)
        return self._experiment

    def log_hyperparams(
        self, params: dict[str, Any] | Namespace | None = None, *args: Any, **kwargs: Any
    ) -> None:
        """Merge ``params`` into ``hparams.yaml`` (written at once, as plain YAML data)."""
        self.experiment.log_hparams(_convert_params(params))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Buffer one row of ``metrics`` at ``step``; flush every ``flush_logs_every_n_steps`` rows."""
        experiment = self.experiment
        experiment.log_metrics(_add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR), step)
        if len(experiment.metrics) >= self._flush_logs_every_n_steps:
            self.save()

    def save(self) -> None:
        """Write the buffered metric rows to ``metrics.csv`` (remote: upload the whole file again)."""
        self.experiment.save()

    def log_graph(self, model: torch.nn.Module, input_array: torch.Tensor | None = None) -> None:
        """Called at the start of a fit: one that resumes from a checkpoint continues the existing rows.

        The graph itself is not recorded (a CSV has no place for it).
        """
        trainer = getattr(model, "_trainer", None)
        if trainer is not None and getattr(trainer, "ckpt_path", None):
            self.experiment.continue_existing()

    def finalize(self, status: str) -> None:
        """Flush the buffered rows; a no-op if nothing was ever logged."""
        if self._experiment is not None:
            self._experiment.stop_skipping()
            self.save()

    def _get_next_version(self) -> int:
        if self._remote:
            return self._get_next_remote_version()
        versions_root = os.path.join(self.save_dir, self.name)
        if not os.path.isdir(versions_root):
            return 0
        existing = [
            int(match.group(1))
            for entry in os.listdir(versions_root)
            if (match := _VERSION_DIR.fullmatch(entry)) and os.path.isdir(os.path.join(versions_root, entry))
        ]
        return max(existing, default=-1) + 1

    def _get_next_remote_version(self) -> int:
        # Object stores have no folders: a version "folder" is the first part of a key with more after it.
        existing = []
        for info in open_store(self.root_dir).list("version_"):
            first, sep, _ = info.key.partition("/")
            if sep and (match := _VERSION_DIR.fullmatch(first)):
                existing.append(int(match.group(1)))
        return max(existing, default=-1) + 1
