"""The ``MANIFEST.json`` that commits a checkpoint: its format, validation and the errors around it."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypedDict

from lightning_lib.storage._base import ObjectNotFound, PreconditionFailed, StorageError, validate_key

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "lightning_lib.checkpoint"
MANIFEST_VERSION = 1
# A real manifest is a few hundred bytes per file; anything near this size is garbage or hostile, and
# parsing it would only cost memory and time before being refused.
MAX_MANIFEST_BYTES = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FileEntry(TypedDict):
    """What a manifest records of one file: its size in bytes and its lowercase hex sha256."""

    size: int
    sha256: str


class CorruptCheckpointError(StorageError):
    """A file of a committed checkpoint is missing or does not match its manifest entry."""


class InvalidManifestError(StorageError):
    """A ``MANIFEST.json`` exists but cannot be trusted (unparsable, wrong format or fields)."""


class CheckpointNotFoundError(ObjectNotFound):
    """No committed checkpoint (no ``MANIFEST.json``) exists under the name."""


class CheckpointExistsError(PreconditionFailed):
    """A manifest (valid or not) already exists under the name; such a name is never overwritten."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint failed verification and an older one is used instead."""


@dataclass(frozen=True)
class CommittedCheckpoint:
    """A checkpoint whose manifest validated: where it is and what its files must hash to.

    ``name`` is the folder relative to the store root, ``uri`` its full location, ``files`` maps each
    file name to its ``FileEntry``, ``time`` is the commit time in epoch seconds.
    """

    name: str
    uri: str
    step: int
    time: float
    files: dict[str, FileEntry]
    extra: dict[str, Any] = field(default_factory=dict)


def validate_filename(filename: str) -> str:
    """A checkpoint file name is a safe relative key other than the manifest itself."""
    validate_key(filename)
    if filename == MANIFEST_NAME:
        raise ValueError(
            f"Expected a checkpoint file name other than {MANIFEST_NAME!r}, received {filename!r}."
        )
    return filename


def encode_manifest(step: int, time: float, files: dict[str, FileEntry], extra: dict[str, Any]) -> bytes:
    """Serialise a manifest deterministically (sorted keys), so equal content means equal bytes."""
    document = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "step": step,
        "time": time,
        "files": files,
        "extra": extra,
    }
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a hostile manifest must not flood the logs."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_manifest(raw: bytes, name: str, uri: str) -> CommittedCheckpoint:
    """Parse and validate a manifest; raise ``InvalidManifestError`` saying what is wrong.

    Whatever the bytes (garbage, a non-object, wrong types, nesting deep enough to exhaust the parser's
    recursion, integers too long to convert, more than ``MAX_MANIFEST_BYTES``), the only error raised
    is ``InvalidManifestError``: readers skip such a checkpoint instead of failing.
    """

    def invalid(reason: str) -> InvalidManifestError:
        return InvalidManifestError(f"{uri}/{MANIFEST_NAME} is not a valid manifest: {reason}.")

    if len(raw) > MAX_MANIFEST_BYTES:
        raise invalid(f"expected at most {MAX_MANIFEST_BYTES} bytes, received {len(raw)}")
    try:
        doc: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSONDecodeError, int digit limit
        raise invalid(f"unparsable JSON ({str(exc)[:200]})") from None
    except RecursionError:
        raise invalid("JSON nested too deeply to parse") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise invalid(f"expected format {MANIFEST_FORMAT!r}")
    version: Any = doc.get("version")
    if not _is_int(version) or version < 1:
        raise invalid(f"expected an integer version, received {_show(version)}")
    if version > MANIFEST_VERSION:
        raise invalid(
            f"version {version} was written by a newer lightning_lib (this one reads {MANIFEST_VERSION})"
        )
    step: Any = doc.get("step")
    when: Any = doc.get("time")
    files: Any = doc.get("files")
    extra: Any = doc.get("extra", {})
    if not _is_int(step) or step < 0:
        raise invalid(f"expected a non-negative integer step, received {_show(step)}")
    if not isinstance(when, int | float) or isinstance(when, bool) or not math.isfinite(when):
        raise invalid(f"expected a finite numeric time, received {_show(when)}")
    if not isinstance(extra, dict):
        raise invalid(f"expected extra to be an object, received {type(extra).__name__}")
    if not isinstance(files, dict) or not files:
        raise invalid("expected a non-empty files object")
    for filename, entry in files.items():
        try:
            validate_filename(filename)
        except ValueError:
            raise invalid(f"expected a safe relative file name, received {_show(filename)}") from None
        if not isinstance(entry, dict) or not _is_int(entry.get("size")) or entry["size"] < 0:
            raise invalid(f"file {_show(filename)} needs a non-negative integer size")
        if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            raise invalid(f"file {_show(filename)} needs a lowercase hex sha256")
    clean = {f: FileEntry(size=e["size"], sha256=e["sha256"]) for f, e in files.items()}
    return CommittedCheckpoint(name=name, uri=uri, step=step, time=float(when), files=clean, extra=extra)
