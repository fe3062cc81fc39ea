"""Part (d) of the checkpoint benchmark: peak memory of a save, each measured in a fresh process.

Run by ``checkpoint.py``; as a script it is the child process: ``checkpoint_memory.py MODE PARAMS
WORKDIR ROOT`` prints one JSON line (MODE: ``ours`` or ``baseline``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import torch
from checkpoint_setup import (
    BigModel,
    empty_prefix,
    quiet,
    s3,
    shape_for,
    state_bytes,
    train_loader,
    transfer_config,
)

import lightning_lib as pl
from lightning_lib.checkpoint._format import dump_checkpoint


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class MemoryProbe(pl.Callback):
    """Just before the save (callbacks run before ModelCheckpoint): note RSS, reset the high-water mark."""

    def __init__(self, mode: str, workdir: Path, root: str) -> None:
        self.mode, self.workdir, self.root = mode, workdir, root
        self.before_kib = 0
        self.state = 0

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.state = state_bytes(dump_checkpoint(trainer))
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current RSS
        self.before_kib = _status_kib("VmRSS")
        if self.mode == "baseline":
            bucket, _, prefix = self.root[len("s3://") :].partition("/")
            path = self.workdir / "memory.ckpt"
            torch.save(dump_checkpoint(trainer), path)
            s3().upload_file(str(path), bucket, f"{prefix}/memory.ckpt", Config=transfer_config(False))
            path.unlink()


def memory_child(mode: str, params: float, workdir: Path, root: str) -> dict[str, Any]:
    width, layers = shape_for(params)
    probe = MemoryProbe(mode, workdir, root)
    callbacks: list[Any] = [probe]
    if mode == "ours":
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=1))
    trainer = pl.Trainer(
        **quiet(
            max_steps=1,
            default_root_dir=str(workdir),
            enable_checkpointing=mode == "ours",
            callbacks=callbacks,
        )
    )
    at_snapshot: dict[str, int] = {}
    if mode == "ours":
        writer = trainer._checkpoint_writer
        queue_commit = writer.save

        def save(*args: Any, **kwargs: Any) -> None:
            queue_commit(*args, **kwargs)  # returns once the snapshot is taken and its commit queued
            at_snapshot.update(rss=_status_kib("VmRSS") * 1024, peak=_status_kib("VmHWM") * 1024)

        writer.save = save  # type: ignore[method-assign]
    trainer.fit(BigModel(width, layers), train_loader(width))  # returns once the commit is done
    peak = _status_kib("VmHWM")
    return {
        "state_bytes": probe.state,
        "rss_before_bytes": probe.before_kib * 1024,
        "peak_bytes": peak * 1024,
        "rss_after_snapshot_bytes": at_snapshot.get("rss"),
        "peak_until_snapshot_taken_bytes": at_snapshot.get("peak"),
    }


def bench_memory(params: float, workdir: Path, endpoint: str) -> dict[str, Any]:
    results = {}
    for mode in ("ours", "baseline"):
        root = f"{endpoint}/memory-{mode}-{uuid.uuid4().hex[:8]}"
        out = subprocess.run(
            [sys.executable, __file__, mode, str(params), str(workdir), root],
            check=True,
            capture_output=True,
            text=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        empty_prefix(root)
    state = results["ours"]["state_bytes"]
    extra = {m: r["peak_bytes"] - r["rss_before_bytes"] for m, r in results.items()}
    return {
        "state_bytes": state,
        "extra_peak_bytes": extra["ours"],
        "extra_peak_over_state": extra["ours"] / state,
        "target_max_extra_over_state": 1.0,
        "baseline_sync_extra_peak_bytes": extra["baseline"],
        "baseline_sync_extra_over_state": extra["baseline"] / state,
        "runs": results,
    }


if __name__ == "__main__":
    result = memory_child(sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    print(json.dumps(result))
