"""Checkpoints recorded in MLflow by reference: where they are and the sha256 of what is there.

A checkpoint already lives in durable storage (a local folder or ``s3://``); copying it into the run's
artifacts doubles the storage and the upload time for nothing. The run records the URI and the hashes,
which is enough to find the bytes and to prove they are the ones the run produced.

Two layouts are understood: a single file (hashed here), and a committed checkpoint folder whose
``MANIFEST.json`` lists every file with its sha256 (the hashes are read from it, and the manifest itself
is hashed, which pins the whole folder with one digest).
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

MANIFEST_NAME = "MANIFEST.json"
_CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    """Hex sha256 of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """name -> sha256 from a manifest, whether ``files`` is a mapping or a list of entries."""
    files = manifest.get("files", {})
    out: dict[str, str] = {}
    if isinstance(files, Mapping):
        for name, entry in files.items():
            sha = entry.get("sha256") if isinstance(entry, Mapping) else entry
            if sha:
                out[str(name)] = str(sha)
    elif isinstance(files, list):
        for entry in files:
            if isinstance(entry, Mapping):
                name = entry.get("path") or entry.get("name")
                if name and entry.get("sha256"):
                    out[str(name)] = str(entry["sha256"])
    return out


def _read_remote_manifest(folder_uri: str) -> bytes:
    """The ``MANIFEST.json`` of a remote checkpoint folder, read through the project's object store
    (boto3's own configuration chain: ``AWS_ENDPOINT_URL``, profiles, roles; never credentials here)."""
    from lightning_lib.storage._store import open_store

    return open_store(folder_uri.rstrip("/")).get_bytes(MANIFEST_NAME)


def _from_manifest(ref: dict[str, Any], raw: bytes) -> dict[str, Any]:
    manifest = json.loads(raw)
    ref["sha256"] = hashlib.sha256(raw).hexdigest()
    ref["hash_of"] = MANIFEST_NAME
    ref["files"] = _manifest_files(manifest)
    for key in ("step", "global_step", "epoch", "time", "created"):
        if key in manifest:
            ref[key] = manifest[key]
    return ref


def checkpoint_reference(path: str) -> dict[str, Any]:
    """Describe the checkpoint at ``path``: ``uri``, ``sha256`` and, for a committed folder, ``files``.

    Never raises: a reference that cannot be hashed says why in ``error`` (the run still records it).
    """
    is_s3 = path.startswith("s3://")
    ref: dict[str, Any] = {"uri": path if is_s3 else os.path.abspath(path), "recorded_at": time.time()}
    try:
        if is_s3:
            # A committed folder has a manifest; a bare object would have to be downloaded to be
            # hashed, which is what recording by reference avoids, so it is recorded without a hash.
            try:
                return _from_manifest(ref, _read_remote_manifest(path))
            except Exception as exc:
                ref["sha256"] = None
                ref["error"] = f"no readable {MANIFEST_NAME}: {type(exc).__name__}"
                return ref
        if os.path.isdir(path):
            manifest_path = os.path.join(path, MANIFEST_NAME)
            if not os.path.isfile(manifest_path):
                ref["sha256"] = None
                ref["error"] = f"folder without {MANIFEST_NAME} (not committed)"
                return ref
            with open(manifest_path, "rb") as f:
                return _from_manifest(ref, f.read())
        ref["sha256"] = sha256_file(path)
        ref["size"] = os.path.getsize(path)
    except Exception as exc:
        ref["sha256"] = None
        ref["error"] = f"{type(exc).__name__}: {exc}"
    return ref


# What a checkpoint callback pointed at when it saved: (path, roles, best score, monitor).
Snapshot = tuple[str, list[str], float | None, str | None]


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
    return [
        (path, roles, float(score) if "best" in roles and score is not None else None, monitor)
        for path, roles in by_path.items()
    ]


def _committed(path: str) -> bool:
    if path.startswith("s3://"):
        return False  # unknown without a request; resolved at the next save or at the end
    return os.path.isfile(path) or os.path.isfile(os.path.join(path, MANIFEST_NAME))


class CheckpointReferences:
    """The checkpoints a run produced, each recorded once per (uri, sha256), with its roles.

    Checkpoint folders are committed in the background after the save call returns, so a saved path is
    kept pending and hashed once its manifest exists: at a later save, or at the end of fit (the Trainer
    waits for every commit before it finalizes the loggers).
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
            path, path_roles, score, monitor = item
            newer = any(other[0] == path for other in self._pending[index + 1 :])
            if newer:
                continue  # the same path saved again since: only its latest content matters
            if not final and not _committed(path):
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
