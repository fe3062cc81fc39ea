"""Streaming a sharded Parquet dataset larger than a loader should hold: throughput and peak memory.

Prints one JSON object. A dataset of ``--gib`` GiB (default 2) is written under a temporary folder as
``--shards`` Parquet files in Hive partitions (``dt=.../part-K.parquet``; 32 float32 feature columns and
an int64 label, random values so Snappy cannot shrink them, row groups of 16,384 rows) and removed
afterwards. Then, one after the other in this process:

- ``baseline``: pyarrow alone reads every file with ``ParquetFile.iter_batches`` (same batch size and
  columns) and turns each column into a NumPy array: no torch, no shuffling, no workers. A second
  baseline does the same with batches of a whole row group (16,384 rows), the least per-batch work
  pyarrow can do; the data module reads whole row groups too, then cuts batches with NumPy.
- ``check``: ``prepare_data`` + ``setup("fit")`` of ``ShardedParquetDataModule``: listing and every
  footer, no row data.
- ``epoch_workers_0``: one full epoch of the train loader in the main process (shuffled across
  shards and within a 16,384-row window, batches as float32/int64 tensors).
- ``epoch_workers_N``: the same with ``--workers`` DataLoader worker processes.
- ``fit``: ``lightning_lib.Trainer.fit`` of a linear classifier (one intra-op thread) for
  ``--fit-steps`` steps over the data module with ``--workers`` workers, after an unmeasured 3-step
  warm-up fit (the Trainer's first run imports and initialises what later runs reuse).

Peak memory: for a single process, ``VmHWM`` (reset through ``/proc/self/clear_refs`` before each part)
minus ``VmRSS`` at its start. With worker processes, a sampler thread (every 20 ms) sums the
proportional set size (``Pss`` in ``/proc/PID/smaps_rollup``) of this process and its children, so
pages shared after ``fork`` count once; the figure is its peak minus this process's ``Pss`` before the
part. The files are in the page cache after being written (23 GiB of RAM here), for the baseline and
for the data module alike, so both measure decoding and the loader, not the disk.

Usage: ``python benchmarks/parquet_stream.py [--gib 2] [--shards 200] [--workers 2] [--batch-size 1024]
[--fit-steps 300] [--workdir DIR] [--quick]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `datamodules`

import lightning_lib as pl
from datamodules import ShardedParquetDataModule

FEATURES = [f"f{i}" for i in range(32)]
ROW_GROUP = 16_384
GIB = 1024**3
TARGET_GROWTH = 300 * 1024**2
ROW_BYTES = 4 * len(FEATURES) + 8


def write_dataset(root: Path, total_bytes: int, shards: int) -> dict[str, Any]:
    """``shards`` files holding at least ``total_bytes`` of column data; returns what was written."""
    rows_per_shard = -(-total_bytes // (ROW_BYTES * shards))
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for s in range(shards):
        folder = root / f"dt=2026-12-{1 + s * 28 // shards:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        values = rng.standard_normal((len(FEATURES), rows_per_shard), dtype=np.float32)
        columns: dict[str, Any] = {name: values[j] for j, name in enumerate(FEATURES)}
        columns["label"] = rng.integers(0, 10, rows_per_shard, dtype=np.int64)
        pq.write_table(pa.table(columns), folder / f"part-{s:04d}.parquet", row_group_size=ROW_GROUP)
    files = sorted(root.rglob("*.parquet"))
    return {
        "bytes_on_disk": sum(f.stat().st_size for f in files),
        "shards": len(files),
        "rows": rows_per_shard * shards,
        "row_groups": shards * -(-rows_per_shard // ROW_GROUP),
        "columns": len(FEATURES) + 1,
        "write_s": round(time.perf_counter() - started, 2),
    }


def _status_bytes(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _pss_bytes(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children() -> list[int]:
    found: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as handle:
                found.extend(int(pid) for pid in handle.read().split())
        except FileNotFoundError:
            continue
    return found


class Peak:
    """This process's high-water RSS, and (sampled) the peak Pss of it plus its children."""

    def __init__(self) -> None:
        self.rss_before = 0
        self.pss_before = 0
        self.pss_peak = 0
        self.workers_seen = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        seen: set[int] = set()
        while not self._stop.wait(0.02):
            children = _children()
            seen.update(children)
            self.pss_peak = max(self.pss_peak, _pss_bytes("self") + sum(_pss_bytes(pid) for pid in children))
        self.workers_seen = len(seen)

    @contextmanager
    def measure(self) -> Iterator[Peak]:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # VmHWM := VmRSS
        self.rss_before = _status_bytes("VmRSS")
        self.pss_before = self.pss_peak = _pss_bytes("self")
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            self._stop.set()
            sampler.join()
            self.rss_growth = _status_bytes("VmHWM") - self.rss_before
            self.pss_growth = self.pss_peak - self.pss_before

    def report(self) -> dict[str, Any]:
        return {
            "peak_rss_growth_bytes": self.rss_growth,
            "peak_pss_growth_bytes_with_workers": self.pss_growth,
            "worker_processes_seen": self.workers_seen,
        }


def timed(fn: Callable[[], int]) -> dict[str, Any]:
    peak = Peak()
    with peak.measure():
        started = time.perf_counter()
        rows = fn()
        seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds), **peak.report()}


def baseline(files: list[Path], batch_size: int) -> int:
    rows = 0
    for path in files:
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=batch_size, columns=[*FEATURES, "label"]):
                arrays = [column.to_numpy() for column in batch.columns]
                rows += len(arrays[0])
    return rows


def epoch(dm: ShardedParquetDataModule) -> int:
    rows = 0
    for _x, y in dm.train_dataloader():
        rows += len(y)
    return rows


class Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(len(FEATURES), 10)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(dm: ShardedParquetDataModule, steps: int, root: Path) -> int:
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        accelerator="cpu",
    )
    trainer.fit(Linear(), datamodule=dm)
    return trainer.global_step * dm.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--workdir", default=None, help="parent of the temporary dataset folder")
    parser.add_argument("--quick", action="store_true", help="a 50 MiB smoke run")
    args = parser.parse_args()
    if args.quick:
        args.gib, args.shards, args.fit_steps = 0.05, 20, 50
    # the linear model needs no intra-op threads; on a small shared machine they only spin against the
    # loader's worker processes
    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="parquet-stream-", dir=args.workdir))
    try:
        root = workdir / "train"
        dataset = write_dataset(root, int(args.gib * GIB), args.shards)
        files = sorted(root.rglob("*.parquet"))

        def module(workers: int) -> ShardedParquetDataModule:
            return ShardedParquetDataModule(
                str(root), features=FEATURES, target="label", batch_size=args.batch_size, num_workers=workers
            )

        fit(module(0), 3, workdir)  # warm-up, not measured: the Trainer's first run imports and initialises
        base = timed(lambda: baseline(files, args.batch_size))
        base_group = timed(lambda: baseline(files, ROW_GROUP))
        dm0 = module(0)
        started = time.perf_counter()
        dm0.prepare_data()
        dm0.setup("fit")
        check_s = time.perf_counter() - started
        single = timed(lambda: epoch(dm0))
        dmn = module(args.workers)
        dmn.setup("fit")
        several = timed(lambda: epoch(dmn))
        dmf = module(args.workers)
        trained = timed(lambda: fit(dmf, args.fit_steps, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert single["rows"] == several["rows"] == base["rows"] == base_group["rows"] == dataset["rows"]
    worst = max(
        single["peak_rss_growth_bytes"],
        several["peak_pss_growth_bytes_with_workers"],
        trained["peak_pss_growth_bytes_with_workers"],
    )
    result = {
        "benchmark": "parquet_stream",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pyarrow": pa.__version__,
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "dataset": {**dataset, "gib_on_disk": round(dataset["bytes_on_disk"] / GIB, 3)},
        "batch_size": args.batch_size,
        "check_s": round(check_s, 3),
        "baseline_pyarrow_iter_batches": base,
        "baseline_pyarrow_iter_batches_of_a_row_group": base_group,
        "epoch_workers_0": single,
        f"epoch_workers_{args.workers}": several,
        f"fit_{args.fit_steps}_steps_workers_{args.workers}": {
            **trained,
            "steps_per_s": round(args.fit_steps / trained["seconds"], 1),
        },
        "ratio_rows_per_s_workers_0_over_baseline": round(single["rows_per_s"] / base["rows_per_s"], 3),
        "ratio_rows_per_s_workers_0_over_row_group_baseline": round(
            single["rows_per_s"] / base_group["rows_per_s"], 3
        ),
        f"ratio_rows_per_s_workers_{args.workers}_over_baseline": round(
            several["rows_per_s"] / base["rows_per_s"], 3
        ),
        "peak_growth_bytes_worst": worst,
        "target_max_peak_growth_bytes": TARGET_GROWTH,
        "meets_target": worst < TARGET_GROWTH,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
