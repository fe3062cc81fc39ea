"""``LocalStore``: the ``ObjectStore`` protocol over a local (or mounted) folder.

Every object is written to a temporary sibling, flushed to disk and then published with one atomic
filesystem operation, so a reader (or a process killed mid-write) never sees a partial object.
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from lightning_lib.storage._base import (
    TEMP_MARKER,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    validate_key,
)
from lightning_lib.storage._hashing import GrowingFile
from lightning_lib.storage._uri import local_path as _as_local_path

# Filesystems without hard links (some FUSE and SMB mounts) answer os.link with one of these.
_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}


def _fsync_dir(path: str) -> None:
    """Persist a rename in ``path``: without it a power loss can forget the new directory entry."""
    with suppress(OSError):  # not every platform or filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalStore:
    """An object store rooted at a local folder, created on the first write."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = os.path.abspath(_as_local_path(root))

    @property
    def uri(self) -> str:
        """The absolute path of the root folder."""
        return self._root

    def __repr__(self) -> str:
        return f"LocalStore({self._root!r})"

    def _path(self, key: str) -> str:
        return os.path.join(self._root, *validate_key(key).split("/"))

    @contextmanager
    def _temp_beside(self, final: str) -> Iterator[str]:
        """Yield a temporary path next to ``final``, removed afterwards unless it was renamed away."""
        parent, name = os.path.split(final)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{name}{TEMP_MARKER}{uuid.uuid4().hex}")
        try:
            yield tmp
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)

    def _publish(self, tmp: str, final: str, key: str, if_none_match: bool) -> None:
        """Make ``tmp`` visible as ``final`` in one step, refusing to overwrite when asked to."""
        if not if_none_match:
            os.replace(tmp, final)
        else:
            try:
                # A hard link creates the name only if it is free, and with the full content at once.
                os.link(tmp, final)
            except FileExistsError:
                raise PreconditionFailed(
                    f"{self.uri}/{key} already exists (conditional put refused)."
                ) from None
            except OSError as exc:
                if exc.errno not in _NO_LINK_ERRNOS:
                    raise
                self._reserve_then_replace(tmp, final, key)
        _fsync_dir(os.path.dirname(final))

    def _reserve_then_replace(self, tmp: str, final: str, key: str) -> None:
        """Fallback without hard links: claim the name with O_EXCL, then atomically rename over it."""
        try:
            os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise PreconditionFailed(f"{self.uri}/{key} already exists (conditional put refused).") from None
        os.replace(tmp, final)

    def put_bytes(
        self, key: str, data: bytes | bytearray | memoryview, *, if_none_match: bool = False
    ) -> None:
        """Write ``data`` to ``key`` atomically; see ``ObjectStore.put_bytes``."""
        final = self._path(key)
        if if_none_match and os.path.lexists(final):  # cheap early refusal; the publish step decides races
            raise PreconditionFailed(f"{self.uri}/{key} already exists (conditional put refused).")
        with self._temp_beside(final) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._publish(tmp, final, key, if_none_match)

    def put_file(self, key: str, local_path: str, *, if_none_match: bool = False) -> None:
        """Copy the local file into the store atomically (refusing an existing ``key`` when asked)."""
        final = self._path(key)
        if if_none_match and os.path.lexists(final):  # cheap early refusal; the publish step decides races
            raise PreconditionFailed(f"{self.uri}/{key} already exists (conditional put refused).")
        with self._temp_beside(final) as tmp:
            shutil.copyfile(local_path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            self._publish(tmp, final, key, if_none_match)

    def put_growing_file(self, key: str, source: GrowingFile, *, if_none_match: bool = False) -> None:
        """Copy the file into the store once it is complete (a local copy is quick; nothing to overlap)."""
        self.put_file(key, source.result().path, if_none_match=if_none_match)

    def get_bytes(self, key: str) -> bytes:
        """Read the whole object."""
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.uri}/{key} does not exist.") from None

    def get_file(self, key: str, local_path: str) -> None:
        """Copy the object to ``local_path`` through a temporary file, so a partial copy never shows."""
        source = self._path(key)
        if not os.path.isfile(source):
            raise ObjectNotFound(f"{self.uri}/{key} does not exist.")
        target = os.path.abspath(local_path)
        with self._temp_beside(target) as tmp:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)

    def get_tail(self, key: str, size: int) -> tuple[bytes, int]:
        """The last ``size`` bytes of the file and its size, from one open file (one version of it)."""
        try:
            with open(self._path(key), "rb") as f:
                total = os.fstat(f.fileno()).st_size
                return os.pread(f.fileno(), size, max(0, total - size)), total
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.uri}/{key} does not exist.") from None

    @contextmanager
    def local_file(self, key: str) -> Iterator[str]:
        """The stored file itself: nothing is copied. Objects are replaced by rename, never rewritten in
        place, so a reader that opened it keeps reading one consistent version."""
        path = self._path(key)
        if not os.path.isfile(path):
            raise ObjectNotFound(f"{self.uri}/{key} does not exist.")
        yield path

    def exists(self, key: str) -> bool:
        """Whether a file is stored at ``key``."""
        return os.path.isfile(self._path(key))

    def _walk(self, start: str, temp_files: bool) -> Iterator[tuple[str, os.stat_result]]:
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if (TEMP_MARKER in name) != temp_files:
                    continue
                full = os.path.join(dirpath, name)
                with suppress(FileNotFoundError):  # deleted while we walked
                    yield os.path.relpath(full, self._root).replace(os.sep, "/"), os.stat(full)

    def _walk_start(self, prefix: str) -> str:
        # Only descend into the folder the prefix names, not the whole tree.
        folder = prefix.rpartition("/")[0]
        return os.path.join(self._root, *folder.split("/")) if folder else self._root

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every stored object whose key starts with ``prefix``; temporary files are hidden."""
        infos = [
            ObjectInfo(key, st.st_size, st.st_mtime)
            for key, st in self._walk(self._walk_start(prefix), temp_files=False)
            if key.startswith(prefix)
        ]
        return sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        """Remove the file and any folders it leaves empty (up to the root)."""
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise StorageError(f"{self.uri}/{key} is a folder, not an object.") from None
        parent = os.path.dirname(path)
        while parent != self._root and parent.startswith(self._root):
            try:
                os.rmdir(parent)  # fails when not empty, which is where we stop
            except OSError:
                break
            parent = os.path.dirname(parent)

    def abort_incomplete_uploads(self, older_than_seconds: float, prefix: str = "") -> int:
        """Remove temporary files left by writers killed mid-write, if older than the given age."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for key, st in builtins.list(self._walk(self._walk_start(prefix), temp_files=True)):
            if key.startswith(prefix) and st.st_mtime <= cutoff:
                path = os.path.join(self._root, *key.split("/"))
                with suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
                # a folder that held only the dead writer's temp file is gone too
                parent = os.path.dirname(path)
                while os.path.abspath(parent) != os.path.abspath(self._root):
                    try:
                        os.rmdir(parent)
                    except OSError:
                        break
                    parent = os.path.dirname(parent)
        return removed
