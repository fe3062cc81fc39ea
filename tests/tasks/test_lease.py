"""The run key's lease (tasks.lease) on a local folder and on the S3 test server: one holder at a time,
the holder named to whoever is refused, crashed or expired holders taken over, a replaced holder stops."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightning_lib.storage import LocalStore, ObjectStore, S3Store, StorageError
from tasks import distributed_fit, training
from tasks import lease as lease_module
from tasks.lease import LeaseLostError, RunKeyBusyError, RunLease, lease_ttl
from tasks.run_identity import LeaseGuard

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from lightning_lib.storage import open_store
    from tasks.lease import RunLease
    lease = RunLease.acquire(open_store(sys.argv[1]), "k1", ttl=600).start()
    print("held", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "run")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Store(f"{endpoint}/{uuid.uuid4().hex}/run")


@pytest.fixture
def holder_process(store: ObjectStore) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lease of run key k1 (renewing it), until the test kills it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store.uri], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _lease_keys(store: ObjectStore) -> list[str]:
    return [info.key for info in store.list("lease-")]


def test_a_live_holder_is_named_and_refused_until_it_is_sigkilled(
    store: ObjectStore, holder_process: subprocess.Popen[str]
) -> None:
    with pytest.raises(RunKeyBusyError) as refused:
        RunLease.acquire(store, "k1")
    message = str(refused.value)
    assert f"pid {holder_process.pid}" in message and f"host {socket.gethostname()}" in message
    assert "since " in message and "no flow run" in message and "lease-000001.json" in message

    holder_process.send_signal(signal.SIGKILL)  # dies without releasing: its lease stays behind
    holder_process.wait(timeout=30)
    taken = RunLease.acquire(store, "k1")
    assert taken.holder.generation == 2 and taken.holder.pid == os.getpid()
    assert taken.crashed is not None  # the fit marks the dead attempt's MLflow run KILLED
    dead, _, why = taken.crashed
    assert (
        dead.pid == holder_process.pid and why == f"its process {holder_process.pid} on this machine is gone"
    )
    assert _lease_keys(store) == ["lease-000002.json"]  # the dead holder's generation is cleared away


def _forge(store: ObjectStore, generation: int, since: float, ttl: float, host: str = "elsewhere") -> None:
    claim = {
        "token": "t",
        "run_key": "k1",
        "host": host,
        "pid": 4242,
        "pid_start": None,
        "boot_id": None,
        "flow_run_id": "0b9e-flow",
        "flow_run_name": "brave-otter",
        "since": since,
        "ttl": ttl,
    }
    store.put_bytes(f"lease-{generation:06d}.json", json.dumps(claim).encode())


def test_another_machines_lease_is_refused_while_fresh_and_taken_over_once_expired(
    store: ObjectStore,
) -> None:
    _forge(store, 1, since=time.time(), ttl=600)
    with pytest.raises(
        RunKeyBusyError, match=r"flow run brave-otter \(0b9e-flow\), host elsewhere, pid 4242"
    ):
        RunLease.acquire(store, "k1")
    _forge(store, 2, since=time.time() - 700, ttl=600)  # its holder stopped renewing 100 s ago
    taken = RunLease.acquire(store, "k1")
    assert taken.holder.generation == 3
    assert taken.crashed is not None and taken.crashed[2].startswith("it expired at ")


def test_a_released_lease_is_taken_and_an_earlier_attempt_of_this_process_too(
    store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    first = RunLease.acquire(store, "k1").start()
    with pytest.raises(RunKeyBusyError, match=f"pid {os.getpid()}"):
        RunLease.acquire(store, "k1")  # a concurrent fit in this process
    first.release()
    with caplog.at_level(logging.INFO, logger="tasks.lease"):
        second = RunLease.acquire(store, "k1").start()
    assert second.crashed is None  # a released lease is no crash
    # ... and no warning: continuing a run key after its attempt ended (a Ctrl-C, then --run-key) is normal
    handover = [r for r in caplog.records if "Took over the lease" in r.getMessage()]
    assert [r.levelno for r in handover] == [logging.INFO] and "it was released" in handover[0].getMessage()
    # an attempt that failed and whose release failed too (storage down): no longer active here, so
    # Prefect's retry of the task in this process takes the run key over instead of being refused
    second._stop.set()
    lease_module._ACTIVE.discard(second.holder.token)
    third = RunLease.acquire(store, "k1")
    assert third.holder.generation == 3


def test_a_holder_whose_lease_was_taken_over_stops(store: ObjectStore) -> None:
    held = RunLease.acquire(store, "k1")
    held.check()
    _forge(store, 2, since=time.time(), ttl=600)  # taken over (it looked expired to another host)
    held.renew()
    with pytest.raises(LeaseLostError, match="a newer claim replaced it"):
        held.check()


def test_ttl_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_LIB_RUN_LEASE_TTL_S", "30")
    assert lease_ttl() == 30.0
    monkeypatch.setenv("LIGHTNING_LIB_RUN_LEASE_TTL_S", "soon")
    with pytest.raises(ValueError, match=r"LIGHTNING_LIB_RUN_LEASE_TTL_S .* >= 2, received 'soon'"):
        lease_ttl()


class _Faulty:
    """A store in front of another whose calls, once switched, hang (until ``unblock``) or fail like an
    S3 outage; ``after_claim`` runs once right after the first claim is written (the gap before start)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.mode = "pass"
        self.entered = threading.Event()
        self.unblock = threading.Event()
        self.after_claim: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.mode == "hang":
                self.entered.set()
                self.unblock.wait(timeout=120)
            elif self.mode == "fail":
                self.entered.set()
                raise StorageError("S3 request failed after retries: 503 SlowDown")
            result = attr(*args, **kwargs)
            if name == "put_bytes" and args[0].endswith(".json") and self.after_claim is not None:
                hook, self.after_claim = self.after_claim, None
                hook()
            return result

        return call


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_check_fences_once_the_last_renewal_is_older_than_0_8_ttl_even_while_a_renewal_call_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    clock = [1000.0]  # a fake monotonic clock: the fence is decided by the lease's age, not by waiting
    monkeypatch.setattr(lease_module, "_now", lambda: clock[0])
    store = _Faulty(LocalStore(tmp_path / "run"))
    held = RunLease.acquire(store, "k1", ttl=8).start()  # type: ignore[arg-type]
    try:
        store.mode = mode
        assert store.entered.wait(timeout=60)  # the renewal thread is inside a store call now
        clock[0] += 0.5 * 8
        held.check()  # not yet
        clock[0] += 0.35 * 8
        # without any renewal call returning (mode "hang"), the fit stops at its next check
        with pytest.raises(LeaseLostError, match=r"last renewed 6\.8s ago, more than 0\.8 of its ttl 8s"):
            held.check()
        store.mode = "pass"
        store.unblock.set()  # the hung call returns: the lease stays lost, the fit has given it up
        with pytest.raises(LeaseLostError):
            held.check()
    finally:
        store.mode = "pass"
        store.unblock.set()
        held.release()


def test_a_concurrent_acquire_in_this_process_between_claim_and_start_is_refused(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "run")
    outcome: list[object] = []

    def acquire_in_another_thread() -> None:
        def other() -> None:
            try:
                outcome.append(RunLease.acquire(inner, "k1"))
            except RunKeyBusyError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=60)

    store = _Faulty(inner)
    store.after_claim = acquire_in_another_thread  # runs after the claim put, before acquire returns
    first = RunLease.acquire(store, "k1").start()  # type: ignore[arg-type]
    try:
        assert len(outcome) == 1 and isinstance(outcome[0], RunKeyBusyError), outcome
        assert f"pid {os.getpid()}" in str(outcome[0])
        assert _lease_keys(inner) == ["lease-000001.json"]
    finally:
        first.release()


def test_a_stale_claim_of_a_generation_already_cleared_away_is_withdrawn(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        RunLease.acquire(store, "k1").start().release()
    current = RunLease.acquire(store, "k1").start()  # generation 6; 1 to 5 are deleted
    try:
        assert current.holder.generation == 6
        real = lease_module._current
        stale = [
            lease_module._Current(dataclasses.replace(current.holder, generation=3, token="old"), 0.0, True)
        ]

        def stale_first(store: ObjectStore, run_key: str) -> Any:
            return stale.pop() if stale else real(store, run_key)

        # a claimant that read the folder while generation 3 was the newest (released) claims 4 again
        monkeypatch.setattr(lease_module, "_current", stale_first)
        with pytest.raises(RunKeyBusyError, match=r"lease-000006\.json"):
            RunLease.acquire(store, "k1")
        assert [k for k in _lease_keys(store) if k.endswith(".json")] == ["lease-000006.json"]
        current.check()
    finally:
        current.release()


def test_a_multi_device_fit_polls_its_lease_and_a_lost_lease_kills_torchrun_and_its_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """launch_fit's wait loop (tasks.distributed_fit): a stand-in for torchrun with one rank that would
    save on SIGTERM; the lease is lost once both run. Every process is killed, nothing saved."""
    pids, saved = tmp_path / "pids", tmp_path / "saved"
    torchrun = textwrap.dedent(
        f"""
        import os, signal, subprocess, sys, time
        rank = subprocess.Popen([sys.executable, "-c", '''
        import signal, time
        signal.signal(signal.SIGTERM, lambda *a: open({str(saved)!r}, "w").write("saved"))
        time.sleep(300)
        '''])
        open({str(pids)!r} + ".tmp", "w").write(f"{{os.getpid()}} {{rank.pid}}")
        os.replace({str(pids)!r} + ".tmp", {str(pids)!r})
        time.sleep(300)
        """
    )
    checks: list[int] = []

    def lease_check() -> None:
        checks.append(1)
        if pids.exists():
            raise LeaseLostError("The lease of run key 'k1' was lost (a newer claim replaced it)")

    with pytest.raises(LeaseLostError, match="a newer claim replaced it"):
        distributed_fit._run_forwarding(
            [sys.executable, "-c", torchrun],
            tmp_path / "progress.json",
            "t",
            lease_check=lease_check,
            poll_s=0.1,
        )
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 60  # bounds the wait for init to reap the orphaned rank
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(pid), f"process {pid} outlived the lost lease"
    assert not saved.exists()  # SIGKILL, not SIGTERM: no checkpoint into a folder another fit holds

    # the fit task hands the lease it holds to launch_fit (the ranks get no LeaseGuard)
    passed: dict[str, Any] = {}
    monkeypatch.setattr(distributed_fit, "needs_launch", lambda config: True)
    monkeypatch.setattr(distributed_fit, "launch_fit", lambda *args, **kwargs: passed.update(kwargs))
    held = RunLease.acquire(LocalStore(tmp_path / "run"), "k1")
    try:
        training._fit_held(None, None, "k1", extra_callbacks=[LeaseGuard(held)])  # type: ignore[arg-type]
        assert passed["lease_check"] == held.check
    finally:
        held.release()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan is one until init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
