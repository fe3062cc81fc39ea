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
figure. ``finalize_s`` is the time ``fit`` spends after the last step (delivering the queue, the curve
PNG, the final status); ``whole_fit_s`` is the whole fit from the logger's construction until ``fit``
returned (run setup, every step, final delivery; issue 13's figure, target 1.05x of the fit without a
logger); ``delivered`` checks every value reached the server.

The machine's other work moves these figures a lot when the server shares its cores: the output records
the 1-minute load average, the ratio of every round, and the CPU time per step of the training process
and of the server, which say what each side costs independently of scheduling.

Usage: ``python benchmarks/mlflow_overhead.py [--quick] [--repeats N] [--reference-repeats N] [--steps N]
[--threads N] [--server-nice N]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import itertools
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from timed_module import timed_classifier  # benchmarks/ is this script's sys.path[0]
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.services (the server runner)
from tests.services import MlflowServer, free_port, group_cpu_seconds

BATCH_SIZE = 64
BATCHES_PER_EPOCH = 128


def make_data() -> TensorDataset:
    gen = torch.Generator().manual_seed(1234)
    return TensorDataset(torch.randn(BATCH_SIZE * BATCHES_PER_EPOCH, 32, generator=gen),
                         torch.randint(0, 10, (BATCH_SIZE * BATCHES_PER_EPOCH,), generator=gen))  # fmt: skip


def run(
    pl: Any, data: TensorDataset, steps: int, warmup: int, logger_factory: Any, server_pgid: int
) -> dict[str, Any]:
    """One fit of ``steps`` steps: mean wall and process-CPU ms per step after ``warmup``, the server's
    CPU per step over the same steps, and how long ``fit`` took after the last step."""
    stamps: list[float] = []
    cpu_stamps: list[float] = []
    server_cpu: list[float | None] = []  # sampled at the first timed step and at the last step

    def on_step() -> None:
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
        if len(stamps) in (warmup + 1, steps):  # every variant samples, so the cost is alike
            server_cpu.append(group_cpu_seconds(server_pgid))

    Timed = timed_classifier(
        pl, lambda: nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)), on_step
    )

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as root:
        start = time.perf_counter()  # the whole fit: the logger's setup, the steps, the final delivery
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
        "whole_fit_s": end - start,
        "to_first_step_s": stamps[0] - start,
        "delivered": None if report is None else report.delivered_metrics,
        "lost": None if report is None else sum(loss.count for loss in report.lost_metrics.values()),
    }


def serve_absorbing_proxy(port: int, upstream: str) -> None:
    """Relay every request to the MLflow server at ``upstream``, except batches of metrics only, which
    are answered ``{}`` at once: the logger does all its client-side work, the server none of the storing."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload, kind = 200, b"{}", "application/json"
            batch = json.loads(body) if self.path.endswith("/runs/log-batch") else {}
            if not (batch.get("metrics") and not batch.get("params") and not batch.get("tags")):
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                request = urllib.request.Request(
                    upstream + self.path, data=body or None, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        status, payload = response.status, response.read()
                        kind = response.headers.get("Content-Type", kind)
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                    kind = error.headers.get("Content-Type", kind)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Relay).serve_forever()


@contextlib.contextmanager
def absorbing_proxy(upstream: str) -> Iterator[str]:
    """Run :func:`serve_absorbing_proxy` in its own process group; yield its URI."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, __file__, "--absorbing-proxy", str(port), upstream], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the absorbing proxy did not start") from None
                time.sleep(0.1)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def noop_logger_class(pl: Any) -> Any:
    """A logger that records nothing: what the Trainer's own logging path costs without any backend."""

    class NoopLogger(pl.loggers.Logger):
        name, version = "noop", "0"

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    return NoopLogger


def bench(
    pl: Any, mlflow_logger: Any, server: MlflowServer, proxy: str, args: argparse.Namespace, repeats: int
) -> dict[str, Any]:
    data = make_data()
    noop = noop_logger_class(pl)
    factories = {
        "no_logger": lambda root: False,
        "noop_logger": lambda root: noop(),
        "mlflow": lambda root: mlflow_logger(experiment_name=f"bench-{pl.__name__}", tracking_uri=server.uri),
        "metrics_absorbed": lambda root: mlflow_logger(
            experiment_name=f"bench-{pl.__name__}", tracking_uri=proxy
        ),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in factories}
    pgid = server.pgid
    assert pgid is not None, "the server is not running"
    for _ in range(repeats):
        for name, factory in factories.items():
            results[name].append(run(pl, data, args.steps, args.warmup, factory, pgid))

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in results[name] if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    per_round = [
        round(m["ms"] / b["ms"], 3) for m, b in zip(results["mlflow"], results["no_logger"], strict=True)
    ]
    base = statistics.median(r["ms"] for r in results["no_logger"])
    noop_ms = statistics.median(r["ms"] for r in results["noop_logger"])
    with_mlflow = statistics.median(r["ms"] for r in results["mlflow"])
    absorbed = statistics.median(r["ms"] for r in results["metrics_absorbed"])
    return {
        "no_logger_ms_per_step": round(base, 4),
        "mlflow_ms_per_step": round(with_mlflow, 4),
        "ratio": round(with_mlflow / base, 3),
        # each round's MLflow run against the no-logger run next to it: robust to slow drift of the machine
        "ratio_per_round": per_round,
        "ratio_per_round_median": round(statistics.median(per_round), 3),
        "overhead_ms_per_step": round(with_mlflow - base, 4),
        "noop_logger_ms_per_step": round(noop_ms, 4),
        "ratio_vs_noop_logger": round(with_mlflow / noop_ms, 3),
        # the same logger with the metric batches answered by a relay without storing them: what logging
        # costs the training process itself when the server's storing work is not on this machine's CPUs
        "metrics_absorbed_ms_per_step": round(absorbed, 4),
        "ratio_metrics_absorbed": round(absorbed / base, 3),
        "ratio_metrics_absorbed_per_round": [
            round(m["ms"] / b["ms"], 3)
            for m, b in zip(results["metrics_absorbed"], results["no_logger"], strict=True)
        ],
        "mlflow_finalize_s": round(statistics.median(r["finalize_s"] for r in results["mlflow"]), 3),
        # the whole fit (logger setup, every step, the final delivery) against the same fit without a
        # logger; the first MLflow run of the process also pays MLflow's imports (in the per-round list)
        "whole_fit_s": {name: median(name, "whole_fit_s") for name in factories},
        "whole_fit_ratio": round(median("mlflow", "whole_fit_s") / median("no_logger", "whole_fit_s"), 3),
        "whole_fit_ratio_per_round": [
            round(m["whole_fit_s"] / b["whole_fit_s"], 3)
            for m, b in zip(results["mlflow"], results["no_logger"], strict=True)
        ],
        "to_first_step_s": {name: median(name, "to_first_step_s") for name in factories},
        # CPU time per step of the training process (training thread + sender thread), and of the server
        "process_cpu_ms_per_step": {name: median(name, "cpu_ms") for name in factories},
        "server_cpu_ms_per_step": {name: median(name, "server_cpu_ms") for name in factories},
        "runs_ms_per_step": {name: [round(r["ms"], 4) for r in rs] for name, rs in results.items()},
        "delivered_per_run": [r["delivered"] for r in results["mlflow"]],
        "lost_per_run": [r["lost"] for r in results["mlflow"]],
    }


def main() -> None:
    if sys.argv[1:2] == ["--absorbing-proxy"]:
        serve_absorbing_proxy(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--reference-repeats",
        type=int,
        default=None,
        help="rounds for pytorch_lightning (default: --repeats); its ratio is large and needs fewer",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 1, 150
    if args.reference_repeats is None or args.quick:
        args.reference_repeats = args.repeats
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
    # other work on the machine moves every figure: the 1-minute load average says how much there was
    load = {"start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-server-") as server_root:
        server = MlflowServer(Path(server_root))
        server.start()
        try:
            with absorbing_proxy(server.uri) as proxy:
                ours = bench(lightning_lib, MLFlowLogger, server, proxy, args, args.repeats)
                load["after_lightning_lib"] = os.getloadavg()[0]
                theirs = (
                    bench(reference, ReferenceLogger, server, proxy, args, args.reference_repeats)
                    if reference is not None
                    else None
                )
        finally:
            server.stop()
    load["end"] = os.getloadavg()[0]
    import mlflow

    print(json.dumps({
        "benchmark": "mlflow_overhead",
        "date": datetime.date.today().isoformat(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "mlflow": mlflow.__version__,
                    "pytorch_lightning": getattr(reference, "__version__", None), "processor": platform.processor(),
                    "threads": args.threads, "cpus": os.cpu_count(),
                    "load_average_1min": {k: round(v, 2) for k, v in load.items()}},
        "setup": {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                  "reference_repeats": args.reference_repeats, "batch_size": BATCH_SIZE,
                  "batches_per_epoch": BATCHES_PER_EPOCH, "log_every_n_steps": 1, "server": "mlflow server, SQLite"},
        "target_ratio": 1.05,
        "lightning_lib": ours,
        "pytorch_lightning": theirs,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
