"""tasks.data streams the table: the split membership of the old in-memory split, bytes that do not depend
on how the source was batched, S3 sources (streamed hash, resumed GETs, a download for the two passes),
a source that changes mid-way or an upload that fails publishes nothing, the cache key's digest is
computed once, and peak memory does not grow with the table (a slow test on a 300 MB CSV)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import tasks.data as data_module
from lightning_lib.storage import LocalStore, ObjectNotFound, S3Store, StorageError, join_uri
from tasks.config import TrainConfig
from tasks.data import (
    MANIFEST_NAME,
    PreparedData,
    SourceChangedError,
    StaleDigestError,
    input_digest,
    prepare,
    prepare_cache_key,
    prepare_data,
    read_uri,
)
from tests.tasks.conftest import make_frame

REPO = Path(__file__).resolve().parents[2]


def config_for(source: str | Path, root: str | Path, **data: Any) -> TrainConfig:
    return TrainConfig(
        model="examples.digits:DigitsClassifier",
        checkpoint_root=f"{root}/checkpoints",
        data={"source": str(source), "target": "label", **data},
    )


def numbered(rows: int, seed: int = 0) -> pd.DataFrame:
    """make_frame with a first column holding each row's number, to follow rows into the splits."""
    frame = make_frame(rows, seed)
    frame.insert(0, "row", np.arange(rows))
    return frame


def split_rows(result: PreparedData) -> dict[str, np.ndarray]:
    return {
        name: pd.read_parquet(io.BytesIO(read_uri(getattr(result, name).uri)))["row"].to_numpy()
        for name in ("train", "val", "test")
    }


def digests(result: PreparedData) -> list[str]:
    return [result.train.sha256, result.val.sha256, result.test.sha256]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_rows_land_where_the_permutation_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(data_module, "_CSV_BLOCK_BYTES", 2048)
    monkeypatch.setattr(data_module, "_PARQUET_BATCH_ROWS", 100)
    rows, seed = 1234, 17
    source = tmp_path / f"table.{fmt}"
    if fmt == "csv":
        numbered(rows).to_csv(source, index=False)
    else:
        numbered(rows).to_parquet(source, index=False, row_group_size=300)
    result = prepare(config_for(source, tmp_path, split_seed=seed, val_fraction=0.2, test_fraction=0.1))
    # the in-memory rule this replaced: permutation(rows), the first n_test rows test, the next n_val val
    order = np.random.default_rng(seed).permutation(rows)
    n_val, n_test = round(rows * 0.2), round(rows * 0.1)
    got = split_rows(result)
    assert np.array_equal(got["test"], np.sort(order[:n_test]))
    assert np.array_equal(got["val"], np.sort(order[n_test : n_test + n_val]))
    assert np.array_equal(got["train"], np.sort(order[n_test + n_val :]))  # file order within each split


def test_split_bytes_do_not_depend_on_the_batching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "table.csv"
    numbered(3000).to_csv(source, index=False)
    whole = prepare(config_for(source, tmp_path / "a"))
    monkeypatch.setattr(data_module, "_CSV_BLOCK_BYTES", 500)
    batched = prepare(config_for(source, tmp_path / "b"))
    assert digests(batched) == digests(whole)
    assert batched.dataset_id == whole.dataset_id
    # bounded row groups: a narrow budget gives several, of the size the schema alone sets
    monkeypatch.setattr(data_module, "_ROW_GROUP_BYTES", 6 * 8 * 1024)
    grouped = prepare(config_for(source, tmp_path / "c"))
    meta = pq.ParquetFile(grouped.train.uri).metadata
    assert meta.num_row_groups == -(-grouped.train.rows // 1024) > 1
    assert all(meta.row_group(i).num_rows == 1024 for i in range(meta.num_row_groups - 1))
    pd.testing.assert_frame_equal(pd.read_parquet(grouped.train.uri), pd.read_parquet(whole.train.uri))


def test_a_source_changed_between_the_passes_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "table.csv"
    numbered(500).to_csv(source, index=False)
    real = data_module.split_assignment

    def rewrite_then_split(*args: Any) -> np.ndarray:
        # same rows and columns, other values: only the bytes tell
        numbered(500, seed=1).to_csv(source, index=False)
        return real(*args)

    monkeypatch.setattr(data_module, "split_assignment", rewrite_then_split)
    with pytest.raises(SourceChangedError, match="changed while it was being prepared"):
        prepare(config_for(source, tmp_path))
    written = (
        [p for p in (tmp_path / "data").rglob("*") if p.is_file()] if (tmp_path / "data").exists() else []
    )
    assert written == []  # no split, no manifest


def test_a_failed_upload_publishes_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "table.csv"
    numbered(200).to_csv(source, index=False)
    original = LocalStore.put_growing_file

    def fail_the_val_split(self: LocalStore, key: str, growing: Any) -> None:
        if key == "val.parquet":
            raise StorageError("S3 request to write val.parquet failed: 503 SlowDown")
        original(self, key, growing)

    monkeypatch.setattr(LocalStore, "put_growing_file", fail_the_val_split)
    with pytest.raises(StorageError, match="503 SlowDown"):
        prepare(config_for(source, tmp_path))
    assert not list((tmp_path / "data").rglob(MANIFEST_NAME))


def test_the_cache_key_uses_a_given_digest_without_reading(tmp_path: Path, csv_file: Path) -> None:
    config = config_for(csv_file, tmp_path)
    digest = hashlib.sha256(csv_file.read_bytes()).hexdigest()
    assert input_digest(config) == digest
    read = prepare_cache_key(None, {"config": config})
    assert prepare_cache_key(None, {"config": config, "input_sha256": digest}) == read
    absent = config_for(tmp_path / "absent.csv", tmp_path)
    with pytest.raises(ObjectNotFound):
        prepare_cache_key(None, {"config": absent})
    assert prepare_cache_key(None, {"config": absent, "input_sha256": digest}).startswith("prepare-data-")


def test_a_digest_that_no_longer_matches_is_refused(tmp_path: Path, csv_file: Path) -> None:
    config = config_for(csv_file, tmp_path)
    assert prepare_data.fn(config, input_sha256=input_digest(config)).train.rows == 42
    with pytest.raises(StaleDigestError, match="changed after the flow hashed it"):
        prepare_data.fn(config, input_sha256="0" * 64)


def test_the_flow_helper_hashes_the_source_once(
    prefect_harness: Path, tmp_path: Path, csv_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    calls: list[str] = []
    real = data_module.input_digest

    def counting(config: TrainConfig) -> str:
        calls.append(config.table().source)
        return real(config)

    monkeypatch.setattr(data_module, "input_digest", counting)

    @flow
    def pipeline(config: TrainConfig) -> PreparedData:
        return data_module.run_prepare_data(config)

    first = pipeline(config_for(csv_file, tmp_path))
    assert len(calls) == 1  # the folder and the cache key share one hash; preparing hashes as it reads
    assert pipeline(config_for(csv_file, tmp_path)) == first and len(calls) == 2


# -- S3 ----------------------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_s3_source_prepares_what_the_local_file_prepares(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(data_module, "_CSV_BLOCK_BYTES", 1024)
    local = tmp_path / f"table.{fmt}"
    if fmt == "csv":
        numbered(700).to_csv(local, index=False)
    else:
        numbered(700).to_parquet(local, index=False, row_group_size=128)
    S3Store(join_uri(s3_endpoint, "raw-stream")).put_bytes(local.name, local.read_bytes())
    uri = f"{s3_endpoint}/raw-stream/{local.name}"
    remote = prepare(config_for(uri, f"{s3_endpoint}/out-{fmt}"))
    here = prepare(config_for(local, tmp_path))
    assert remote.input_sha256 == here.input_sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert input_digest(config_for(uri, tmp_path)) == remote.input_sha256
    assert digests(remote) == digests(here) and remote.dataset_id == here.dataset_id
    assert remote.train.uri.startswith(f"{s3_endpoint}/out-{fmt}/data/")
    assert json.loads(read_uri(remote.manifest_uri))["input_sha256"] == remote.input_sha256
    missing = config_for(f"{s3_endpoint}/raw-stream/absent.{fmt}", tmp_path)
    with pytest.raises(ObjectNotFound, match="absent"):
        prepare(missing)
    with pytest.raises(ObjectNotFound, match="absent"):
        input_digest(missing)


class BreakingBody:
    """A GET body that delivers ``limit`` bytes and then breaks off, as a dropped connection does."""

    def __init__(self, body: Any, limit: int) -> None:
        self._body, self._left = body, limit

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise ConnectionResetError("connection reset by peer")
        data = self._body.read(min(size, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._body.close()


@pytest.mark.services
def test_s3_hash_resumes_a_broken_body_on_the_same_version(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = numbered(2000).to_csv(index=False).encode()
    store = S3Store(join_uri(s3_endpoint, "raw-resume"))
    store.put_bytes("t.csv", payload)
    source = data_module._S3Source(f"{s3_endpoint}/raw-resume/t.csv")
    client = source._store.client
    real_get = client.get_object
    requests: list[dict[str, Any]] = []

    def flaky_get(**kwargs: Any) -> Any:
        requests.append(kwargs)
        response = real_get(**kwargs)
        if len(requests) == 1:
            response["Body"] = BreakingBody(response["Body"], 5000)
        return response

    monkeypatch.setattr(client, "get_object", flaky_get)
    monkeypatch.setattr(data_module, "_READ_CHUNK", 1000)
    assert source.sha256() == hashlib.sha256(payload).hexdigest()
    assert requests[1]["Range"] == "bytes=5000-" and requests[1]["IfMatch"]

    # a new version between the break and the resume: refused rather than hashed together
    requests.clear()

    def replacing_get(**kwargs: Any) -> Any:
        requests.append(kwargs)
        if len(requests) == 2:
            store.put_bytes("t.csv", payload + b"0,0,0,0,0,0,0\n")
        response = real_get(**kwargs)
        if len(requests) == 1:
            response["Body"] = BreakingBody(response["Body"], 5000)
        return response

    monkeypatch.setattr(client, "get_object", replacing_get)
    with pytest.raises(SourceChangedError, match="ETag moved on"):
        source.sha256()


# -- memory ------------------------------------------------------------------------------------------

_MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the high-water mark starts again from the current RSS

    from tasks.config import TrainConfig
    from tasks.data import prepare

    def run(source):
        config = TrainConfig(
            model="examples.digits:DigitsClassifier",
            checkpoint_root=sys.argv[1],
            data={"source": source, "target": "label"},
        )
        reset_peak()
        before = status("VmRSS")
        result = prepare(config)
        return {"growth": status("VmHWM") - before, "rows": result.train.rows + result.val.rows + result.test.rows}

    run(sys.argv[2])  # Arrow's thread pools and their allocator arenas start once, whatever the table
    print(json.dumps({source: run(source) for source in sys.argv[3:]}))
    """
)


def _peak_can_be_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _peak_can_be_reset(), reason="needs /proc/self/clear_refs to restart the peak RSS")
def test_peak_memory_does_not_grow_with_the_table(tmp_path: Path) -> None:
    """A ~300 MB CSV is prepared with a peak RSS growth that is a small fraction of its size, and about
    the growth for a table ten times smaller: what grows with the rows is the split's bytes per row."""
    block = make_frame(20_000, seed=3).to_csv(index=False, header=False).encode()
    tables = {}
    for name, size in (("tiny", 1), ("small", 30_000_000), ("big", 300_000_000)):
        path = tmp_path / f"{name}.csv"
        with open(path, "wb") as out:
            out.write(b"f0,f1,f2,count,label\n")
            for _ in range(-(-size // len(block))):
                out.write(block)
        tables[name] = path
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(tmp_path / "out"), *(str(p) for p in tables.values())],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    small, big = figures[str(tables["small"])], figures[str(tables["big"])]
    size = tables["big"].stat().st_size
    assert big["rows"] == 20_000 * -(-300_000_000 // len(block))
    report = f"peak RSS grew by {big['growth'] / 2**20:.0f} MiB for {size / 2**20:.0f} MiB, {small['growth'] / 2**20:.0f} MiB for a tenth"
    assert big["growth"] < size / 3, report
    # the split keeps one byte per row and briefly four more (the shuffled row numbers)
    per_row = 5 * (big["rows"] - small["rows"])
    assert big["growth"] < small["growth"] + per_row + 16 * 2**20, report
