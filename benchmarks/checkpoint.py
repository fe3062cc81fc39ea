"""Checkpoint costs on a ~100M-parameter model with Adam, against a local S3 endpoint (moto over HTTP).

Prints one JSON object. Every figure comes with a baseline measured in the same run and their ratio:

(a) stall: how long ModelCheckpoint blocks the training thread per checkpoint (its
    ``on_train_batch_end``, which builds the checkpoint, snapshots it to CPU memory and queues the
    background commit), against a synchronous ``torch.save`` to a local file + boto3 ``upload_file``
    done on the training thread at the same steps. Target <= 0.25x. A pacing callback waits for the
    previous upload before each save (outside the timed hook), i.e. the steady state where the
    checkpoint interval is longer than an upload; the steps run while an upload is in flight are
    timed too, since on a small machine the background work competes with training for the CPU.
(b) upload throughput: our whole commit (serialise + hash + upload + manifest) of the state, against
    boto3 ``upload_file`` of the same serialised bytes (the file already on disk). Target >= 0.8x.
(c) resume: find the newest committed checkpoint, download, verify and ``torch.load`` it (what
    ``fit(ckpt_path="last")`` does before training) against a raw ``download_file`` + ``torch.load``.
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
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning_lib as pl
from lightning_lib.checkpoint_io import dump_checkpoint, load_file, select_ckpt_path
from lightning_lib.checkpoint_writer import CHECKPOINT_FILE, CheckpointWriter
from lightning_lib.state import TrainerFn
from lightning_lib.storage import delete_checkpoint, list_committed, open_store

BUCKET = "bench-checkpoints"
MiB = 1024 * 1024
WIDTH = 4096
BATCH = 8


# ---- the local S3 endpoint -------------------------------------------------------------------------------
@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, this process (and its children) pointed at it with dummy keys."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    empty = workdir / "empty-aws-file"
    empty.write_text("")
    os.environ.update(
        AWS_ENDPOINT_URL=url,
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
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto server did not start; see {workdir / 'moto.log'}") from None
                time.sleep(0.2)
        s3().create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def s3() -> Any:
    import boto3

    return boto3.client("s3")


def transfer_config(ours: bool) -> Any:
    from boto3.s3.transfer import TransferConfig

    if ours:  # what S3Store uses
        return TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=16 * MiB, max_concurrency=8)
    return TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads


def empty_prefix(root: str) -> None:
    """Delete everything under an ``s3://bucket/prefix`` so moto's memory stays bounded."""
    bucket, _, prefix = root[len("s3://") :].partition("/")
    client = s3()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


# ---- the model -------------------------------------------------------------------------------------------
class BigModel(pl.LightningModule):
    """``layers`` Linear(width, width) layers: 100M parameters at width 4096 and 6 layers."""

    def __init__(self, width: int = WIDTH, layers: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-5)


def shape_for(params: float) -> tuple[int, int]:
    """(width, layers) of a BigModel with about ``params`` parameters."""
    width = WIDTH if params >= 40e6 else 2048 if params >= 8e6 else 1024
    return width, max(1, round(params / (width * width + width)))


def train_loader(width: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(64, width)), batch_size=BATCH)


def state_bytes(checkpoint: dict[str, Any]) -> int:
    from lightning_lib.move import apply_to_tensors

    total = 0

    def add(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    apply_to_tensors(checkpoint, add)
    return total


def quiet(**kwargs: Any) -> dict[str, Any]:
    return {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
        **kwargs,
    }


def fitted_state(params: float, root: Path) -> tuple[pl.Trainer, dict[str, Any]]:
    """A trainer after one Adam step on a model of ``params`` parameters, and its full checkpoint."""
    width, layers = shape_for(params)
    trainer = pl.Trainer(**quiet(max_steps=1, default_root_dir=str(root), enable_checkpointing=False))
    trainer.fit(BigModel(width, layers), train_loader(width))
    return trainer, dump_checkpoint(trainer)


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
    ours, raw, raw_ours_cfg, put_file, saves = [], [], [], [], []
    size = 0
    for i in range(repeats):
        start = time.perf_counter()
        writer.save(checkpoint, f"{root}/ours-{i}", step=i)
        ours.append(time.perf_counter() - start)
        size = list_committed(store)[-1].files[CHECKPOINT_FILE]["size"]
        delete_checkpoint(store, f"ours-{i}")

        start = time.perf_counter()
        torch.save(checkpoint, path)
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        s3().upload_file(str(path), bucket, f"{prefix}/raw-{i}", Config=transfer_config(False))
        raw.append(time.perf_counter() - start)
        s3().delete_object(Bucket=bucket, Key=f"{prefix}/raw-{i}")
        start = time.perf_counter()
        s3().upload_file(str(path), bucket, f"{prefix}/raw-cfg-{i}", Config=transfer_config(True))
        raw_ours_cfg.append(time.perf_counter() - start)
        s3().delete_object(Bucket=bucket, Key=f"{prefix}/raw-cfg-{i}")
        start = time.perf_counter()
        store.put_file(f"put-{i}/{CHECKPOINT_FILE}", str(path))  # our upload path alone
        put_file.append(time.perf_counter() - start)
        store.delete(f"put-{i}/{CHECKPOINT_FILE}")
        path.unlink()
    writer.close()
    mb = size / 1e6
    commit, base = statistics.median(ours), statistics.median(raw)
    return {
        "bytes": size,
        "commit_MBps": mb / commit,
        "baseline_upload_file_MBps": mb / base,
        "ratio": base / commit,
        "target_min_ratio": 0.8,
        "commit_s": ours,
        "baseline_upload_file_s": raw,
        "upload_file_with_our_transfer_config_s": raw_ours_cfg,
        "our_put_file_only_s": put_file,
        "torch_save_to_local_file_s": saves,
        "upload_only_ratio": base / statistics.median(put_file),
    }


# ---- (c) resume ------------------------------------------------------------------------------------------
def bench_resume(checkpoint: dict[str, Any], root: str, repeats: int, workdir: Path) -> dict[str, Any]:
    """``root`` holds nothing yet; one committed checkpoint is written there, then resumed from."""
    writer = CheckpointWriter(background=False)
    writer.save(checkpoint, f"{root}/last.ckpt", step=1)
    writer.close()
    size = list_committed(open_store(root))[-1].files[CHECKPOINT_FILE]["size"]
    trainer = pl.Trainer(
        **quiet(default_root_dir=str(workdir), callbacks=[pl.callbacks.ModelCheckpoint(dirpath=root)])
    )
    remote = root.startswith("s3://")
    find, load, base, base_ours_cfg = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        uri = select_ckpt_path(trainer, TrainerFn.FITTING, "last", True)
        found = time.perf_counter()
        loaded = load_file(uri)
        done = time.perf_counter()
        assert loaded["global_step"] == checkpoint["global_step"]
        del loaded
        find.append(found - start)
        load.append(done - found)
        if remote:
            bucket, _, prefix = root[len("s3://") :].partition("/")
            for config, out in ((False, base), (True, base_ours_cfg)):
                target = workdir / "download.ckpt"
                start = time.perf_counter()
                s3().download_file(
                    bucket,
                    f"{prefix}/last.ckpt/{CHECKPOINT_FILE}",
                    str(target),
                    Config=transfer_config(config),
                )
                loaded = torch.load(target, map_location="cpu", weights_only=True)
                out.append(time.perf_counter() - start)
                del loaded
                target.unlink()
        else:
            start = time.perf_counter()
            loaded = torch.load(
                Path(root, "last.ckpt", CHECKPOINT_FILE), map_location="cpu", weights_only=True
            )
            base.append(time.perf_counter() - start)
            del loaded
    total = [f + lo for f, lo in zip(find, load)]
    result = {
        "bytes": size,
        "resume_s": statistics.median(total),
        "find_and_verify_s": statistics.median(find),
        "load_file_s": statistics.median(load),
        "baseline_s": statistics.median(base),
        "baseline": "download_file (boto3 defaults) + torch.load" if remote else "torch.load of the file",
        "ratio": statistics.median(total) / statistics.median(base),
        "target_max_ratio": 1.2,
    }
    if remote:
        result["baseline_our_transfer_config_s"] = statistics.median(base_ours_cfg)
        result["ratio_vs_our_transfer_config"] = statistics.median(total) / statistics.median(base_ours_cfg)
    return result


# ---- (d) peak memory -------------------------------------------------------------------------------------
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
    trainer.fit(BigModel(width, layers), train_loader(width))  # returns once the commit is done
    peak = _status_kib("VmHWM")
    return {
        "state_bytes": probe.state,
        "rss_before_bytes": probe.before_kib * 1024,
        "peak_bytes": peak * 1024,
    }


def bench_memory(params: float, workdir: Path, endpoint: str) -> dict[str, Any]:
    results = {}
    for mode in ("ours", "baseline"):
        root = f"{endpoint}/memory-{mode}-{uuid.uuid4().hex[:8]}"
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                mode,
                "--params",
                str(params),
                "--workdir",
                str(workdir),
                "--root",
                root,
            ],
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
    parser.add_argument("--memory-child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        result = memory_child(args.memory_child, args.params, Path(args.workdir), args.root)
        print(json.dumps(result))
        return result
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
