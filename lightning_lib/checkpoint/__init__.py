"""Checkpoints: their content, the manifest-last commit protocol over an object store, one background
writer, and resuming a run from them.
"""

from lightning_lib.checkpoint._commit import (
    BackgroundUploader,
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
from lightning_lib.checkpoint._manifest import (
    MANIFEST_NAME,
    CheckpointExistsError,
    CheckpointFallbackWarning,
    CheckpointNotFoundError,
    CommittedCheckpoint,
    CorruptCheckpointError,
    InvalidManifestError,
)

__all__ = [
    "MANIFEST_NAME",
    "BackgroundUploader",
    "CheckpointExistsError",
    "CheckpointFallbackWarning",
    "CheckpointNotFoundError",
    "CommittedCheckpoint",
    "CorruptCheckpointError",
    "InvalidManifestError",
    "cleanup_orphans",
    "delete_checkpoint",
    "download_verified",
    "latest_valid",
    "list_committed",
    "load_manifest",
    "load_verified",
    "read_manifest",
    "read_verified",
    "write_checkpoint",
]
