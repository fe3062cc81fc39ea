"""Checkpoint costs on a ~100M-parameter model with Adam, against a local S3 endpoint (moto over HTTP).

Prints one JSON object. Every figure comes with a baseline measured in the same run and their ratio:

(a) stall: how long ModelCheckpoint blocks the training thread per checkpoint (its
    ``on_train_batch_end``, which builds the checkpoint, snapshots it to CPU memory and queues the
    background commit), against a synchronous ``torch.save`` to a local file + boto3 ``upload_file``
    done on the training thread at the same steps. Target <= 0.25x. A pacing callback waits for the
    previous upload before each save (outside the timed hook), i.e. the steady state where the
    checkpoint interval is longer than an upload; the steps run while an upload is in flight are
    timed too, since on a small machine the background work competes with training for the CPU.
(b) upload throughput: our whole commit of the state, from the save call until the manifest is
    committed (serialise + hash + upload + manifest; the parts go out while serialisation goes on),
    against boto3 ``upload_file`` of the same serialised bytes (the file already on disk), as bytes
    per second of each. Target >= 0.8x.
(c) resume: find the newest committed checkpoint, download, verify and ``torch.load`` it (what
    ``fit(ckpt_path="last")`` does before training: the sha256 is computed alongside the load, and
    the result is used only if it matches) against a raw ``download_file`` + ``torch.load``.
    Target <= 1.2x. On S3 with a smaller state (see ``--resume-params``) because moto answers every
    ranged GET by copying the whole object, which makes ranged downloads quadratic in the object's
    size; both sides use ranged GETs, so the baseline is given with boto3's default transfer settings
    and with ours (16 MiB parts, 8 threads), the fair one. On a local folder with the full state.
(d) peak memory: RSS above what the process held just before the save, while a save runs to its
    commit (in a fresh subprocess; ``/proc/self/clear_refs`` resets the high-water mark), against the
    state's size. Target: at most one extra copy of the state. The synchronous baseline is measured
    the same way.

Usage: ``python benchmarks/checkpoint.py [--params 100e6] [--resume-params 25e6] [--repeats 2] [--quick]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from checkpoint_memory import bench_memory
from checkpoint_setup import (
    BigModel,
    empty_prefix,
    fitted_state,
    moto_server,
    quiet,
    s3,
    shape_for,
    state_bytes,
    train_loader,
    transfer_config,
)

import lightning_lib as pl
from lightning_lib.checkpoint import CheckpointWriter, delete_checkpoint, list_committed
from lightning_lib.checkpoint._format import dump_checkpoint, load_file
from lightning_lib.checkpoint._resume import select_ckpt_path
from lightning_lib.storage import GrowingFile, PrehashedFile, open_store
from lightning_lib.trainer.states import TrainerFn


# ---- (a) training stall ----------------------------------------------------------------------------------
class StepClock(pl.Callback):
    """Per-step wall time (batch start to the end of the non-checkpoint callbacks) and save-hook time."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.steps.append((trainer.global_step, time.perf_counter() - self._start))


class TimedCheckpoint(pl.callbacks.ModelCheckpoint):
    """ModelCheckpoint whose every on_train_batch_end is timed: what the training thread waits for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stalls: list[tuple[int, float]] = []

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        start = time.perf_counter()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.global_step % self._every_n_train_steps == 0:
            self.stalls.append((trainer.global_step, time.perf_counter() - start))


class Pacer(pl.Callback):
    """Before each saving step, waits (untimed) until the previous checkpoint has committed."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.waits: list[float] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if (trainer.global_step + 1) % self.every == 0 and trainer.global_step > 0:
            start = time.perf_counter()
            trainer._checkpoint_writer.wait()  # internal: the one place that knows the commit finished
            self.waits.append(time.perf_counter() - start)


class SyncSave(pl.Callback):
    """The baseline: at the same steps, torch.save to a local file and upload_file, on the training thread."""

    def __init__(self, every: int, workdir: Path, root: str) -> None:
        self.every, self.workdir, self.root = every, workdir, root
        self.stalls: list[tuple[int, float]] = []
        self.parts: list[dict[str, float]] = []

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.every:
            return
        bucket, _, prefix = self.root[len("s3://") :].partition("/")
        path = self.workdir / "sync.ckpt"
        start = time.perf_counter()
        torch.save(dump_checkpoint(trainer), path)
        saved = time.perf_counter()
        s3().upload_file(
            str(path), bucket, f"{prefix}/step={trainer.global_step}.ckpt", Config=transfer_config(False)
        )
        done = time.perf_counter()
        self.stalls.append((trainer.global_step, done - start))
        self.parts.append({"torch_save_s": saved - start, "upload_file_s": done - saved})
        path.unlink()
        empty_prefix(self.root)


def bench_stall(params: float, saves: int, every: int, workdir: Path, endpoint: str) -> dict[str, Any]:
    width, layers = shape_for(params)
    root = f"{endpoint}/stall-{uuid.uuid4().hex[:8]}"

    def trainer_for(callbacks: list[Any], checkpointing: bool) -> pl.Trainer:
        return pl.Trainer(
            **quiet(
                max_steps=every * saves + 1,
                default_root_dir=str(workdir),
                enable_checkpointing=checkpointing,
                callbacks=callbacks,
            )
        )

    clock = StepClock()
    checkpoint = TimedCheckpoint(dirpath=root + "/ours", every_n_train_steps=every, save_top_k=1)
    pacer = Pacer(every)
    pl.seed_everything(0)
    # the pacer runs first, so its wait is outside the step clock
    trainer_for([pacer, clock, checkpoint], True).fit(BigModel(width, layers), train_loader(width))
    empty_prefix(root)

    base_clock = StepClock()
    sync = SyncSave(every, workdir, root + "/sync")
    pl.seed_everything(0)
    trainer_for([base_clock, sync], False).fit(BigModel(width, layers), train_loader(width))

    ours = [s for _, s in checkpoint.stalls]
    base = [s for _, s in sync.stalls]
    # before the first save no upload runs (the very first step is warm-up); between saves one does
    idle = [t for step, t in clock.steps if 1 < step < every]
    during = [t for step, t in clock.steps if step > every and step % every]
    return {
        "stall_s_per_checkpoint": statistics.median(ours),
        "baseline_sync_save_upload_s": statistics.median(base),
        "ratio": statistics.median(ours) / statistics.median(base),
        "target_max_ratio": 0.25,
        "ours_all_s": ours,
        "baseline_all_s": base,
        "baseline_parts": sync.parts,
        "pacer_wait_for_upload_s": pacer.waits,
        "step_s_idle_median": statistics.median(idle) if idle else None,
        "step_s_during_upload_median": statistics.median(during) if during else None,
        "baseline_step_s_median": statistics.median(
            t for step, t in base_clock.steps if step > 1 and step % every
        ),
    }


# ---- (b) upload throughput -------------------------------------------------------------------------------
def bench_upload(checkpoint: dict[str, Any], repeats: int, workdir: Path, endpoint: str) -> dict[str, Any]:
    root = f"{endpoint}/upload-{uuid.uuid4().hex[:8]}"
    bucket, _, prefix = root[len("s3://") :].partition("/")
    writer = CheckpointWriter(background=False)  # the commit the background thread runs, timed alone
    store = open_store(root)
    path = workdir / "raw.ckpt"
    ours, raw, raw_ours_cfg, upload_only, saves, cpu, raw_cpu = [], [], [], [], [], [], []
    size = 0
    loads = []
    for i in range(repeats):
        loads.append(os.getloadavg()[0])
        cpu_start = time.process_time()  # this process only: moto's share of the machine is not in it
        start = time.perf_counter()
        writer.save(checkpoint, f"{root}/ours-{i}", step=i)
        ours.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        size = list_committed(store)[-1].file_size
        delete_checkpoint(store, f"ours-{i}")

        start = time.perf_counter()
        torch.save(checkpoint, path)
        saves.append(time.perf_counter() - start)
        cpu_start = time.process_time()
        start = time.perf_counter()
        s3().upload_file(str(path), bucket, f"{prefix}/raw-{i}", Config=transfer_config(False))
        raw.append(time.perf_counter() - start)
        raw_cpu.append(time.process_time() - cpu_start)
        s3().delete_object(Bucket=bucket, Key=f"{prefix}/raw-{i}")
        start = time.perf_counter()
        s3().upload_file(str(path), bucket, f"{prefix}/raw-cfg-{i}", Config=transfer_config(True))
        raw_ours_cfg.append(time.perf_counter() - start)
        s3().delete_object(Bucket=bucket, Key=f"{prefix}/raw-cfg-{i}")
        # our upload path alone, on the complete file: the multipart upload the commit runs
        complete = GrowingFile(path)
        complete.finish(PrehashedFile(str(path), path.stat().st_size, ""))
        start = time.perf_counter()
        store.put_growing_file(f"put-{i}.ckpt", complete)
        upload_only.append(time.perf_counter() - start)
        store.delete(f"put-{i}.ckpt")
        path.unlink()
    writer.close()
    mb = size / 1e6
    commit, base, base_cfg = statistics.median(ours), statistics.median(raw), statistics.median(raw_ours_cfg)
    return {
        "definition": "commit: CheckpointWriter(background=False).save() from the call until the manifest is"
        " committed (serialise + sha256 + upload + manifest, the work the background thread does);"
        " baseline: boto3 upload_file of the same serialised bytes, already on local disk",
        "bytes": size,
        "commit_MBps": mb / commit,
        "baseline_upload_file_MBps": mb / base,
        "ratio": base / commit,
        "target_min_ratio": 0.8,
        "ratio_vs_upload_file_with_our_transfer_config": base_cfg / commit,
        "ratio_per_round": [b / o for b, o in zip(raw, ours)],
        "commit_s": ours,
        "baseline_upload_file_s": raw,
        "upload_file_with_our_transfer_config_s": raw_ours_cfg,
        "our_upload_only_s": upload_only,
        "commit_process_cpu_s": cpu,
        "baseline_upload_file_process_cpu_s": raw_cpu,
        "torch_save_to_local_file_s": saves,
        "upload_only_ratio": base / statistics.median(upload_only),
        "load_avg_1min_per_round": loads,
    }


# ---- (c) resume ------------------------------------------------------------------------------------------
def bench_resume(checkpoint: dict[str, Any], root: str, repeats: int, workdir: Path) -> dict[str, Any]:
    """``root`` holds nothing yet; one committed checkpoint is written there, then resumed from."""
    writer = CheckpointWriter(background=False)
    writer.save(checkpoint, f"{root}/last.ckpt", step=1)
    writer.close()
    size = list_committed(open_store(root))[-1].file_size
    trainer = pl.Trainer(
        **quiet(default_root_dir=str(workdir), callbacks=[pl.callbacks.ModelCheckpoint(dirpath=root)])
    )
    remote = root.startswith("s3://")
    find, load, base, base_ours_cfg, loads, cpu, base_cpu = [], [], [], [], [], [], []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
        cpu_start = time.process_time()  # every thread of this process: how much of the wall is overlap
        start = time.perf_counter()
        # exactly what fit(ckpt_path="last") does before restoring (lightning_lib.loop.run): choosing
        # "last" loads and verifies the newest checkpoint, and load_file hands back that result
        run_state = trainer._run_state
        run_state.verified_checkpoint = None
        uri = select_ckpt_path(trainer, TrainerFn.FITTING, "last", True)
        found = time.perf_counter()
        prefetched, run_state.verified_checkpoint = run_state.verified_checkpoint, None
        assert prefetched is not None and prefetched[0] == uri
        loaded = load_file(uri, verified=prefetched[1])
        del prefetched
        done = time.perf_counter()
        assert loaded["global_step"] == checkpoint["global_step"]
        del loaded
        cpu.append(time.process_time() - cpu_start)
        find.append(found - start)
        load.append(done - found)
        if remote:
            bucket, _, prefix = root[len("s3://") :].partition("/")
            for config, out in ((False, base), (True, base_ours_cfg)):
                target = workdir / "download.ckpt"
                start = time.perf_counter()
                s3().download_file(
                    bucket,
                    f"{prefix}/last.ckpt",
                    str(target),
                    Config=transfer_config(config),
                )
                loaded = torch.load(target, map_location="cpu", weights_only=True)
                out.append(time.perf_counter() - start)
                del loaded
                target.unlink()
        else:
            cpu_start = time.process_time()
            start = time.perf_counter()
            loaded = torch.load(Path(root, "last.ckpt"), map_location="cpu", weights_only=True)
            base.append(time.perf_counter() - start)
            base_cpu.append(time.process_time() - cpu_start)
            del loaded
    total = [f + lo for f, lo in zip(find, load)]
    result = {
        "bytes": size,
        "resume_s": statistics.median(total),
        # list, read the manifests, then load the newest while its sha256 is checked alongside
        "select_last_s": statistics.median(find),
        "load_file_s": statistics.median(load),  # hands back what select_last loaded
        "resume_all_s": total,
        "baseline_all_s": base,
        "resume_process_cpu_s": cpu,  # S3: the moto server's CPU is not in it
        "baseline_process_cpu_s": base_cpu or None,
        "load_avg_1min_per_round": loads,
        "baseline_s": statistics.median(base),
        "baseline": "download_file (boto3 defaults) + torch.load" if remote else "torch.load of the file",
        "ratio": statistics.median(total) / statistics.median(base),
        "target_max_ratio": 1.2,
    }
    if remote:
        result["baseline_our_transfer_config_s"] = statistics.median(base_ours_cfg)
        result["ratio_vs_our_transfer_config"] = statistics.median(total) / statistics.median(base_ours_cfg)
    return result


# ---- main --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=100e6, help="model parameters (Adam state is 3x)")
    parser.add_argument("--resume-params", type=float, default=25e6, help="model parameters for (c) on S3")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--saves", type=int, default=3, help="checkpoints per run in (a)")
    parser.add_argument("--every", type=int, default=4, help="steps between checkpoints in (a)")
    parser.add_argument("--quick", action="store_true", help="a ~4M-parameter smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--only", default="abcd", help="which parts to run, e.g. 'ab'")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.params, args.resume_params, args.repeats, args.saves = 4e6, 4e6, 1, 2
    import logging

    logging.getLogger("lightning_lib").setLevel(logging.ERROR)
    report: dict[str, Any] = {
        "benchmark": "checkpoint",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_avg_at_start": os.getloadavg(),
        },
        "params": args.params,
        "endpoint": "moto server over HTTP on 127.0.0.1",
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    try:
        with moto_server(workdir) as endpoint:
            if set("bc") & set(args.only):
                _, checkpoint = fitted_state(args.params, workdir)
                report["state_bytes"] = state_bytes(checkpoint)
                if "b" in args.only:
                    report["b_upload"] = bench_upload(checkpoint, args.repeats, workdir, endpoint)
                if "c" in args.only:
                    local_root = str(workdir / "resume-local")
                    report["c_resume_local"] = bench_resume(checkpoint, local_root, args.repeats, workdir)
                    shutil.rmtree(local_root)
                del checkpoint
            if "c" in args.only:
                _, small = fitted_state(args.resume_params, workdir)
                root = f"{endpoint}/resume-{uuid.uuid4().hex[:8]}"
                report["c_resume_s3"] = {
                    "params": args.resume_params,
                    **bench_resume(small, root, args.repeats, workdir),
                }
                empty_prefix(root)
                del small
            if "a" in args.only:
                report["a_stall"] = bench_stall(args.params, args.saves, args.every, workdir, endpoint)
            if "d" in args.only:
                report["d_memory"] = bench_memory(args.params, workdir, endpoint)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
