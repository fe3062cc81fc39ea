"""Per-step cost of logging every step to a local ``mlflow server``, against training without a logger.

Prints one JSON object. A real ``mlflow server`` (SQLite backend, local artifacts) is started on
127.0.0.1 for the run and stopped with its whole process group afterwards. The model is the tiny MLP of
``overhead.py`` (Linear 32->64, ReLU, Linear 64->10, batch 64, Adam) calling ``self.log("train_loss",
loss)`` every step with ``log_every_n_steps=1``; progress bar, checkpointing and model summary are off so
only the logger's cost differs between the runs. Runs are interleaved (no logger, MLflow, ...) for
``--repeats`` rounds and each figure is the median over rounds of a run's mean step time after warm-up.

Implementations: ``lightning_lib`` with ``logger=False`` vs ``lightning_lib.loggers.MLFlowLogger``, and
the same pair for ``pytorch_lightning`` when it is importable (its figures are ``null`` otherwise). A
third run per library uses a logger that records nothing (``noop_logger``): the difference between it
and ``logger=False`` is the Trainer's own logging path (metric reduction, ``.item()``), not MLflow's. The
Trainer calls lightning_lib's ``logger.flush()`` at every train epoch end, so that cost is inside the
figure. ``finalize_s`` is the time ``fit`` spends after the last step (delivering the
queue, the curve PNG, the final status); ``delivered`` checks every value reached the server.

Usage: ``python benchmarks/mlflow_overhead.py [--quick] [--repeats N] [--steps N] [--threads N]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.services (the server runner)
import itertools

from tests.services import MlflowServer

BATCH_SIZE = 64
BATCHES_PER_EPOCH = 128


def make_data() -> TensorDataset:
    gen = torch.Generator().manual_seed(1234)
    return TensorDataset(torch.randn(BATCH_SIZE * BATCHES_PER_EPOCH, 32, generator=gen),
                         torch.randint(0, 10, (BATCH_SIZE * BATCHES_PER_EPOCH,), generator=gen))  # fmt: skip


def group_cpu_seconds(pgid: int | None) -> float | None:
    """CPU seconds used so far by the live processes of process group ``pgid`` (Linux ``/proc``)."""
    if pgid is None or not os.path.isdir("/proc"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...; utime=11, stime=12
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def run(
    pl: Any, data: TensorDataset, steps: int, warmup: int, logger_factory: Any, server_pgid: int | None
) -> dict[str, Any]:
    """One fit of ``steps`` steps: mean wall and process-CPU ms per step after ``warmup``, the server's
    CPU per step over the same steps, and how long ``fit`` took after the last step."""
    stamps: list[float] = []
    cpu_stamps: list[float] = []
    server_cpu: list[float | None] = []  # sampled at the first timed step and at the last step

    class Timed(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            stamps.append(time.perf_counter())
            cpu_stamps.append(time.process_time())
            if len(stamps) in (warmup + 1, steps):  # every variant samples, so the cost is alike
                server_cpu.append(group_cpu_seconds(server_pgid))
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as root:
        logger = logger_factory(root)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=steps, max_epochs=math.ceil(steps / BATCHES_PER_EPOCH) + 1,
            default_root_dir=root, logger=logger, log_every_n_steps=1,
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
        )  # fmt: skip
        loader = DataLoader(
            data, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            trainer.fit(Timed(), train_dataloaders=loader)
        end = time.perf_counter()
    timed = stamps[warmup:]
    intervals = [1000.0 * (b - a) for a, b in itertools.pairwise(timed)]
    report = getattr(logger, "delivery_report", None)
    server_ms = None
    if len(server_cpu) == 2 and server_cpu[0] is not None and server_cpu[1] is not None:
        server_ms = 1000.0 * (server_cpu[1] - server_cpu[0]) / (steps - 1 - warmup)
    return {
        "ms": statistics.fmean(intervals),
        "cpu_ms": 1000.0 * (cpu_stamps[-1] - cpu_stamps[warmup]) / (len(cpu_stamps) - 1 - warmup),
        "server_cpu_ms": server_ms,
        "finalize_s": end - stamps[-1],
        "delivered": None if report is None else report.delivered_metrics,
        "lost": None if report is None else sum(loss.count for loss in report.lost_metrics.values()),
    }


def noop_logger_class(pl: Any) -> Any:
    """A logger that records nothing: what the Trainer's own logging path costs without any backend."""

    class NoopLogger(pl.loggers.Logger):
        name, version = "noop", "0"

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    return NoopLogger


def bench(pl: Any, mlflow_logger: Any, server: MlflowServer, args: argparse.Namespace) -> dict[str, Any]:
    data = make_data()
    noop = noop_logger_class(pl)
    factories = {
        "no_logger": lambda root: False,
        "noop_logger": lambda root: noop(),
        "mlflow": lambda root: mlflow_logger(experiment_name=f"bench-{pl.__name__}", tracking_uri=server.uri),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in factories}
    pgid = server.process.pid if server.process is not None else None
    for _ in range(args.repeats):
        for name, factory in factories.items():
            results[name].append(run(pl, data, args.steps, args.warmup, factory, pgid))

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in results[name] if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    base = statistics.median(r["ms"] for r in results["no_logger"])
    noop_ms = statistics.median(r["ms"] for r in results["noop_logger"])
    with_mlflow = statistics.median(r["ms"] for r in results["mlflow"])
    return {
        "no_logger_ms_per_step": round(base, 4),
        "mlflow_ms_per_step": round(with_mlflow, 4),
        "ratio": round(with_mlflow / base, 3),
        # each round's MLflow run against the no-logger run next to it: robust to slow drift of the machine
        "ratio_per_round": [
            round(m["ms"] / b["ms"], 3) for m, b in zip(results["mlflow"], results["no_logger"], strict=True)
        ],
        "overhead_ms_per_step": round(with_mlflow - base, 4),
        "noop_logger_ms_per_step": round(noop_ms, 4),
        "ratio_vs_noop_logger": round(with_mlflow / noop_ms, 3),
        "mlflow_finalize_s": round(statistics.median(r["finalize_s"] for r in results["mlflow"]), 3),
        # CPU time per step of the training process (training thread + sender thread), and of the server
        "process_cpu_ms_per_step": {name: median(name, "cpu_ms") for name in factories},
        "server_cpu_ms_per_step": {name: median(name, "server_cpu_ms") for name in factories},
        "runs_ms_per_step": {name: [round(r["ms"], 4) for r in rs] for name, rs in results.items()},
        "delivered_per_run": [r["delivered"] for r in results["mlflow"]],
        "lost_per_run": [r["lost"] for r in results["mlflow"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 1, 150
    args.warmup = min(100, args.steps // 5)
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    import lightning_lib
    from lightning_lib.loggers import MLFlowLogger

    try:
        reference = importlib.import_module("pytorch_lightning")
        from pytorch_lightning.loggers import MLFlowLogger as ReferenceLogger
    except ImportError:
        reference = None
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-server-") as server_root:
        server = MlflowServer(Path(server_root))
        server.start()
        try:
            ours = bench(lightning_lib, MLFlowLogger, server, args)
            theirs = bench(reference, ReferenceLogger, server, args) if reference is not None else None
        finally:
            server.stop()
    import mlflow

    print(json.dumps({
        "benchmark": "mlflow_overhead",
        "date": datetime.date.today().isoformat(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "mlflow": mlflow.__version__,
                    "pytorch_lightning": getattr(reference, "__version__", None), "processor": platform.processor(),
                    "threads": args.threads},
        "setup": {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "batch_size": BATCH_SIZE,
                  "batches_per_epoch": BATCHES_PER_EPOCH, "log_every_n_steps": 1, "server": "mlflow server, SQLite"},
        "target_ratio": 1.05,
        "lightning_lib": ours,
        "pytorch_lightning": theirs,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
