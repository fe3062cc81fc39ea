"""The background sender: the training thread queues, one daemon thread delivers in batches.

The training thread only appends tuples to a deque, usually without taking a lock (about a microsecond;
see :meth:`MetricSender.add_metrics`). The sender thread sends when a batch is full (1000 metric values,
MLflow's limit per request), when the oldest queued value has waited ``interval`` seconds, or when asked
to flush. A flush sends what was queued when it was asked for, not what keeps arriving while its
requests are in flight: otherwise one flush during training turns into a stream of small requests, each
costing the server about as much CPU as a full batch. A failed request is retried with exponential
backoff and jitter; while the server is away values keep queueing up to ``max_buffer``, after which the
oldest are dropped (and counted). A request the server refuses (4xx) is split in halves until the bad
value is isolated, so one bad name costs one value, not a thousand. ``close`` gives the sender a
deadline and returns a :class:`DeliveryReport` of everything that did not arrive, with numbers.

The run itself may be created by the sender thread (``opener``): its requests then overlap the first
training steps instead of preceding them, and whoever needs the run id waits for it (:meth:`wait_open`).
``close`` may carry one last operation (the run's final status), sent after everything else queued in the
same pass of the thread, without a round trip through the caller.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_lib.loggers.mlflow._params import MAX_METRICS_PER_BATCH
from lightning_lib.loggers.mlflow._transport import Record, Transport, is_permanent
from lightning_lib.loggers.redact import redact_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``initial * factor**attempt`` seconds, at most ``maximum``, +-20 % jitter."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.factor**attempt)
        return base * rng.uniform(0.8, 1.2)


@dataclass
class MetricLoss:
    """What was lost of one metric: how many values, which steps, and the last value itself."""

    count: int = 0
    first_step: int | None = None
    last_step: int | None = None
    last_value: float | None = None

    def add(self, record: Record) -> None:
        _, value, _, step = record
        self.count += 1
        if self.first_step is None or step < self.first_step:
            self.first_step = step
        if self.last_step is None or step >= self.last_step:
            self.last_step, self.last_value = step, value


@dataclass
class DeliveryReport:
    """What the sender delivered and, above all, what it could not deliver."""

    run_id: str
    delivered_metrics: int = 0
    lost_metrics: dict[str, MetricLoss] = field(default_factory=dict)
    lost_records: list[Record] = field(default_factory=list)  # the values themselves, oldest first
    dropped_on_overflow: int = 0
    failures: list[str] = field(default_factory=list)  # params, tags, inputs, status updates
    # the params and tags themselves (kind, [(key, value)]), so that an application can deliver them later
    lost_items: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    last_error: str | None = None

    @property
    def ok(self) -> bool:
        """True when everything queued was delivered."""
        return not self.lost_metrics and not self.failures

    def lose(self, records: Sequence[Record], keep: int) -> None:
        for record in records:
            self.lost_metrics.setdefault(record[0], MetricLoss()).add(record)
        room = keep - len(self.lost_records)
        if room > 0:
            self.lost_records.extend(records[:room])

    def summary(self) -> str:
        """A human-readable account with numbers: per metric the count, steps and last value lost."""
        if self.ok:
            return f"MLflow run {self.run_id}: all {self.delivered_metrics} metric values were delivered."
        lines = [f"MLflow run {self.run_id}: not everything was delivered (last error: {self.last_error})."]
        if self.lost_metrics:
            total = sum(loss.count for loss in self.lost_metrics.values())
            lines.append(
                f"{total} metric values were not delivered ({self.dropped_on_overflow} dropped because the"
                f" buffer was full); {self.delivered_metrics} were. Per metric:"
            )
            for key, loss in sorted(self.lost_metrics.items()):
                lines.append(
                    f"  {key}: {loss.count} values, steps {loss.first_step}..{loss.last_step},"
                    f" last value {loss.last_value!r} at step {loss.last_step}"
                )
        lines.extend(f"  not recorded: {failure}" for failure in self.failures)
        return "\n".join(lines)


# One unit of work: ("metrics", [Record]), ("params", [Pair]), ("tags", [Pair]),
# ("inputs", [DatasetSpec]) or ("status", [(status, end_time)]).
_Work = tuple[str, list[Any]]


class MetricSender:
    """Queues metrics, params, tags, dataset inputs and status updates; delivers them from a thread."""

    def __init__(
        self,
        transport: Transport,
        run_id: str | None,
        *,
        max_buffer: int = 100_000,
        interval: float = 1.0,
        batch_size: int = MAX_METRICS_PER_BATCH,
        retry: RetryPolicy | None = None,
        opener: Callable[[], str] | None = None,
    ) -> None:
        """``run_id`` is the run to deliver to; with ``opener`` (and ``run_id=None``) the thread first calls
        ``opener()`` to create the run and uses the id it returns. Nothing is sent before that."""
        if (run_id is None) == (opener is None):
            raise ValueError(
                f"Expected exactly one of run_id and opener, received run_id={run_id!r} and opener={opener!r}."
            )
        if max_buffer < 1:
            raise ValueError(f"Expected max_buffer >= 1, received {max_buffer}.")
        self._transport = transport
        self._run_id = run_id
        self._max_buffer = max_buffer
        self._interval = interval
        self._batch_size = min(batch_size, MAX_METRICS_PER_BATCH)
        self._lock_free_below = min(self._batch_size, max_buffer)
        self._retry = retry or RetryPolicy()
        self._rng = random.Random()  # jitter must not consume the global RNG that training seeds
        self._cond = threading.Condition()
        self._metrics: deque[Record] = deque()
        self._ops: deque[_Work] = deque()
        self._oldest: float | None = None  # monotonic time the oldest queued metric arrived
        # Counts of metric values since the start: taken off the queue (sent, being sent, dropped or given
        # up), and how many must have been taken for the last flush to be done.
        self._taken = 0
        self._flush_upto = 0
        self._inflight: _Work | None = None
        self._closing = False
        self._deadline: float | None = None
        self._abandoned = False
        self._healthy = True
        self._final: _Work | None = None  # sent by close after everything else
        self._opener = opener
        self._opened = threading.Event()
        if opener is None:
            self._opened.set()
        self.open_error: BaseException | None = None  # why opener() failed; the thread has ended then
        self.report = DeliveryReport(run_id or "")
        name = f"mlflow-sender-{run_id[:8]}" if run_id else "mlflow-sender"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---- the training thread's side ------------------------------------------------------------------
    def add_metrics(self, records: list[Record]) -> None:
        """Queue metric values; the oldest are dropped (and reported) beyond ``max_buffer``.

        The common case takes no lock: ``deque.extend`` of a list is atomic under the GIL, and the sender
        needs no wake-up while values already wait for its timer, the batch is not full and nothing is
        dropped. Should the sender empty the queue between the checks and the append, it finds the new
        values at its next look (it never sleeps longer than the interval while idle).
        """
        metrics = self._metrics
        if (
            self._oldest is not None
            and not self._closing
            and len(metrics) + len(records) < self._lock_free_below
        ):
            metrics.extend(records)
            return
        with self._cond:
            if self._closing:
                self.report.lose(records, self._max_buffer)
                return
            self._metrics.extend(records)
            overflow = len(self._metrics) - self._max_buffer
            if overflow > 0:
                dropped = [self._metrics.popleft() for _ in range(overflow)]
                self._taken += overflow
                self.report.dropped_on_overflow += overflow
                self.report.lose(dropped, self._max_buffer)
            if self._oldest is None:
                self._oldest = time.monotonic()
                self._cond.notify()  # the thread sleeps without a timeout while nothing is queued
            elif len(self._metrics) >= self._batch_size:
                self._cond.notify()

    def add(self, kind: str, items: Sequence[Any]) -> None:
        """Queue ``params``, ``tags``, ``inputs`` or a ``status`` update; they go before queued metrics."""
        with self._cond:
            if self._closing:
                self.report.failures.append(f"{kind} queued after close: {list(items)!r}")
                return
            self._ops.append((kind, list(items)))
            self._cond.notify()

    def flush(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Send what is queued now; with ``wait``, block until delivered (True) or ``timeout`` (False)."""
        with self._cond:
            target = self._flush_upto = self._taken + len(self._metrics)
            self._cond.notify_all()
            if not wait:
                return True
            self._cond.wait_for(lambda: self._flushed(target) or self._abandoned, timeout)
            return self._flushed(target)  # not when the thread gave up (or never created the run)

    @property
    def healthy(self) -> bool:
        """False while the last request failed and nothing has succeeded since."""
        return self._healthy

    def wait_open(self, timeout: float | None = None) -> str:
        """The run id, once the run exists: ``opener``'s result (waiting for it) or the one given.

        Raises what ``opener`` raised, or ``TimeoutError`` when ``timeout`` passes first."""
        if not self._opened.wait(timeout):
            raise TimeoutError(f"Expected the MLflow run within {timeout}s, it is still being created.")
        if self.open_error is not None:
            raise self.open_error
        assert self._run_id is not None  # set before _opened without an error
        return self._run_id

    def close(self, timeout: float, final: tuple[str, Sequence[Any]] | None = None) -> DeliveryReport:
        """Deliver what is queued within ``timeout`` seconds, stop the thread, return the report.

        ``final`` (``("status", [(status, end_time)])``) is sent last, once everything else is delivered
        (or given up) in this same pass."""
        with self._cond:
            if final is not None:
                self._final = (final[0], list(final[1]))
            self._closing = True
            self._deadline = time.monotonic() + max(0.0, timeout)
            self._cond.notify_all()
        self._thread.join(max(0.0, timeout) + 1.0)
        with self._cond:
            if self._thread.is_alive():  # stuck inside a request: stop waiting for it
                self._abandoned = True
                if self._inflight is not None:
                    self._give_up(self._inflight, "no answer before the deadline")
                self._give_up_pending("no answer before the deadline")
                self._cond.notify_all()
            elif self._metrics or self._ops or self._final is not None:
                # logged by another thread while this one was closing, or the run was never created
                self._give_up_pending(self._stopped_reason("logged while the sender was closing"))
        return self.report

    # ---- the sender thread -------------------------------------------------------------------------
    def _flushed(self, target: int) -> bool:
        """Whether the first ``target`` metric values and every queued operation are done with."""
        return self._taken >= target and not self._ops and self._inflight is None

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _stopped_reason(self, default: str) -> str:
        if self.open_error is None:
            return default
        return "the run was not created: " + redact_text(
            f"{type(self.open_error).__name__}: {self.open_error}"
        )

    def _next_work(self) -> _Work | None:
        if self._ops:
            return self._ops.popleft()
        if not self._metrics:
            if self._closing and self._final is not None and self._inflight is None:
                work, self._final = self._final, None
                return work
            return None
        if self._oldest is None:  # appended without the lock just as the queue was emptied
            self._oldest = time.monotonic()
        due = (
            len(self._metrics) >= self._batch_size
            or self._taken < self._flush_upto
            or self._closing
            or (self._oldest is not None and time.monotonic() - self._oldest >= self._interval)
        )
        if not due:
            return None
        n = min(self._batch_size, len(self._metrics))
        batch = [self._metrics.popleft() for _ in range(n)]
        self._taken += n
        self._oldest = time.monotonic() if self._metrics else None
        return ("metrics", batch)

    def _wait_time(self) -> float:
        if self._oldest is None:  # idle: look again now and then, for values appended without a wake-up
            return max(self._interval, 0.1)
        return max(0.0, self._oldest + self._interval - time.monotonic())

    def _open(self) -> bool:
        """Create the run with ``opener``; False (the thread stops, callers get the error) if it failed."""
        assert self._opener is not None
        try:
            run_id = self._opener()
        except BaseException as exc:  # re-raised to whoever waits for the run (wait_open)
            with self._cond:
                self.open_error = exc
                self.report.last_error = redact_text(f"{type(exc).__name__}: {exc}")[:500]
                self._abandoned = True  # flush(wait=True) returns False at once from now on
                self._opened.set()
                self._cond.notify_all()
            return False
        with self._cond:
            self._run_id = run_id
            self.report.run_id = run_id
            self._opened.set()
        return True

    def _loop(self) -> None:
        if self._opener is not None and not self._open():
            return
        while True:
            with self._cond:
                while True:
                    if self._abandoned:
                        return
                    if self._closing and self._past_deadline():
                        self._give_up_pending(self.report.last_error or "the deadline passed")
                        self._cond.notify_all()
                        return
                    work = self._next_work()
                    if work is not None:
                        self._inflight = work
                        break
                    if self._closing:
                        self._cond.notify_all()
                        return
                    self._cond.notify_all()  # wake flush(wait=True) callers: nothing is left
                    self._cond.wait(self._wait_time())
            try:
                self._deliver(work)
            except Exception:  # the thread must survive anything, or every later value would be lost
                log.exception("The MLflow sender failed on %s", work[0])
            with self._cond:
                self._inflight = None
                self._cond.notify_all()

    def _send(self, work: _Work) -> None:
        kind, items = work
        run_id = self._run_id
        assert run_id is not None  # nothing is taken off the queue before the run exists
        if kind == "metrics":
            self._transport.log_batch(run_id, items, (), ())
        elif kind == "params":
            self._transport.log_batch(run_id, (), items, ())
        elif kind == "tags":
            self._transport.log_batch(run_id, (), (), items)
        elif kind == "inputs":
            self._transport.log_inputs(run_id, items)
        elif kind == "status":
            ((status, end_time),) = items
            self._transport.update_run(run_id, status, end_time)
        else:
            raise ValueError(f"Unknown kind of work {kind!r}")

    def _deliver(self, work: _Work) -> None:
        attempt = 0
        while True:
            try:
                self._send(work)
            except Exception as exc:
                message = redact_text(f"{type(exc).__name__}: {exc}")[:500]
                with self._cond:
                    if self._abandoned:
                        return
                    self.report.last_error = message
                    if is_permanent(exc):
                        self._refused(work, message)
                        return
                    self._healthy = False
                    if attempt == 0:
                        log.warning("MLflow is not reachable (%s); retrying in the background.", message)
                    if not (self._closing and self._past_deadline()):
                        self._cond.wait_for(
                            lambda: self._abandoned or (self._closing and self._past_deadline()),
                            self._retry.delay(attempt, self._rng),
                        )
                    if self._abandoned:
                        return
                    if self._closing and self._past_deadline():
                        self._give_up(work, message)
                        return
                attempt += 1
                continue
            with self._cond:
                if not self._abandoned:
                    if not self._healthy:
                        log.warning("MLflow is reachable again; delivering what was queued.")
                    self._healthy = True
                    if work[0] == "metrics":
                        self.report.delivered_metrics += len(work[1])
            return

    def _refused(self, work: _Work, message: str) -> None:
        """The server refused the request: isolate the bad item by splitting, lose only that one."""
        kind, items = work
        if kind in ("metrics", "params", "tags") and len(items) > 1:
            half = len(items) // 2
            self._ops.appendleft((kind, items[half:]))
            self._ops.appendleft((kind, items[:half]))
            return
        log.warning("MLflow refused %s %r: %s", kind, items, message)
        self._give_up(work, message)

    def _give_up(self, work: _Work, reason: str) -> None:
        kind, items = work
        if kind == "metrics":
            self.report.lose(items, self._max_buffer)
        else:
            self.report.failures.append(f"{kind} {items!r}: {reason}")
            if kind in ("params", "tags"):
                self.report.lost_items.append((kind, list(items)))

    def _give_up_pending(self, reason: str) -> None:
        while self._ops:
            self._give_up(self._ops.popleft(), reason)
        if self._final is not None:
            self._give_up(self._final, reason)
            self._final = None
        if self._metrics:
            self.report.lose(list(self._metrics), self._max_buffer)
            self._taken += len(self._metrics)
            self._metrics.clear()
        self._oldest = None
