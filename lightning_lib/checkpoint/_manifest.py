"""The commit marker of a checkpoint file: where it lives, its format, validation and the errors around it.

A checkpoint is one file (``epoch=3-step=40.ckpt``, Lightning's name) and its marker is a small JSON
object in a hidden ``.manifests`` folder beside it: ``<folder>/.manifests/<file name>.json``. The
folder keeps Lightning's listing of the checkpoint folder to its ``.ckpt`` files (``ls`` hides it) and
keeps the markers apart from anything a user might name a file.

A marker has a ``state``:

- ``"writing"``: the name is claimed by a writer that has not committed yet (written first, with a
  conditional put, so two writers never take the same name);
- ``"committed"``: the file is committed; ``versions`` lists the (size, sha256, step, time) the bytes
  at the name may have. Normally one; while a committed checkpoint is being overwritten ("last.ckpt")
  the new version is listed ahead of the old one until the new bytes are in place, so whichever bytes
  a reader finds, they validate against one of them and are a whole checkpoint;
- ``"deleting"``: the checkpoint is being deleted (readers stop seeing it at once).

Only a committed marker makes a checkpoint exist for readers, and only bytes that match one of its
versions are ever used.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_lib.storage._base import ObjectNotFound, PreconditionFailed, StorageError, validate_key

MANIFEST_DIR = ".manifests"
MANIFEST_SUFFIX = ".json"
MANIFEST_FORMAT = "lightning_lib.checkpoint"
MANIFEST_VERSION = 2
# A real marker is a few hundred bytes; anything near this size is garbage or hostile, and parsing it
# would only cost memory and time before being refused.
MAX_MANIFEST_BYTES = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
State = Literal["writing", "committed", "deleting"]
_STATES = ("writing", "committed", "deleting")


class CorruptCheckpointError(StorageError):
    """A committed checkpoint's file is missing or matches none of its marker's versions."""


class InvalidManifestError(StorageError):
    """A marker exists but cannot be trusted (unparsable, wrong format or fields)."""


class CheckpointNotFoundError(ObjectNotFound):
    """No committed checkpoint exists under the name (no marker, or one not in the committed state)."""


class CheckpointExistsError(PreconditionFailed):
    """A marker (valid or not) already exists under the name; such a name is never overwritten."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint failed verification and an older one is used instead."""


@dataclass(frozen=True)
class FileVersion:
    """One content a committed checkpoint's file may have: its size, lowercase hex sha256, the training
    step it was taken at and its commit time (epoch seconds)."""

    size: int
    sha256: str
    step: int
    time: float

    def as_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "step": self.step, "time": self.time}


@dataclass(frozen=True)
class CommittedCheckpoint:
    """A checkpoint whose marker validated: where its file is and what its bytes may hash to.

    ``name`` is the file's key relative to the store root, ``uri`` its full location. ``versions`` lists
    the contents the file may have, newest first: one, unless an overwrite was interrupted between its
    steps. ``step`` and ``time`` are the oldest version's, the most a reader may count on before it has
    verified the bytes (with one version, simply the checkpoint's).
    """

    name: str
    uri: str
    versions: tuple[FileVersion, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return min(v.step for v in self.versions)

    @property
    def time(self) -> float:
        return min(v.time for v in self.versions)

    @property
    def newest(self) -> FileVersion:
        """The version the last commit wrote."""
        return self.versions[0]

    def matching(self, size: int, sha256: str) -> FileVersion | None:
        """The version these bytes are, if any."""
        return next((v for v in self.versions if v.size == size and v.sha256 == sha256), None)


def validate_name(name: str) -> str:
    """A checkpoint name is a safe relative key that does not reach into a markers folder."""
    validate_key(name)
    if MANIFEST_DIR in name.split("/"):
        raise ValueError(f"Expected a checkpoint name without a {MANIFEST_DIR!r} part, received {name!r}.")
    return name


def manifest_key(name: str) -> str:
    """Where the marker of the checkpoint file ``name`` lives: ``<folder>/.manifests/<file>.json``."""
    folder, _, base = validate_name(name).rpartition("/")
    key = f"{MANIFEST_DIR}/{base}{MANIFEST_SUFFIX}"
    return f"{folder}/{key}" if folder else key


def name_of_manifest(key: str) -> str | None:
    """The checkpoint name whose marker is at ``key``, or ``None`` when ``key`` is no marker."""
    folder, _, base = key.rpartition("/")
    parent, _, marker_dir = folder.rpartition("/")
    if marker_dir != MANIFEST_DIR or not base.endswith(MANIFEST_SUFFIX) or len(base) == len(MANIFEST_SUFFIX):
        return None
    name = base[: -len(MANIFEST_SUFFIX)]
    return f"{parent}/{name}" if parent else name


def encode_manifest(
    state: State, name: str, versions: list[FileVersion], extra: dict[str, Any], time: float
) -> bytes:
    """Serialise a marker deterministically (sorted keys), so equal content means equal bytes."""
    document = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "state": state,
        "file": name.rpartition("/")[2],
        "time": time,
        "versions": [v.as_json() for v in versions],
        "extra": extra,
    }
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a hostile marker must not flood the logs."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Marker:
    """A decoded marker: its state, and for a committed one the checkpoint it commits."""

    state: State
    checkpoint: CommittedCheckpoint | None


def decode_manifest(raw: bytes, name: str, uri: str) -> Marker:
    """Parse and validate a marker; raise ``InvalidManifestError`` saying what is wrong.

    Whatever the bytes (garbage, a non-object, wrong types, nesting deep enough to exhaust the parser's
    recursion, integers too long to convert, more than ``MAX_MANIFEST_BYTES``), the only error raised
    is ``InvalidManifestError``: readers skip such a checkpoint instead of failing.
    """

    def invalid(reason: str) -> InvalidManifestError:
        return InvalidManifestError(f"The commit marker of {uri} is not valid: {reason}.")

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
    if version < MANIFEST_VERSION:
        raise invalid(f"version {version} describes a checkpoint folder, not a checkpoint file")
    state: Any = doc.get("state")
    if state not in _STATES:
        raise invalid(f"expected a state among {_STATES}, received {_show(state)}")
    expected_file = name.rpartition("/")[2]
    if doc.get("file") != expected_file:
        # a marker copied or renamed away from its file must not vouch for another one
        raise invalid(f"it commits the file {_show(doc.get('file'))}, not {expected_file!r}")
    extra: Any = doc.get("extra", {})
    if not isinstance(extra, dict):
        raise invalid(f"expected extra to be an object, received {type(extra).__name__}")
    if state != "committed":
        return Marker(state, None)
    entries: Any = doc.get("versions")
    if not isinstance(entries, list) or not entries:
        raise invalid("expected a non-empty list of versions")
    versions = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise invalid(f"expected each version to be an object, received {_show(entry)}")
        size: Any = entry.get("size")
        sha: Any = entry.get("sha256")
        step: Any = entry.get("step")
        when: Any = entry.get("time")
        if not _is_int(size) or size < 0:
            raise invalid(f"expected a non-negative integer size, received {_show(size)}")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise invalid(f"expected a lowercase hex sha256, received {_show(sha)}")
        if not _is_int(step) or step < 0:
            raise invalid(f"expected a non-negative integer step, received {_show(step)}")
        if not _is_time(when):
            raise invalid(f"expected a finite numeric time, received {_show(when)}")
        versions.append(FileVersion(size=size, sha256=sha, step=step, time=float(when)))
    return Marker(state, CommittedCheckpoint(name=name, uri=uri, versions=tuple(versions), extra=extra))
