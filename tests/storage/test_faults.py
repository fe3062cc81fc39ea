"""Faults between boto3 and S3 go through botocore's real retry path; commits stay all-or-nothing.

A ``before-send`` handler on the client answers some requests itself with a 500 InternalError, a 503
SlowDown, or a dropped connection instead of sending them. botocore then treats them exactly like
the network's: its "standard" retry mode decides, backs off and resends.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ConnectionClosedError
from botocore.httpsession import URLLib3Session
from botocore.retries.standard import ExponentialBackoff

from lightning_lib.checkpoint import (
    CheckpointExistsError,
    CorruptCheckpointError,
    cleanup_orphans,
    latest_valid,
    list_committed,
    read_manifest,
    read_verified,
    write_checkpoint,
)
from lightning_lib.checkpoint._manifest import MAGIC
from lightning_lib.storage import S3Store, StorageError
from tests.support import archive

pytestmark = pytest.mark.services
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch) -> None:
    # Same retry decisions, shorter sleeps: real SlowDown backoff starts at 1 s and would make this
    # test take minutes. The retry logic itself (what is retried, how often, the quota) is untouched.
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.01)
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "non_throttling_base_scale", 0.01)


class FaultInjector:
    """Fails a seeded, deterministic share of requests, never more than ``max_in_a_row`` times each.

    The decision for a request depends only on the seed, the request (method, key, part, range) and
    how often that same request was seen, so thread interleaving does not change which attempts fail.
    """

    KINDS = ("InternalError", "SlowDown", "dropped")

    def __init__(
        self, seed: int, rate: float, root_path: str, make_error: Any, max_in_a_row: int = 3
    ) -> None:
        self.seed, self.rate, self.root_path, self.max_in_a_row = seed, rate, root_path, max_in_a_row
        self.make_error = make_error
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.hit: list[str] = []
        self.lock = threading.Lock()

    def _identity(self, request: Any) -> str:
        url = urlsplit(request.url)
        part = parse_qs(url.query).get("partNumber", [""])[0]
        path = url.path.replace(self.root_path, "", 1)  # the per-test prefix is random; drop it
        return f"{request.method} {path} part={part} range={request.headers.get('Range')}"

    def __call__(self, request: Any, **_: Any) -> Any:
        identity = self._identity(request)
        with self.lock:
            attempt = self.seen[identity]
            self.seen[identity] += 1
        digest = hashlib.sha256(f"{self.seed}|{identity}|{attempt}".encode()).digest()
        roll = int.from_bytes(digest[:8], "big") / 2**64
        if attempt >= self.max_in_a_row or roll >= self.rate:
            return None
        kind = self.KINDS[digest[8] % len(self.KINDS)]
        with self.lock:
            self.injected[kind] += 1
            self.hit.append(identity)
        if kind == "InternalError":
            return self.make_error(request, 500, "InternalError", "We encountered an internal error.")
        if kind == "SlowDown":
            return self.make_error(request, 503, "SlowDown", "Please reduce your request rate.")
        raise ConnectionClosedError(endpoint_url=request.url)


def faulty_store(root: str, injector: FaultInjector) -> S3Store:
    store = S3Store(root, max_attempts=6, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    store.client.meta.events.register("before-send.s3", injector)
    return store


def injector_for(root: str, seed: int, make_error: Any, rate: float = 0.3) -> FaultInjector:
    return FaultInjector(seed, rate, "/" + root[len("s3://") :].split("/", 1)[1], make_error)


def test_writes_commit_and_readers_never_see_corruption(s3_root: str, make_aws_error: Any, tmp_path) -> None:
    writer_faults = injector_for(s3_root, 1234, make_aws_error)
    reader_faults = injector_for(s3_root, 4321, make_aws_error)
    writer = faulty_store(s3_root, writer_faults)
    written: dict[str, bytes] = {}
    done = threading.Event()
    verified: list[str] = []
    problems: list[BaseException] = []

    def read_continuously() -> None:
        while not done.wait(0.02):
            # A fresh client per look, as each resuming process has: botocore's retry quota is
            # per client, and one reader polling for the whole test would drain it on its own.
            reader = faulty_store(s3_root, reader_faults)
            try:
                for ckpt in list_committed(reader):
                    read_verified(reader, ckpt)
                    verified.append(ckpt.name)
            except (CorruptCheckpointError, StorageError) as exc:
                problems.append(exc)

    thread = threading.Thread(target=read_continuously)
    thread.start()
    try:
        for step in range(6):
            size = 11 * MiB if step in (1, 4) else 256 * 1024  # two of them go multipart
            data: Any = archive(os.urandom(8).hex(), size)
            if size > MiB:  # from a file: a multipart upload whose completion is conditional
                (tmp_path / "saved.ckpt").write_bytes(data)
                data = str(tmp_path / "saved.ckpt")
            written[f"step-{step}.ckpt"] = committed = _committed(writer, f"step-{step}.ckpt", data, step)
            if step % 2:  # the rotating "last": overwritten in place, readers never see it torn
                written["last.ckpt"] = _committed(writer, "last.ckpt", data, step, overwrite=True)
            assert committed.endswith(MAGIC)
    finally:
        done.set()
        thread.join(60)

    assert problems == []
    assert verified, "the reader never got to verify a committed checkpoint"
    assert all(writer_faults.injected[kind] > 0 for kind in FaultInjector.KINDS), writer_faults.injected
    assert any("part=" in h and "part= " not in h for h in writer_faults.hit)  # multipart parts too
    assert sum(reader_faults.injected.values()) > 0
    clean = S3Store(s3_root)
    committed = list_committed(clean)
    assert sorted(c.name for c in committed) == ["last.ckpt"] + [f"step-{i}.ckpt" for i in range(6)]
    for ckpt in committed:
        assert read_verified(clean, ckpt) == written[ckpt.name]


def _committed(store: S3Store, name: str, data: Any, step: int, overwrite: bool = False) -> bytes:
    """Commit ``data`` and return the sealed file's bytes (read without the injected faults)."""
    write_checkpoint(store, name, data, step=step, overwrite=overwrite)
    return S3Store(store.uri).get_bytes(name)


def test_lost_reply_to_the_conditional_put_still_commits(s3_root: str) -> None:
    # The checkpoint's conditional PUT reaches S3, then the connection drops before the reply: botocore
    # resends it, and the resend is refused by If-None-Match. The commit did happen and is ours.
    store = S3Store(s3_root)
    delivered: list[str] = []

    def deliver_then_drop(request: Any, **_: Any) -> None:
        if request.url.endswith("ck.ckpt") and not delivered:
            response = URLLib3Session().send(request)
            delivered.append(str(response.status_code))
            raise ConnectionClosedError(endpoint_url=request.url)

    store.client.meta.events.register("before-send.s3.PutObject", deliver_then_drop)
    ckpt = write_checkpoint(store, "ck.ckpt", archive("weights"), step=3)
    assert delivered == ["200"]
    assert read_manifest(store, "ck.ckpt") == ckpt
    with pytest.raises(CheckpointExistsError):  # while another writer's identical bytes would be refused
        write_checkpoint(store, "ck.ckpt", archive("weights"), step=3)


def test_persistent_failure_commits_nothing(s3_root: str, make_aws_error: Any) -> None:
    store = S3Store(s3_root, max_attempts=3)
    previous = write_checkpoint(store, "step-1.ckpt", archive("old"), step=1)
    attempts: list[str] = []

    def fail_publish(request: Any, **_: Any) -> Any:
        if request.url.endswith("step-2.ckpt"):
            attempts.append(request.url)
            return make_aws_error(request, 500, "InternalError")
        return None

    store.client.meta.events.register("before-send.s3.PutObject", fail_publish)
    with pytest.raises(StorageError, match=r"step-2\.ckpt failed: InternalError"):
        write_checkpoint(store, "step-2.ckpt", archive("new"), step=2)
    store.client.meta.events.unregister("before-send.s3.PutObject", fail_publish)
    assert len(attempts) > 1 and read_manifest(store, "step-2.ckpt") is None  # retried, then given up
    result = latest_valid(store)
    assert result is not None and result[0] == previous
    # the file is published whole or not at all: nothing is left to clean, the name is free
    assert [i.key for i in store.list()] == ["step-1.ckpt"]
    assert cleanup_orphans(store, grace_seconds=0) == 0


def test_reader_outage_is_raised_not_mistaken_for_corruption(s3_root: str, make_aws_error: Any) -> None:
    store = S3Store(s3_root, max_attempts=2)
    write_checkpoint(store, "step-1.ckpt", archive("old"), step=1)
    write_checkpoint(store, "step-2.ckpt", archive("new"), step=2)

    def fail_file_reads(request: Any, **_: Any) -> Any:
        if request.method == "GET" and request.url.endswith(".ckpt"):
            return make_aws_error(request, 503, "SlowDown")
        return None

    store.client.meta.events.register("before-send.s3.GetObject", fail_file_reads)
    # Falling back to step-1 here would silently lose progress; the outage must surface instead.
    with pytest.raises(StorageError, match="SlowDown"):
        latest_valid(store)
