"""The ObjectStore contract, run against LocalStore and S3Store alike, plus the URI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from lightning_lib.storage import (
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    S3Store,
    is_remote,
    join_uri,
    open_store,
    split_uri,
)
from lightning_lib.storage._base import TEMP_MARKER


def test_put_get_roundtrip_and_exists(store: ObjectStore) -> None:
    store.put_bytes("run/a.bin", b"hello")
    store.put_bytes("run/b.bin", bytearray(b"ba"))
    store.put_bytes("run/c.bin", memoryview(b"xyz123")[2:])
    store.put_bytes("run/empty", b"")
    assert store.get_bytes("run/a.bin") == b"hello"
    assert store.get_bytes("run/b.bin") == b"ba"
    assert store.get_bytes("run/c.bin") == b"z123"
    assert store.get_bytes("run/empty") == b""
    assert store.exists("run/a.bin")
    assert not store.exists("run/missing")
    assert not store.exists("run")  # a folder is not an object


def test_overwrite_without_condition_replaces(store: ObjectStore) -> None:
    store.put_bytes("k", b"one")
    store.put_bytes("k", b"two")
    assert store.get_bytes("k") == b"two"


def test_conditional_put_refuses_overwrite(store: ObjectStore) -> None:
    store.put_bytes("m/MANIFEST.json", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed, match="already exists"):
        store.put_bytes("m/MANIFEST.json", b"second", if_none_match=True)
    assert store.get_bytes("m/MANIFEST.json") == b"first"


def test_get_missing_raises_not_found(store: ObjectStore, tmp_path) -> None:
    with pytest.raises(ObjectNotFound, match="nope"):
        store.get_bytes("nope")
    with pytest.raises(ObjectNotFound):
        store.get_file("nope", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_list_is_relative_sorted_and_prefix_filtered(store: ObjectStore) -> None:
    before = time.time()
    for key in ("b/2", "a/1", "a/sub/3", "ab/4"):
        store.put_bytes(key, key.encode())
    infos = store.list()
    assert [i.key for i in infos] == ["a/1", "a/sub/3", "ab/4", "b/2"]
    assert [i.size for i in infos] == [3, 7, 4, 3]
    assert all(before - 5 <= i.mtime <= time.time() + 5 for i in infos)
    assert [i.key for i in store.list("a/")] == ["a/1", "a/sub/3"]
    assert [i.key for i in store.list("a")] == ["a/1", "a/sub/3", "ab/4"]
    assert store.list("zzz/") == []


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("d/x", b"1")
    store.delete("d/x")
    store.delete("d/x")
    assert not store.exists("d/x")
    assert store.list("d/") == []


def test_put_file_get_file_roundtrip(store: ObjectStore, tmp_path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store.put_file("files/blob", str(src))
    out = tmp_path / "nested" / "out.bin"
    out.parent.mkdir()
    store.get_file("files/blob", str(out))
    assert out.read_bytes() == data
    assert store.get_bytes("files/blob") == data


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a\\b", f"x{TEMP_MARKER}y"])
def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        store.put_bytes(key, b"1")


def test_uri_is_the_root(store: ObjectStore, tmp_path) -> None:
    if isinstance(store, LocalStore):
        assert store.uri == str(tmp_path / "store")
    else:
        assert store.uri.startswith("s3://") and not store.uri.endswith("/")


# ---------------------------------------------------------------- local-only behaviour


def test_local_temp_files_are_hidden_and_aborted(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("ck/model.pt", b"ok")
    stale = tmp_path / "ck" / f".model2.pt{TEMP_MARKER}dead"
    fresh = tmp_path / "ck" / f".model3.pt{TEMP_MARKER}live"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert [i.key for i in store.list()] == ["ck/model.pt"]
    assert store.abort_incomplete_uploads(3600) == 1
    assert not stale.exists() and fresh.exists()


def test_local_conditional_put_race_has_one_winner(tmp_path) -> None:
    store = LocalStore(tmp_path)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def writer(i: int) -> None:
        barrier.wait()
        try:
            store.put_bytes("race/MANIFEST.json", str(i).encode(), if_none_match=True)
            outcomes.append("won")
        except PreconditionFailed:
            outcomes.append("refused")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    assert [i.key for i in store.list()] == ["race/MANIFEST.json"]  # no temp file left behind


def test_local_conditional_put_without_hard_links(tmp_path, monkeypatch) -> None:
    def no_link(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")  # what a FUSE mount without links answers

    monkeypatch.setattr(os, "link", no_link)
    store = LocalStore(tmp_path)
    store.put_bytes("m", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("m", b"second", if_none_match=True)
    assert store.get_bytes("m") == b"first"


def test_local_delete_removes_emptied_folders(tmp_path) -> None:
    store = LocalStore(tmp_path / "root")
    store.put_bytes("a/b/c", b"1")
    store.delete("a/b/c")
    assert not (tmp_path / "root" / "a").exists()
    assert (tmp_path / "root").exists()


# ---------------------------------------------------------------- URI helpers and lazy boto3


def test_uri_helpers() -> None:
    assert is_remote("s3://b/p") and is_remote("S3://b") and not is_remote("/tmp/x")
    assert not is_remote("file:///tmp/x")
    assert join_uri("s3://b/run/", "ck", "/model.pt") == "s3://b/run/ck/model.pt"
    assert join_uri("s3://b", "ck") == "s3://b/ck"
    assert join_uri("/tmp/run", "ck", "model.pt") == os.path.join("/tmp/run", "ck", "model.pt")
    assert split_uri("s3://b/run/ck-3/") == ("s3://b/run", "ck-3")
    assert split_uri("s3://b/ck-3") == ("s3://b", "ck-3")
    assert split_uri("/tmp/run/ck-3") == ("/tmp/run", "ck-3")
    assert split_uri("ck-3") == (".", "ck-3")
    with pytest.raises(ValueError, match="key after the bucket"):
        split_uri("s3://bucket")


def test_open_store_picks_the_backend(tmp_path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(tmp_path), LocalStore)
    assert open_store(f"file://{tmp_path}").uri == str(tmp_path)
    with pytest.raises(ValueError, match="S3 options"):
        open_store(str(tmp_path), max_attempts=3)
    pytest.importorskip("boto3")
    s3 = open_store("s3://bucket/some/prefix/")
    assert isinstance(s3, S3Store) and s3.uri == "s3://bucket/some/prefix"


def test_import_does_not_need_boto3() -> None:
    # Make boto3/botocore unimportable, then use the library's local storage path end to end.
    code = (
        "import io, sys, tempfile, torch\n"
        "sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "import lightning_lib, lightning_lib.storage as s, lightning_lib.checkpoint as c\n"
        "st = s.open_store(tempfile.mkdtemp())\n"
        "buffer = io.BytesIO(); torch.save({'w': 1}, buffer)\n"
        "c.write_checkpoint(st, 'c.ckpt', buffer.getvalue(), step=0)\n"
        "assert torch.load(io.BytesIO(c.latest_valid(st)[1]), weights_only=True) == {'w': 1}\n"
        "try:\n"
        "    s.open_store('s3://bucket/x')\n"
        "except ImportError as e:\n"
        "    assert 'boto3' in str(e)\n"
        "else:\n"
        "    raise SystemExit('expected ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
