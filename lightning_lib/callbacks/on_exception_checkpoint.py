"""``OnExceptionCheckpoint``: save a checkpoint when a run fails, to resume from where it failed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lightning_lib.callbacks.model_checkpoint import Checkpoint
from lightning_lib.storage import is_remote, join_uri, split_uri

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer


class OnExceptionCheckpoint(Checkpoint):
    """Save ``dirpath/filename.ckpt`` when fit/validate/test/predict raises (including ``KeyboardInterrupt``).

    The file is written with ``trainer.save_checkpoint`` (a plain ``.ckpt`` file locally; on object storage,
    committed like every other checkpoint) and overwritten by a later failure. A run that ends without an
    exception removes it at teardown, so what is there after a run always belongs to a failure.

    Args:
        dirpath: folder (or ``s3://`` URI) for the checkpoint, given up front since an exception may come at any moment.
        filename: the checkpoint's name, without the extension.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "on_exception") -> None:
        super().__init__()
        if not filename:
            raise ValueError("The filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        """Where the checkpoint is written."""
        return join_uri(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        if not trainer.is_global_zero:
            return
        path = self.ckpt_path
        if is_remote(path):
            from lightning_lib.checkpoint import delete_checkpoint
            from lightning_lib.storage import open_store

            root, name = split_uri(path)
            delete_checkpoint(open_store(root), name)
        elif os.path.isfile(path):
            os.remove(path)
