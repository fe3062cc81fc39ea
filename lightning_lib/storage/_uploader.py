"""``BackgroundUploader``: run uploads off the training thread, one at a time, never losing an error."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class BackgroundUploader:
    """Runs jobs on one worker thread with at most one job in flight.

    ``submit`` first waits for the previous job, so at most one snapshot is held for upload at a time
    and memory stays bounded. A job's exception is raised by the next ``submit`` or by ``wait``
    (whichever comes first, exactly once), so an upload failure is never silently lost.
    """

    def __init__(self, name: str = "lightning-lib-upload") -> None:
        # A non-daemon worker: interpreter shutdown waits for a running upload instead of cutting it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: Future[Any] | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def busy(self) -> bool:
        """Whether a job is still running."""
        pending = self._pending
        return pending is not None and not pending.done()

    def _settle(self) -> None:
        """Wait for the job in flight and re-raise its error; clears it first so it is raised once."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Wait for the previous job (raising its error, in which case ``fn`` is not started), then start ``fn``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("BackgroundUploader.submit() called after close().")
            self._settle()
            self._pending = self._executor.submit(fn, *args, **kwargs)
            return self._pending

    def wait(self) -> None:
        """Block until no job is in flight; raise the error of a job that failed since the last check."""
        with self._lock:
            self._settle()

    def close(self) -> None:
        """Wait for the job in flight (raising its error), then stop the worker thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._settle()
            finally:
                self._executor.shutdown(wait=True)

    def __enter__(self) -> BackgroundUploader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Already unwinding from another error: do not replace it, but do not lose the upload's either.
        try:
            self.close()
        except Exception:
            log.exception("A background upload failed while another error was being raised")
