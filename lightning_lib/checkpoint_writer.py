"""Committing checkpoints without stalling training.

``save`` snapshots the state to CPU memory (pinned when it lives on CUDA) on the training thread, then
a single background thread serialises the snapshot into a local file while hashing it, uploads it and
commits it with the manifest-last protocol. At most one snapshot is pending at a time, so memory stays
bounded: a second save waits for the first. Deletions queued after a save run only once that save has
committed, which is how retention never removes the last good checkpoint. An error in the background
is raised at the next ``save`` or ``wait`` (the end of fit): never lost.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import torch

from lightning_lib.move import apply_to_tensors
from lightning_lib.storage import (
    HashingWriter,
    ObjectStore,
    delete_checkpoint,
    open_store,
    read_manifest,
    split_uri,
    write_checkpoint,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.ckpt"
_STAGING_PREFIX = "lightning_lib-ckpt-"


def _remove_stale_staging() -> None:
    """Staging folders of writers that were killed (SIGKILL, OOM) before they could clean up."""
    base = tempfile.gettempdir()
    for entry in os.listdir(base):
        if not entry.startswith(_STAGING_PREFIX):
            continue
        pid_text = entry[len(_STAGING_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(os.path.join(base, entry), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def snapshot(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A copy of every tensor on the CPU, so training can change the originals while the copy is written."""

    def copy(t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "cpu":
            return t.detach().clone()
        out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=torch.cuda.is_available())
        out.copy_(t.detach(), non_blocking=True)
        return out

    copied = apply_to_tensors(checkpoint, copy)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # the non-blocking copies must land before the writer thread reads them
    return copied


class CheckpointWriter:
    """One per Trainer: the ordered queue of checkpoint commits and deletions."""

    def __init__(self, background: bool = True) -> None:
        self.background = background
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._idle = threading.Condition()
        self._pending_saves = 0
        self._pending_names: set[str] = set()  # queued saves
        self._pending_deletes: set[str] = set()
        self._stores: dict[str, ObjectStore] = {}
        self._lock = threading.Lock()

    # ---- public API --------------------------------------------------------------------------------
    def save(self, checkpoint: dict[str, Any], uri: str, step: int) -> None:
        """Commit ``checkpoint`` as the checkpoint folder ``uri`` (in the background when enabled)."""
        self.raise_error()
        if not self.background:
            self._commit([checkpoint], uri, step)
            return
        state = snapshot(checkpoint)
        with self._idle:
            while self._pending_saves and self._error is None:
                self._idle.wait()
            self._pending_saves += 1
            self._pending_names.add(uri)
        self.raise_error()
        # a one-item list, so the writer can drop the snapshot once serialised (the queued job would
        # otherwise keep it alive for the whole upload)
        self._submit(self._commit, [state], uri, step)

    def delete(self, uri: str) -> None:
        """Delete checkpoint ``uri`` once every save queued before it has committed."""
        self.raise_error()
        if not self.background:
            self._delete(uri)
            return
        with self._idle:
            self._pending_deletes.add(uri)
        self._submit(self._delete, uri)

    def exists(self, uri: str) -> bool:
        """Queued for commit, or committed and not queued for deletion: a new save must pick another name.

        A name queued for deletion is free: the queue runs in order, so the deletion happens first.
        """
        with self._idle:
            if uri in self._pending_names:
                return True
            if uri in self._pending_deletes:
                return False
        root, name = split_uri(uri)
        return read_manifest(self.store(root), name) is not None

    def wait(self) -> None:
        """Block until everything queued is committed or deleted; raise a background error."""
        if self._thread is not None:
            self._queue.join()
        self.raise_error()

    def raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"A background checkpoint commit failed: {error}") from error

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def store(self, root: str) -> ObjectStore:
        with self._lock:
            found = self._stores.get(root)
            if found is None:
                found = self._stores[root] = open_store(root)
            return found

    # ---- the worker --------------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="checkpoint-writer", daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                fn, args = job
                if self._error is None:  # after a failure nothing else runs: no deletion of good checkpoints
                    fn(*args)
            except BaseException as err:
                self._error = err
                log.error("Background checkpoint job failed: %s", err)
            finally:
                if job is not None:
                    self._finished(job)
                self._queue.task_done()

    def _finished(self, job: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
        fn, args = job
        with self._idle:
            if fn == self._commit:
                self._pending_saves -= 1
                self._pending_names.discard(args[1])
            else:
                self._pending_deletes.discard(args[0])
            self._idle.notify_all()

    def _commit(self, holder: list[dict[str, Any]], uri: str, step: int) -> None:
        root, name = split_uri(uri)
        store = self.store(root)
        if read_manifest(store, name) is not None:
            delete_checkpoint(store, name)  # an explicit overwrite of the same name (trainer.save_checkpoint)
        _remove_stale_staging()
        tmpdir = tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-")
        try:
            writer = HashingWriter(os.path.join(tmpdir, CHECKPOINT_FILE))
            with writer:
                torch.save(holder.pop(), writer)  # type: ignore[arg-type]
            prehashed = writer.finish()
            write_checkpoint(store, name, {CHECKPOINT_FILE: prehashed}, step)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _delete(self, uri: str) -> None:
        root, name = split_uri(uri)
        delete_checkpoint(self.store(root), name)
