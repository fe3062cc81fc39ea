"""Private local folders for checkpoint bytes on their way to or from a store.

Each folder's name carries the owner's process id, so folders of a process that was killed before it
could clean up (SIGKILL, OOM) are recognised and removed by the next process that stages something.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

WRITE_PREFIX = "lightning_lib-ckpt-"  # a checkpoint serialised before (and while) it is uploaded
DOWNLOAD_PREFIX = "lightning_lib-dl-"  # a checkpoint downloaded to be verified and loaded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(prefix: str) -> None:
    """Remove the ``prefix`` folders in the temp folder whose owning process is gone."""
    base = tempfile.gettempdir()
    for entry in os.listdir(base):
        if not entry.startswith(prefix):
            continue
        pid_text = entry[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(os.path.join(base, entry), ignore_errors=True)


@contextmanager
def staging_dir(prefix: str) -> Iterator[str]:
    """A new folder ``<temp>/<prefix><pid>-...``, removed with its content when the context ends."""
    remove_stale(prefix)
    folder = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
