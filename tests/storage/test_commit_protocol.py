"""The commit protocol, on both stores: a checkpoint is Lightning's file, sealed with its commit marker
(the archive's comment) and published whole."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from typing import Any

import pytest
import torch

from lightning_lib.checkpoint import (
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidManifestError,
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
from lightning_lib.checkpoint._manifest import MAGIC
from lightning_lib.storage import ObjectStore
from tests.support import archive, marker_json, with_marker


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


def commit(store: ObjectStore, name: str, step: int, tag: str | None = None) -> bytes:
    write_checkpoint(store, name, archive(tag or name), step=step)
    return store.get_bytes(name)


def loaded(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def test_a_committed_file_is_torch_saves_archive_with_its_marker_as_the_comment(store: ObjectStore) -> None:
    source = archive("a")
    before = time.time()
    ckpt = write_checkpoint(store, "run/step-7.ckpt", source, step=7, extra={"epoch": 1})
    data = store.get_bytes("run/step-7.ckpt")
    assert ckpt.name == "run/step-7.ckpt" and ckpt.uri.endswith("run/step-7.ckpt")
    assert ckpt.step == 7 and ckpt.extra == {"epoch": 1} and before <= ckpt.time <= time.time()
    # the body is torch.save's bytes but the comment's (empty) length, which the marker replaces
    assert data[: ckpt.size] == source[:-2] and ckpt.sha256 == hashlib.sha256(source[:-2]).hexdigest()
    assert ckpt.file_size == len(data) and data.endswith(MAGIC)
    assert loaded(data)["tag"] == "a"  # torch.load opens it as it is
    comment = zipfile.ZipFile(io.BytesIO(data)).comment
    doc = json.loads(comment[: -len(MAGIC) - 4])
    assert doc["format"] == "lightning_lib.checkpoint" and doc["version"] == 2 and doc["step"] == 7
    assert load_manifest(store, "run/step-7.ckpt") == ckpt
    assert read_verified(store, ckpt) == data
    assert [i.key for i in store.list()] == ["run/step-7.ckpt"]  # nothing beside the file


def test_sources_bytes_path_and_growing_file(store: ObjectStore, tmp_path) -> None:
    from lightning_lib.checkpoint._commit import new_body_writer, seal
    from lightning_lib.storage import GrowingFile

    path = tmp_path / "saved.ckpt"
    path.write_bytes(archive("path"))
    write_checkpoint(store, "from-path.ckpt", str(path), step=1)
    assert path.read_bytes() == archive("path")  # the caller's file is sealed on a copy
    write_checkpoint(store, "from-bytes.ckpt", archive("bytes"), step=2)
    writer = new_body_writer(str(tmp_path / "staged"))
    with writer:
        torch.save({"tag": "growing"}, writer)  # type: ignore[arg-type]
    staged = GrowingFile(tmp_path / "staged")
    staged.finish(seal(writer, step=3))
    write_checkpoint(store, "from-growing.ckpt", staged, step=3)
    committed = list_committed(store)
    assert [(c.name, c.step) for c in committed] == [
        ("from-path.ckpt", 1),
        ("from-bytes.ckpt", 2),
        ("from-growing.ckpt", 3),
    ]
    assert [loaded(read_verified(store, c))["tag"] for c in committed] == ["path", "bytes", "growing"]


def test_a_new_name_is_published_once_and_conditionally(store: ObjectStore) -> None:
    seen: list[Any] = []

    def reader(op: str, key: str) -> None:
        # readers looking while the checkpoint is being written see no checkpoint at all
        seen.append((read_manifest(store, "ck.ckpt"), list_committed(store), latest_valid(store)))

    recording = RecordingStore(store, before=reader)
    write_checkpoint(recording, "ck.ckpt", archive("ck"), step=1)
    assert recording.calls == [("put_bytes", "ck.ckpt", {"if_none_match": True})]
    assert seen == [(None, [], None)]
    assert read_manifest(store, "ck.ckpt") is not None


def test_a_taken_name_is_never_overwritten_unasked(store: ObjectStore) -> None:
    original = commit(store, "ck.ckpt", 1)
    store.put_bytes("users.ckpt", b"a file of the user's, without a marker")
    recording = RecordingStore(store)
    for name in ("ck.ckpt", "users.ckpt"):
        with pytest.raises(CheckpointExistsError, match="already exists"):
            write_checkpoint(recording, name, archive("other"), step=2)
    assert recording.calls == []  # refused before uploading anything
    assert store.get_bytes("ck.ckpt") == original


def test_a_racing_writer_is_refused_by_the_conditional_publish(store: ObjectStore) -> None:
    def other_writer_first(op: str, key: str) -> None:
        commit(store, "ck.ckpt", 9, "theirs")

    with pytest.raises(CheckpointExistsError):
        write_checkpoint(RecordingStore(store, before=other_writer_first), "ck.ckpt", archive("mine"), step=1)
    assert loaded(store.get_bytes("ck.ckpt"))["tag"] == "theirs"


def test_overwrite_replaces_the_file_in_one_step(store: ObjectStore) -> None:
    commit(store, "last.ckpt", 1, "old")
    recording = RecordingStore(store)
    ckpt = write_checkpoint(recording, "last.ckpt", archive("new"), step=2, overwrite=True)
    assert recording.calls == [("put_bytes", "last.ckpt", {"if_none_match": False})]
    assert ckpt.step == 2 and loaded(read_verified(store, ckpt))["tag"] == "new"
    assert [i.key for i in store.list()] == ["last.ckpt"]


def test_a_reader_of_an_overwritten_file_verifies_the_version_it_reads(store: ObjectStore, tmp_path) -> None:
    commit(store, "last.ckpt", 1, "old")
    stale = read_manifest(store, "last.ckpt")
    assert stale is not None
    write_checkpoint(store, "last.ckpt", archive("new"), step=2, overwrite=True)
    # the file carries its own marker: the new version verifies on its own
    assert loaded(read_verified(store, stale))["tag"] == "new"
    download_verified(store, stale, str(tmp_path / "copy.ckpt"))
    assert loaded((tmp_path / "copy.ckpt").read_bytes())["tag"] == "new"
    store.put_bytes("last.ckpt", archive("plain, unsealed"))
    with pytest.raises(CorruptCheckpointError, match="lost its commit marker"):
        read_verified(store, stale)


def test_invalid_arguments_fail_before_any_write(store: ObjectStore) -> None:
    recording = RecordingStore(store)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "../x"}, "key"),
        ({"step": -1}, "non-negative"),
        ({"extra": {"obj": object()}}, "not JSON serializable"),
        ({"source": b"not an archive at all"}, "written by torch.save"),
        ({"extra": {"pad": "x" * 70_000}}, "extra too large"),
    ]
    for kwargs, match in cases:
        args: dict[str, Any] = {"name": "ck.ckpt", "source": archive("x"), "step": 0, **kwargs}
        with pytest.raises((ValueError, TypeError), match=match):
            write_checkpoint(recording, **args)
    assert recording.calls == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:100] + data[-400:], id="truncated"),
        pytest.param(lambda data: data[:100] + bytes([data[100] ^ 0x01]) + data[101:], id="flipped-byte"),
    ],
)
def test_damaged_file_is_detected_and_latest_valid_falls_back(store: ObjectStore, damage: Any) -> None:
    good = commit(store, "step-1.ckpt", 1)
    bad = commit(store, "step-2.ckpt", 2)
    store.put_bytes("step-2.ckpt", damage(bad))
    newest = list_committed(store)[-1]
    assert newest.name == "step-2.ckpt"
    with pytest.raises(CorruptCheckpointError) as err:
        read_verified(store, newest)
    message = str(err.value)
    assert "step-2.ckpt" in message and "does not match its commit marker" in message
    with pytest.warns(CheckpointFallbackWarning, match=r"step-2\.ckpt.*previous"):
        result = latest_valid(store)
    assert result is not None and result[0].name == "step-1.ckpt" and result[1] == good


def test_a_file_without_a_marker_is_no_checkpoint(store: ObjectStore) -> None:
    commit(store, "step-1.ckpt", 1)
    store.put_bytes("step-2.ckpt", archive("written by torch.save, never committed"))
    assert [c.name for c in list_committed(store)] == ["step-1.ckpt"]
    assert read_manifest(store, "step-2.ckpt") is None and read_manifest(store, "missing.ckpt") is None
    with pytest.raises(CheckpointNotFoundError, match="has no commit marker"):
        load_manifest(store, "step-2.ckpt")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_manifest(store, "missing.ckpt")
    result = latest_valid(store)
    assert result is not None and result[0].name == "step-1.ckpt"


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda raw: b"{not json", id="garbage"),
        pytest.param(lambda raw: raw.replace(b'"format":"lightning_lib', b'"format":"other'), id="format"),
        pytest.param(lambda raw: raw.replace(b'"version":2', b'"version":99'), id="newer-version"),
        pytest.param(lambda raw: raw.replace(b'"step":1', b'"step":-1'), id="negative-step"),
        pytest.param(lambda raw: raw.replace(b'"size":', b'"size":-'), id="negative-size"),
        pytest.param(lambda raw: b"[" * 5000 + b"]" * 5000, id="deeply-nested"),
    ],
)
def test_an_invalid_marker_is_skipped_by_readers(store: ObjectStore, edit: Any) -> None:
    data = commit(store, "bad.ckpt", 1)
    store.put_bytes("bad.ckpt", with_marker(data, edit(marker_json(data))))
    with pytest.raises(InvalidManifestError, match=r"commit marker of .*bad\.ckpt is not valid") as raised:
        load_manifest(store, "bad.ckpt")
    assert len(str(raised.value)) < 600  # names what is wrong without echoing the hostile content
    assert read_manifest(store, "bad.ckpt") is None
    assert list_committed(store) == []
    assert latest_valid(store) is None


def test_a_committed_file_that_went_missing(store: ObjectStore, tmp_path) -> None:
    good = commit(store, "step-1.ckpt", 1)
    commit(store, "step-2.ckpt", 2)
    newest = list_committed(store)[-1]
    store.delete("step-2.ckpt")
    with pytest.raises(CorruptCheckpointError, match=r"step-2\.ckpt was committed but the file is missing"):
        read_verified(store, newest)
    with pytest.raises(CorruptCheckpointError, match="missing"):
        download_verified(store, newest, str(tmp_path / "out"))
    result = latest_valid(store)  # deleted: no longer a candidate at all
    assert result is not None and result[1] == good


def test_latest_valid_order_names_suffix_and_exhaustion(store: ObjectStore) -> None:
    assert latest_valid(store) is None
    commit(store, "b.ckpt", 5)
    commit(store, "a.ckpt", 9)
    commit(store, "c.ckpt", 5)  # same step as b, committed later: newer
    commit(store, "d.pt", 12)
    assert [c.name for c in list_committed(store, suffix=".ckpt")] == ["b.ckpt", "c.ckpt", "a.ckpt"]
    assert [c.name for c in list_committed(store)][-1] == "d.pt"
    result = latest_valid(store, names=["b.ckpt", "c.ckpt", "missing.ckpt"])
    assert result is not None and result[0].name == "c.ckpt"
    for name in ("a.ckpt", "b.ckpt", "c.ckpt"):
        data = store.get_bytes(name)
        store.put_bytes(name, data[:50] + b"!" + data[51:])
    with pytest.warns(CheckpointFallbackWarning) as record:
        assert latest_valid(store, suffix=".ckpt") is None
    assert [str(w.message).split()[1].rsplit("/", 1)[-1] for w in record] == ["a.ckpt", "c.ckpt", "b.ckpt"]


def test_download_verified(store: ObjectStore, tmp_path) -> None:
    data = commit(store, "ck.ckpt", 3)
    ckpt = read_manifest(store, "ck.ckpt")
    assert ckpt is not None
    target = tmp_path / "dl" / "model.ckpt"
    download_verified(store, ckpt, str(target))
    assert target.read_bytes() == data
    store.put_bytes("ck.ckpt", data[:10] + b"!" + data[11:])
    with pytest.raises(CorruptCheckpointError):
        download_verified(store, ckpt, str(tmp_path / "dl" / "bad.ckpt"))
    assert list((tmp_path / "dl").iterdir()) == [target]  # nothing unverified left behind


def test_delete_is_one_step(store: ObjectStore) -> None:
    commit(store, "ck.ckpt", 1)
    commit(store, "keep.ckpt", 2)
    recording = RecordingStore(store)
    delete_checkpoint(recording, "ck.ckpt")
    assert [(op, key) for op, key, _ in recording.calls] == [("delete", "ck.ckpt")]
    assert [c.name for c in list_committed(store)] == ["keep.ckpt"]


def test_cleanup_orphans_removes_only_unfinished_uploads(store: ObjectStore) -> None:
    commit(store, "committed.ckpt", 1)
    store.put_bytes("users-own.ckpt", b"a file without a marker: maybe the user's")
    store.put_bytes("notes/readme.txt", b"a loose file")
    assert cleanup_orphans(store, grace_seconds=0) == 0  # nothing is ever half-written under a name
    assert [i.key for i in store.list()] == ["committed.ckpt", "notes/readme.txt", "users-own.ckpt"]
    with pytest.raises(ValueError, match="grace_seconds"):
        cleanup_orphans(store, grace_seconds=-1)
