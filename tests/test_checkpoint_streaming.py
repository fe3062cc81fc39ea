"""The one background checkpoint writer (one commit in flight, saves queued behind it without waiting,
an error raised once, nothing run after a failure, shutdown waiting for a commit), its commit (serialise
while uploading), and resume's single verified load."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lib as pl
from lightning_lib.checkpoint import CheckpointWriter, list_committed, read_manifest
from lightning_lib.checkpoint import _format as checkpoint_io
from lightning_lib.checkpoint import _writer as checkpoint_writer
from lightning_lib.checkpoint._writer import WriterStats
from lightning_lib.storage import LocalStore
from lightning_lib.storage._hashing import WriteCancelled
from tests.support import CountingModel, loader, trainer_kwargs

REPO = Path(__file__).resolve().parents[1]


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return err


def _staging(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith("lightning_lib-ckpt-")]


def test_snapshot_is_released_once_serialised_before_the_upload_ends(tmp_path: Path, monkeypatch) -> None:
    refs: list[weakref.ref[torch.Tensor]] = []
    real_snapshot = checkpoint_writer.snapshot

    def recording_snapshot(checkpoint: dict[str, Any]) -> dict[str, Any]:
        copied = real_snapshot(checkpoint)
        refs.extend(weakref.ref(t) for t in copied["state_dict"].values())
        return copied

    alive_during_upload: list[bool] = []
    real_put = LocalStore.put_growing_file

    def upload(self: LocalStore, key: str, source: Any, **kwargs: Any) -> None:
        source.result()  # serialised
        gc.collect()
        alive_during_upload.append(any(ref() is not None for ref in refs))
        real_put(self, key, source, **kwargs)

    monkeypatch.setattr(checkpoint_writer, "snapshot", recording_snapshot)
    monkeypatch.setattr(LocalStore, "put_growing_file", upload)
    writer = CheckpointWriter()
    writer.save({"state_dict": {"w": torch.randn(1000), "b": torch.randn(10)}}, str(tmp_path / "a.ckpt"), 1)
    writer.wait()
    writer.close()
    assert refs and alive_during_upload == [False]
    assert read_manifest(LocalStore(tmp_path), "a.ckpt") is not None


def test_a_serialisation_error_surfaces_and_commits_nothing(tmp_path: Path, monkeypatch) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    writer = CheckpointWriter()
    unpicklable = {"state_dict": {"w": torch.zeros(3)}, "bad": threading.Lock()}
    writer.save(unpicklable, str(tmp_path / "ckpt" / "a.ckpt"), 1)
    with pytest.raises(RuntimeError, match="background checkpoint commit failed"):
        writer.wait()
    writer.close()
    assert list_committed(LocalStore(tmp_path / "ckpt")) == []
    assert _staging(spill) == []  # the staging folder went with the failed commit


def test_an_upload_error_stops_the_serialiser_and_surfaces(tmp_path: Path, monkeypatch) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    stopped: list[BaseException] = []
    real_serialise = checkpoint_writer._serialise

    def serialise(holder: list[dict[str, Any]], staged: Any, *args: Any) -> None:
        real_serialise(holder, staged, *args)
        try:
            staged.result()
        except BaseException as err:
            stopped.append(err)

    def failing_upload(self: LocalStore, key: str, source: Any, **kwargs: Any) -> None:
        source.wait_for(1)  # serialisation has started
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_writer, "_serialise", serialise)
    monkeypatch.setattr(LocalStore, "put_growing_file", failing_upload)
    writer = CheckpointWriter(background=False)
    big = {"state_dict": {f"w{i}": torch.randn(256, 1024) for i in range(64)}}  # 64 MB in 64 writes
    with pytest.raises(OSError, match="disk full"):
        writer.save(big, str(tmp_path / "ckpt" / "a.ckpt"), 1)
    # it stopped at its next write instead of writing on to the end (torch re-raises that as its own error)
    assert len(stopped) == 1 and isinstance(_root_cause(stopped[0]), WriteCancelled)
    assert _staging(spill) == []


def test_resume_from_last_reads_and_verifies_the_checkpoint_once(tmp_path: Path, monkeypatch) -> None:
    ckpt_dir = tmp_path / "ckpt"
    first = pl.Trainer(
        **trainer_kwargs(
            tmp_path / "run1",
            enable_checkpointing=True,
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_top_k=-1)],
        )
    )
    first.fit(CountingModel(), loader())
    loads: list[str] = []
    real_load = checkpoint_io.load_verified

    def counting(store: Any, ckpt: Any, load: Any) -> Any:
        loads.append(ckpt.name)
        return real_load(store, ckpt, load)

    monkeypatch.setattr(checkpoint_io, "load_verified", counting)
    resumed = pl.Trainer(
        **trainer_kwargs(
            tmp_path / "run2",
            limit_train_batches=3,
            enable_checkpointing=True,
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_top_k=-1)],
        )
    )
    model = CountingModel()
    resumed.fit(model, loader(), ckpt_path="last")
    assert loads == ["epoch=0-step=2.ckpt"]  # the newest, once: chosen and loaded in the same pass
    assert model.train_steps == 1


def test_the_snapshot_is_freed_storage_by_storage_as_it_is_written(tmp_path: Path) -> None:
    state = {"state_dict": {f"w{i}": torch.randn(64, 1024) for i in range(4)}, "small": torch.arange(5)}
    expected = {k: v.clone() for k, v in state["state_dict"].items()}
    sizes_at_each_record: list[list[int]] = []
    staged = checkpoint_writer.GrowingFile(tmp_path / "ckpt")

    class Watching(checkpoint_writer._ReleasingWriter):
        def write(self, data: Any) -> int:
            written = super().write(data)
            if memoryview(data).nbytes == 64 * 1024 * 4:  # a weight's record
                sizes_at_each_record.append([t.untyped_storage().nbytes() for t in tensors])
            return written

    tensors = list(state["state_dict"].values())
    writer = Watching(staged.path, staged.advance, state)
    with writer:
        torch.save(state, writer)  # type: ignore[arg-type]
    writer.finish()
    full = 64 * 1024 * 4
    # while the last weight is written, the ones before it are gone already
    assert sizes_at_each_record[-1][:2] == [0, 0] and sizes_at_each_record[0] == [full] * 4
    loaded = torch.load(staged.path, weights_only=True)  # and the file has every byte
    for key, value in expected.items():
        assert torch.equal(loaded["state_dict"][key], value)


def test_a_live_state_saved_without_a_snapshot_is_left_intact(tmp_path: Path) -> None:
    live = {"state_dict": {f"w{i}": torch.randn(64, 1024) for i in range(3)}}
    expected = {k: v.clone() for k, v in live["state_dict"].items()}
    writer = CheckpointWriter(background=False)  # commits the caller's own tensors: nothing is released
    writer.save(live, str(tmp_path / "a.ckpt"), 1)
    for key, value in expected.items():
        assert torch.equal(live["state_dict"][key], value)


# ---------------------------------------------------------------- the background writer's guarantees


class HeldCommits:
    """Stands in for each commit's upload: records it, holds it until released, fails it if asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._upload = checkpoint_writer.write_checkpoint
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.fail: set[str] = set()
        self.started: list[str] = []
        self.running = self.peak = 0
        monkeypatch.setattr(checkpoint_writer, "write_checkpoint", self)

    def hold(self, name: str) -> threading.Event:
        """The commit of ``name`` waits until the returned event is set."""
        gate = self._gates[name] = threading.Event()
        return gate

    def __call__(self, store: Any, name: str, source: Any, step: int, **kwargs: Any) -> Any:
        with self._lock:
            self.started.append(name)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            gate = self._gates.get(name)
            if gate is not None:
                assert gate.wait(10)
            if name in self.fail:
                raise OSError(f"upload of {name} failed")
            return self._upload(store, name, source, step, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


def _state() -> dict[str, Any]:
    return {"state_dict": {"w": torch.randn(100)}}


def _committed(folder: Path) -> list[str]:
    return [ckpt.name for ckpt in list_committed(LocalStore(folder))]


def _until(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)


def test_the_writer_keeps_one_commit_in_flight_and_a_save_does_not_wait_for_it(
    tmp_path: Path, monkeypatch
) -> None:
    commits = HeldCommits(monkeypatch)
    first = commits.hold("a.ckpt")
    writer = CheckpointWriter()
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    second = threading.Thread(target=writer.save, args=(_state(), str(tmp_path / "b.ckpt"), 2))
    second.start()
    second.join(10)
    assert not second.is_alive()  # queued behind the commit in flight: training goes on
    _until(lambda: commits.started)
    assert commits.started == ["a.ckpt"]  # ... but it is not uploaded alongside it
    first.set()
    writer.wait()
    assert commits.started == ["a.ckpt", "b.ckpt"] and commits.peak == 1
    assert _committed(tmp_path) == ["a.ckpt", "b.ckpt"]
    assert writer.stats == WriterStats(saves=2, committed=2)


def test_a_failed_commit_is_raised_once_by_the_next_save_which_does_not_start(
    tmp_path: Path, monkeypatch
) -> None:
    commits = HeldCommits(monkeypatch)
    commits.fail.add("a.ckpt")
    writer = CheckpointWriter()
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    _until(lambda: writer.stats.failed == 1)
    with pytest.raises(RuntimeError, match="background checkpoint commit failed") as raised:
        writer.save(_state(), str(tmp_path / "b.ckpt"), 2)
    assert isinstance(raised.value.__cause__, OSError)
    writer.save(_state(), str(tmp_path / "c.ckpt"), 3)  # raised once: the writer goes on
    writer.wait()
    assert commits.started == ["a.ckpt", "c.ckpt"]  # the save that raised the failure never started
    assert _committed(tmp_path) == ["c.ckpt"]


def test_a_failed_commit_is_raised_once_by_wait_and_by_close(tmp_path: Path, monkeypatch) -> None:
    commits = HeldCommits(monkeypatch)
    commits.fail.add("a.ckpt")
    writer = CheckpointWriter()
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    with pytest.raises(RuntimeError, match=r"upload of a\.ckpt failed"):
        writer.wait()
    writer.wait()  # raised once, not again
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    with pytest.raises(RuntimeError, match=r"upload of a\.ckpt failed"):
        writer.close()
    assert _committed(tmp_path) == []


def test_nothing_queued_behind_a_failed_commit_runs(tmp_path: Path, monkeypatch) -> None:
    writer = CheckpointWriter()
    writer.save(_state(), str(tmp_path / "old.ckpt"), 1)
    writer.wait()
    commits = HeldCommits(monkeypatch)
    gate = commits.hold("new.ckpt")
    commits.fail.add("new.ckpt")
    # retention: the new one replaces the old once committed
    writer.save(_state(), str(tmp_path / "new.ckpt"), 2, replaces=str(tmp_path / "old.ckpt"))
    # both taken: "old" until its deletion has actually run
    assert writer.exists(str(tmp_path / "new.ckpt")) and writer.exists(str(tmp_path / "old.ckpt"))
    writer.save(_state(), str(tmp_path / "next.ckpt"), 3)  # queued behind the commit in flight
    writer.delete(str(tmp_path / "other.ckpt"))
    gate.set()
    with pytest.raises(RuntimeError, match=r"upload of new\.ckpt failed"):
        writer.wait()
    writer.wait()  # raised once
    assert commits.started == ["new.ckpt"]  # neither the save nor the deletions behind it ran
    assert _committed(tmp_path) == ["old.ckpt"]  # the deletion queued behind the failure never ran


def test_an_idle_writer_holds_no_thread(tmp_path: Path, monkeypatch) -> None:
    commits = HeldCommits(monkeypatch)
    gate = commits.hold("a.ckpt")
    writer = CheckpointWriter()
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    workers = [t for t in threading.enumerate() if t.name == "checkpoint-writer"]
    assert workers and not any(t.daemon for t in workers)  # shutdown waits for what they commit
    gate.set()
    writer.wait()
    for worker in workers:
        worker.join(10)
        assert not worker.is_alive()  # so a Trainer that is never closed leaves no thread behind


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("checkpoint-")]


def test_close_joins_the_writer_thread(tmp_path: Path) -> None:
    writer = CheckpointWriter()
    writer.save(_state(), str(tmp_path / "a.ckpt"), 1)
    writer.close()
    assert _writer_threads() == []  # not "soon": at once, when close returns
    assert _committed(tmp_path) == ["a.ckpt"]
    writer.close()  # again, with no thread: nothing to do
    writer.save(_state(), str(tmp_path / "b.ckpt"), 2)  # a closed writer starts a new thread when needed
    writer.close()
    assert _writer_threads() == [] and _committed(tmp_path) == ["a.ckpt", "b.ckpt"]


def test_every_fit_ends_its_writer_thread(tmp_path: Path) -> None:
    counts = []
    for run in range(3):
        checkpoint = pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True
        )
        trainer = pl.Trainer(
            **trainer_kwargs(tmp_path / f"run{run}", enable_checkpointing=True, callbacks=[checkpoint])
        )
        trainer.fit(CountingModel(), loader())
        counts.append(len(_writer_threads()))
        assert trainer._checkpoint_writer.stats.committed >= 2  # it did save, in the background
    assert counts == [0, 0, 0]


class FailsAtStep(CountingModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.global_step == 2:
            raise RuntimeError("the model broke")
        return super().training_step(batch, batch_idx)


def test_a_failed_fit_ends_its_writer_thread_after_committing_what_was_saved(tmp_path: Path) -> None:
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, limit_train_batches=4, enable_checkpointing=True, callbacks=[checkpoint])
    )
    with pytest.raises(RuntimeError, match="the model broke"):
        trainer.fit(FailsAtStep(), loader())
    assert _writer_threads() == []
    assert _committed(tmp_path / "ckpt") == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]


class SavesInTheBackground(pl.Callback):
    """Queues a commit on the Trainer's writer at the end of any entry point, as a checkpointing
    callback does; the commit is slow, so its thread is still busy when the hook returns."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _save(self, trainer: Any) -> None:
        trainer._checkpoint_writer.save(_state(), str(self.path), trainer.global_step)
        assert _writer_threads()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer)


@pytest.mark.parametrize("entry", ["validate", "test", "predict"])
def test_evaluation_and_prediction_end_their_writer_thread(
    tmp_path: Path, entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = checkpoint_writer.write_checkpoint

    def slow_upload(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return upload(*args, **kwargs)

    monkeypatch.setattr(checkpoint_writer, "write_checkpoint", slow_upload)
    path = tmp_path / "ckpt" / "model.ckpt"
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, callbacks=[SavesInTheBackground(path)]))
    getattr(trainer, entry)(CountingModel(), loader())
    assert _writer_threads() == []  # the entry point waited for the commit and joined the thread
    assert read_manifest(LocalStore(path.parent), path.name) is not None


_EXITS_WHILE_COMMITTING = """
import sys, time
import torch
import lightning_lib.checkpoint._writer as writer

upload = writer.write_checkpoint

def slow_upload(*args, **kwargs):
    time.sleep(1.0)
    return upload(*args, **kwargs)

writer.write_checkpoint = slow_upload
writer.CheckpointWriter().save({"state_dict": {"w": torch.zeros(1000)}}, sys.argv[1], 1)
print("queued", flush=True)
"""  # and the script ends, its commit still uploading


def test_interpreter_shutdown_waits_for_a_commit_in_flight(tmp_path: Path) -> None:
    script = tmp_path / "exits_while_committing.py"
    script.write_text(_EXITS_WHILE_COMMITTING)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt" / "a.ckpt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "queued", done.stderr
    assert read_manifest(LocalStore(tmp_path / "ckpt"), "a.ckpt") is not None
