"""The manifest-last commit protocol, on both stores."""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import IO, Any, cast

import pytest
import torch

from lightning_lib.checkpoint import (
    MANIFEST_NAME,
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
    read_manifest,
    read_verified,
    write_checkpoint,
)
from lightning_lib.storage import HashingWriter, ObjectStore


class RecordingStore:
    """Delegates to a real store, recording each mutating call and running a hook before it."""

    def __init__(self, inner: ObjectStore, before: Any = None) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.before = before

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in ("put_bytes", "put_file", "delete"):
            return attr

        def recorded(key: str, *args: Any, **kwargs: Any) -> Any:
            if self.before is not None:
                self.before(name, key)
            self.calls.append((name, key, kwargs))
            return attr(key, *args, **kwargs)

        return recorded


def commit(store: ObjectStore, name: str, step: int, payload: bytes | None = None) -> bytes:
    data = payload if payload is not None else f"weights of {name}".encode() * 100
    write_checkpoint(store, name, {"model.ckpt": data}, step=step)
    return data


def test_write_then_read_roundtrip(store: ObjectStore, tmp_path) -> None:
    local = tmp_path / "opt.bin"
    local.write_bytes(b"optimizer" * 1000)
    with HashingWriter(tmp_path / "state.pt") as writer:
        torch.save({"w": torch.arange(10)}, cast(IO[bytes], writer))
    prehashed = writer.finish()
    before = time.time()
    ckpt = write_checkpoint(
        store,
        "run/step-7",
        {"model.ckpt": b"model", "opt.bin": str(local), "state.pt": prehashed},
        step=7,
        extra={"epoch": 1},
    )
    assert ckpt.name == "run/step-7" and ckpt.step == 7 and ckpt.extra == {"epoch": 1}
    assert ckpt.uri.endswith("run/step-7") and before <= ckpt.time <= time.time()
    assert ckpt.files["model.ckpt"] == {"size": 5, "sha256": hashlib.sha256(b"model").hexdigest()}
    assert (
        ckpt.files["state.pt"]["sha256"] == hashlib.sha256((tmp_path / "state.pt").read_bytes()).hexdigest()
    )
    assert load_manifest(store, "run/step-7") == ckpt
    assert read_verified(store, ckpt, "opt.bin") == local.read_bytes()
    state = torch.load(io.BytesIO(read_verified(store, ckpt, "state.pt")), weights_only=True)
    assert torch.equal(state["w"], torch.arange(10))
    manifest = json.loads(store.get_bytes(f"run/step-7/{MANIFEST_NAME}"))
    assert manifest["format"] == "lightning_lib.checkpoint" and manifest["version"] == 1
    assert manifest["step"] == 7 and set(manifest["files"]) == {"model.ckpt", "opt.bin", "state.pt"}


def test_manifest_is_written_last_and_conditionally(store: ObjectStore) -> None:
    seen_during_write: list[Any] = []

    def reader(op: str, key: str) -> None:
        # Readers looking while the files are still being written must see no checkpoint at all.
        seen_during_write.append((read_manifest(inner, "ck"), list_committed(inner), latest_valid(inner)))

    inner = store
    recording = RecordingStore(store, before=reader)
    write_checkpoint(recording, "ck", {"a": b"1", "b": b"2"}, step=1)
    ops = [(op, key) for op, key, _ in recording.calls]
    assert ops[-1] == ("put_bytes", f"ck/{MANIFEST_NAME}")
    assert recording.calls[-1][2] == {"if_none_match": True}
    assert sorted(ops[:-1]) == [("put_bytes", "ck/a"), ("put_bytes", "ck/b")]
    assert seen_during_write == [(None, [], None)] * 3  # the hook ran before each put, manifest's too
    assert read_manifest(store, "ck") is not None


def test_committed_checkpoint_is_immutable(store: ObjectStore) -> None:
    original = commit(store, "ck", 1)
    recording = RecordingStore(store)
    with pytest.raises(CheckpointExistsError, match="already committed"):
        write_checkpoint(recording, "ck", {"model.ckpt": b"other"}, step=2)
    assert recording.calls == []  # refused before touching any file
    ckpt = read_manifest(store, "ck")
    assert ckpt is not None and read_verified(store, ckpt, "model.ckpt") == original


def test_invalid_arguments_fail_before_any_write(store: ObjectStore) -> None:
    recording = RecordingStore(store)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"files": {}}, "at least one file"),
        ({"files": {MANIFEST_NAME: b"x"}}, "other than"),
        ({"files": {"../x": b"x"}}, "key"),
        ({"step": -1}, "non-negative"),
        ({"extra": {"obj": object()}}, "not JSON serializable"),
    ]
    for kwargs, match in cases:
        args: dict[str, Any] = {"files": {"f": b"x"}, "step": 0, **kwargs}
        with pytest.raises((ValueError, TypeError), match=match):
            write_checkpoint(recording, "ck", **args)
    assert recording.calls == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:10] + bytes([data[10] ^ 0x01]) + data[11:], id="flipped-byte"),
    ],
)
def test_damaged_file_is_detected_and_latest_valid_falls_back(store: ObjectStore, damage: Any) -> None:
    good = commit(store, "step-1", 1)
    bad = commit(store, "step-2", 2)
    store.put_bytes("step-2/model.ckpt", damage(bad))
    newest = list_committed(store)[-1]
    with pytest.raises(CorruptCheckpointError) as err:
        read_verified(store, newest, "model.ckpt")
    message = str(err.value)
    assert "step-2/model.ckpt" in message and newest.files["model.ckpt"]["sha256"] in message
    assert f"expected {len(bad)} bytes" in message
    with pytest.warns(CheckpointFallbackWarning, match=r"step-2.*model\.ckpt.*previous"):
        result = latest_valid(store)
    assert result is not None and result[0].name == "step-1" and result[1] == good


def test_missing_manifest_means_no_checkpoint(store: ObjectStore) -> None:
    commit(store, "step-1", 1)
    store.put_bytes("step-2/model.ckpt", b"written but never committed")
    assert [c.name for c in list_committed(store)] == ["step-1"]
    assert read_manifest(store, "step-2") is None
    with pytest.raises(CheckpointNotFoundError, match="never committed"):
        load_manifest(store, "step-2")
    result = latest_valid(store)
    assert result is not None and result[0].name == "step-1"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"format": "other"}', b"[]", b'{"format": "lightning_lib.checkpoint", "version": 99}'],
)
def test_invalid_manifest_is_ignored(store: ObjectStore, raw: bytes) -> None:
    store.put_bytes("bad/model.ckpt", b"x")
    store.put_bytes(f"bad/{MANIFEST_NAME}", raw)
    assert read_manifest(store, "bad") is None
    assert list_committed(store) == []
    assert latest_valid(store) is None


def test_manifest_without_its_file(store: ObjectStore, tmp_path) -> None:
    good = commit(store, "step-1", 1)
    commit(store, "step-2", 2)
    store.delete("step-2/model.ckpt")
    newest = list_committed(store)[-1]
    with pytest.raises(
        CorruptCheckpointError, match=r"step-2/model\.ckpt is listed in the manifest but missing"
    ):
        read_verified(store, newest, "model.ckpt")
    with pytest.raises(CorruptCheckpointError, match="missing"):
        download_verified(store, newest, "model.ckpt", str(tmp_path / "out"))
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
        store.put_bytes(f"{name}/model.ckpt", b"garbage")
    with pytest.warns(CheckpointFallbackWarning) as record:
        assert latest_valid(store) is None
    assert [str(w.message).split()[1].rsplit("/", 1)[-1] for w in record] == ["a", "c", "b"]


def test_latest_valid_with_several_files_needs_a_filename(store: ObjectStore) -> None:
    write_checkpoint(store, "ck", {"model.ckpt": b"m", "extra.json": b"{}"}, step=0)
    with pytest.raises(ValueError, match="filename="):
        latest_valid(store)
    result = latest_valid(store, filename="extra.json")
    assert result is not None and result[1] == b"{}"


def test_download_verified(store: ObjectStore, tmp_path) -> None:
    data = commit(store, "ck", 3)
    ckpt = read_manifest(store, "ck")
    assert ckpt is not None
    target = tmp_path / "dl" / "model.ckpt"
    download_verified(store, ckpt, "model.ckpt", str(target))
    assert target.read_bytes() == data
    store.put_bytes("ck/model.ckpt", data[:-1] + b"!")
    with pytest.raises(CorruptCheckpointError):
        download_verified(store, ckpt, "model.ckpt", str(tmp_path / "dl" / "bad.ckpt"))
    assert list((tmp_path / "dl").iterdir()) == [target]  # nothing unverified left behind


def test_delete_removes_manifest_first(store: ObjectStore) -> None:
    write_checkpoint(store, "ck", {"a": b"1", "b": b"2"}, step=1)
    commit(store, "keep", 2)
    visible_after_first_delete: list[Any] = []

    def before(op: str, key: str) -> None:
        if op == "delete" and len(recording.calls) == 1:
            visible_after_first_delete.append(read_manifest(store, "ck"))

    recording = RecordingStore(store, before=before)
    delete_checkpoint(recording, "ck")
    assert recording.calls[0][:2] == ("delete", f"ck/{MANIFEST_NAME}")
    assert visible_after_first_delete == [None]  # gone for readers before any file is removed
    assert store.list("ck/") == []
    assert [c.name for c in list_committed(store)] == ["keep"]


def test_cleanup_orphans_respects_grace_and_commits(store: ObjectStore) -> None:
    commit(store, "committed", 1)
    store.put_bytes("orphan/model.ckpt", b"partial")
    store.put_bytes("orphan/nested/part", b"partial")
    store.put_bytes("notes.txt", b"a loose file directly under the prefix")
    store.put_bytes(f"broken/{MANIFEST_NAME}", b"{not json")  # has a manifest: left for a human
    assert cleanup_orphans(store, grace_seconds=3600) == []
    assert store.exists("orphan/model.ckpt")
    assert cleanup_orphans(store, grace_seconds=0) == ["orphan"]
    assert store.list("orphan/") == []
    assert store.exists("notes.txt") and store.exists(f"broken/{MANIFEST_NAME}")
    result = latest_valid(store)
    assert result is not None and result[0].name == "committed"
    with pytest.raises(ValueError, match="grace_seconds"):
        cleanup_orphans(store, grace_seconds=-1)


def test_cleanup_orphans_scoped_to_prefix(store: ObjectStore) -> None:
    commit(store, "run1/ck-1", 1)
    store.put_bytes("run1/ck-2/model.ckpt", b"partial")
    # Without a prefix, run1 holds a manifest somewhere below, so none of it is touched.
    assert cleanup_orphans(store, grace_seconds=0) == []
    assert cleanup_orphans(store, grace_seconds=0, prefix="run1/") == ["run1/ck-2"]
    assert [c.name for c in list_committed(store, "run1/")] == ["run1/ck-1"]
