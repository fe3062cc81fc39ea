"""Checkpoints recorded in MLflow by reference: where they are and the sha256 of what is there.

A checkpoint already lives in durable storage (a local folder or ``s3://``); copying it into the run's
artifacts doubles the storage and the upload time for nothing. The run records the URI and the file's
sha256, which is enough to find the bytes and to prove they are the ones the run produced. A committed
checkpoint's sha256 (with its size and step) is read from its commit marker, never by reading the file
again; a local file without a marker is hashed here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_lib.callbacks.model_checkpoint import ModelCheckpoint
    from lightning_lib.checkpoint import CommittedCheckpoint

_CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    """Hex sha256 of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(path: str) -> tuple[bool, CommittedCheckpoint | None]:
    """Whether the file at ``path`` carries a commit marker, and the committed checkpoint it describes
    (``None`` when the marker is invalid). Read through the project's object store: boto3's own
    configuration chain on S3, never credentials here."""
    from lightning_lib.checkpoint import CheckpointNotFoundError, InvalidManifestError, load_manifest
    from lightning_lib.storage import open_store, split_uri

    root, name = split_uri(path)
    try:
        return True, load_manifest(open_store(root), name)
    except (CheckpointNotFoundError, ValueError):  # no file, a plain file, or a name no store holds
        return False, None
    except InvalidManifestError:
        return True, None


def checkpoint_reference(path: str) -> dict[str, Any]:
    """Describe the checkpoint file at ``path``: ``uri``, ``sha256``, ``size`` and, when committed, ``step``.

    A committed checkpoint's ``sha256`` is its content's as its commit marker records it (``hash_of``:
    "commit marker"), read without downloading the file; a plain local file is hashed whole ("file").
    Never raises: a reference that cannot be hashed says why in ``error`` (the run still records it).
    """
    is_s3 = path.startswith("s3://")
    ref: dict[str, Any] = {"uri": path if is_s3 else os.path.abspath(path), "recorded_at": time.time()}
    try:
        marked, ckpt = _marker(path)
        if ckpt is not None:
            ref.update(
                sha256=ckpt.sha256,
                hash_of="commit marker",
                size=ckpt.file_size,
                step=ckpt.step,
                time=ckpt.time,
            )
            return ref
        if marked or is_s3:
            # an object without a marker would have to be downloaded to be hashed, which is what
            # recording by reference avoids, so it is recorded without a hash
            ref["sha256"] = None
            ref["error"] = "its commit marker is not valid" if marked else "no commit marker (not committed)"
            return ref
        ref["sha256"] = sha256_file(path)
        ref["hash_of"] = "file"
        ref["size"] = os.path.getsize(path)
    except Exception as exc:
        ref["sha256"] = None
        ref["error"] = f"{type(exc).__name__}: {exc}"
    return ref


# What a checkpoint callback pointed at when it saved: (path, roles, best score, monitor, the step the
# "latest" path was saved at).
Snapshot = tuple[str, list[str], float | None, str | None, int | None]


def snapshot(callback: ModelCheckpoint) -> list[Snapshot]:
    """The callback's ``last_model_path`` / ``best_model_path`` now, with their roles ("latest", "best")."""
    by_path: dict[str, list[str]] = {}
    for role, attr in (("latest", "last_model_path"), ("best", "best_model_path")):
        path = getattr(callback, attr, "") or ""
        if path:
            by_path.setdefault(str(path), []).append(role)
    latest_saved = getattr(callback, "_last_checkpoint_saved", "") or ""
    if latest_saved and not any("latest" in roles for roles in by_path.values()):
        by_path.setdefault(str(latest_saved), []).append("latest")
    score = getattr(callback, "best_model_score", None)
    monitor = getattr(callback, "monitor", None)
    step = getattr(callback, "_last_global_step_saved", None)
    return [
        (
            path,
            roles,
            float(score) if "best" in roles and score is not None else None,
            monitor,
            step if "latest" in roles else None,
        )
        for path, roles in by_path.items()
    ]


def _committed(path: str, step: int | None) -> bool:
    """Whether ``path`` holds what the callback saved (at ``step``, for a file overwritten in place such as
    "last.ckpt"), so that it can be recorded now."""
    if path.startswith("s3://"):
        return False  # unknown without a request; resolved at the next save or at the end
    if not os.path.isfile(path):
        return False  # a commit publishes the whole file at once: not yet
    try:
        marked, ckpt = _marker(path)
    except Exception:
        return False
    if not marked:
        return True  # a plain file is written whole before the save returns
    return ckpt is not None and (step is None or ckpt.step >= step)


class CheckpointReferences:
    """The checkpoints a run produced, each recorded once per (uri, sha256), with its roles.

    Checkpoints are committed in the background after the save call returns, so a saved path is kept
    pending and recorded once it is committed: at a later save, or at the end of fit (the Trainer waits
    for every commit before it finalizes the loggers).
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._index: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._pending: list[Snapshot] = []

    def add(self, callback: ModelCheckpoint) -> None:
        """Remember what ``callback`` points at now, to be hashed by :meth:`resolve`."""
        self._pending.extend(snapshot(callback))

    def resolve(self, final: bool = False) -> dict[str, dict[str, Any]]:
        """Hash the pending checkpoints that are committed (all of them when ``final``); newest roles."""
        roles: dict[str, dict[str, Any]] = {}
        still_pending: list[Snapshot] = []
        for index, item in enumerate(self._pending):
            path, path_roles, score, monitor, step = item
            newer = any(other[0] == path for other in self._pending[index + 1 :])
            if newer:
                continue  # the same path saved again since: only its latest content matters
            if not final and not _committed(path, step):
                still_pending.append(item)
                continue
            ref = checkpoint_reference(path)
            if "best" in path_roles:
                ref["score"], ref["monitor"] = score, monitor
            ref = self._merge(ref, path_roles)
            for role in path_roles:
                roles[role] = ref
        self._pending = still_pending
        return roles

    def record(self, callback: ModelCheckpoint) -> dict[str, dict[str, Any]]:
        """Snapshot ``callback`` and resolve everything at once (the end of fit)."""
        self.add(callback)
        return self.resolve(final=True)

    def _merge(self, ref: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        key = (ref["uri"], ref.get("sha256"))
        existing = self._index.get(key)
        if existing is None:
            ref["roles"] = sorted(roles)
            self._index[key] = ref
            self.records.append(ref)
            return ref
        existing["roles"] = sorted(set(existing["roles"]) | set(roles))
        return existing

    def tags(self, roles: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """Run tags for the current latest / best checkpoint: uri, sha256 and (best) score."""
        tags: dict[str, str] = {}
        for role, ref in roles.items():
            tags[f"checkpoint.{role}.uri"] = str(ref["uri"])
            if ref.get("sha256"):
                tags[f"checkpoint.{role}.sha256"] = str(ref["sha256"])
            if role == "best" and ref.get("score") is not None:
                tags["checkpoint.best.score"] = repr(ref["score"])
        return tags

    def to_json(self) -> str:
        return json.dumps({"checkpoints": self.records}, indent=2, sort_keys=True, default=str)
