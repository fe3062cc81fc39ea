"""Uploading a file while it is written, and loading a file while it is verified.

``GrowingFile`` hands a file from the thread writing it to the one uploading it; on S3 the parts go
out as they are complete. ``load_verified`` hashes a checkpoint while it is loaded and returns the
result only if the bytes match the commit marker.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_lib.checkpoint import (
    CorruptCheckpointError,
    load_verified,
    read_manifest,
    read_verified,
    write_checkpoint,
)
from lightning_lib.checkpoint._commit import new_body_writer, seal
from lightning_lib.checkpoint._manifest import MAGIC
from lightning_lib.storage import GrowingFile, HashingWriter, LocalStore, ObjectStore, S3Store
from lightning_lib.storage._hashing import WriteCancelled, hash_file
from lightning_lib.storage._s3_upload import MAX_PART, FileRange, part_size
from lightning_lib.storage._staging import remove_stale, staging_dir
from tests.support import archive

MiB = 1024 * 1024


def write_slowly(
    staged: GrowingFile, data: bytes, piece: int, fail_at: int | None = None, sealed: bool = False
) -> threading.Thread:
    """A writer thread that writes ``data`` in pieces with pauses, as torch.save would; it fails at
    offset ``fail_at`` if given. Its outcome reaches ``staged`` like the checkpoint writer's does;
    ``sealed`` (``data`` an archive) commits it with its marker at the end, as the writer does."""

    def run() -> None:
        try:
            if sealed:
                writer = new_body_writer(staged.path, staged.advance)
            else:
                writer = HashingWriter(staged.path, on_write=staged.advance)
            with writer:
                for start in range(0, len(data), piece):
                    if fail_at is not None and start >= fail_at:
                        raise RuntimeError("the serialiser broke")
                    writer.write(data[start : start + piece])
                    time.sleep(0.002)
            staged.finish(seal(writer, step=1) if sealed else writer.finish())
        except BaseException as err:
            staged.fail(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# ---- the pieces, without a store -----------------------------------------------------------------------
def test_hashing_writer_reports_progress_and_digest(tmp_path: Path) -> None:
    seen: list[int] = []
    with HashingWriter(tmp_path / "f", on_write=seen.append) as writer:
        writer.write(b"abc")
        writer.write(memoryview(b"defgh"))
    done = writer.finish()
    assert seen == [3, 8]
    assert done.size == 8 and done.sha256 == hashlib.sha256(b"abcdefgh").hexdigest()
    assert (tmp_path / "f").read_bytes() == b"abcdefgh"  # unbuffered: on disk at each report


def test_growing_file_waits_for_bytes_and_outcome(tmp_path: Path) -> None:
    staged = GrowingFile(tmp_path / "f")
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(staged.wait_for(10)))
    waiter.start()
    staged.advance(4)
    time.sleep(0.05)
    assert got == []  # 4 bytes are not enough
    staged.advance(12)
    waiter.join(5)
    assert got == [10]
    finished = GrowingFile(tmp_path / "g")
    write_slowly(finished, b"y" * 25, 10).join()
    assert finished.wait_for(1000) == 25  # complete: what there is
    assert finished.result().size == 25


def test_growing_file_passes_on_the_writers_error_and_cancels_it(tmp_path: Path) -> None:
    staged = GrowingFile(tmp_path / "f")
    write_slowly(staged, b"z" * 100, 10, fail_at=50).join()
    with pytest.raises(RuntimeError, match="serialiser broke"):
        staged.result()
    with pytest.raises(RuntimeError, match="serialiser broke"):
        staged.wait_for(1000)
    cancelled = GrowingFile(tmp_path / "g")
    cancelled.cancel()
    with pytest.raises(WriteCancelled):
        cancelled.advance(1)


def test_part_sizes_grow_to_reach_large_files() -> None:
    assert [part_size(16 * MiB, n) for n in (1, 1000, 1001, 2001)] == [16 * MiB, 16 * MiB, 32 * MiB, 64 * MiB]
    total = sum(part_size(16 * MiB, n) for n in range(1, 10_001))
    assert total > 10 * 1024**4  # 10,000 parts (S3's limit) hold more than 10 TB
    assert max(part_size(16 * MiB, n) for n in range(1, 10_001)) == MAX_PART


def test_file_range_reads_seeks_and_sizes_one_part(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 4)
    with FileRange(str(path), 100, 50) as body:
        assert len(body) == 50
        assert body.read(20) == bytes(range(100, 120))
        assert body.read() == bytes(range(120, 150))
        assert body.read(10) == b""
        assert body.seek(0) == 0 and body.tell() == 0
        buffer = bytearray(64)
        assert body.readinto(buffer) == 50 and bytes(buffer[:50]) == bytes(range(100, 150))
        assert body.seek(-5, io.SEEK_END) == 45 and body.read() == bytes(range(145, 150))


def test_stale_staging_folders_of_dead_processes_are_removed(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "lightning_lib-dl-999999999-abc"  # no such pid
    dead.mkdir()
    other = tmp_path / "lightning_lib-ckpt-999999999-abc"  # another kind: left alone here
    other.mkdir()
    with staging_dir("lightning_lib-dl-") as folder:
        assert not dead.exists() and other.exists()
        assert Path(folder).name.startswith(f"lightning_lib-dl-{os.getpid()}-")
        remove_stale("lightning_lib-dl-")
        assert Path(folder).exists()  # ours: this process is alive
    assert not Path(folder).exists()


# ---- through a store -------------------------------------------------------------------------------------
def _sealed(store: ObjectStore, ckpt: Any) -> bytes:
    data = store.get_bytes(ckpt.name)
    assert data.endswith(MAGIC)
    return data


def test_write_checkpoint_uploads_a_growing_file(store: ObjectStore, tmp_path: Path) -> None:
    data = archive("big", 12 * MiB + 12345)  # three 5 MiB parts on S3, the last one short
    staged = GrowingFile(tmp_path / "ckpt")
    writer = write_slowly(staged, data, 1 * MiB, sealed=True)
    ckpt = write_checkpoint(store, "ck.ckpt", staged, step=1)
    writer.join()
    assert (ckpt.size, ckpt.sha256) == (len(data) - 2, hashlib.sha256(data[:-2]).hexdigest())
    assert read_verified(store, ckpt) == _sealed(store, ckpt)
    assert torch.load(io.BytesIO(_sealed(store, ckpt)), weights_only=True)["tag"] == "big"


@pytest.mark.parametrize("size", [64 * 1024, 12 * MiB], ids=["one-put", "multipart"])
def test_an_overwrite_from_a_growing_file_replaces_the_old_file_in_one_step(
    store: ObjectStore, tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = write_checkpoint(store, "last.ckpt", archive("old"), step=1)
    seen_at_publish: list[bytes] = []

    def look() -> None:  # what a reader finds just before the new file becomes visible
        seen_at_publish.append(store.get_bytes("last.ckpt"))

    if isinstance(store, LocalStore):
        publish = LocalStore._publish

        def publishing(self: LocalStore, tmp: str, final: str, key: str, if_none_match: bool) -> None:
            look()
            publish(self, tmp, final, key, if_none_match)

        monkeypatch.setattr(LocalStore, "_publish", publishing)
    else:
        assert isinstance(store, S3Store)
        event = "PutObject" if size < 5 * MiB else "CompleteMultipartUpload"
        store.client.meta.events.register(f"before-send.s3.{event}", lambda **_: look())
    staged = GrowingFile(tmp_path / "ckpt")
    writer = write_slowly(staged, archive("new", size), 1 * MiB, sealed=True)
    ckpt = write_checkpoint(store, "last.ckpt", staged, step=1, overwrite=True)  # write_slowly seals step 1
    writer.join()
    assert len(seen_at_publish) == 1 and seen_at_publish[0].endswith(MAGIC)  # the old file, whole
    assert read_verified(store, old) == _sealed(store, ckpt)  # the listing's old entry reads the new file
    assert torch.load(io.BytesIO(_sealed(store, ckpt)), weights_only=True)["tag"] == "new"


def test_a_failed_serialisation_commits_nothing(store: ObjectStore, tmp_path: Path) -> None:
    staged = GrowingFile(tmp_path / "ckpt")
    writer = write_slowly(staged, archive("big", 12 * MiB), 1 * MiB, fail_at=8 * MiB, sealed=True)
    with pytest.raises(RuntimeError, match="serialiser broke"):
        write_checkpoint(store, "ck.ckpt", staged, step=1)
    writer.join()
    assert read_manifest(store, "ck.ckpt") is None and not store.exists("ck.ckpt")
    assert store.abort_incomplete_uploads(0) == 0  # the multipart upload was aborted already


def test_the_last_bytes_are_held_back_until_sealed(tmp_path: Path) -> None:
    data = archive("x", 10_000)
    reported: list[int] = []
    writer = new_body_writer(str(tmp_path / "f"), reported.append)
    with writer:
        for start in range(0, len(data), 1000):
            writer.write(data[start : start + 1000])
    assert max(reported) == len(data) - 2 and writer.tail == b"\x00\x00"  # the empty comment's length
    done = seal(writer, step=4)
    sealed = (tmp_path / "f").read_bytes()
    assert done.size == len(sealed) and sealed[: len(data) - 2] == data[:-2]
    assert done.sha256 == hashlib.sha256(data[:-2]).hexdigest()
    assert torch.load(tmp_path / "f", weights_only=True)["tag"] == "x"
    plain = new_body_writer(str(tmp_path / "g"))
    with plain:
        plain.write(b"not an archive")
    with pytest.raises(ValueError, match=r"written by torch\.save"):
        seal(plain, step=1)


@pytest.mark.services
def test_s3_sends_parts_while_the_file_is_written(s3_root: str, tmp_path: Path) -> None:
    store = S3Store(s3_root, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    sent_while_writing: list[int] = []
    staged = GrowingFile(tmp_path / "ckpt")
    done = threading.Event()

    def on_part(params: dict[str, Any], **_: Any) -> None:
        if not done.is_set():
            sent_while_writing.append(params["PartNumber"])

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", on_part)
    data = archive("slow", 16 * MiB)

    def run() -> None:
        writer = new_body_writer(staged.path, staged.advance)
        with writer:
            for start in range(0, len(data), MiB):
                writer.write(data[start : start + MiB])
                time.sleep(0.05)  # a slow serialiser: parts must not wait for its end
        done.set()
        staged.finish(seal(writer, step=1))

    thread = threading.Thread(target=run)
    thread.start()
    write_checkpoint(store, "ck.ckpt", staged, step=1)
    thread.join()
    assert sent_while_writing[:2] == [1, 2]  # the first parts left before the file was complete
    ckpt = read_manifest(store, "ck.ckpt")
    assert ckpt is not None and read_verified(store, ckpt)[: len(data) - 2] == data[:-2]


@pytest.mark.services
def test_s3_failed_part_stops_the_writer_and_aborts(s3_root: str, tmp_path: Path, make_aws_error) -> None:
    store = S3Store(s3_root, max_attempts=1, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    store.client.meta.events.register(
        "before-send.s3.UploadPart", lambda request, **_: make_aws_error(request, 403, "AccessDenied")
    )
    staged = GrowingFile(tmp_path / "ckpt")
    big = b"q" * (200 * MiB)  # far more than gets written before the failure is seen
    writer = write_slowly(staged, big, 1 * MiB)
    with pytest.raises(Exception, match="AccessDenied"):
        write_checkpoint(store, "ck.ckpt", staged, step=1)
    writer.join(60)  # cancelled by the failed upload: it stops at its next write
    assert not writer.is_alive()
    with pytest.raises(WriteCancelled):
        staged.result()
    assert os.path.getsize(staged.path) < len(big)
    assert store.abort_incomplete_uploads(0) == 0 and read_manifest(store, "ck.ckpt") is None


def test_load_verified_loads_once_and_checks_the_bytes(store: ObjectStore) -> None:
    ckpt = write_checkpoint(store, "ck.ckpt", archive("x", 6 * MiB), step=1)
    calls: list[bytes] = []

    def load(handle: Any) -> str:
        calls.append(handle.read())
        return "loaded"

    assert load_verified(store, ckpt, load) == "loaded"
    assert calls == [_sealed(store, ckpt)]


@pytest.mark.parametrize("damage", ["flip", "truncate", "unseal", "delete"])
def test_load_verified_reports_corruption_not_the_parse_error(store: ObjectStore, damage: str) -> None:
    ckpt = write_checkpoint(store, "ck.ckpt", archive("x", 64 * 1024), step=1)
    data = _sealed(store, ckpt)
    if damage == "delete":
        store.delete("ck.ckpt")
    else:
        damaged = {
            "flip": data[:100] + bytes([data[100] ^ 1]) + data[101:],
            "truncate": data[:100] + data[-ckpt.trailer_size :],  # the marker kept, the body cut
            "unseal": data[: ckpt.size],
        }[damage]
        store.put_bytes("ck.ckpt", damaged)
    loads: list[int] = []

    def load(handle: Any) -> str:
        loads.append(1)
        raise ValueError("unreadable torch checkpoint")

    with pytest.raises(CorruptCheckpointError) as caught:
        load_verified(store, ckpt, load)
    message = str(caught.value)
    expected = {
        "delete": "was committed but the file is missing",
        "unseal": "has lost its commit marker",
    }.get(damage, "does not match its commit marker")
    assert expected in message
    if damage == "flip":
        assert isinstance(caught.value.__cause__, ValueError)  # the parse error is kept, as the cause
    if damage in ("truncate", "unseal"):
        assert loads == []  # known before anything is loaded


def test_load_verified_reraises_a_load_error_on_good_bytes(store: ObjectStore) -> None:
    ckpt = write_checkpoint(store, "ck.ckpt", archive("fine"), step=1)

    def load(handle: Any) -> None:
        raise ValueError("refused: not plain data")

    with pytest.raises(ValueError, match="not plain data"):
        load_verified(store, ckpt, load)


@pytest.mark.services
def test_s3_load_verified_leaves_no_download_behind(s3_root: str, tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = S3Store(s3_root)
    ckpt = write_checkpoint(store, "ck.ckpt", archive("x", 1 * MiB), step=1)
    seen: list[str] = []

    def load(handle: Any) -> bytes:
        seen.append(handle.name)
        return bytes(handle.read())

    assert load_verified(store, ckpt, load) == _sealed(store, ckpt)
    assert Path(seen[0]).is_relative_to(tmp_path)  # a private temporary download ...
    assert list(tmp_path.iterdir()) == []  # ... removed afterwards


def test_local_load_verified_reads_the_stored_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ckpt = write_checkpoint(store, "ck.ckpt", archive("abc"), step=1)
    names: list[str] = []
    load_verified(store, ckpt, lambda handle: names.append(handle.name))
    assert names == [str(tmp_path / "store" / "ck.ckpt")]  # no copy made
    assert hash_file(names[0]) == (ckpt.file_size, hashlib.sha256(_sealed(store, ckpt)).hexdigest())


@pytest.mark.parametrize("preadv", [True, False])
def test_hash_file_matches_hashlib_with_and_without_preadv(tmp_path: Path, monkeypatch, preadv: bool) -> None:
    if not preadv:
        monkeypatch.delattr(os, "preadv", raising=False)
    data = os.urandom(3 * MiB + 7)  # more than one chunk, not a whole number of them
    (tmp_path / "f").write_bytes(data)
    assert hash_file(str(tmp_path / "f")) == (len(data), hashlib.sha256(data).hexdigest())
