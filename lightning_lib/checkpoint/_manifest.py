"""The commit marker of a checkpoint file: a trailer inside the file itself, its format and validation.

A checkpoint is the file ``torch.save`` writes (a zip archive) with Lightning's name. Committing it
seals the archive: its comment, the last bytes of every zip file and empty in what ``torch.save``
writes, becomes the commit marker, written last::

    body (torch.save's bytes but its last two) | comment length (2 bytes) | marker JSON | JSON length (4) | MAGIC

The JSON holds the body's size and sha256, the training step, the commit time and the format. Zip
readers (``torch.load``, pytorch_lightning, ``zipfile``) read an archive comment as part of the format,
so the file opens everywhere as it is, and the directory holds exactly Lightning's files. Because the
marker is inside the file it travels with every copy, and a file and its marker can never be seen
apart: each store publishes an object atomically (a rename, one S3 PUT or multipart completion), so a
reader finds the whole sealed file or none, and a checkpoint overwritten in place ("last.ckpt") is the
old file or the new one, each verifiable on its own.

A file without a marker (pytorch_lightning's own, ``Trainer.save_checkpoint``'s plain files) is not a
committed checkpoint: readers choosing one (``ckpt_path="last"``) skip it.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from lightning_lib.storage._base import ObjectNotFound, PreconditionFailed, StorageError

MANIFEST_FORMAT = "lightning_lib.checkpoint"
MANIFEST_VERSION = 2
MAGIC = b"#lightning_lib.commit"
_JSON_LENGTH = struct.Struct("<I")
_COMMENT_LENGTH = struct.Struct("<H")
# the zip format's end-of-central-directory record: 22 bytes, the last 2 the comment's length
_EOCD_SIGNATURE = b"PK\x05\x06"
EOCD_SIZE = 22
# a zip comment is at most 65535 bytes: the JSON gets what the length and the magic leave
MAX_MANIFEST_BYTES = 0xFFFF - _JSON_LENGTH.size - len(MAGIC)
# what a reader fetches from the end of a file to find its marker, whatever its size
TRAILER_READ = 0xFFFF + _COMMENT_LENGTH.size + EOCD_SIZE
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CorruptCheckpointError(StorageError):
    """A committed checkpoint's file is missing or does not match its commit marker."""


class InvalidManifestError(StorageError):
    """A file ends like a committed checkpoint, but its commit marker cannot be trusted."""


class CheckpointNotFoundError(ObjectNotFound):
    """No committed checkpoint exists under the name (no file, or a file without a commit marker)."""


class CheckpointExistsError(PreconditionFailed):
    """A file already exists under the name; a new checkpoint never overwrites it unasked."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint failed verification and an older one is used instead."""


@dataclass(frozen=True)
class CommittedCheckpoint:
    """A checkpoint whose commit marker validated: where its file is and what its body must hash to.

    ``name`` is the file's key relative to the store root, ``uri`` its full location; ``size`` and
    ``sha256`` are what the marker records of the body (everything before the marker), ``file_size`` is
    the whole file as found and ``trailer_size`` the marker's part of it; ``time`` is the commit time in
    epoch seconds.
    """

    name: str
    uri: str
    step: int
    time: float
    size: int
    sha256: str
    file_size: int
    trailer_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def body_found(self) -> int:
        """How many bytes precede the marker in the file as found (``size`` when it is intact)."""
        return self.file_size - self.trailer_size


def check_sealable(tail: bytes, before: bytes) -> None:
    """``before + tail`` must end an archive ``torch.save`` wrote: an end-of-central-directory record whose
    comment (the two ``tail`` bytes, its length) is empty, so the marker can become that comment."""
    record = before[-(EOCD_SIZE - len(tail)) :] + tail
    if len(record) != EOCD_SIZE or not record.startswith(_EOCD_SIGNATURE) or tail != b"\x00\x00":
        raise ValueError(
            "Expected a checkpoint written by torch.save (a zip archive ending in an end-of-central-directory"
            " record without a comment), received other bytes."
        )


def encode_trailer(size: int, sha256: str, step: int, time: float, extra: dict[str, Any]) -> bytes:
    """What replaces the archive's empty comment length: the comment's length, then the comment (the
    marker JSON, its length and ``MAGIC``). Deterministic (sorted keys): equal content, equal bytes."""
    document = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "size": size,
        "sha256": sha256,
        "step": step,
        "time": time,
        "extra": extra,
    }
    raw = json.dumps(document, sort_keys=True, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"Expected a commit marker of at most {MAX_MANIFEST_BYTES} bytes, received {len(raw)} (extra too large)."
        )
    comment = raw + _JSON_LENGTH.pack(len(raw)) + MAGIC
    return _COMMENT_LENGTH.pack(len(comment)) + comment


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a hostile marker must not flood the logs."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_trailer(tail: bytes, file_size: int, name: str, uri: str) -> CommittedCheckpoint | None:
    """The committed checkpoint whose file ends with ``tail`` (``file_size`` bytes in all), ``None`` when
    the file carries no marker, ``InvalidManifestError`` when it ends with one that cannot be trusted.

    Whatever the bytes (garbage, a non-object, wrong types, nesting deep enough to exhaust the parser's
    recursion, integers too long to convert), the only error raised is ``InvalidManifestError``: readers
    skip such a checkpoint instead of failing.
    """

    def invalid(reason: str) -> InvalidManifestError:
        return InvalidManifestError(f"The commit marker of {uri} is not valid: {reason}.")

    if not tail.endswith(MAGIC):
        return None
    fixed = _JSON_LENGTH.size + len(MAGIC) + _COMMENT_LENGTH.size
    if len(tail) < fixed:
        raise invalid("the file is too short to hold one")
    (length,) = _JSON_LENGTH.unpack(tail[-len(MAGIC) - _JSON_LENGTH.size : -len(MAGIC)])
    comment = length + _JSON_LENGTH.size + len(MAGIC)
    if length > MAX_MANIFEST_BYTES or comment + _COMMENT_LENGTH.size > len(tail):
        raise invalid(f"its length ({length} bytes) does not fit the file")
    start = len(tail) - comment
    (declared,) = _COMMENT_LENGTH.unpack(tail[start - _COMMENT_LENGTH.size : start])
    if declared != comment:
        raise invalid(f"the archive's comment is {declared} bytes, the marker {comment}")
    try:
        doc: Any = json.loads(tail[start : start + length].decode("utf-8"))
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
    size: Any = doc.get("size")
    sha: Any = doc.get("sha256")
    step: Any = doc.get("step")
    when: Any = doc.get("time")
    extra: Any = doc.get("extra", {})
    if not _is_int(size) or size < 0:
        raise invalid(f"expected a non-negative integer size, received {_show(size)}")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise invalid(f"expected a lowercase hex sha256, received {_show(sha)}")
    if not _is_int(step) or step < 0:
        raise invalid(f"expected a non-negative integer step, received {_show(step)}")
    if not isinstance(when, int | float) or isinstance(when, bool) or not math.isfinite(when):
        raise invalid(f"expected a finite numeric time, received {_show(when)}")
    if not isinstance(extra, dict):
        raise invalid(f"expected extra to be an object, received {type(extra).__name__}")
    return CommittedCheckpoint(
        name=name,
        uri=uri,
        step=step,
        time=float(when),
        size=size,
        sha256=sha,
        file_size=file_size,
        trailer_size=comment + _COMMENT_LENGTH.size,
        extra=extra,
    )
