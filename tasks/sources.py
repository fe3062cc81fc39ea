"""Data identity without reading every byte: fingerprints of the sources a data module declares.

A data module may declare where its data lives with an optional ``data_sources() -> list[str]`` method:
local files, local folders (listed recursively) and ``s3://bucket/prefix`` URIs. This module identifies
every object in them from listings alone (name, size, and a version that changes with the content: the
ETag on S3, the modification time in nanoseconds locally), so its cost grows with the number of objects,
never with their bytes: one ``list_objects_v2`` page per 1,000 S3 objects, one ``stat`` per local file.

Public names:

- :func:`fingerprint_sources` lists the sources and returns a :class:`SourceListing`: every object, sorted
  by name, and its small summary, a :class:`DataFingerprint`.
- :class:`DataFingerprint` (frozen pydantic, JSON-serialisable, bounded in size) is what goes into the
  MLflow run (dataset input, tag) and the checkpoint: the sha256 digest over the sorted listing, the object
  count, the total bytes, and per source its count, bytes and digest (the first ``MAX_SUMMARY_SOURCES``
  sources; the rest are counted in ``sources_omitted``). ``short_digest`` fits MLflow's 36-character
  dataset digest; ``model_dump(mode="json")`` is plain data for a ``weights_only`` checkpoint.
- :meth:`SourceListing.to_bytes` / :meth:`SourceListing.from_bytes`: the whole listing as gzip-compressed
  JSON lines (:data:`LISTING_ARTIFACT` is its artifact name), a few bytes per object, so a later run can
  name the exact object that changed.
- :func:`compare` ``(old, new)`` returns ``None`` for the same data, else the first differing object as a
  :class:`DataDifference` (added, removed or changed, with its old and new size and ETag or mtime). Given
  only a fingerprint (no listing), it names the first source that differs.
- :func:`select_partitions` returns the Hive partitions ``key=YYYY-MM-DD`` directly under a root whose
  date lies in a window (start inclusive, end exclusive): how retraining windows pick their data.
- :class:`SourceNotFound` (an ``ObjectNotFound``, so never retried) names a source that does not exist: a
  missing path, an S3 prefix with no object under it, a missing bucket, a window without partitions.

Naming: an S3 object is ``s3://bucket/<its key>``; a local object is its absolute path. A URI names a
folder (everything under ``prefix/``); when nothing is there it names the single object ``prefix``.
Local identities (absolute path, mtime) hold on one filesystem: data copied elsewhere, or touched, is
"changed". Symbolic links inside a folder are never followed: each is recorded as a link with its target,
so a link into a content-addressed cache (DVC, Hugging Face) changes when the content does, and a target
inside the source is covered by its own entry. A declared source that is itself a link is followed.
Files other than regular files and links (sockets, FIFOs, devices) are not data and are skipped.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import stat
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from lightning_lib.storage import (
    AccessDeniedError,
    MissingCredentialsError,
    ObjectNotFound,
    S3Store,
    StorageError,
    is_remote,
    local_path,
    parse_s3_uri,
)

LISTING_ARTIFACT = "data_sources.jsonl.gz"
# The summary names this many sources at most; a data module that declares thousands of files as
# sources still gets a fingerprint of a few KB (the listing artifact keeps them all).
MAX_SUMMARY_SOURCES = 64
_FORMAT = "lightning-lib/data-sources"
_FORMAT_VERSION = 1
# Part of every digest, so a change of the line format can never make different data look equal.
_DIGEST_HEADER = f"{_FORMAT} v{_FORMAT_VERSION}\n".encode()
_S3_ACCESS_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}
_DATE_VALUE = re.compile(r"\d{4}-\d{2}-\d{2}")


class SourceNotFound(ObjectNotFound):
    """A declared data source (or a window's partitions) does not exist; the message names it."""


class ListedObject(NamedTuple):
    """One object of a listing: S3 objects carry ``etag``, local files ``mtime_ns``, local links ``link``."""

    name: str
    size: int
    etag: str | None = None
    mtime_ns: int | None = None
    link: str | None = None


class SourceSummary(BaseModel):
    """One declared source: its canonical name, object count, bytes and the digest of its own listing."""

    model_config = ConfigDict(frozen=True)

    source: str
    objects: int
    total_bytes: int
    digest: str


class DataFingerprint(BaseModel):
    """The small identity of a data module's sources, for MLflow and the checkpoint.

    ``digest`` is the sha256 over the sorted listing of every object (name, size, ETag or mtime): equal
    digests mean the same objects in the same versions, whatever order or overlap the sources had.
    """

    model_config = ConfigDict(frozen=True)

    format_version: int = _FORMAT_VERSION
    digest: str
    objects: int
    total_bytes: int
    sources: tuple[SourceSummary, ...]
    sources_omitted: int = 0

    @property
    def short_digest(self) -> str:
        """The digest's first 32 hex digits (128 bits): fits MLflow's 36-character dataset digest."""
        return self.digest[:32]

    @property
    def source_names(self) -> list[str]:
        """The canonical names of the summarised sources (at most ``MAX_SUMMARY_SOURCES``)."""
        return [summary.source for summary in self.sources]


class SourceListing:
    """Every object of the fingerprinted sources, sorted by name, with their :class:`DataFingerprint`."""

    def __init__(
        self, fingerprint: DataFingerprint, objects: Sequence[ListedObject], sources: Sequence[str]
    ) -> None:
        self.fingerprint = fingerprint
        self.objects = tuple(objects)
        self.sources = tuple(sources)
        # the JSON lines of ``objects`` when they are already at hand (listed or read back), else None
        self._body: str | None = None

    def __repr__(self) -> str:
        fp = self.fingerprint
        return f"SourceListing(digest={fp.digest[:12]}..., objects={fp.objects}, sources={len(self.sources)})"

    def to_bytes(self) -> bytes:
        """The listing as gzip-compressed JSON lines: a header, then one object per line, sorted by name.

        The bytes are deterministic (no timestamp in the gzip header), so equal listings compress equally.
        """
        header = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "sources": list(self.sources),
            "fingerprint": self.fingerprint.model_dump(mode="json"),
        }
        body = self._body if self._body is not None else "".join(map(_line, self.objects))
        text = json.dumps(header, separators=(",", ":")) + "\n" + body
        return gzip.compress(text.encode(), compresslevel=6, mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> SourceListing:
        """Read :meth:`to_bytes`' output back; raise ``ValueError`` if it is not one or its digest is off."""
        try:
            first, _, body = gzip.decompress(data).decode().partition("\n")
            header = json.loads(first)
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"Expected a gzip JSON-lines data source listing, received {exc}.") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise ValueError(f"Expected a {_FORMAT} listing header, received {first[:200]!r}.")
        if header.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"Expected a data source listing of version {_FORMAT_VERSION}, "
                f"received version {header.get('version')!r}."
            )
        fingerprint = DataFingerprint.model_validate(header["fingerprint"])
        digest = _digest(body)
        if digest != fingerprint.digest:
            raise ValueError(
                f"Expected the listing's objects to hash to its fingerprint {fingerprint.digest}, "
                f"received {digest}: the listing is damaged."
            )
        # every line ends with a newline, so the last split is empty
        listing = cls(fingerprint, _parse_lines(body.split("\n")[:-1]), header.get("sources", []))
        listing._body = body
        return listing


# json's own string quoting (C-accelerated; ASCII-only output, control characters escaped, so a line
# never breaks): lines are built without a JSONEncoder per object, most of a listing's cost otherwise.
_quote = encode_basestring_ascii


def _line(obj: ListedObject) -> str:
    """The object's canonical JSON line; the digest hashes exactly these bytes.

    Same text as ``json.dumps(record, separators=(",", ":"))`` of ``{"n", "s", "e"|"m"|"l"}``.
    """
    text = f'{{"n":{_quote(obj.name)},"s":{int(obj.size)}'
    if obj.etag is not None:
        text += f',"e":{_quote(obj.etag)}'
    if obj.mtime_ns is not None:
        text += f',"m":{int(obj.mtime_ns)}'
    if obj.link is not None:
        text += f',"l":{_quote(obj.link)}'
    return text + "}\n"


def _parse_lines(lines: Sequence[str]) -> list[ListedObject]:
    try:
        # one json.loads over all lines: parsing them one by one costs several times more
        records = json.loads("[" + ",".join(lines) + "]")
        return [ListedObject(r["n"], int(r["s"]), r.get("e"), r.get("m"), r.get("l")) for r in records]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"Expected listed objects as JSON lines, received a line that is not one ({exc})."
        ) from None


# ---- listing ---------------------------------------------------------------------------------------------
def _canonical_source(source: str | os.PathLike[str]) -> str:
    """``s3://bucket/prefix`` without trailing slashes, or an absolute normalised local path."""
    if isinstance(source, str) and is_remote(source):
        bucket, prefix = parse_s3_uri(source)
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    text = local_path(os.fspath(source))
    if not text:
        raise ValueError("Expected a data source (a local path or an s3:// URI), received ''.")
    return os.path.abspath(text)


def _list_local(root: str) -> list[ListedObject]:
    """Every regular file and link under ``root`` (or ``root`` itself), from ``stat`` alone."""
    try:
        top = os.stat(root)  # the declared source may itself be a link: follow it
    except (FileNotFoundError, NotADirectoryError):
        raise SourceNotFound(f"The data source {root} does not exist.") from None
    except OSError as exc:
        raise _local_error(root, exc) from exc
    if stat.S_ISREG(top.st_mode):
        return [ListedObject(root, top.st_size, mtime_ns=top.st_mtime_ns)]
    if not stat.S_ISDIR(top.st_mode):
        raise ValueError(f"Expected the data source {root} to be a file or a folder, received another kind.")
    found: list[ListedObject] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        st = entry.stat(follow_symlinks=False)
                        found.append(ListedObject(entry.path, st.st_size, link=os.readlink(entry.path)))
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found.append(ListedObject(entry.path, st.st_size, mtime_ns=st.st_mtime_ns))
        except OSError as exc:
            raise _local_error(folder, exc) from exc
    if not found:
        raise SourceNotFound(f"The data source {root} is a folder with no files in it.")
    return found


def _local_error(path: str, exc: OSError) -> OSError:
    if isinstance(exc, PermissionError):
        return PermissionError(f"Cannot list the data source {path}: permission denied.")
    return StorageError(f"Cannot list the data source {path}: {exc.strerror or exc}.")


def _s3_client(bucket: str) -> Any:
    # S3Store builds the project's client: boto3's own config chain, standard retries, shared session.
    return S3Store(f"s3://{bucket}").client


def _s3_error(exc: BaseException, source: str) -> BaseException:
    """A boto3 failure as the storage error that names ``source``; anything else passes through."""
    import botocore.exceptions as bce

    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError | bce.CredentialRetrievalError):
        return MissingCredentialsError(
            f"No usable AWS credentials to list the data source {source}. boto3 looks for them in its usual "
            "chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws files, SSO, and "
            "container or instance roles."
        )
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or str(
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
        if code == "NoSuchBucket":
            bucket, _ = parse_s3_uri(source)
            return SourceNotFound(f"The data source {source} does not exist: there is no bucket {bucket!r}.")
        if code in _S3_ACCESS_CODES:
            return AccessDeniedError(
                f"Access denied to list the data source {source} ({code}): check the permissions of the "
                "credentials boto3 found (environment, profile or role)."
            )
        return StorageError(f"Listing the data source {source} failed: {code}: {error.get('Message', '')}")
    if isinstance(exc, bce.BotoCoreError):
        return StorageError(f"Listing the data source {source} failed after retries: {exc}")
    return exc


def _etag(obj: dict[str, Any]) -> str:
    # S3, MinIO and Ceph always send an ETag; a store that does not still changes LastModified on a write.
    etag = obj.get("ETag")
    return str(etag) if etag else f"last-modified {obj['LastModified'].isoformat()}"


def _list_s3(source: str, client: Any) -> list[ListedObject]:
    """Every object under ``prefix/`` (a folder), else the object ``prefix`` itself, from listings only."""
    bucket, prefix = parse_s3_uri(source)
    base = f"s3://{bucket}/"
    found: list[ListedObject] = []
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            found.extend(
                ListedObject(base + obj["Key"], int(obj["Size"]), etag=_etag(obj))
                for obj in page.get("Contents", ())
            )
        if found or not prefix:
            if not found:
                raise SourceNotFound(f"The data source {source} does not exist: the bucket holds no object.")
            return found
        try:
            head = client.head_object(Bucket=bucket, Key=prefix)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise SourceNotFound(
                    f"The data source {source} does not exist: no object under {source}/ and no object "
                    f"{source}."
                ) from None
            raise
        return [ListedObject(source, int(head["ContentLength"]), etag=_etag(head))]
    except SourceNotFound:
        raise
    except Exception as exc:
        translated = _s3_error(exc, source)
        if translated is exc:
            raise
        raise translated from exc


def _digest(body: str) -> str:
    """sha256 over the versioned header and the JSON lines (ASCII by construction)."""
    return hashlib.sha256(_DIGEST_HEADER + body.encode("ascii")).hexdigest()


def fingerprint_sources(sources: Sequence[str | os.PathLike[str]]) -> SourceListing:
    """List every object of ``sources`` (local files and folders, ``s3://bucket/prefix`` URIs) and fingerprint
    them without reading a byte of their content.

    The list's form is checked before any request; a source that does not exist (or holds nothing) raises
    :class:`SourceNotFound` naming it. An object reached through two sources (a folder and a file in it)
    counts once.
    """
    if isinstance(sources, str | bytes | os.PathLike) or not isinstance(sources, Sequence):
        raise TypeError(f"Expected data sources as a list of paths or s3:// URIs, received {sources!r}.")
    if not sources:
        raise ValueError("Expected at least one data source, received an empty list.")
    canonical: list[str] = []
    for source in sources:
        if not isinstance(source, str | os.PathLike):
            raise TypeError(f"Expected a data source as a path or an s3:// URI, received {source!r}.")
        name = _canonical_source(source)
        if name not in canonical:
            canonical.append(name)
    clients: dict[str, Any] = {}
    lines_by_name: dict[str, tuple[ListedObject, str]] = {}
    summaries: list[SourceSummary] = []
    body = ""
    for source in canonical:
        if is_remote(source):
            bucket, _ = parse_s3_uri(source)
            if bucket not in clients:
                clients[bucket] = _s3_client(bucket)
            listed = _list_s3(source, clients[bucket])
        else:
            listed = _list_local(source)
        listed.sort()
        lines = list(map(_line, listed))
        body = "".join(lines)
        summaries.append(
            SourceSummary(
                source=source,
                objects=len(listed),
                total_bytes=sum(obj.size for obj in listed),
                digest=_digest(body),
            )
        )
        if len(canonical) > 1:
            for obj, line in zip(listed, lines):
                lines_by_name.setdefault(obj.name, (obj, line))
    if len(canonical) == 1:  # the common case: the one source's listing is the whole listing
        objects = listed
    else:
        names = sorted(lines_by_name)
        objects = [lines_by_name[name][0] for name in names]
        body = "".join(lines_by_name[name][1] for name in names)
    fingerprint = DataFingerprint(
        digest=_digest(body),
        objects=len(objects),
        total_bytes=sum(obj.size for obj in objects),
        sources=tuple(summaries[:MAX_SUMMARY_SOURCES]),
        sources_omitted=max(0, len(summaries) - MAX_SUMMARY_SOURCES),
    )
    listing = SourceListing(fingerprint, objects, canonical)
    listing._body = body
    return listing


# ---- comparing -------------------------------------------------------------------------------------------
DifferenceKind = Literal["added", "removed", "changed", "source added", "source removed", "source changed"]


class DataDifference(BaseModel):
    """The first difference between two fingerprints; ``message`` says it in one line.

    ``old`` / ``new`` are the object (or source summary) before and after; ``added`` / ``removed`` /
    ``changed`` count every differing object when both listings were at hand (else they are ``None``).
    """

    model_config = ConfigDict(frozen=True)

    kind: DifferenceKind
    name: str
    message: str
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    added: int | None = None
    removed: int | None = None
    changed: int | None = None

    def __str__(self) -> str:
        return self.message


def _fingerprint_of(item: SourceListing | DataFingerprint) -> DataFingerprint:
    if isinstance(item, SourceListing):
        return item.fingerprint
    if isinstance(item, DataFingerprint):
        return item
    raise TypeError(f"Expected a SourceListing or a DataFingerprint, received {type(item).__name__}.")


def compare(
    old: SourceListing | DataFingerprint, new: SourceListing | DataFingerprint
) -> DataDifference | None:
    """``None`` when ``old`` and ``new`` fingerprint the same data, else the first difference.

    With two listings it is the first object, in name order, that was added, removed or changed; with a
    fingerprint alone (no listing kept) it is the first source whose summary differs.
    """
    old_fp, new_fp = _fingerprint_of(old), _fingerprint_of(new)
    if old_fp.digest == new_fp.digest:
        return None
    if isinstance(old, SourceListing) and isinstance(new, SourceListing):
        return _first_object_difference(old.objects, new.objects)
    return _first_source_difference(old_fp, new_fp)


def _differs(a: ListedObject, b: ListedObject) -> bool:
    return a[1:] != b[1:]


def _first_object_difference(
    old: Sequence[ListedObject], new: Sequence[ListedObject]
) -> DataDifference | None:
    first: tuple[DifferenceKind, ListedObject | None, ListedObject | None] | None = None
    counts = {"added": 0, "removed": 0, "changed": 0}
    i = j = 0
    while i < len(old) or j < len(new):
        a = old[i] if i < len(old) else None
        b = new[j] if j < len(new) else None
        kind: DifferenceKind | None
        before: ListedObject | None
        after: ListedObject | None
        if b is None or (a is not None and a.name < b.name):
            kind, before, after = "removed", a, None
            i += 1
        elif a is None or b.name < a.name:
            kind, before, after = "added", None, b
            j += 1
        else:
            kind, before, after = ("changed" if _differs(a, b) else None), a, b
            i += 1
            j += 1
        if kind is None:
            continue
        counts[kind] += 1
        if first is None:
            first = (kind, before, after)
    if first is None:
        return None  # same objects; the digests differed only in a way the listing does not show
    kind, before, after = first
    shown = after if before is None else before
    assert shown is not None
    total = sum(counts.values())
    if kind == "changed":
        assert before is not None and after is not None
        detail = _changes(before, after)
    else:
        detail = _describe(shown)
    message = f"{shown.name} {kind}: {detail}"
    if total > 1:
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        message += f" ({total} objects differ in all: {parts})"
    return DataDifference(
        kind=kind,
        name=shown.name,
        message=message,
        old=_as_dict(before),
        new=_as_dict(after),
        **counts,
    )


def _as_dict(obj: ListedObject | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {key: value for key, value in obj._asdict().items() if value is not None}


def _mtime(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:09d}Z"


def _describe(obj: ListedObject) -> str:
    if obj.link is not None:
        return f"link to {obj.link!r}"
    if obj.etag is not None:
        return f"size {obj.size}, etag {obj.etag}"
    if obj.mtime_ns is not None:
        return f"size {obj.size}, mtime {_mtime(obj.mtime_ns)}"
    return f"size {obj.size}"


def _changes(old: ListedObject, new: ListedObject) -> str:
    if (old.link is None) != (new.link is None) or (old.etag is None) != (new.etag is None):
        return f"{_describe(old)} -> {_describe(new)}"
    parts = []
    if old.link is not None and old.link != new.link:
        parts.append(f"link {old.link!r} -> {new.link!r}")
    elif old.size != new.size:
        parts.append(f"size {old.size} -> {new.size}")
    if old.etag != new.etag:
        parts.append(f"etag {old.etag} -> {new.etag}")
    if old.mtime_ns is not None and new.mtime_ns is not None and old.mtime_ns != new.mtime_ns:
        parts.append(f"mtime {_mtime(old.mtime_ns)} -> {_mtime(new.mtime_ns)}")
    return ", ".join(parts)


def _summary_text(summary: SourceSummary) -> str:
    return f"{summary.objects} objects, {summary.total_bytes} bytes"


def _first_source_difference(old: DataFingerprint, new: DataFingerprint) -> DataDifference:
    old_by_name = {s.source: s for s in old.sources}
    new_by_name = {s.source: s for s in new.sources}
    note = "(no object listing was kept, so the object is not named)"
    for name in sorted(old_by_name.keys() | new_by_name.keys()):
        before, after = old_by_name.get(name), new_by_name.get(name)
        if before is not None and after is not None and before.digest == after.digest:
            continue
        # A source missing from a summary may only have been omitted from it: nothing can be said then.
        if before is None and old.sources_omitted:
            continue
        if after is None and new.sources_omitted:
            continue
        if before is None:
            assert after is not None
            kind: DifferenceKind = "source added"
            detail = _summary_text(after)
        elif after is None:
            kind, detail = "source removed", _summary_text(before)
        else:
            kind, detail = "source changed", f"{_summary_text(before)} -> {_summary_text(after)}"
        return DataDifference(
            kind=kind,
            name=name,
            message=f"{name} {kind.removeprefix('source ')}: {detail} {note}",
            old=before.model_dump() if before else None,
            new=after.model_dump() if after else None,
        )
    return DataDifference(
        kind="source changed",
        name=", ".join(sorted(old_by_name.keys() | new_by_name.keys())) or "the data sources",
        message=(
            f"The data sources changed: {old.objects} objects, {old.total_bytes} bytes (digest "
            f"{old.digest[:12]}) -> {new.objects} objects, {new.total_bytes} bytes (digest {new.digest[:12]}) "
            f"{note}"
        ),
        old=old.model_dump(mode="json"),
        new=new.model_dump(mode="json"),
    )


# ---- partitions ------------------------------------------------------------------------------------------
def _as_date(value: dt.date | str, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        if value.time() != dt.time(0) or value.tzinfo not in (None, dt.UTC):
            raise ValueError(f"Expected {what} as a date (midnight), received {value.isoformat()}.")
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE_VALUE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"Expected {what} as an ISO date YYYY-MM-DD, received {value!r}.")


def _child_folders(root: str) -> list[str]:
    """The names of the folders directly under ``root`` (S3: the common prefixes under ``prefix/``)."""
    if is_remote(root):
        bucket, prefix = parse_s3_uri(root)
        client = _s3_client(bucket)
        start = f"{prefix}/" if prefix else ""
        names: list[str] = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=start, Delimiter="/"):
                names.extend(p["Prefix"][len(start) :].rstrip("/") for p in page.get("CommonPrefixes", ()))
                if page.get("Contents"):
                    names.append("")  # files directly under the root: it exists, though not as partitions
        except Exception as exc:
            translated = _s3_error(exc, root)
            if translated is exc:
                raise
            raise translated from exc
        if not names:
            raise SourceNotFound(f"The data source {root} does not exist: no object under {root}/.")
        return [name for name in names if name]
    try:
        with os.scandir(root) as entries:
            return [entry.name for entry in entries if entry.is_dir()]
    except FileNotFoundError:
        raise SourceNotFound(f"The data source {root} does not exist.") from None
    except NotADirectoryError:
        raise ValueError(
            f"Expected the partitioned data source {root} to be a folder, received a file."
        ) from None
    except OSError as exc:
        raise _local_error(root, exc) from exc


def select_partitions(
    root: str | os.PathLike[str],
    start: dt.date | str,
    end: dt.date | str,
    key: str = "dt",
    *,
    allow_empty: bool = False,
) -> list[str]:
    """The Hive partitions ``<root>/<key>=YYYY-MM-DD`` directly under ``root`` with ``start <= date < end``,
    sorted by date, as URIs or paths to pass on as data sources.

    ``start`` and ``end`` are dates or ISO date strings (what the retraining flow substitutes for
    ``{window_start}`` / ``{window_end}``). Folders of ``root`` that are not ``key=<ISO date>`` (Hive's
    ``__HIVE_DEFAULT_PARTITION__``, other keys) are ignored. A window with no partition raises
    :class:`SourceNotFound` naming the window and what the root holds, unless ``allow_empty``.
    """
    if not isinstance(key, str) or not key or any(ch in key for ch in "/=\\"):
        raise ValueError(f"Expected a partition key such as 'dt' (no '/', '=' or '\\'), received {key!r}.")
    first, last = _as_date(start, "start"), _as_date(end, "end")
    if first >= last:
        raise ValueError(
            f"Expected start < end (end is exclusive), received start={first.isoformat()}, end={last.isoformat()}."
        )
    source = _canonical_source(root)
    dates: list[dt.date] = []
    for name in _child_folders(source):
        found_key, sep, value = name.partition("=")
        if not sep or found_key != key or not _DATE_VALUE.fullmatch(value):
            continue
        try:
            dates.append(dt.date.fromisoformat(value))
        except ValueError:
            continue
    dates.sort()
    chosen = [day for day in dates if first <= day < last]
    if not chosen and not allow_empty:
        held = (
            f"it holds {len(dates)} {key}= partitions, {dates[0].isoformat()} to {dates[-1].isoformat()}"
            if dates
            else f"it holds no {key}=YYYY-MM-DD partition"
        )
        raise SourceNotFound(
            f"No partition {key}=YYYY-MM-DD with {first.isoformat()} <= {key} < {last.isoformat()} under "
            f"{source} ({held})."
        )
    separator = "/" if is_remote(source) else os.sep
    return [f"{source.rstrip('/')}{separator}{key}={day.isoformat()}" for day in chosen]
