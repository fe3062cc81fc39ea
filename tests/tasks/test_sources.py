"""Data source fingerprints (tasks/sources.py): local trees, S3 over moto's HTTP server, partitions, errors."""

from __future__ import annotations

import builtins
import datetime as dt
import gzip
import io
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lightning_lib.storage import AccessDeniedError, S3Store, StorageError
from tasks import sources
from tasks.sources import (
    MAX_SUMMARY_SOURCES,
    DataFingerprint,
    SourceListing,
    SourceNotFound,
    compare,
    fingerprint_sources,
    select_partitions,
)

MiB = 1024 * 1024


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """data/{a.csv, nested/b.csv, nested/deeper/c.bin}: three files at three depths."""
    root = tmp_path / "data"
    write(root / "a.csv", b"x,y\n1,2\n")
    write(root / "nested" / "b.csv", b"x,y\n3,4\n5,6\n")
    write(root / "nested" / "deeper" / "c.bin", b"\x00" * 100)
    return root


def bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


# ---- local ---------------------------------------------------------------------------------------------
def test_local_folder_lists_nested_files_sorted_with_size_and_mtime(tree: Path) -> None:
    listing = fingerprint_sources([str(tree)])
    names = [obj.name for obj in listing.objects]
    assert names == sorted(str(tree / rel) for rel in ("a.csv", "nested/b.csv", "nested/deeper/c.bin"))
    by_name = {obj.name: obj for obj in listing.objects}
    c = by_name[str(tree / "nested" / "deeper" / "c.bin")]
    assert (c.size, c.mtime_ns, c.etag) == (100, (tree / "nested/deeper/c.bin").stat().st_mtime_ns, None)
    fp = listing.fingerprint
    assert (fp.objects, fp.total_bytes) == (3, 8 + 12 + 100)
    assert [s.source for s in fp.sources] == [str(tree)]
    assert fp.sources[0].digest == fp.digest  # one source: its listing is the whole listing
    assert fingerprint_sources([tree]).fingerprint == fp  # a Path, and a second listing, give the same


def test_files_and_relative_paths_are_canonical_and_overlaps_count_once(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree.parent)
    both = fingerprint_sources(["data/", str(tree / "a.csv"), f"file://{tree}/nested/b.csv"])
    assert both.sources == (str(tree), str(tree / "a.csv"), str(tree / "nested" / "b.csv"))
    assert both.fingerprint.objects == 3  # the two files are also under the folder
    assert both.fingerprint.digest == fingerprint_sources([str(tree)]).fingerprint.digest
    assert [s.objects for s in both.fingerprint.sources] == [3, 1, 1]
    # the order of the declared sources does not change the data's identity
    reordered = fingerprint_sources([str(tree / "nested"), str(tree / "a.csv")])
    forward = fingerprint_sources([str(tree / "a.csv"), str(tree / "nested")])
    assert reordered.fingerprint.digest == forward.fingerprint.digest


def test_fingerprint_reads_no_content(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 GiB sparse: reading it would be slow; opening any file at all fails the test
    big = tree / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1024 * MiB)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a file was opened: {args[:1]}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    monkeypatch.setattr(os, "open", refuse)
    listing = fingerprint_sources([str(tree)])
    monkeypatch.undo()
    assert listing.fingerprint.total_bytes == 1024 * MiB + 120


def test_mtime_change_alone_is_detected(tree: Path) -> None:
    before = fingerprint_sources([str(tree)])
    target = tree / "nested" / "b.csv"
    bump_mtime(target)  # same bytes, same size: only the modification time moves
    after = fingerprint_sources([str(tree)])
    assert after.fingerprint.digest != before.fingerprint.digest
    diff = compare(before, after)
    assert diff is not None and diff.kind == "changed" and diff.name == str(target)
    assert diff.message.startswith(f"{target} changed: mtime ")
    assert "size" not in diff.message  # only what changed is shown
    assert (diff.added, diff.removed, diff.changed) == (0, 0, 1)


@pytest.mark.parametrize("change", ["added", "removed", "changed"])
def test_first_differing_object_is_named(tree: Path, change: str) -> None:
    before = fingerprint_sources([str(tree)])
    target = tree / "nested" / "b.csv"
    if change == "added":
        target = write(tree / "nested" / "b2.csv", b"new")
        detail = "added: size 3, mtime "
    elif change == "removed":
        target.unlink()
        detail = "removed: size 12, mtime "
    else:
        write(target, b"x,y\n3,4\n5,6\n7,8\n")
        bump_mtime(target)  # coarse filesystem clocks: make sure the rewrite is a later mtime
        detail = "changed: size 12 -> 16, mtime "
    diff = compare(before, fingerprint_sources([str(tree)]))
    assert diff is not None
    assert (diff.kind, diff.name) == (change, str(target))
    assert diff.message.startswith(f"{target} {detail}"), diff.message
    assert str(diff) == diff.message
    assert compare(before, fingerprint_sources([str(tree)])) == diff  # deterministic


def test_first_difference_in_name_order_and_counts_of_the_rest(tree: Path) -> None:
    before = fingerprint_sources([str(tree)])
    (tree / "a.csv").unlink()
    write(tree / "z.csv", b"z")
    bump_mtime(tree / "nested" / "b.csv")
    diff = compare(before, fingerprint_sources([str(tree)]))
    assert diff is not None and diff.name == str(tree / "a.csv") and diff.kind == "removed"
    assert (diff.added, diff.removed, diff.changed) == (1, 1, 1)
    assert diff.message.endswith("(3 objects differ in all: 1 added, 1 removed, 1 changed)")


def test_same_data_compares_equal_and_listing_round_trips(tree: Path) -> None:
    listing = fingerprint_sources([str(tree)])
    payload = listing.to_bytes()
    assert payload == fingerprint_sources([str(tree)]).to_bytes()  # deterministic bytes
    back = SourceListing.from_bytes(payload)
    assert back.fingerprint == listing.fingerprint
    assert back.objects == listing.objects and back.sources == listing.sources
    assert compare(listing, back) is None and compare(listing.fingerprint, back) is None
    # one JSON header line, then one line per object
    lines = gzip.decompress(payload).decode().splitlines()
    assert len(lines) == 1 + 3


def test_odd_names_stay_one_line_each_and_round_trip(tree: Path) -> None:
    odd = write(tree / 'we"ird\nname \u00e9\u2028.csv', b"1")
    (tree / "back\\slash").symlink_to('target "quoted"')
    listing = fingerprint_sources([str(tree)])
    payload = listing.to_bytes()
    assert len(gzip.decompress(payload).splitlines()) == 1 + 5
    back = SourceListing.from_bytes(payload)
    assert back.objects == listing.objects and str(odd) in {obj.name for obj in back.objects}


def test_damaged_or_foreign_listing_is_refused(tree: Path) -> None:
    text = gzip.decompress(fingerprint_sources([str(tree)]).to_bytes()).decode()
    tampered = text.replace('"s":100', '"s":101')
    assert tampered != text
    with pytest.raises(ValueError, match="damaged"):
        SourceListing.from_bytes(gzip.compress(tampered.encode()))
    with pytest.raises(ValueError, match="gzip JSON-lines"):
        SourceListing.from_bytes(b"not gzip")
    with pytest.raises(ValueError, match="listing header"):
        SourceListing.from_bytes(gzip.compress(b'{"format": "other"}\n'))
    # lines that hash right but are not objects (a listing written by something else)
    header, body = json.loads(text.splitlines()[0]), '{"name":"x"}\n'
    header["fingerprint"]["digest"] = sources._digest(body)
    with pytest.raises(ValueError, match="not one"):
        SourceListing.from_bytes(gzip.compress((json.dumps(header) + "\n" + body).encode()))


def test_fingerprint_is_small_json_and_bounded(tmp_path: Path) -> None:
    files = [str(write(tmp_path / f"f{i:03d}.txt", b"x" * i)) for i in range(MAX_SUMMARY_SOURCES + 36)]
    listing = fingerprint_sources(files)
    fp = listing.fingerprint
    assert len(fp.sources) == MAX_SUMMARY_SOURCES and fp.sources_omitted == 36
    assert len(listing.sources) == len(files)  # the listing keeps every source
    text = fp.model_dump_json()
    assert len(text) < 20_000
    assert len(fp.digest) == 64 and fp.short_digest == fp.digest[:32]
    assert DataFingerprint.model_validate_json(text) == fp
    with pytest.raises(Exception, match="frozen"):
        fp.objects = 0  # type: ignore[misc]


def test_fingerprint_travels_in_a_weights_only_checkpoint(tree: Path, tmp_path: Path) -> None:
    import torch

    fp = fingerprint_sources([str(tree)]).fingerprint
    torch.save({"data_fingerprint": fp.model_dump(mode="json")}, tmp_path / "c.ckpt")
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)["data_fingerprint"]
    assert DataFingerprint.model_validate(loaded) == fp


def test_compare_without_listing_names_the_source(tmp_path: Path) -> None:
    train = tmp_path / "train"
    val = tmp_path / "val"
    write(train / "x.csv", b"1")
    write(val / "y.csv", b"2")
    before = fingerprint_sources([str(train), str(val)]).fingerprint
    write(val / "z.csv", b"33")
    diff = compare(before, fingerprint_sources([str(train), str(val)]).fingerprint)
    assert diff is not None and diff.kind == "source changed" and diff.name == str(val)
    assert diff.message.startswith(f"{val} changed: 1 objects, 1 bytes -> 2 objects, 3 bytes")
    assert "not named" in diff.message
    with pytest.raises(TypeError, match="SourceListing or a DataFingerprint"):
        compare(before, "digest")  # type: ignore[arg-type]


def test_symlinks_are_recorded_not_followed_out_of_the_source(tmp_path: Path) -> None:
    outside = tmp_path / "cache"
    write(outside / "blob-1", b"content one")
    write(outside / "blob-2", b"content two")
    data = tmp_path / "data"
    write(data / "real.csv", b"1")
    (data / "link.csv").symlink_to(outside / "blob-1")
    (data / "inner").symlink_to(data / "real.csv")
    (data / "cache-dir").symlink_to(outside, target_is_directory=True)
    before = fingerprint_sources([str(data)])
    names = {obj.name: obj for obj in before.objects}
    assert set(names) == {str(data / n) for n in ("real.csv", "link.csv", "inner", "cache-dir")}
    assert names[str(data / "link.csv")].link == str(outside / "blob-1")
    assert not any(str(outside) in name for name in names)  # nothing listed through the links
    # what lies behind a link outside the source is not part of it; where the link points is
    write(outside / "blob-1", b"edited content")
    assert compare(before, fingerprint_sources([str(data)])) is None
    (data / "link.csv").unlink()
    (data / "link.csv").symlink_to(outside / "blob-2")
    diff = compare(before, fingerprint_sources([str(data)]))
    assert diff is not None and diff.name == str(data / "link.csv")
    assert f"link {str(outside / 'blob-1')!r} -> {str(outside / 'blob-2')!r}" in diff.message
    # a declared source that is itself a link is followed
    alias = tmp_path / "alias"
    alias.symlink_to(data, target_is_directory=True)
    assert fingerprint_sources([str(alias)]).fingerprint.objects == 4


def test_local_errors_name_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SourceNotFound, match=f"The data source {missing} does not exist"):
        fingerprint_sources([str(missing)])
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(SourceNotFound, match=f"{empty} is a folder with no files"):
        fingerprint_sources([str(empty)])
    with pytest.raises(FileNotFoundError):  # SourceNotFound is a FileNotFoundError: never retried
        fingerprint_sources([str(missing)])
    file = write(tmp_path / "file.csv", b"1")
    with pytest.raises(SourceNotFound, match=f"{file}/inside does not exist"):
        fingerprint_sources([str(file / "inside")])
    with pytest.raises(ValueError, match="at least one data source"):
        fingerprint_sources([])
    with pytest.raises(TypeError, match="as a list of paths"):
        fingerprint_sources(str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="received 3"):
        fingerprint_sources([3])  # type: ignore[list-item]


def test_unreadable_folder_is_named(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod cannot lock root out, so the refusal is injected where the listing meets the filesystem
    locked = tree / "nested"
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    with pytest.raises(PermissionError, match=f"Cannot list the data source {locked}: permission denied"):
        fingerprint_sources([str(tree)])


# ---- partitions ----------------------------------------------------------------------------------------
@pytest.fixture
def partitioned(tmp_path: Path) -> Path:
    root = tmp_path / "events"
    for day in ("2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"):
        write(root / f"dt={day}" / "part-0.parquet", day.encode())
    write(root / "dt=__HIVE_DEFAULT_PARTITION__" / "part-0.parquet", b"?")
    write(root / "region=eu" / "part-0.parquet", b"?")
    write(root / "dt=2026-13-01" / "part-0.parquet", b"?")  # not a date
    write(root / "_SUCCESS", b"")
    return root


def test_select_partitions_takes_the_window_end_exclusive(partitioned: Path) -> None:
    chosen = select_partitions(str(partitioned), "2026-11-30", "2026-12-02")
    assert chosen == [str(partitioned / "dt=2026-11-30"), str(partitioned / "dt=2026-12-01")]
    dates = select_partitions(partitioned, dt.date(2026, 12, 1), dt.datetime(2027, 1, 1))
    assert [Path(p).name for p in dates] == ["dt=2026-12-01", "dt=2026-12-02", "dt=2026-12-03"]
    # the selected partitions are ready to fingerprint as sources
    assert fingerprint_sources(chosen).fingerprint.objects == 2


def test_select_partitions_other_key(tmp_path: Path) -> None:
    write(tmp_path / "date=2026-12-01" / "x", b"1")
    write(tmp_path / "dt=2026-12-01" / "x", b"1")
    assert select_partitions(tmp_path, "2026-12-01", "2026-12-02", key="date") == [
        str(tmp_path / "date=2026-12-01")
    ]


def test_select_partitions_errors(partitioned: Path, tmp_path: Path) -> None:
    with pytest.raises(
        SourceNotFound, match=r"No partition dt=YYYY-MM-DD with 2027-01-01 <= dt < 2027-01-08 "
    ):
        select_partitions(partitioned, "2027-01-01", "2027-01-08")
    with pytest.raises(SourceNotFound, match=r"holds 5 dt= partitions, 2026-11-29 to 2026-12-03"):
        select_partitions(partitioned, "2027-01-01", "2027-01-08")
    assert select_partitions(partitioned, "2027-01-01", "2027-01-08", allow_empty=True) == []
    with pytest.raises(ValueError, match=r"Expected start < end .*start=2026-12-02, end=2026-12-01"):
        select_partitions(partitioned, "2026-12-02", "2026-12-01")
    with pytest.raises(ValueError, match="Expected start < end"):
        select_partitions(partitioned, "2026-12-01", "2026-12-01")
    with pytest.raises(ValueError, match="Expected start as an ISO date YYYY-MM-DD, received '12/01/2026'"):
        select_partitions(partitioned, "12/01/2026", "2026-12-02")
    with pytest.raises(ValueError, match="Expected end as a date"):
        select_partitions(partitioned, "2026-12-01", dt.datetime(2026, 12, 2, 6, 0))
    with pytest.raises(ValueError, match="partition key"):
        select_partitions(partitioned, "2026-12-01", "2026-12-02", key="dt=")
    with pytest.raises(SourceNotFound, match="does not exist"):
        select_partitions(tmp_path / "missing", "2026-12-01", "2026-12-02")
    with pytest.raises(ValueError, match="to be a folder"):
        select_partitions(partitioned / "_SUCCESS", "2026-12-01", "2026-12-02")


# ---- S3 over moto's HTTP server ------------------------------------------------------------------------
@pytest.fixture
def s3_prefix(s3_endpoint: str) -> str:
    return f"{s3_endpoint}/{uuid.uuid4().hex}"


def s3_put(uri_prefix: str, objects: dict[str, bytes], threads: int = 16) -> None:
    store = S3Store(uri_prefix, max_concurrency=threads)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: store.put_bytes(item[0], item[1]), objects.items()))


@pytest.mark.services
def test_s3_prefix_listed_with_etags_and_changes_named(s3_prefix: str) -> None:
    s3_put(s3_prefix, {"dt=2026-12-01/part-0.parquet": b"a" * 10, "dt=2026-12-01/part-1.parquet": b"b"})
    s3_put(f"{s3_prefix}-sibling", {"x": b"not under the prefix"})  # shares the prefix's characters
    before = fingerprint_sources([s3_prefix + "/"])
    assert [obj.name for obj in before.objects] == [
        f"{s3_prefix}/dt=2026-12-01/part-0.parquet",
        f"{s3_prefix}/dt=2026-12-01/part-1.parquet",
    ]
    assert all(obj.etag and obj.etag.startswith('"') and obj.mtime_ns is None for obj in before.objects)
    assert (before.fingerprint.objects, before.fingerprint.total_bytes) == (2, 11)
    assert before.fingerprint.source_names == [s3_prefix]
    # the same bytes written again: same ETag, same data
    s3_put(s3_prefix, {"dt=2026-12-01/part-1.parquet": b"b"})
    assert compare(before, fingerprint_sources([s3_prefix])) is None
    s3_put(s3_prefix, {"dt=2026-12-01/part-1.parquet": b"bb"})
    diff = compare(before, fingerprint_sources([s3_prefix]))
    assert diff is not None and diff.kind == "changed"
    old_etag, new_etag = before.objects[1].etag, diff.new["etag"] if diff.new else None
    assert diff.message == (
        f"{s3_prefix}/dt=2026-12-01/part-1.parquet changed: size 1 -> 2, etag {old_etag} -> {new_etag}"
    )


@pytest.mark.services
def test_s3_single_object_uri_and_mixed_sources(s3_prefix: str, tree: Path) -> None:
    s3_put(s3_prefix, {"table.csv": b"x,y\n"})
    listing = fingerprint_sources([f"{s3_prefix}/table.csv", str(tree)])
    assert listing.objects[-1].name == f"{s3_prefix}/table.csv"  # 's3://' sorts after '/'
    assert listing.fingerprint.objects == 4
    restored = SourceListing.from_bytes(listing.to_bytes())
    assert compare(restored, listing) is None


@pytest.mark.services
@pytest.mark.slow  # 1,050 objects put over HTTP first
def test_s3_pagination_beyond_1000_objects(s3_prefix: str) -> None:
    keys = {f"part-{i:05d}": str(i).encode() for i in range(1050)}
    s3_put(s3_prefix, keys)
    pages: list[int] = []
    real_client = sources._s3_client

    def counting_client(bucket: str) -> Any:
        client = real_client(bucket)
        client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: pages.append(1))
        return client

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "_s3_client", counting_client)
        listing = fingerprint_sources([s3_prefix])
    assert len(pages) == 2  # 1,000 keys a page
    assert [obj.name for obj in listing.objects] == [f"{s3_prefix}/{key}" for key in sorted(keys)]
    assert listing.fingerprint.total_bytes == sum(len(v) for v in keys.values())


@pytest.mark.services
def test_s3_missing_prefix_and_bucket_are_named(s3_prefix: str, s3_endpoint: str) -> None:
    with pytest.raises(SourceNotFound, match=f"{s3_prefix}/nothing does not exist: no object under"):
        fingerprint_sources([f"{s3_prefix}/nothing"])
    with pytest.raises(SourceNotFound, match="there is no bucket 'no-such-bucket-here'"):
        fingerprint_sources(["s3://no-such-bucket-here/data"])
    with pytest.raises(SourceNotFound, match="does not exist"):
        select_partitions(f"{s3_prefix}/nothing", "2026-12-01", "2026-12-02")


@pytest.mark.services
def test_s3_access_denied_and_other_failures_name_the_source(
    s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.storage.conftest import aws_error

    answer = {"status": 403, "code": "AccessDenied"}

    def failing_client(bucket: str) -> Any:
        client = S3Store(f"s3://{bucket}", max_attempts=1).client
        client.meta.events.register(
            "before-send.s3", lambda request, **_: aws_error(request, answer["status"], answer["code"])
        )
        return client

    monkeypatch.setattr(sources, "_s3_client", failing_client)
    with pytest.raises(AccessDeniedError, match=f"Access denied to list the data source {s3_prefix} "):
        fingerprint_sources([s3_prefix])
    answer.update(status=400, code="InvalidRequest")
    with pytest.raises(StorageError, match=f"Listing the data source {s3_prefix} failed: InvalidRequest"):
        fingerprint_sources([s3_prefix])


@pytest.mark.services
def test_s3_select_partitions(s3_prefix: str) -> None:
    s3_put(
        s3_prefix,
        {
            "dt=2026-11-30/part-0.parquet": b"1",
            "dt=2026-12-01/part-0.parquet": b"2",
            "dt=2026-12-01/part-1.parquet": b"3",
            "dt=2026-12-02/part-0.parquet": b"4",
            "_SUCCESS": b"",
        },
    )
    chosen = select_partitions(s3_prefix + "/", "2026-12-01", "2026-12-03")
    assert chosen == [f"{s3_prefix}/dt=2026-12-01", f"{s3_prefix}/dt=2026-12-02"]
    assert fingerprint_sources(chosen).fingerprint.objects == 3
    with pytest.raises(SourceNotFound, match=rf"under {s3_prefix} \(it holds 3 dt= partitions"):
        select_partitions(s3_prefix, "2027-01-01", "2027-01-02")
