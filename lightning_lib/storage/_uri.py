"""Helpers that treat ``s3://bucket/prefix`` URIs and local paths alike."""

from __future__ import annotations

import os

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names object storage (``s3://...``) rather than a local path."""
    return isinstance(uri, str) and uri[: len(S3_SCHEME)].lower() == S3_SCHEME


def local_path(uri: str | os.PathLike[str]) -> str:
    """The filesystem path of a local URI (a plain path or ``file://``)."""
    text = os.fspath(uri)
    if text[: len(FILE_SCHEME)].lower() == FILE_SCHEME:
        text = text[len(FILE_SCHEME) :]
    return text


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")`` (prefix without slashes at the ends)."""
    if not is_remote(uri):
        raise ValueError(f"Expected an s3://bucket[/prefix] URI, received {uri!r}.")
    rest = uri[len(S3_SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"Expected an s3://bucket[/prefix] URI with a bucket name, received {uri!r}.")
    return bucket, prefix.strip("/")


def join_uri(base: str | os.PathLike[str], *parts: str) -> str:
    """Join key parts onto a URI or path: ``join_uri("s3://b/run", "ckpt", "model.pt")``.

    S3 URIs always join with ``/``; local paths join with the platform separator.
    """
    if is_remote(base):
        pieces = [os.fspath(base).rstrip("/")]
        pieces += [p.strip("/") for p in parts if p.strip("/")]
        return "/".join(pieces)
    return os.path.join(local_path(base), *parts)


def split_uri(uri: str | os.PathLike[str]) -> tuple[str, str]:
    """Split a URI into the store root that holds it and its last path component.

    ``split_uri("s3://b/run/ckpt-3")`` is ``("s3://b/run", "ckpt-3")`` and
    ``split_uri("/tmp/run/ckpt-3")`` is ``("/tmp/run", "ckpt-3")``: ``open_store(root)`` then reads
    the checkpoint or object named by the second part. A bucket alone has no key and is refused.
    """
    if is_remote(uri):
        text = os.fspath(uri).rstrip("/")
        bucket, prefix = parse_s3_uri(text)
        if not prefix:
            raise ValueError(
                f"Expected an s3://bucket/key URI with a key after the bucket, received {uri!r}."
            )
        parent, _, name = prefix.rpartition("/")
        root = S3_SCHEME + bucket + ("/" + parent if parent else "")
        return root, name
    text = local_path(uri)
    stripped = text.rstrip("/\\") or text
    parent, name = os.path.split(stripped)
    if not name:
        raise ValueError(f"Expected a path with a final component, received {uri!r}.")
    return parent or ".", name
