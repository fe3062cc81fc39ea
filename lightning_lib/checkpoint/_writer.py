"""Committing checkpoints without stalling training: the one background writer.

``save`` snapshots the state to CPU memory (pinned when it lives on CUDA) on the training thread, then
a single background thread commits it with the manifest-last protocol: the snapshot is serialised into
a local staging file (hashed as it is written, then dropped) while the upload sends the file's parts as
soon as they are written. At most one commit is pending at a time, so memory stays bounded: a second
save waits for the first. Deletions queued after a save run only once that save has committed, which
is how retention never removes the last good checkpoint.

An error in the background is raised once, at the next ``save``, ``delete`` or ``wait`` (the end of
fit): never lost. Everything queued behind the failed job is dropped, so a deletion queued after a
failed commit never removes the checkpoint it was meant to replace. The thread is not a daemon and
ends whenever the queue is empty: interpreter shutdown waits for a commit in flight instead of cutting
it, and an idle writer holds no thread.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lightning_lib.checkpoint._commit import delete_checkpoint, read_manifest, write_checkpoint
from lightning_lib.storage import GrowingFile, HashingWriter, ObjectStore, open_store, split_uri
from lightning_lib.storage._staging import WRITE_PREFIX, staging_dir
from lightning_lib.utilities.apply_func import apply_to_tensors

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.ckpt"


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


@dataclass(frozen=True)
class _Job:
    """A queued commit (``save``) or deletion of the checkpoint folder ``uri``."""

    uri: str
    save: bool
    run: Callable[[], None]


class CheckpointWriter:
    """One per Trainer: the ordered queue of checkpoint commits and deletions.

    ``background=False`` runs each commit and deletion on the caller's thread instead (errors are
    then raised by the call itself).
    """

    def __init__(self, background: bool = True) -> None:
        self.background = background
        self._jobs: deque[_Job] = deque()  # in order; the head is the job running, removed once done
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self._changed = threading.Condition()  # guards the three above; notified when a job ends
        self._stores: dict[str, ObjectStore] = {}
        self._stores_lock = threading.Lock()

    # ---- public API --------------------------------------------------------------------------------
    def save(self, checkpoint: dict[str, Any], uri: str, step: int) -> None:
        """Commit ``checkpoint`` as the checkpoint folder ``uri`` (in the background when enabled)."""
        self.raise_error()
        if not self.background:
            self._commit([checkpoint], uri, step)
            return
        # a one-item list, so the writer can drop the snapshot once serialised (the queued job would
        # otherwise keep it alive for the whole upload); owned: nobody else holds the snapshot
        holder = [snapshot(checkpoint)]
        commit = functools.partial(self._commit, holder, uri, step, True)
        with self._changed:
            while any(job.save for job in self._jobs):  # a failure empties the queue too
                self._changed.wait()
            self._enqueue(_Job(uri=uri, save=True, run=commit))

    def delete(self, uri: str) -> None:
        """Delete checkpoint ``uri`` once every save queued before it has committed."""
        self.raise_error()
        if not self.background:
            self._delete(uri)
            return
        with self._changed:
            self._enqueue(_Job(uri=uri, save=False, run=functools.partial(self._delete, uri)))

    def exists(self, uri: str) -> bool:
        """Queued for commit, or committed and not queued for deletion: a new save must pick another name.

        A name queued for deletion is free: the queue runs in order, so the deletion happens first.
        """
        with self._changed:
            queued = [job.save for job in self._jobs if job.uri == uri]
        if any(queued):
            return True
        if queued:
            return False
        root, name = split_uri(uri)
        return read_manifest(self.store(root), name) is not None

    def wait(self) -> None:
        """Block until everything queued is committed or deleted; raise a background error."""
        with self._changed:
            while self._jobs:
                self._changed.wait()
        self.raise_error()

    def raise_error(self) -> None:
        """Raise the error of a background job that failed since the last check, once."""
        with self._changed:
            error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"A background checkpoint commit failed: {error}") from error

    def close(self) -> None:
        """``wait``, then join the writer thread, for callers that must know no thread is left running."""
        self.wait()
        with self._changed:
            worker = self._worker
        if worker is not None:
            worker.join()

    def store(self, root: str) -> ObjectStore:
        """The store for the checkpoint root ``root``, opened once and shared by every caller."""
        with self._stores_lock:
            found = self._stores.get(root)
            if found is None:
                found = self._stores[root] = open_store(root)
            return found

    # ---- the worker --------------------------------------------------------------------------------
    def _enqueue(self, job: _Job) -> None:
        """Queue ``job`` (``self._changed`` held), starting the writer thread if none is running."""
        # a failure dropped the jobs queued before it: refuse this one too, by raising the failure
        self.raise_error()
        self._jobs.append(job)
        if self._worker is None:
            # not a daemon: interpreter shutdown waits for the commit in flight instead of cutting it
            self._worker = threading.Thread(target=self._work, name="checkpoint-writer")
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._changed:
                if not self._jobs:
                    self._worker = None  # ends when idle, so an idle writer never blocks shutdown
                    self._changed.notify_all()
                    return
                job = self._jobs[0]
            error: BaseException | None = None
            try:
                job.run()
            except BaseException as err:
                error = err
                log.error("Background checkpoint job failed: %s", err)
            with self._changed:
                self._jobs.popleft()
                if error is not None:
                    # nothing queued behind a failure runs: no deletion of the checkpoint it should
                    # have replaced; the caller learns of it at its next save, delete or wait
                    self._jobs.clear()
                    self._error = error
                self._changed.notify_all()
            del job  # the last reference to it, and to a snapshot a failed commit did not consume

    def _commit(self, holder: list[dict[str, Any]], uri: str, step: int, owned: bool = False) -> None:
        root, name = split_uri(uri)
        store = self.store(root)
        if read_manifest(store, name) is not None:
            delete_checkpoint(store, name)  # an explicit overwrite of the same name (trainer.save_checkpoint)
        with staging_dir(WRITE_PREFIX) as folder:
            # serialised on a second thread while this one uploads what is already written: the commit
            # takes about as long as the upload alone instead of serialisation + hashing + upload
            staged = GrowingFile(os.path.join(folder, CHECKPOINT_FILE))
            serialiser = threading.Thread(
                target=_serialise, args=(holder, staged, owned), name="checkpoint-serialise", daemon=True
            )
            serialiser.start()
            try:
                write_checkpoint(store, name, {CHECKPOINT_FILE: staged}, step)
            finally:
                staged.cancel()  # stops the serialiser if the upload failed first; a no-op once it is done
                serialiser.join()

    def _delete(self, uri: str) -> None:
        root, name = split_uri(uri)
        delete_checkpoint(self.store(root), name)


def _serialise(holder: list[dict[str, Any]], staged: GrowingFile, owned: bool) -> None:
    """``torch.save`` the state into ``staged`` while hashing it, then drop it: from here on the bytes
    on disk are all the upload needs. A snapshot (``owned``: nothing else uses it) is released storage
    by storage as it is written, so memory goes back to training while the upload runs."""
    try:
        state = holder.pop()
        writer = _ReleasingWriter(staged.path, staged.advance, state if owned else {})
        with writer:
            torch.save(state, writer)  # type: ignore[arg-type]
        del state
        done = writer.finish()
        del writer  # and the storages it still tracked
        staged.finish(done)
    except BaseException as err:  # raised to the uploader, which reports it as the commit's error
        staged.fail(err)


_RELEASE_MIN = 64 * 1024  # smaller storages are not worth tracking


class _ReleasingWriter(HashingWriter):
    """A ``HashingWriter`` that frees the storages of ``state`` once ``torch.save`` has written them.

    ``torch.save`` keeps every storage it pickled alive until it returns, and writes each one with a
    single ``write`` of the storage's own memory. A write whose address and size are exactly those of a
    storage of ``state`` is that storage's record. It is resized to nothing two writes later, past the
    record's data descriptor: torch still peeks at the buffer right after our ``write`` returns, and is
    done with the record once the next one starts. Anything else is left alone, so a torch that writes
    differently costs memory, never correctness.

    Progress is reported two writes late too, so the upload never learns of a record's bytes before
    the record's storage is freed: its buffers are never added on top of a whole snapshot.
    """

    def __init__(self, path: str, on_write: Callable[[int], None], state: dict[str, Any]) -> None:
        super().__init__(path, on_write)
        self._owned: dict[tuple[int, int], torch.UntypedStorage] = {}
        self._pending: list[tuple[int, torch.UntypedStorage | None]] = [(0, None), (0, None)]

        def own(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.device.type == "cpu" and storage.nbytes() >= _RELEASE_MIN and storage.resizable():
                self._owned[(storage.data_ptr(), storage.nbytes())] = storage
            return tensor

        apply_to_tensors(state, own)

    def _written(self, view: memoryview) -> None:
        found = None
        if self._owned and view.nbytes >= _RELEASE_MIN:
            found = self._owned.pop((_address(view), view.nbytes), None)
        self._pending.append((self._size, found))
        reported, storage = self._pending.pop(0)
        if storage is not None:
            storage.resize_(0)
        if self._on_write is not None and reported:
            self._on_write(reported)


def _address(view: memoryview) -> int:
    """Where a (read-only) buffer's bytes live; numpy is the portable way to ask for read-only ones."""
    import numpy as np

    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
