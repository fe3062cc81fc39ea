"""Data fingerprints from listings: 100,000 S3 objects over HTTP, and 10 GB of local files unread.

Two parts, each against a baseline measured in the same run, in alternating rounds:

- ``s3``: ``tasks.sources.fingerprint_sources`` on a prefix of ``--objects`` objects (Hive layout,
  ``dt=YYYY-MM-DD/part-NNNNNN.parquet``) served by moto's S3 server over HTTP, against a raw boto3
  ``list_objects_v2`` paginator over the same prefix (the listing the fingerprint cannot do without).
  The objects are created inside the server's own process, through moto's backend (100,000 PUTs over
  HTTP would take minutes on a small machine); every request timed here goes over HTTP. Also timed: the
  listing artifact written and read back, ``compare`` of two listings that differ in one object (what
  ``reproduce`` does), and ``select_partitions`` for a 7-day window.
- ``local``: a tree of ``--files`` sparse files of ``--file-mb`` MB (``truncate``: the disk holds almost
  nothing), fingerprinted, against a bare ``os.scandir`` + ``stat`` walk of the same tree; and what reading
  the bytes would cost: sha256 of ``--read-mb`` MB of the files, extrapolated to all of them. Reading a
  sparse file needs no disk I/O (the kernel hands out zeros), so this is a lower bound of a real read.

Usage: ``python benchmarks/fingerprint.py [--objects 100000] [--files 1000] [--file-mb 10] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.sources import SourceListing, compare, fingerprint_sources, select_partitions

BUCKET = "bench-fingerprint"
PREFIX = "events"
MiB = 1024 * 1024
PARTS_PER_DAY = 1000


FIRST_DAY = dt.date(2025, 12, 1)


def _day(i: int) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=i // PARTS_PER_DAY)


def _key(i: int) -> str:
    return f"{PREFIX}/dt={_day(i).isoformat()}/part-{i % PARTS_PER_DAY:06d}.parquet"


# ---- the S3 server, filled through moto's backend in its own process ----------------------------------------
def serve(port: int, objects: int) -> None:
    """Run in the server process: create the bucket and the objects in moto's backend, then serve HTTP."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, "us-east-1")
    for i in range(objects):
        # sizes vary (1-4 KiB), and so do the ETags: each object's bytes are its own
        backend.put_object(BUCKET, _key(i), i.to_bytes(8, "little") * (128 * (1 + i % 4)))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    while True:  # until the benchmark's SIGTERM ends the process
        time.sleep(3600)


@contextlib.contextmanager
def s3_server(workdir: Path, objects: int) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--objects", str(objects)],
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    empty = workdir / "empty-aws-file"
    empty.write_text("")
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the S3 server did not start; see {workdir / 'moto.log'}")
        yield f"s3://{BUCKET}/{PREFIX}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def raw_listing(uri: str) -> int:
    """The baseline: boto3's paginator over the prefix, counting the keys and nothing else."""
    import boto3

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    count = 0
    for page in (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    ):
        count += len(page.get("Contents", ()))
    return count


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, and CPU seconds of this process alone (not the S3 server's), of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def alternate(rounds: int, ours: Callable[[], Any], baseline: Callable[[], Any]) -> dict[str, Any]:
    """Alternate baseline and ours ``rounds`` times: wall and CPU seconds of each, ours' last result."""
    times: dict[str, Any] = {"ours": [], "ours_cpu": [], "base": [], "base_cpu": []}
    for _ in range(rounds):
        wall, cpu, _ = timed_cpu(baseline)
        times["base"].append(wall)
        times["base_cpu"].append(cpu)
        wall, cpu, times["result"] = timed_cpu(ours)
        times["ours"].append(wall)
        times["ours_cpu"].append(cpu)
    return times


def bench_s3(workdir: Path, objects: int, rounds: int) -> dict[str, Any]:
    with s3_server(workdir, objects) as uri:
        raw_listing(uri)  # warm-up: the first request pays for connections and botocore's models
        times = alternate(rounds, lambda: fingerprint_sources([uri]), lambda: raw_listing(uri))
        listing = times["result"]
        assert isinstance(listing, SourceListing) and listing.fingerprint.objects == objects
        ours, base = statistics.median(times["ours"]), statistics.median(times["base"])
        ours_cpu, base_cpu = statistics.median(times["ours_cpu"]), statistics.median(times["base_cpu"])
        to_bytes_s, payload = timed(listing.to_bytes)
        from_bytes_s, restored = timed(lambda: SourceListing.from_bytes(payload))
        # one object rewritten with other bytes: the difference reproduce must name
        import boto3

        changed = _key(objects // 2)
        boto3.client("s3").put_object(Bucket=BUCKET, Key=changed, Body=b"rewritten")
        after = fingerprint_sources([uri])
        compare_s, difference = timed(lambda: compare(restored, after))
        # a week's window (or what there is of one), as a retraining run selects it
        start, end = _day(0), min(_day(0) + dt.timedelta(days=7), _day(objects - 1) + dt.timedelta(days=1))
        partitions_s, chosen = timed(lambda: select_partitions(uri, start, end))
        return {
            "objects": objects,
            "fingerprint_s": round(ours, 3),
            "objects_per_s": round(objects / ours),
            "baseline_list_s": round(base, 3),
            "baseline_objects_per_s": round(objects / base),
            "ratio": round(ours / base, 3),
            "fingerprint_rounds_s": [round(s, 3) for s in times["ours"]],
            "baseline_rounds_s": [round(s, 3) for s in times["base"]],
            # the server's time dominates the wall clock; the client's CPU shows what the fingerprint adds
            "fingerprint_client_cpu_s": round(ours_cpu, 3),
            "baseline_client_cpu_s": round(base_cpu, 3),
            "client_cpu_ratio": round(ours_cpu / base_cpu, 3),
            "fingerprint_json_bytes": len(listing.fingerprint.model_dump_json()),
            "listing_artifact_bytes": len(payload),
            "listing_to_bytes_s": round(to_bytes_s, 3),
            "listing_from_bytes_s": round(from_bytes_s, 3),
            "compare_s": round(compare_s, 3),
            "compare_message": str(difference),
            "select_partitions_s": round(partitions_s, 3),
            "select_partitions_found": len(chosen),
        }


# ---- local files ------------------------------------------------------------------------------------------
def make_sparse_tree(root: Path, files: int, file_mb: int) -> None:
    per_folder = 100
    for i in range(files):
        folder = root / f"shard-{i // per_folder:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"file-{i:05d}.bin", "wb") as f:
            f.truncate(file_mb * MiB)


def scandir_stat(root: str) -> int:
    """The baseline: a bare recursive ``os.scandir`` + ``stat`` of every file; the count of files."""
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
                    count += 1
    return count


def sha256_files(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                sha.update(chunk)
                total += len(chunk)
    return total


def bench_local(workdir: Path, files: int, file_mb: int, read_mb: int, rounds: int) -> dict[str, Any]:
    root = workdir / "local"
    make_sparse_tree(root, files, file_mb)
    paths = sorted(root.rglob("*.bin"))
    apparent = sum(p.stat().st_size for p in paths)
    on_disk = sum(p.stat().st_blocks * 512 for p in paths)
    scandir_stat(str(root))  # warm-up: both sides then read the same cached directory entries
    times = alternate(rounds, lambda: fingerprint_sources([str(root)]), lambda: scandir_stat(str(root)))
    listing = times["result"]
    assert isinstance(listing, SourceListing) and listing.fingerprint.total_bytes == apparent
    ours, base = statistics.median(times["ours"]), statistics.median(times["base"])
    sample = paths[: max(1, read_mb // file_mb)]
    read_s, read_bytes = timed(lambda: sha256_files(sample))
    read_all_s = read_s * apparent / read_bytes
    return {
        "files": files,
        "apparent_bytes": apparent,
        "bytes_on_disk": on_disk,
        "fingerprint_s": round(ours, 4),
        "files_per_s": round(files / ours),
        "baseline_scandir_stat_s": round(base, 4),
        "ratio": round(ours / base, 3),
        "fingerprint_rounds_s": [round(s, 4) for s in times["ours"]],
        "baseline_rounds_s": [round(s, 4) for s in times["base"]],
        "read_sha256_sample_bytes": read_bytes,
        "read_sha256_sample_s": round(read_s, 3),
        "read_sha256_MBps": round(read_bytes / MiB / read_s, 1),
        "read_sha256_all_extrapolated_s": round(read_all_s, 2),
        "read_all_vs_fingerprint": round(read_all_s / ours),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000, help="S3 objects under the prefix")
    parser.add_argument("--files", type=int, default=1000, help="local sparse files")
    parser.add_argument("--file-mb", type=int, default=10, help="size of each local file in MB")
    parser.add_argument("--read-mb", type=int, default=1024, help="MB read and hashed for the read baseline")
    parser.add_argument("--s3-rounds", type=int, default=2, help="alternating rounds of the S3 part")
    parser.add_argument("--local-rounds", type=int, default=5, help="alternating rounds of the local part")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (2,000 objects, 50 files)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: the server process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.objects)
        return {}
    if args.quick:
        args.objects, args.files, args.read_mb, args.s3_rounds, args.local_rounds = 2000, 50, 100, 1, 2
    with tempfile.TemporaryDirectory(prefix="bench-fingerprint-") as tmp:
        workdir = Path(tmp)
        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "s3": bench_s3(workdir, args.objects, args.s3_rounds),
            "local": bench_local(workdir, args.files, args.file_mb, args.read_mb, args.local_rounds),
        }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
