"""A background thread that makes a logging client's calls in order, so the training loop never waits on them.

Used by the loggers whose client library does its own work synchronously in the caller's thread (W&B
serialises every ``run.log`` into a protobuf and hands it to its service process; Comet builds and queues
a message): the training thread appends a call to a deque (about a microsecond) and the sender thread
makes it. The thread starts with the first call and ends in :meth:`CallSender.close` (a logger's
``finalize``), so no thread is left behind between runs; a later call starts a new one.

Calls are made in the order they were queued. A call that raises is logged (scrubbed of credentials) and
counted; the thread carries on, since one bad value must not lose every later one. When ``max_pending``
calls wait, the next caller waits for room instead of dropping data.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from lightning_lib.loggers.redact import redact_text

log = logging.getLogger(__name__)

_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class CallSender:
    """Make queued calls on one daemon thread, in order; ``flush`` waits for them, ``close`` ends the thread."""

    def __init__(self, name: str, max_pending: int = 10_000) -> None:
        if max_pending < 1:
            raise ValueError(f"Expected max_pending >= 1, received {max_pending}.")
        self._name = name
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._calls: deque[_Call] = deque()
        self._busy = False  # a call has been taken off the queue and is being made
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        """Calls queued or being made."""
        return len(self._calls) + int(self._busy)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; blocks only while ``max_pending`` calls already wait."""
        with self._cond:
            while len(self._calls) >= self._max_pending and self._alive():
                self._cond.wait(0.1)
            self._calls.append((fn, args, kwargs))
            if not self._alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
                _running.add(self)
                # registered again after the client's own exit handler (set up with its run), so that it
                # runs first (LIFO): queued calls are made while the run can still take them
                atexit.unregister(_close_all)
                atexit.register(_close_all)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued call has been made; False if ``timeout`` seconds passed first."""
        if self._thread is threading.current_thread():
            return True  # a call made by the sender itself must not wait for the sender
        with self._cond:
            return self._cond.wait_for(lambda: not self._calls and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> int:
        """Make the queued calls (for at most ``timeout`` seconds), stop the thread; return the calls left unmade."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.flush(timeout)
        with self._cond:
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()) + 1.0)
        with self._cond:
            left = len(self._calls) + int(self._busy)
            self._calls.clear()
        _running.discard(self)
        if left:
            log.warning(
                "%s: %d logging calls were not made before the %s s deadline.", self._name, left, timeout
            )
        return left

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while True:
                    if self._thread is not me:  # closed: close() flushed first, or gave up on the rest
                        return
                    if self._calls:
                        break
                    self._cond.wait(1.0)
                fn, args, kwargs = self._calls.popleft()
                self._busy = True
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # the thread must survive, or every later call would be lost
                message = redact_text(f"{type(exc).__name__}: {exc}")[:500]
                if self.failures == 0:
                    log.warning(
                        "%s: a logging call failed (%s); later calls are still made.", self._name, message
                    )
                self.failures += 1
                self.last_error = message
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


# Senders with a thread: at interpreter exit their queued calls are made (the thread is a daemon, and a
# logger used without a Trainer may never be finalized).
_running: weakref.WeakSet[CallSender] = weakref.WeakSet()
_EXIT_TIMEOUT = 60.0


def _close_all() -> None:
    for sender in list(_running):
        sender.close(_EXIT_TIMEOUT)
