"""Committing checkpoints without stalling training: the one background writer.

``save`` snapshots the state to CPU memory (pinned when it lives on CUDA) on the training thread, then
a single background thread commits it: the snapshot is serialised into a local staging file (hashed as
it is written, then dropped, then sealed with its commit marker) while the upload sends the file's parts
as soon as they are written, and the sealed file is published whole. Deletions queued after a save run only once that save has committed, which
is how retention never removes the last good checkpoint: once a checkpoint has committed, at every
moment some committed checkpoint of the run exists, the newest or an older one.

Slow storage never holds training up: the policy is to *coalesce*. One commit is in flight, and at
most ``max_pending`` more snapshots wait behind it (memory stays bounded: ``1 + max_pending`` copies of
the state). A save that ``replaces`` an older checkpoint (the top-k checkpoint that drops out) or
``overwrite``s its own name (``ModelCheckpoint``'s "last.ckpt") supersedes it: if the older one's commit
has not started, it is dropped (``stats.coalesced``) instead of being uploaded only to be deleted, so a store slower than an
epoch commits the newest state each time it is free instead of a backlog. The deletions that counted on
a dropped save's commit (the checkpoint it replaced, and any deletion queued after it) move behind the
save that superseded it, and a name stays taken (``exists``) until its deletion has actually run, so a
new save never takes a name whose deletion would then have to run before it. A commit in flight is never
cut (otherwise a store slower than an epoch would never commit anything), the newest save is never
dropped, and ``wait`` (the end of fit) returns only once it is committed. Only a caller that keeps
more distinct checkpoints than ``max_pending`` per commit (``save_top_k=-1`` on a store slower than the
run) waits for room; ``stats.waited`` counts those saves.

An error in the background is raised once, at the next ``save``, ``delete`` or ``wait`` (the end of
fit): never lost, and as a ``RuntimeError`` chained (``from``) to the store's own error, whose type says
whether a retry may heal it (``tasks.retry.is_transient`` follows the chain). Everything queued behind
the failed job is dropped, so a deletion queued after a failed commit never removes the checkpoint it
was meant to replace. The thread is not a daemon and ends whenever the queue is empty: interpreter
shutdown waits for a commit in flight instead of cutting it, and an idle writer holds no thread. The
end of every run (``close``: fit, validate, test, predict, whether they succeed or fail) waits for what
is queued and joins the thread, so a finished run leaves no thread behind and loses no commit.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch

from lightning_lib.checkpoint._commit import delete_checkpoint, seal, write_checkpoint
from lightning_lib.storage import GrowingFile, HashingWriter, ObjectStore, open_store, split_uri
from lightning_lib.storage._staging import WRITE_PREFIX, staging_dir
from lightning_lib.utilities.apply_func import apply_to_tensors

log = logging.getLogger(__name__)


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
    """A queued commit (``save``) or deletion of the checkpoint file ``uri``."""

    uri: str
    save: bool
    run: Callable[[], None]


@dataclass
class WriterStats:
    """What a writer did since it was built: ``saves`` asked for, ``committed``, ``coalesced`` (dropped
    before their commit started because a newer save replaced them), ``waited`` (saves that had to wait
    for room behind ``max_pending`` others: the only way a slow store can hold training up) and
    ``failed`` (background jobs that raised)."""

    saves: int = 0
    committed: int = 0
    coalesced: int = 0
    waited: int = 0
    failed: int = 0


class CheckpointWriter:
    """One per Trainer: the ordered queue of checkpoint commits and deletions.

    ``background=False`` runs each commit and deletion on the caller's thread instead (errors are
    then raised by the call itself). ``sync_local`` (the default) tells ``ModelCheckpoint`` to wait
    for a local file's commit, so it is there when the save returns, as Lightning's is; object storage
    always commits in the background. Off, local folders behave like a slow object store. ``max_pending`` is how many snapshots may wait behind the commit
    in flight (2: a top-k checkpoint and "last" saved at the same step never wait for each other).
    """

    def __init__(self, background: bool = True, max_pending: int = 2, sync_local: bool = True) -> None:
        if max_pending < 1:
            raise ValueError(f"Expected max_pending >= 1, received {max_pending}.")
        self.background = background
        self.sync_local = sync_local
        self.max_pending = max_pending
        self._jobs: deque[_Job] = deque()  # in order; the head is running once ``_running`` is set
        self._running: _Job | None = None
        self._worker: threading.Thread | None = None  # the thread serving the queue, None once it quits
        self._thread: threading.Thread | None = None  # the last one started, alive or not, for ``close``
        self._error: BaseException | None = None
        self._stats = WriterStats()
        self._changed = threading.Condition()  # guards the above; notified when a job ends
        self._stores: dict[str, ObjectStore] = {}
        self._stores_lock = threading.Lock()
        # per checkpoint root, the names a file has (a checkpoint or not): listed once, then kept up to
        # date by this writer's own commits and deletions, so naming never waits on a slow store
        self._taken: dict[str, set[str]] = {}

    # ---- public API --------------------------------------------------------------------------------
    @property
    def stats(self) -> WriterStats:
        """A copy of the writer's counters."""
        with self._changed:
            return WriterStats(**vars(self._stats))

    def save(
        self,
        checkpoint: dict[str, Any],
        uri: str,
        step: int,
        *,
        replaces: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Commit ``checkpoint`` as the checkpoint file ``uri`` (in the background when enabled).

        ``replaces`` names a checkpoint this one supersedes: it is deleted once ``uri`` has committed,
        and not committed at all if its commit has not started yet. ``overwrite`` replaces a checkpoint
        already at ``uri`` (the rotating "last.ckpt", ``Trainer.save_checkpoint``'s explicit path) in
        one step: a reader finds the old checkpoint or the new one; a save of ``uri`` still waiting
        behind the commit in flight is dropped. Without it a name where a file exists, a checkpoint or
        not, is refused (``CheckpointExistsError``), never overwritten.
        """
        self.raise_error()
        if replaces == uri:
            raise ValueError(f"Expected a checkpoint to replace other than the one saved, received {uri!r}.")
        if not self.background:
            self._stats.saves += 1
            self._commit([checkpoint], uri, step, overwrite=overwrite)
            with self._changed:
                self._stats.committed += 1
                self._record(uri, taken=True)
            if replaces is not None:
                self.delete(replaces)
            return
        with self._changed:
            self._stats.saves += 1
            # a newer save of the same name (an explicit overwrite) or of its replacement supersedes a
            # save of the old one that has not started: it does not count against the room, since it
            # is dropped below (room is never waited for while one is pending)
            superseded = {str(s) for s in (replaces, uri if overwrite else None) if s is not None}
            if self._pending_saves(besides=superseded) >= self.max_pending:
                self._stats.waited += 1
                while self._pending_saves(besides=superseded) >= self.max_pending:  # a failure empties it too
                    self._changed.wait()
            self.raise_error()  # a failure dropped what was queued: this save must not start either
            # taken once there is room, so at most 1 + max_pending snapshots exist; a one-item list, so
            # the writer can drop the snapshot once serialised (the job would keep it alive otherwise)
            holder = [snapshot(checkpoint)]
            # from here to the last enqueue the lock is held: the worker never sees the deletions that
            # a dropped save held back out of the queue
            held_back = [job for old in sorted(superseded) for job in self._drop_pending_save(old, uri)]
            commit = functools.partial(self._commit, holder, uri, step, owned=True, overwrite=overwrite)
            self._enqueue(_Job(uri=uri, save=True, run=commit))
            self._jobs.extend(held_back)  # they now wait for this save's commit instead of the dropped one's
            if replaces is not None:
                self._enqueue(_Job(uri=replaces, save=False, run=functools.partial(self._delete, replaces)))

    def delete(self, uri: str) -> None:
        """Delete checkpoint ``uri`` once every save queued before it has committed."""
        self.raise_error()
        if not self.background:
            self._delete(uri)
            with self._changed:
                self._record(uri, taken=False)
            return
        with self._changed:
            self._enqueue(_Job(uri=uri, save=False, run=functools.partial(self._delete, uri)))

    def exists(self, uri: str) -> bool:
        """Whether a new save must pick another name than ``uri``.

        A name with a job queued is taken: a save's until it has committed, and a deletion's until the
        deletion has actually run. Reusing a name whose deletion is only queued would make that deletion
        run before the new save (the name must be free for it), that is before any newer checkpoint
        exists: the moment retention must never open. Otherwise the name is taken when a file exists
        there (Lightning's rule), a committed checkpoint or not: a file readers skip (no marker, or an
        invalid one) is never overwritten, so the next free name is used. The root is listed once; after
        that this writer's own commits and deletions keep the answer current without asking the store
        again (a name another writer takes meanwhile is still refused by the commit's conditional put).
        """
        with self._changed:
            if any(job.uri == uri for job in self._jobs):
                return True
        root, name = split_uri(uri)
        return name in self._taken_names(root)

    def note_taken(self, uri: str) -> None:
        """A file was written at ``uri`` outside this writer (``Trainer.save_checkpoint``'s plain file):
        a new checkpoint must take another name."""
        with self._changed:
            self._record(uri, taken=True)

    def wait(self) -> None:
        """Block until everything queued is committed or deleted; raise a background error."""
        with self._changed:
            while self._jobs:
                self._changed.wait()
        self.raise_error()

    def raise_error(self) -> None:
        """Raise the error of a background job that failed since the last check, once.

        A ``RuntimeError`` that says so, chained to the job's own error: its type (a transient
        ``StorageError``, or ``AccessDeniedError``, ``BucketNotFound``...) is what a retry policy judges.
        """
        with self._changed:
            error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"A background checkpoint commit failed: {error}") from error

    def close(self) -> None:
        """``wait``, then join the writer thread: the end of a run, after which no thread of this writer
        is left running (the next ``save`` starts a new one). Raises a background error like ``wait``,
        after the join."""
        try:
            self.wait()
        finally:
            with self._changed:
                thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                # the thread has found the queue empty (``wait`` returned) and is on its way out
                thread.join()

    def store(self, root: str) -> ObjectStore:
        """The store for the checkpoint root ``root``, opened once and shared by every caller."""
        with self._stores_lock:
            found = self._stores.get(root)
            if found is None:
                found = self._stores[root] = open_store(root)
            return found

    # ---- the worker --------------------------------------------------------------------------------
    def _taken_names(self, root: str) -> set[str]:
        with self._changed:
            known = self._taken.get(root)
        if known is None:
            listed = {info.key for info in self.store(root).list()}
            with self._changed:
                known = self._taken.setdefault(root, listed)
        return known

    def _record(self, uri: str, taken: bool) -> None:
        """What a job of this writer did to ``uri``'s name, for ``exists`` (``self._changed`` held)."""
        root, name = split_uri(uri)
        known = self._taken.get(root)
        if known is not None:
            if taken:
                known.add(name)
            else:
                known.discard(name)

    def _pending_saves(self, besides: Collection[str] = ()) -> int:
        """Saves queued whose commit has not started, not counting those of ``besides`` (``self._changed``
        held)."""
        return sum(
            1 for job in self._jobs if job.save and job is not self._running and job.uri not in besides
        )

    def _drop_pending_save(self, uri: str, saving: str) -> list[_Job]:
        """Drop a not yet started save of ``uri``, superseded by the save of ``saving`` (``self._changed``
        held), and take out of the queue the deletions queued behind it, to be queued again behind that
        save: a deletion queued after a save counts on that save's commit (the replaced checkpoint goes
        only once its replacement exists), so with the save dropped it must wait for the one that
        supersedes it. A deletion of ``saving`` itself stays ahead of it: that name must be free first.
        """
        kept: deque[_Job] = deque()
        held_back: list[_Job] = []
        dropped = False
        for job in self._jobs:
            if job.save and job.uri == uri and job is not self._running:
                dropped = True
                self._stats.coalesced += 1
                log.debug("Checkpoint %s superseded before its commit started: not committed", uri)
            elif dropped and not job.save and job.uri != saving:
                held_back.append(job)
            else:
                kept.append(job)
        self._jobs = kept
        return held_back

    def _enqueue(self, job: _Job) -> None:
        """Queue ``job`` (``self._changed`` held), starting the writer thread if none is running."""
        # a failure dropped the jobs queued before it: refuse this one too, by raising the failure
        self.raise_error()
        self._jobs.append(job)
        if self._worker is None:
            # not a daemon: interpreter shutdown waits for the commit in flight instead of cutting it
            self._worker = self._thread = threading.Thread(target=self._work, name="checkpoint-writer")
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._changed:
                if not self._jobs:
                    self._worker = None  # ends when idle, so an idle writer never blocks shutdown
                    self._changed.notify_all()
                    return
                job = self._running = self._jobs[0]
                self._changed.notify_all()  # a save waiting for room has it now
            error: BaseException | None = None
            try:
                job.run()
            except BaseException as err:
                error = err
                log.error("Background checkpoint job failed: %s", err)
            with self._changed:
                self._jobs.popleft()
                self._running = None
                if error is not None:
                    # nothing queued behind a failure runs: no deletion of the checkpoint it should
                    # have replaced; the caller learns of it at its next save, delete or wait
                    self._jobs.clear()
                    self._error = error
                    self._stats.failed += 1
                else:
                    self._stats.committed += job.save
                    self._record(job.uri, taken=job.save)
                self._changed.notify_all()
            del job  # the last reference to it, and to a snapshot a failed commit did not consume

    def _commit(
        self,
        holder: list[dict[str, Any]],
        uri: str,
        step: int,
        owned: bool = False,
        overwrite: bool = False,
    ) -> None:
        root, name = split_uri(uri)
        store = self.store(root)
        with staging_dir(WRITE_PREFIX) as folder:
            # serialised on a second thread while this one uploads what is already written: the commit
            # takes about as long as the upload alone instead of serialisation + hashing + upload
            staged = GrowingFile(os.path.join(folder, name))
            serialiser = threading.Thread(
                target=_serialise,
                args=(holder, staged, owned, step),
                name="checkpoint-serialise",
                daemon=True,
            )
            serialiser.start()
            try:
                write_checkpoint(store, name, staged, step, overwrite=overwrite)
            finally:
                staged.cancel()  # stops the serialiser if the upload failed first; a no-op once it is done
                serialiser.join()

    def _delete(self, uri: str) -> None:
        root, name = split_uri(uri)
        delete_checkpoint(self.store(root), name)


def _serialise(holder: list[dict[str, Any]], staged: GrowingFile, owned: bool, step: int) -> None:
    """``torch.save`` the state into ``staged`` while hashing it, seal it with its commit marker, then
    drop it: from here on the bytes on disk are all the upload needs. A snapshot (``owned``: nothing
    else uses it) is released storage by storage as it is written, so memory goes back to training
    while the upload runs."""
    try:
        state = holder.pop()
        writer = _ReleasingWriter(staged.path, staged.advance, state if owned else {})
        with writer:
            torch.save(state, writer)  # type: ignore[arg-type]
        del state
        done = seal(writer, step)
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
    the record's storage is freed: its buffers are never added on top of a whole snapshot. The archive's
    last two bytes are held back (``new_body_writer``): the commit marker replaces them.
    """

    def __init__(self, path: str, on_write: Callable[[int], None], state: dict[str, Any]) -> None:
        super().__init__(path, on_write, hold_back=2)
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
        self._pending.append((self.settled, found))
        reported, storage = self._pending.pop(0)
        if storage is not None:
            storage.resize_(0)
        if self._on_write is not None and reported:
            self._on_write(reported)


def _address(view: memoryview) -> int:
    """Where a (read-only) buffer's bytes live; numpy is the portable way to ask for read-only ones."""
    import numpy as np

    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
