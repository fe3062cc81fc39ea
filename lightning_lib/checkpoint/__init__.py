"""Checkpoints: what one holds, how it is committed to object storage, the one background writer,
and resuming a run from it.

A checkpoint is a ``.ckpt`` file with Lightning's name in an ``ObjectStore`` (``lightning_lib.storage``):
the archive ``torch.save`` wrote, sealed with its commit marker (size, sha256, step, time) as the
archive's comment and published whole, so it opens with ``torch.load`` as it is. ``write_checkpoint``
commits one (overwriting one in a single step when asked); ``load_manifest``, ``list_committed``,
``latest_valid`` and the ``*_verified`` readers only believe a marker that validates and bytes that
match it; ``delete_checkpoint`` and ``cleanup_orphans`` remove checkpoints and what killed writers left.
``CheckpointWriter`` is the one background writer: it commits (and, for retention, deletes) a
Trainer's checkpoints in order, off the training thread. ``load_file`` reads a checkpoint file (verified
when committed, ``weights_only=True`` unless asked otherwise). How the Trainer builds a checkpoint and
resumes from one (``_format``, ``_resume``, ``_positions``) is internal to it.
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
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CommittedCheckpoint,
    CorruptCheckpointError,
    InvalidManifestError,
)
from lightning_lib.checkpoint._writer import CheckpointWriter

__all__ = [
    "CheckpointExistsError",
    "CheckpointFallbackWarning",
    "CheckpointNotFoundError",
    "CheckpointWriter",
    "CommittedCheckpoint",
    "CorruptCheckpointError",
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
