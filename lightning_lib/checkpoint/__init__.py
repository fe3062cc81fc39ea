"""Checkpoints: what one holds, how it is committed to object storage, the one background writer,
and resuming a run from it.

A checkpoint is a folder in an ``ObjectStore`` (``lightning_lib.storage``) committed by its
``MANIFEST.json``, written last: ``write_checkpoint`` commits one; ``load_manifest``,
``list_committed``, ``latest_valid`` and the ``*_verified`` readers only believe a manifest that
validates and bytes that match it; ``delete_checkpoint`` and ``cleanup_orphans`` remove checkpoints
and what killed writers left. ``CheckpointWriter`` is the one background writer: it commits (and,
for retention, deletes) a Trainer's checkpoints in order, off the training thread. ``load_file`` reads
a ``.ckpt`` file or a committed folder (verified, ``weights_only=True`` unless asked otherwise). How
the Trainer builds a checkpoint and resumes from one (``_format``, ``_resume``, ``_positions``) is
internal to it.
"""

from lightning_lib.checkpoint._commit import (
    cleanup_orphans,
    delete_checkpoint,
    download_verified,
    latest_valid,
    list_committed,
    load_manifest,
    load_verified,
    read_manifest,
    read_verified,
    write_checkpoint,
)
from lightning_lib.checkpoint._format import load_file
from lightning_lib.checkpoint._manifest import (
    MANIFEST_NAME,
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CommittedCheckpoint,
    CorruptCheckpointError,
    FileEntry,
    InvalidManifestError,
)
from lightning_lib.checkpoint._writer import CHECKPOINT_FILE, CheckpointWriter

__all__ = [
    "CHECKPOINT_FILE",
    "MANIFEST_NAME",
    "CheckpointExistsError",
    "CheckpointFallbackWarning",
    "CheckpointNotFoundError",
    "CheckpointWriter",
    "CommittedCheckpoint",
    "CorruptCheckpointError",
    "FileEntry",
    "InvalidManifestError",
    "cleanup_orphans",
    "delete_checkpoint",
    "download_verified",
    "latest_valid",
    "list_committed",
    "load_file",
    "load_manifest",
    "load_verified",
    "read_manifest",
    "read_verified",
    "write_checkpoint",
]
