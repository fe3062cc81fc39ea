"""A lease on a run key: one fit at a time per checkpoint folder, the holder named to whoever is refused.

Two fits of one run key (a double-submitted run, a zombie attempt still running while its flow run is
retried) would train side by side, log into the one MLflow run and race for checkpoint names. So a fit
first claims the run key with an object in its checkpoint folder, and a second fit is refused before it
trains, commits or logs anything.

The protocol uses only what every ``ObjectStore`` offers (a put with ``if_none_match`` is atomic on a local
folder and on S3):

- Claims are generations: ``lease-000001.json``, ``lease-000002.json``, ... each written with
  ``if_none_match``, so of two processes claiming the same generation exactly one wins. The claim names
  the holder (flow run, host, pid, since). The highest generation is the current one.
- The holder renews by rewriting ``lease-NNNNNN.heartbeat`` every ``ttl / 8`` seconds from a thread; the
  lease expires ``ttl`` seconds after the last renewal (``LIGHTNING_LIB_RUN_LEASE_TTL_S``, default 120).
- A claimant re-lists after its claim: a claim of a generation that was already deleted (a claimant with a
  stale view, when a newer generation exists) is withdrawn and the claimant looks again.
- It is released (``lease-NNNNNN.released``) when the fit ends, whether it succeeded or failed.
- A newcomer takes the run key over, by claiming the next generation, when the current lease is released,
  expired, held by a process of this machine that is gone (pid and process start time, so a reused pid
  does not count as alive; boot id, so a reboot does), or held by an earlier attempt in this very process
  that ended without releasing it (Prefect's retry of a failed attempt when storage failed the release
  too). Anything else is refused with :class:`RunKeyBusyError`.
- A holder that finds a newer generation at its next renewal, or whose last successful renewal is older
  than 0.8 of its ttl (a store outage, or a store call that hangs: a newcomer may soon think it expired),
  has lost the lease; :meth:`RunLease.check` then raises :class:`LeaseLostError` and the fit stops at its
  next batch. ``check`` measures the age itself, so a renewal call that hangs (the ``ObjectStore`` API has
  no per-call timeout: boto3's own connect/read timeouts and retries bound it, minutes at worst) cannot
  delay the fence; the age counts from the moment the renewal's timestamp was taken, which is what other
  hosts compare with.

Hosts' clocks must agree to well within the ttl (NTP): expiry compares one host's renewal time with
another's clock. The objects are loose files at the top of the checkpoint folder, which checkpoint
readers and the orphan cleanup (first-level folders only) never touch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from lightning_lib.storage import ObjectNotFound, ObjectStore, PreconditionFailed, join_uri

log = logging.getLogger(__name__)

TTL_ENV = "LIGHTNING_LIB_RUN_LEASE_TTL_S"
DEFAULT_TTL_S = 120.0
_MIN_TTL_S = 2.0
_CLAIM = re.compile(r"^lease-(\d{6})\.json$")
_SELF_FENCE = 0.8  # share of the ttl without a successful renewal after which a holder stops by itself
_RENEWALS_PER_TTL = 8  # several tries fit in the ttl's first 0.8, so one slow or failed call is no loss
_now = time.monotonic  # the clock of renewals and the fence (tests replace it)

# Tokens of the leases this process holds now: a lease of this pid whose token is not here was left by an
# attempt that has ended (so a retry takes it over); one whose token is here is a concurrent fit.
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


class RunKeyBusyError(RuntimeError):
    """Another fit holds the run key's lease: refused before any work (not retried: the holder is busy)."""


class LeaseLostError(RuntimeError):
    """This fit's lease was taken over (or could not be renewed in time): it stops instead of mixing."""


def lease_ttl() -> float:
    """The lease's ttl in seconds from ``LIGHTNING_LIB_RUN_LEASE_TTL_S`` (default 120)."""
    text = os.environ.get(TTL_ENV)
    if not text:
        return DEFAULT_TTL_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= _MIN_TTL_S:  # also false for NaN
        raise ValueError(
            f"Expected {TTL_ENV} to be a number of seconds >= {_MIN_TTL_S:g}, received {text!r}."
        )
    return value


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # the command name may hold spaces and parentheses


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), to tell it from a later one with its pid."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, but it exists
    current = process_start(pid)
    return start is None or current is None or current == start


def ancestors() -> set[int]:
    """The pids above this process (its parent, the parent's parent, ...), from /proc; empty without it."""
    found: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        fields = _stat(pid)
        if not fields or len(fields) < 2:
            break
        pid = int(fields[1])
    return found


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a generation of the lease."""

    generation: int
    token: str
    run_key: str
    host: str
    pid: int
    pid_start: str | None
    boot_id: str | None
    flow_run_id: str | None
    flow_run_name: str | None
    since: float
    ttl: float

    def describe(self, renewed_at: float | None = None) -> str:
        flow = (
            f"flow run {self.flow_run_name or '?'} ({self.flow_run_id})"
            if self.flow_run_id
            else "no flow run"
        )
        renewed = renewed_at if renewed_at is not None else self.since
        return (
            f"{flow}, host {self.host}, pid {self.pid}, since {_iso(self.since)}, last renewed "
            f"{_iso(renewed)}, expires {_iso(renewed + self.ttl)} unless renewed"
        )

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == _boot_id()


@dataclass(frozen=True)
class _Current:
    holder: Holder
    renewed_at: float
    released: bool


def _claim_key(generation: int) -> str:
    return f"lease-{generation:06d}.json"


def _heartbeat_key(generation: int) -> str:
    return f"lease-{generation:06d}.heartbeat"


def _released_key(generation: int) -> str:
    return f"lease-{generation:06d}.released"


def _generations(store: ObjectStore) -> list[tuple[int, float]]:
    """(generation, mtime) of every claim, oldest first."""
    found = []
    for info in store.list("lease-"):
        match = _CLAIM.match(info.key)
        if match:
            found.append((int(match.group(1)), info.mtime))
    return sorted(found)


def _read_json(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(store.get_bytes(key))
    except ObjectNotFound:
        return None
    except ValueError:
        return {}  # present but unreadable
    return data if isinstance(data, dict) else {}


def _current(store: ObjectStore, run_key: str) -> _Current | None:
    generations = _generations(store)
    if not generations:
        return None
    generation, mtime = generations[-1]
    claim = _read_json(store, _claim_key(generation))
    if claim is None:
        raise ObjectNotFound(f"{_claim_key(generation)} disappeared while being read")  # caller looks again
    try:
        holder = Holder(**{**claim, "generation": generation})
    except TypeError:
        # garbage in a claim: nobody can renew it, so it is treated as a holder that renewed at its write
        holder = Holder(generation, "?", run_key, "unknown", -1, None, None, None, None, mtime, lease_ttl())
    beat = _read_json(store, _heartbeat_key(generation)) or {}
    renewed = beat.get("renewed_at")
    renewed_at = float(renewed) if isinstance(renewed, int | float) else holder.since
    return _Current(holder, max(renewed_at, holder.since), store.exists(_released_key(generation)))


def _vacancy(current: _Current) -> str | None:
    """Why the current lease may be taken over, or None when its holder must be presumed at work."""
    holder = current.holder
    if current.released:
        return "it was released"
    if holder.on_this_machine():
        if holder.pid == os.getpid() and holder.pid_start == process_start(os.getpid()):
            with _ACTIVE_LOCK:
                if holder.token in _ACTIVE:
                    return None  # a concurrent fit in this process
            return "an earlier attempt in this process ended without releasing it"
        if not _alive(holder.pid, holder.pid_start):
            return f"its process {holder.pid} on this machine is gone"
    if time.time() > current.renewed_at + holder.ttl:
        return f"it expired at {_iso(current.renewed_at + holder.ttl)}"
    return None


def _deactivate(token: str) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(token)


def _newer_generation(store: ObjectStore, generation: int) -> int | None:
    """The highest claimed generation when it is above ``generation``, else None."""
    generations = _generations(store)
    return generations[-1][0] if generations and generations[-1][0] > generation else None


def held_by_ancestor(store: ObjectStore, run_key: str) -> Holder | None:
    """The current holder when it is a live process above this one on this machine (the fit task that
    launched this rank with torchrun), else None."""
    with contextlib.suppress(ObjectNotFound):
        current = _current(store, run_key)
        if current is None or current.released:
            return None
        holder = current.holder
        if holder.on_this_machine() and holder.pid in ancestors() and _alive(holder.pid, holder.pid_start):
            return holder
    return None


def _flow_run() -> tuple[str | None, str | None]:
    """The Prefect flow run this process works for, if any (never imports Prefect when it is not loaded)."""
    import sys

    if "prefect" not in sys.modules:
        return None, None
    try:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return None, None
        return str(context.flow_run.id), str(context.flow_run.name)
    except Exception:  # the lease must not depend on Prefect's context being healthy
        return None, None


class RunLease:
    """A held lease; renewed by a thread between :meth:`start` and :meth:`release`."""

    def __init__(self, store: ObjectStore, holder: Holder) -> None:
        self.store = store
        self.holder = holder
        self._lost: str | None = None
        self._renewed = _now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the earlier holder this lease was taken from without a release (its process died or went
        # silent), with the reason: that attempt crashed
        self.crashed: tuple[Holder, float, str] | None = None

    @property
    def uri(self) -> str:
        return join_uri(self.store.uri, _claim_key(self.holder.generation))

    @classmethod
    def acquire(cls, store: ObjectStore, run_key: str, ttl: float | None = None) -> RunLease:
        """Claim the run key's lease in ``store`` (the run's checkpoint folder) or raise ``RunKeyBusyError``."""
        ttl = lease_ttl() if ttl is None else ttl
        flow_run_id, flow_run_name = _flow_run()
        for _ in range(10):  # each round loses only to another claimant that won, so this rarely repeats
            try:
                current = _current(store, run_key)
            except ObjectNotFound:
                continue
            reason = None
            if current is not None:
                reason = _vacancy(current)
                if reason is None:
                    raise RunKeyBusyError(
                        f"Run key {run_key!r} is being trained by another fit ({current.holder.describe(current.renewed_at)});"
                        f" lease {join_uri(store.uri, _claim_key(current.holder.generation))}. Refused before"
                        " any training, checkpoint or MLflow write. Wait for it to end, or, if that process is"
                        " gone on another machine, for its lease to expire, then run again; or use another"
                        " run_key."
                    )
            holder = Holder(
                generation=1 if current is None else current.holder.generation + 1,
                token=uuid.uuid4().hex,
                run_key=run_key,
                host=socket.gethostname(),
                pid=os.getpid(),
                pid_start=process_start(os.getpid()),
                boot_id=_boot_id(),
                flow_run_id=flow_run_id,
                flow_run_name=flow_run_name,
                since=time.time(),
                ttl=ttl,
            )
            payload = {k: v for k, v in asdict(holder).items() if k != "generation"}
            # active before the claim exists: a concurrent acquire in this process that reads the claim
            # must see a fit at work, not "an earlier attempt in this process ended"
            with _ACTIVE_LOCK:
                _ACTIVE.add(holder.token)
            try:
                store.put_bytes(
                    _claim_key(holder.generation), json.dumps(payload).encode(), if_none_match=True
                )
                newer = _newer_generation(store, holder.generation)
            except PreconditionFailed:
                _deactivate(holder.token)
                continue  # another fit claimed this generation first: look at it
            except BaseException:
                _deactivate(holder.token)
                raise
            if newer is not None:
                # our view was stale: this generation had been claimed and cleared away already
                _deactivate(holder.token)
                with contextlib.suppress(Exception):
                    store.delete(_claim_key(holder.generation))
                log.warning(
                    "Withdrew the claim %s of run key %s: generation %d is newer; looking again.",
                    _claim_key(holder.generation),
                    run_key,
                    newer,
                )
                continue
            if current is not None:
                # a released lease is a clean handover (an attempt that ended, then this one): no warning
                log.log(
                    logging.INFO if current.released else logging.WARNING,
                    "Took over the lease of run key %s from %s: %s.",
                    run_key,
                    current.holder.describe(current.renewed_at),
                    reason,
                )
            lease = cls(store, holder)
            if current is not None and reason is not None and not current.released:
                lease.crashed = (current.holder, current.renewed_at, reason)
            lease._forget_older()
            return lease
        raise RunKeyBusyError(
            f"Run key {run_key!r}: the lease in {store.uri} kept changing hands; try again."
        )

    def _forget_older(self) -> None:
        """Delete earlier generations (best effort): only the newest claim decides."""
        with contextlib.suppress(Exception):
            for info in self.store.list("lease-"):
                match = re.match(r"^lease-(\d{6})\.", info.key)
                if match and int(match.group(1)) < self.holder.generation:
                    self.store.delete(info.key)

    def start(self) -> RunLease:
        """Mark the lease active in this process (``acquire`` already did) and renew it from a daemon thread
        until released."""
        with _ACTIVE_LOCK:
            _ACTIVE.add(self.holder.token)
        self._thread = threading.Thread(target=self._renew_loop, name="run-key-lease", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        interval = max(0.25, self.holder.ttl / _RENEWALS_PER_TTL)
        while not self._stop.wait(interval):
            self.renew()
            if self._lost:
                return

    def renew(self) -> None:
        """Check the lease is still ours and push its expiry out; record a loss instead of raising."""
        try:
            newest = _generations(self.store)
            if not newest or newest[-1][0] != self.holder.generation:
                self._lost = "a newer claim replaced it" if newest else "its claim was deleted"
            else:
                # stamped before the put: others count the ttl from renewed_at, however long the put takes
                stamped = _now()
                beat = {"renewed_at": time.time(), "token": self.holder.token}
                self.store.put_bytes(_heartbeat_key(self.holder.generation), json.dumps(beat).encode())
                self._renewed = stamped
        except Exception as exc:
            log.warning("Could not renew the lease %s (%s: %s).", self.uri, type(exc).__name__, exc)
            self._lost = self._lost or self._overdue()
        if self._lost:
            log.error("Lost the lease %s of run key %s: %s.", self.uri, self.holder.run_key, self._lost)

    def _overdue(self) -> str | None:
        """Why the lease must be presumed lost for want of renewal, or None while it is fresh enough."""
        age = _now() - self._renewed
        if age > _SELF_FENCE * self.holder.ttl:
            return f"it was last renewed {age:.1f}s ago, more than {_SELF_FENCE:g} of its ttl {self.holder.ttl:g}s"
        return None

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease is no longer this fit's: a newer claim replaced it, or its
        last successful renewal is older than 0.8 of the ttl (whether or not a renewal call has returned)."""
        lost = self._lost or self._overdue()
        if lost:
            # once fenced, for good: a renewal that returns late must not revive a lease the fit gave up
            self._lost = lost
            raise LeaseLostError(
                f"The lease {self.uri} of run key {self.holder.run_key!r} was lost ({lost}): this fit "
                "stops so that two fits never train the run at once; the fit that holds it now goes on."
            )

    def release(self) -> None:
        """Stop renewing and mark the lease released (a failure here is logged: the lease then expires, and
        a retry in this process takes it over at once)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        try:
            if not self._lost:
                self.store.put_bytes(_released_key(self.holder.generation), b"{}")
        except Exception as exc:
            log.warning("Could not release the lease %s (%s: %s).", self.uri, type(exc).__name__, exc)
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(self.holder.token)


__all__ = [
    "DEFAULT_TTL_S",
    "TTL_ENV",
    "Holder",
    "LeaseLostError",
    "RunKeyBusyError",
    "RunLease",
    "held_by_ancestor",
    "lease_ttl",
]
