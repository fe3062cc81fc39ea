"""Checkpoint commits under storage faults and hostile manifests (issue 14, points 2, 3 and 12).

- A failed background commit is raised as ``RuntimeError(...) from <the store's error>``: the retry
  policy judges it by that cause (an outage is transient, a denied access permanent).
- Any content in a commit marker (garbage, deep nesting, wrong types, huge) is an
  ``InvalidManifestError`` that readers skip; a name where a file exists, committed or not, is taken by
  new checkpoints, so a fit resumed past a corrupt newest marker keeps committing (its own "last.ckpt"
  it overwrites, as Lightning does).
- The writer coalesces: saves queue behind the commit in flight without waiting, a save that replaces a
  checkpoint (or overwrites its own name) whose commit has not started drops it, and only more than
  ``max_pending`` distinct snapshots make a save wait (memory stays bounded).
- Review finding 1: the deletions behind a dropped save wait for the save that superseded it, and a name
  stays taken until its deletion has run, so retention never deletes the run's last committed checkpoint.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import lightning_lib as pl
from lightning_lib.checkpoint import (
    CheckpointExistsError,
    CheckpointWriter,
    InvalidManifestError,
    list_committed,
    read_manifest,
    write_checkpoint,
)
from lightning_lib.checkpoint import _writer as checkpoint_writer
from lightning_lib.checkpoint._manifest import MAGIC, MAX_MANIFEST_BYTES, decode_trailer
from lightning_lib.checkpoint._writer import WriterStats
from lightning_lib.storage import AccessDeniedError, BucketNotFound, LocalStore, StorageError
from tasks.retry import is_transient
from tests.support import CountingModel, archive, loader, marker_json, trainer_kwargs, with_marker
from tests.test_checkpoint_streaming import HeldCommits, _committed, _state, _until


def _sealed(tmp_path: Path) -> bytes:
    """A committed checkpoint file: the base the hostile markers are put into."""
    store = LocalStore(tmp_path / "base")
    write_checkpoint(store, "ck", archive("base"), step=3)
    return store.get_bytes("ck")


def _edited(**changes: Any) -> Any:
    """A marker JSON edit: the committed one with ``changes`` applied."""

    def edit(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc.update(changes)
        return json.dumps(doc).encode()

    return edit


# ---- point 3: hostile markers --------------------------------------------------------------------
HOSTILE: dict[str, Any] = {
    "garbage": lambda raw: b"\x00\xff not json at all",
    "not-an-object": lambda raw: b"[1, 2, 3]",
    "deeply-nested-array": lambda raw: b"[" * 30_000 + b"]" * 30_000,
    "deeply-nested-extra": lambda raw: raw[:-1] + b',"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    "huge-integer-step": lambda raw: raw[:-1] + b',"step":' + b"9" * 5000 + b"}",
    "non-finite-time": _edited(time=float("nan")),
    "negative-step": _edited(step=-1),
    "string-size": _edited(size="3"),
    "sha-with-newline": lambda raw: raw.replace(b'","size"', b'\\n","size"'),
    "other-format": _edited(format="other"),
    "newer-version": _edited(version=3),
    "too-large": lambda raw: b" " * (MAX_MANIFEST_BYTES + 1),
}


@pytest.mark.parametrize("edit", HOSTILE.values(), ids=HOSTILE.keys())
def test_any_bad_marker_is_an_invalid_manifest_error_that_readers_skip(edit: Any, tmp_path: Path) -> None:
    sealed = _sealed(tmp_path)
    raw = edit(marker_json(sealed))
    if len(raw) > MAX_MANIFEST_BYTES:  # more than a zip comment holds: its declared length cannot fit
        hostile = sealed[: -len(MAGIC) - 4] + (1 << 31).to_bytes(4, "little") + MAGIC
    else:
        hostile = with_marker(sealed, raw)
    with pytest.raises(InvalidManifestError, match="commit marker of file:///root/ck is not valid") as raised:
        decode_trailer(hostile[-70_000:], len(hostile), "ck", "file:///root/ck")
    assert len(str(raised.value)) < 600  # names what is wrong without echoing the hostile content
    store = LocalStore(tmp_path / "store")
    store.put_bytes("ck", hostile)
    assert read_manifest(store, "ck") is None and list_committed(store) == []


def test_the_marker_the_hostile_ones_start_from_is_valid(tmp_path: Path) -> None:
    sealed = _sealed(tmp_path)
    found = decode_trailer(sealed, len(sealed), "ck", "file:///root/ck")
    assert found is not None and found.step == 3
    assert (
        decode_trailer(with_marker(sealed, marker_json(sealed)), len(sealed), "ck", "file:///root/ck")
        == found
    )


def test_a_name_whose_file_is_not_a_committed_checkpoint_is_taken(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("epoch=0.ckpt", b"garbage, or a file of the user's")
    writer = CheckpointWriter()
    assert writer.exists(str(tmp_path / "epoch=0.ckpt"))  # taken, though readers skip it
    with pytest.raises(CheckpointExistsError, match="already exists"):
        write_checkpoint(store, "epoch=0.ckpt", archive("new"), step=1)
    assert store.get_bytes("epoch=0.ckpt") == b"garbage, or a file of the user's"


@pytest.mark.parametrize(
    "content", [b"{garbage", b"[" * 30_000 + b"]" * 30_000], ids=["garbage", "deeply-nested"]
)
def test_a_fit_resumed_past_a_corrupt_newest_manifest_keeps_committing(
    content: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dirpath = tmp_path / "ckpt"

    def fit(epochs: int, ckpt_path: str | None) -> pl.Trainer:
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=dirpath, save_top_k=-1, save_last=True)
        kwargs = trainer_kwargs(
            tmp_path, max_epochs=epochs, enable_checkpointing=True, callbacks=[checkpoint]
        )
        trainer = pl.Trainer(**kwargs)
        trainer.fit(CountingModel(), loader(), ckpt_path=ckpt_path)
        return trainer

    fit(2, None)
    store = LocalStore(dirpath)
    names = {c.name: c.step for c in list_committed(store)}
    assert names == {"epoch=0-step=2.ckpt": 2, "epoch=1-step=4.ckpt": 4, "last.ckpt": 4}
    store.put_bytes("last.ckpt", with_marker(store.get_bytes("last.ckpt"), content))  # the newest's marker

    trainer = fit(3, "last")
    assert "Ignoring checkpoint" in caplog.text and "is not valid" in caplog.text
    assert trainer.ckpt_path == str(dirpath / "epoch=1-step=4.ckpt") and trainer.global_step == 6
    # the resumed callback goes on with its own "last.ckpt" (its state names it), as Lightning does
    assert read_manifest(store, "last.ckpt").step == 6  # type: ignore[union-attr]
    hostile = with_marker(store.get_bytes("epoch=2-step=6.ckpt"), content)
    store.put_bytes("epoch=2-step=6.ckpt", hostile)  # now a top-k one's marker is garbage
    trainer = fit(4, "last")  # and again: every attempt commits
    assert trainer.ckpt_path == str(dirpath / "last.ckpt") and trainer.global_step == 8
    newest = list_committed(store)[-1]
    assert newest.step == 8 and newest.name == "last.ckpt"
    assert store.get_bytes("epoch=2-step=6.ckpt") == hostile  # left in place


# ---- point 2: what a failed background commit is raised as ----------------------------------------
@pytest.mark.parametrize(
    ("cause", "transient"),
    [
        (StorageError("S3 request to write s3://b/k failed: SlowDown"), True),
        (ConnectionResetError("connection reset by peer"), True),
        (AccessDeniedError("Access denied to write s3://b/k"), False),
        (BucketNotFound("The S3 bucket 'b' does not exist"), False),
    ],
)
def test_a_failed_background_commit_is_retried_only_when_its_cause_is_transient(
    cause: BaseException, transient: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise cause

    monkeypatch.setattr("lightning_lib.checkpoint._writer.write_checkpoint", failing)
    writer = CheckpointWriter()
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    with pytest.raises(RuntimeError, match="background checkpoint commit failed") as raised:
        writer.wait()
    assert raised.value.__cause__ is cause
    assert is_transient(raised.value) is transient
    assert not is_transient(RuntimeError("a bug"))  # an unclassified error without a cause is permanent


# ---- point 12: coalescing -------------------------------------------------------------------------------
def test_a_replaced_checkpoint_whose_commit_has_not_started_is_never_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = HeldCommits(monkeypatch)
    gate = commits.hold("a.ckpt")  # a slow store: the first commit takes long
    writer = CheckpointWriter()
    uri = str(tmp_path / "{}.ckpt").format
    writer.save(_state(), uri("a"), 1)
    _until(lambda: commits.started == ["a.ckpt"])
    writer.save(_state(), uri("last"), 1)
    writer.save(_state(), uri("last-v1"), 2, replaces=uri("last"))  # next epoch's "last"
    writer.save(_state(), uri("last"), 3, replaces=uri("last-v1"))  # and the next
    assert writer.stats == WriterStats(saves=4, coalesced=2)  # nothing waited
    gate.set()
    writer.wait()
    assert commits.started == ["a.ckpt", "last.ckpt"]  # the newest, uploaded once
    assert _committed(tmp_path) == ["a.ckpt", "last.ckpt"]
    assert read_manifest(LocalStore(tmp_path), "last.ckpt").step == 3  # type: ignore[union-attr]
    assert writer.stats == WriterStats(saves=4, committed=2, coalesced=2)


def test_overwrites_of_a_name_whose_commit_has_not_started_are_coalesced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = HeldCommits(monkeypatch)
    gate = commits.hold("a.ckpt")
    writer = CheckpointWriter()
    uri = str(tmp_path / "{}.ckpt").format
    writer.save(_state(), uri("a"), 1)
    _until(lambda: commits.started == ["a.ckpt"])
    for step in (1, 2, 3):  # each epoch's "last.ckpt", overwritten in place
        writer.save(_state(), uri("last"), step, overwrite=True)
    assert writer.stats == WriterStats(saves=4, coalesced=2)  # nothing waited
    gate.set()
    writer.wait()
    assert commits.started == ["a.ckpt", "last.ckpt"]  # the newest, uploaded once
    assert read_manifest(LocalStore(tmp_path), "last.ckpt").step == 3  # type: ignore[union-attr]


def test_more_distinct_checkpoints_than_max_pending_wait_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = HeldCommits(monkeypatch)
    gate = commits.hold("a.ckpt")
    writer = CheckpointWriter(max_pending=2)
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    _until(lambda: commits.started == ["a.ckpt"])
    writer.save(_state(), str(tmp_path / "b.ckpt"), 2)
    writer.save(_state(), str(tmp_path / "c.ckpt"), 3)  # every one kept (save_top_k=-1): none dropped
    third = threading.Thread(target=writer.save, args=(_state(), str(tmp_path / "d.ckpt"), 4))
    third.start()
    _until(lambda: writer.stats.waited == 1)
    assert third.is_alive()  # bounded memory: 1 in flight + 2 waiting snapshots
    gate.set()
    third.join(10)
    writer.wait()
    assert _committed(tmp_path) == ["a.ckpt", "b.ckpt", "c.ckpt", "d.ckpt"]
    assert writer.stats == WriterStats(saves=4, committed=4, waited=1)


def test_max_pending_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Expected max_pending >= 1, received 0"):
        CheckpointWriter(max_pending=0)


# ---- review finding 1: coalescing never leaves the run without a committed checkpoint -------------------
class RetentionWatch:
    """Wraps the writer's deletions: right before each one, the committed checkpoints of its folder are
    listed, and a deletion that would leave none (while one exists) is recorded as a violation."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._delete = checkpoint_writer.delete_checkpoint
        self.deleted: list[str] = []
        self.violations: list[tuple[str, list[str]]] = []
        monkeypatch.setattr(checkpoint_writer, "delete_checkpoint", self)

    def __call__(self, store: Any, name: str) -> None:
        committed = [c.name for c in list_committed(store)]
        if committed and not set(committed) - {name}:
            self.violations.append((name, committed))
        self.deleted.append(name)
        self._delete(store, name)


class ImprovingModel(CountingModel):
    """Logs a ``score`` that improves every epoch, so each epoch's checkpoint replaces the previous best."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("score", -float(self.current_epoch))
        return super().training_step(batch, batch_idx)


class HoldOneCommit(pl.Callback):
    """The commit of ``held`` saved in epoch 1 is in flight through epochs 2 and 3: every save of those
    epochs queues behind it, and the later one supersedes the earlier. Released when training ends,
    before ``fit`` waits for the writer."""

    def __init__(self, commits: HeldCommits, held: str) -> None:
        self.commits, self.held = commits, held
        self.gate: threading.Event | None = None
        self.before = 0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == 1:
            trainer._checkpoint_writer.wait()  # epoch 0's checkpoint is committed: the one to keep
            self.before = self.commits.started.count(self.held)
            self.gate = self.commits.hold(self.held)
        if trainer.current_epoch == 2:
            _until(lambda: self.commits.started.count(self.held) > self.before)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        assert self.gate is not None
        self.gate.set()


@pytest.mark.parametrize(
    ("checkpoint_kwargs", "held", "newest"),
    [
        # "last.ckpt" overwritten in place: epoch 2's overwrite dropped by epoch 3's, nothing deleted
        ({"save_top_k": 0, "save_last": True}, "last.ckpt", "last.ckpt"),
        # top-k: epoch 2's best dropped by epoch 3's, while epoch 1's best (the only one) is uploading
        ({"save_top_k": 1, "monitor": "score"}, "epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"),
    ],
    ids=["last", "top-k"],
)
def test_a_dropped_save_never_lets_retention_delete_the_last_committed_checkpoint(
    checkpoint_kwargs: dict[str, Any], held: str, newest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = HeldCommits(monkeypatch)
    watch = RetentionWatch(monkeypatch)
    dirpath = tmp_path / "ckpt"
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=dirpath, **checkpoint_kwargs)
    hold = HoldOneCommit(commits, held)
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=4, enable_checkpointing=True, callbacks=[hold, checkpoint])
    )
    # the local folder stands in for a slow object store: its commits run in the background too
    trainer._checkpoint_writer.sync_local = False
    trainer.fit(ImprovingModel(), loader())
    stats = trainer._checkpoint_writer.stats
    assert stats.coalesced == 1 and stats.waited == 0 and stats.failed == 0  # the slow-store policy holds
    assert watch.violations == []  # before every deletion, another committed checkpoint existed
    assert bool(watch.deleted) == (newest != held)  # ... and retention did run where it had to
    assert _committed(dirpath) == [newest]  # the newest, alone once retention caught up
    assert read_manifest(LocalStore(dirpath), newest).step == trainer.global_step == 8  # type: ignore[union-attr]


def test_a_name_stays_taken_until_its_deletion_has_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = HeldCommits(monkeypatch)
    writer = CheckpointWriter()
    uri = str(tmp_path / "{}.ckpt").format
    writer.save(_state(), uri("old"), 1)
    writer.wait()
    gate = commits.hold("new.ckpt")
    writer.save(_state(), uri("new"), 2, replaces=uri("old"))
    _until(lambda: commits.started[-1] == "new.ckpt")
    assert writer.exists(uri("old"))  # its deletion is only queued: a new save must not reuse the name
    gate.set()
    writer.wait()
    assert not writer.exists(uri("old")) and _committed(tmp_path) == ["new.ckpt"]


def test_deletions_behind_a_dropped_save_wait_for_the_save_that_superseded_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = HeldCommits(monkeypatch)
    watch = RetentionWatch(monkeypatch)
    writer = CheckpointWriter()
    uri = str(tmp_path / "{}.ckpt").format
    writer.save(_state(), uri("b1"), 1)
    writer.wait()
    gate = commits.hold("b2.ckpt")
    writer.save(_state(), uri("b2"), 2, replaces=uri("b1"))
    _until(lambda: commits.started[-1] == "b2.ckpt")
    writer.save(_state(), uri("b3"), 3, replaces=uri("b2"))
    writer.save(_state(), uri("b4"), 4, replaces=uri("b3"))  # b3 dropped: "delete b2" now waits for b4
    gate.set()
    writer.wait()
    assert watch.violations == [] and watch.deleted == ["b1.ckpt", "b2.ckpt", "b3.ckpt"]
    assert commits.started == ["b1.ckpt", "b2.ckpt", "b4.ckpt"] and _committed(tmp_path) == ["b4.ckpt"]
    assert writer.stats == WriterStats(saves=4, committed=3, coalesced=1)
