"""``Profiler``: the base of every profiler the Trainer drives (``Trainer(profiler=...)``).

The Trainer calls ``setup`` at the start of a run, ``profile(action)`` around each hook, step and
dataloader fetch, and ``describe`` when the run ends, which writes ``summary()`` to
``dirpath/<stage>-<filename>.txt`` when a ``filename`` is given, else logs it.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)


class Profiler(ABC):
    """Subclass and implement ``start`` / ``stop`` (and ``summary``) to write a custom profiler."""

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._output_file: TextIO | None = None
        self._write_stream: Callable[[str], Any] | None = None
        self._local_rank: int | None = None
        self._stage: str | None = None

    @abstractmethod
    def start(self, action_name: str) -> None:
        """Start recording ``action_name``."""

    @abstractmethod
    def stop(self, action_name: str) -> None:
        """Stop recording ``action_name``."""

    def summary(self) -> str:
        """The report ``describe`` writes."""
        return ""

    @contextmanager
    def profile(self, action_name: str) -> Iterator[str]:
        """Record the duration of the ``with`` block as ``action_name``."""
        try:
            self.start(action_name)
            yield action_name
        finally:
            self.stop(action_name)

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        """Called by the Trainer when a run starts: the entry point, the process's local rank, the log dir."""
        self._stage = stage
        self._local_rank = local_rank
        self.dirpath = self.dirpath or log_dir

    def teardown(self, stage: str | None) -> None:
        """Close the report file, if one is open."""
        self._write_stream = None
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    def describe(self) -> None:
        """Write the report: to ``dirpath/<stage>-<filename>.txt`` with a ``filename``, else to the log."""
        self._prepare_streams()
        report = self.summary()
        if report and self._write_stream is not None:
            self._write_stream(report)
        if self._output_file is not None:
            self._output_file.flush()
        self.teardown(stage=self._stage)

    @property
    def local_rank(self) -> int:
        return 0 if self._local_rank is None else self._local_rank

    def _rank_zero_info(self, *args: Any, **kwargs: Any) -> None:
        if self._local_rank in (None, 0):
            log.info(*args, **kwargs)

    def _prepare_filename(self, action_name: str | None = None, extension: str = ".txt") -> str:
        parts = [
            part
            for part in (
                self._stage,
                self.filename,
                None if self._local_rank is None else str(self._local_rank),
                action_name,
            )
            if part
        ]
        # one file name on every platform: characters a path cannot hold become "_"
        base = re.sub(r"_+", "_", re.sub(r"[\\/:*?\"<>|\n\r\t]", "_", "-".join(parts))).strip()
        return (base or "profile") + extension

    def _prepare_streams(self) -> None:
        if self._write_stream is not None:
            return
        if self.filename and self.dirpath:
            os.makedirs(self.dirpath, exist_ok=True)
            handle = open(os.path.join(self.dirpath, self._prepare_filename()), "a")  # noqa: SIM115
            self._output_file = handle
            self._write_stream = handle.write
        else:
            self._write_stream = self._rank_zero_info

    def _stats_to_str(self, stats: dict[str, str]) -> str:
        lines = [f"{self._stage.upper()} Profiler Report" if self._stage else "Profiler Report"]
        for action, value in stats.items():
            header = f"Profile stats for: {action}"
            if self._local_rank is not None:
                header += f" rank: {self._local_rank}"
            lines += [header, value]
        return os.linesep.join(lines)

    def __del__(self) -> None:
        # a file left open by a run that never reached describe() is closed with the profiler
        output = self.__dict__.get("_output_file")
        if output is not None:
            output.close()


class PassThroughProfiler(Profiler):
    """Records nothing: the Trainer's default, which costs nothing per hook."""

    def start(self, action_name: str) -> None:
        """Nothing to record."""

    def stop(self, action_name: str) -> None:
        """Nothing to record."""


__all__ = ["PassThroughProfiler", "Profiler"]
