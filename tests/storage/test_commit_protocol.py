"""The commit protocol, on both stores: a checkpoint file with Lightning's name and its marker, written last."""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import IO, Any, cast

import pytest
import torch

from lightning_lib.checkpoint import (
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    cleanup_orphans,
    delete_checkpoint,
    download_verified,
    latest_valid,
    list_committed,
    load_manifest,
    manifest_key,
    read_manifest,
    read_verified,
    write_checkpoint,
)
from lightning_lib.checkpoint._manifest import encode_manifest
from lightning_lib.storage import HashingWriter, ObjectStore


class RecordingStore:
    """Delegates to a real store, recording each mutating call and running a hook before it."""

    def __init__(self, inner: ObjectStore, before: Any = None) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.before = before

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in ("put_bytes", "put_file", "put_growing_file", "delete"):
            return attr

        def recorded(key: str, *args: Any, **kwargs: Any) -> Any:
            if self.before is not None:
                self.before(name, key)
            self.calls.append((name, key, kwargs))
            return attr(key, *args, **kwargs)

        return recorded


class Crash(Exception):
    """The writer dies here (what a SIGKILL does to the rest of the protocol)."""


def commit(store: ObjectStore, name: str, step: int, payload: bytes | None = None) -> bytes:
    data = payload if payload is not None else f"weights of {name}".encode() * 100
    write_checkpoint(store, name, data, step=step)
    return data


def marker(store: ObjectStore, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(store.get_bytes(manifest_key(name))))


def test_manifest_key_is_beside_the_file_in_a_hidden_folder() -> None:
    assert manifest_key("last.ckpt") == ".manifests/last.ckpt.json"
    assert manifest_key("run/epoch=0-step=5.ckpt") == "run/.manifests/epoch=0-step=5.ckpt.json"
    with pytest.raises(ValueError, match=r"\.manifests"):
        manifest_key(".manifests/x.ckpt")


def test_write_then_read_roundtrip(store: ObjectStore, tmp_path) -> None:
    local = tmp_path / "opt.bin"
    local.write_bytes(b"optimizer" * 1000)
    with HashingWriter(tmp_path / "state.pt") as writer:
        torch.save({"w": torch.arange(10)}, cast(IO[bytes], writer))
    prehashed = writer.finish()
    before = time.time()
    ckpt = write_checkpoint(store, "run/step-7.ckpt", prehashed, step=7, extra={"epoch": 1})
    assert ckpt.name == "run/step-7.ckpt" and ckpt.step == 7 and ckpt.extra == {"epoch": 1}
    assert ckpt.uri.endswith("run/step-7.ckpt") and before <= ckpt.time <= time.time()
    data = (tmp_path / "state.pt").read_bytes()
    assert (ckpt.newest.size, ckpt.newest.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert load_manifest(store, "run/step-7.ckpt") == ckpt
    state = torch.load(io.BytesIO(read_verified(store, ckpt)), weights_only=True)
    assert torch.equal(state["w"], torch.arange(10))
    assert store.get_bytes("run/step-7.ckpt") == data  # the file itself, at Lightning's name
    doc = marker(store, "run/step-7.ckpt")
    assert doc["format"] == "lightning_lib.checkpoint" and doc["version"] == 2 and doc["state"] == "committed"
    assert doc["file"] == "step-7.ckpt" and [v["step"] for v in doc["versions"]] == [7]
    for name, source in (("bytes.ckpt", b"model"), ("path.ckpt", str(local))):
        written = write_checkpoint(store, name, source, step=1)
        assert read_verified(store, written) == (source if isinstance(source, bytes) else local.read_bytes())
    assert [c.name for c in list_committed(store)] == ["bytes.ckpt", "path.ckpt", "run/step-7.ckpt"]


def test_the_name_is_claimed_first_and_the_commit_written_last(store: ObjectStore) -> None:
    seen_during_write: list[Any] = []

    def reader(op: str, key: str) -> None:
        # Readers looking while the checkpoint is being written must see no checkpoint at all.
        seen_during_write.append(
            (read_manifest(store, "ck.ckpt"), list_committed(store), latest_valid(store))
        )

    recording = RecordingStore(store, before=reader)
    write_checkpoint(recording, "ck.ckpt", b"weights", step=1)
    ops = [(op, key, kwargs) for op, key, kwargs in recording.calls]
    key = manifest_key("ck.ckpt")
    assert ops == [
        ("put_bytes", key, {"if_none_match": True}),  # the claim: a second writer is refused here
        ("put_bytes", "ck.ckpt", {}),
        ("put_bytes", key, {}),  # the commit
    ]
    assert seen_during_write == [(None, [], None)] * 3  # the hook ran before each put, the commit's too
    assert read_manifest(store, "ck.ckpt") is not None


def test_committed_checkpoint_is_immutable_without_overwrite(store: ObjectStore) -> None:
    original = commit(store, "ck.ckpt", 1)
    recording = RecordingStore(store)
    with pytest.raises(CheckpointExistsError, match="already committed"):
        write_checkpoint(recording, "ck.ckpt", b"other", step=2)
    assert [key for _, key, _ in recording.calls] == [manifest_key("ck.ckpt")]  # refused at the claim
    ckpt = read_manifest(store, "ck.ckpt")
    assert ckpt is not None and read_verified(store, ckpt) == original


def test_overwrite_lists_both_versions_until_the_new_bytes_are_in_place(store: ObjectStore) -> None:
    old = commit(store, "last.ckpt", 1, b"old weights" * 50)
    new = b"new weights" * 60
    readings: list[tuple[int, bytes]] = []

    def reader(op: str, key: str) -> None:
        # at every step of the overwrite, a reader finds a whole checkpoint that verifies
        result = latest_valid(store)
        assert result is not None
        readings.append((result[0].step, result[1]))

    recording = RecordingStore(store, before=reader)
    ckpt = write_checkpoint(recording, "last.ckpt", new, step=2, overwrite=True)
    assert [(op, key) for op, key, _ in recording.calls] == [
        ("put_bytes", manifest_key("last.ckpt")),  # both versions listed
        ("put_bytes", "last.ckpt"),  # the new bytes replace the old ones
        ("put_bytes", manifest_key("last.ckpt")),  # only the new version
    ]
    assert [data for _, data in readings] == [old, old, new]
    assert readings[2][0] == 1  # both listed: the reader counts on no more than the oldest step
    assert ckpt.step == 2 and len(ckpt.versions) == 1
    assert read_verified(store, ckpt) == new and [
        v["step"] for v in marker(store, "last.ckpt")["versions"]
    ] == [2]


def test_a_reader_whose_marker_an_overwrite_outdated_reads_the_new_version(
    store: ObjectStore, tmp_path
) -> None:
    commit(store, "last.ckpt", 1, b"old" * 10)
    stale = read_manifest(store, "last.ckpt")
    assert stale is not None
    write_checkpoint(store, "last.ckpt", b"new" * 10, step=2, overwrite=True)
    # the marker is read again, and vouches for the bytes now there
    assert read_verified(store, stale) == b"new" * 10
    download_verified(store, stale, str(tmp_path / "copy.ckpt"))
    assert (tmp_path / "copy.ckpt").read_bytes() == b"new" * 10
    store.put_bytes("last.ckpt", b"neither")
    with pytest.raises(CorruptCheckpointError, match="does not match"):
        read_verified(store, stale)


@pytest.mark.parametrize("crash_at", [0, 1, 2])
def test_an_overwrite_killed_at_any_step_leaves_a_valid_checkpoint(store: ObjectStore, crash_at: int) -> None:
    old = commit(store, "last.ckpt", 1, b"old weights" * 50)
    new = b"new weights" * 60

    def die(op: str, key: str) -> None:
        if len(recording.calls) == crash_at:
            raise Crash(f"killed before {op} {key}")

    recording = RecordingStore(store, before=die)
    with pytest.raises(Crash):
        write_checkpoint(recording, "last.ckpt", new, step=2, overwrite=True)
    result = latest_valid(store)
    assert result is not None and result[1] == (new if crash_at == 2 else old)
    # the next overwrite starts from whatever was left and settles on one version again
    ckpt = write_checkpoint(store, "last.ckpt", b"newer" * 10, step=3, overwrite=True)
    assert len(marker(store, "last.ckpt")["versions"]) == 1 and read_verified(store, ckpt) == b"newer" * 10


def test_overwrite_of_an_uncommitted_or_invalid_name_writes_it_afresh(store: ObjectStore) -> None:
    store.put_bytes(manifest_key("a.ckpt"), b"{not json")
    store.put_bytes(manifest_key("b.ckpt"), encode_manifest("writing", "b.ckpt", [], {}, 1.0))
    for name in ("a.ckpt", "b.ckpt", "c.ckpt"):
        ckpt = write_checkpoint(store, name, name.encode(), step=4, overwrite=True)
        assert read_verified(store, ckpt) == name.encode() and ckpt.step == 4


def test_a_failed_write_frees_its_name(store: ObjectStore) -> None:
    def fail_upload(op: str, key: str) -> None:
        if key == "ck.ckpt" and op == "put_bytes":
            raise OSError("upload failed")

    with pytest.raises(OSError, match="upload failed"):
        write_checkpoint(RecordingStore(store, before=fail_upload), "ck.ckpt", b"w", step=1)
    assert store.list() == []  # claim withdrawn
    commit(store, "ck.ckpt", 1)


def test_invalid_arguments_fail_before_any_write(store: ObjectStore) -> None:
    recording = RecordingStore(store)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": ".manifests/x.ckpt"}, "manifests"),
        ({"name": "../x"}, "key"),
        ({"step": -1}, "non-negative"),
        ({"extra": {"obj": object()}}, "not JSON serializable"),
    ]
    for kwargs, match in cases:
        args: dict[str, Any] = {"name": "ck.ckpt", "source": b"x", "step": 0, **kwargs}
        with pytest.raises((ValueError, TypeError), match=match):
            write_checkpoint(recording, **args)
    assert recording.calls == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:10] + bytes([data[10] ^ 0x01]) + data[11:], id="flipped-byte"),
    ],
)
def test_damaged_file_is_detected_and_latest_valid_falls_back(store: ObjectStore, damage: Any) -> None:
    good = commit(store, "step-1.ckpt", 1)
    bad = commit(store, "step-2.ckpt", 2)
    store.put_bytes("step-2.ckpt", damage(bad))
    newest = list_committed(store)[-1]
    with pytest.raises(CorruptCheckpointError) as err:
        read_verified(store, newest)
    message = str(err.value)
    assert "step-2.ckpt" in message and newest.newest.sha256 in message
    assert f"expected {len(bad)} bytes" in message
    with pytest.warns(CheckpointFallbackWarning, match=r"step-2\.ckpt.*previous"):
        result = latest_valid(store)
    assert result is not None and result[0].name == "step-1.ckpt" and result[1] == good


def test_missing_or_unfinished_marker_means_no_checkpoint(store: ObjectStore) -> None:
    commit(store, "step-1.ckpt", 1)
    store.put_bytes("step-2.ckpt", b"written but never committed")
    store.put_bytes("step-3.ckpt", b"claimed, written, not committed")
    store.put_bytes(manifest_key("step-3.ckpt"), encode_manifest("writing", "step-3.ckpt", [], {}, 1.0))
    assert [c.name for c in list_committed(store)] == ["step-1.ckpt"]
    assert read_manifest(store, "step-2.ckpt") is None and read_manifest(store, "step-3.ckpt") is None
    with pytest.raises(CheckpointNotFoundError, match="never committed"):
        load_manifest(store, "step-2.ckpt")
    with pytest.raises(CheckpointNotFoundError, match=r"not committed.*'writing'"):
        load_manifest(store, "step-3.ckpt")
    result = latest_valid(store)
    assert result is not None and result[0].name == "step-1.ckpt"


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"format": "other"}',
        b"[]",
        b'{"format": "lightning_lib.checkpoint", "version": 99}',
        b'{"format": "lightning_lib.checkpoint", "version": 1, "step": 1, "files": {}}',
    ],
)
def test_invalid_manifest_is_ignored(store: ObjectStore, raw: bytes) -> None:
    store.put_bytes("bad.ckpt", b"x")
    store.put_bytes(manifest_key("bad.ckpt"), raw)
    assert read_manifest(store, "bad.ckpt") is None
    assert list_committed(store) == []
    assert latest_valid(store) is None


def test_a_marker_vouches_only_for_its_own_file(store: ObjectStore) -> None:
    commit(store, "a.ckpt", 1, b"same")
    store.put_bytes("b.ckpt", b"same")
    store.put_bytes(manifest_key("b.ckpt"), store.get_bytes(manifest_key("a.ckpt")))  # copied over
    assert read_manifest(store, "b.ckpt") is None
    assert [c.name for c in list_committed(store)] == ["a.ckpt"]


def test_manifest_without_its_file(store: ObjectStore, tmp_path) -> None:
    good = commit(store, "step-1.ckpt", 1)
    commit(store, "step-2.ckpt", 2)
    store.delete("step-2.ckpt")
    newest = list_committed(store)[-1]
    with pytest.raises(
        CorruptCheckpointError, match=r"step-2\.ckpt is committed by its marker but the file is missing"
    ):
        read_verified(store, newest)
    with pytest.raises(CorruptCheckpointError, match="missing"):
        download_verified(store, newest, str(tmp_path / "out"))
    with pytest.warns(CheckpointFallbackWarning, match="missing"):
        result = latest_valid(store)
    assert result is not None and result[1] == good


def test_latest_valid_order_names_and_exhaustion(store: ObjectStore) -> None:
    assert latest_valid(store) is None
    commit(store, "b", 5)
    commit(store, "a", 9)
    commit(store, "c", 5)  # same step as b, committed later: newer
    assert [c.name for c in list_committed(store)] == ["b", "c", "a"]
    result = latest_valid(store, names=["b", "c", "missing"])
    assert result is not None and result[0].name == "c"
    for name in ("a", "b", "c"):
        store.put_bytes(name, b"garbage")
    with pytest.warns(CheckpointFallbackWarning) as record:
        assert latest_valid(store) is None
    assert [str(w.message).split()[1].rsplit("/", 1)[-1] for w in record] == ["a", "c", "b"]


def test_download_verified(store: ObjectStore, tmp_path) -> None:
    data = commit(store, "ck.ckpt", 3)
    ckpt = read_manifest(store, "ck.ckpt")
    assert ckpt is not None
    target = tmp_path / "dl" / "model.ckpt"
    download_verified(store, ckpt, str(target))
    assert target.read_bytes() == data
    store.put_bytes("ck.ckpt", data[:-1] + b"!")
    with pytest.raises(CorruptCheckpointError):
        download_verified(store, ckpt, str(tmp_path / "dl" / "bad.ckpt"))
    assert list((tmp_path / "dl").iterdir()) == [target]  # nothing unverified left behind


def test_delete_hides_the_checkpoint_first(store: ObjectStore) -> None:
    commit(store, "ck.ckpt", 1)
    commit(store, "keep.ckpt", 2)
    visible: list[Any] = []

    def before(op: str, key: str) -> None:
        if recording.calls:
            visible.append(read_manifest(store, "ck.ckpt"))

    recording = RecordingStore(store, before=before)
    delete_checkpoint(recording, "ck.ckpt")
    assert [(op, key) for op, key, _ in recording.calls] == [
        ("put_bytes", manifest_key("ck.ckpt")),  # "deleting": gone for readers at once
        ("delete", "ck.ckpt"),
        ("delete", manifest_key("ck.ckpt")),
    ]
    assert visible == [None, None]  # gone for readers before the file is removed
    assert [i.key for i in store.list()] == [manifest_key("keep.ckpt"), "keep.ckpt"]


def test_cleanup_orphans_finishes_unfinished_writes_and_deletions_only(store: ObjectStore) -> None:
    commit(store, "committed.ckpt", 1)
    store.put_bytes("claimed.ckpt", b"partial")
    store.put_bytes(manifest_key("claimed.ckpt"), encode_manifest("writing", "claimed.ckpt", [], {}, 1.0))
    store.put_bytes(
        manifest_key("claim-only.ckpt"), encode_manifest("writing", "claim-only.ckpt", [], {}, 1.0)
    )
    store.put_bytes("deleted.ckpt", b"old")
    store.put_bytes(manifest_key("deleted.ckpt"), encode_manifest("deleting", "deleted.ckpt", [], {}, 1.0))
    store.put_bytes("users-own.ckpt", b"a file without any marker: maybe the user's")
    store.put_bytes("notes/readme.txt", b"a loose file")
    store.put_bytes("broken.ckpt", b"x")
    store.put_bytes(manifest_key("broken.ckpt"), b"{not json")  # left for a human to inspect
    assert cleanup_orphans(store, grace_seconds=3600) == []
    assert store.exists("claimed.ckpt")
    assert sorted(cleanup_orphans(store, grace_seconds=0)) == [
        "claim-only.ckpt",
        "claimed.ckpt",
        "deleted.ckpt",
    ]
    assert [i.key for i in store.list()] == [
        ".manifests/broken.ckpt.json",
        ".manifests/committed.ckpt.json",
        "broken.ckpt",
        "committed.ckpt",
        "notes/readme.txt",
        "users-own.ckpt",
    ]
    result = latest_valid(store)
    assert result is not None and result[0].name == "committed.ckpt"
    with pytest.raises(ValueError, match="grace_seconds"):
        cleanup_orphans(store, grace_seconds=-1)


def test_cleanup_orphans_scoped_to_prefix(store: ObjectStore) -> None:
    commit(store, "run1/ck-1", 1)
    for name in ("run1/ck-2", "run2/ck-1"):
        store.put_bytes(name, b"partial")
        store.put_bytes(manifest_key(name), encode_manifest("writing", name, [], {}, 1.0))
    assert cleanup_orphans(store, grace_seconds=0, prefix="run1/") == ["run1/ck-2"]
    assert store.exists("run2/ck-1")
    assert [c.name for c in list_committed(store, "run1/")] == ["run1/ck-1"]
