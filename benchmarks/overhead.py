"""Per-step overhead of lightning_lib and pytorch_lightning against a raw PyTorch loop.

Prints one JSON object on stdout. For each model the three implementations train the same
network on the same pre-generated tensors through the same kind of DataLoader; their runs are
interleaved (raw, lightning_lib, pytorch_lightning, raw, ...) so that drift in the machine's
speed hits all of them alike, and the median over repeats is reported.

What a "step" costs: the time between the starts of consecutive ``training_step`` calls (or
loop-body starts for the raw loop), so batch fetching, backward, the optimizer, ``self.log``,
logger writes and progress-bar updates are all inside it, while trainer construction, setup and
teardown are not. The first ``warmup`` steps are excluded.

The Lightning runs keep the default CSVLogger and the TQDM progress bar enabled. The bar's
output is redirected at the Python level (``contextlib.redirect_stdout``/``redirect_stderr``)
onto a sink that writes to ``os.devnull``. By default (``--progress-to tty``) the sink reports
``isatty() == True``: lightning_lib draws bars only on a terminal, so without this it would skip
the per-step drawing that pytorch_lightning always does and the comparison would be unfair. With
``--progress-to file`` the sink is a plain file, as in CI logs or a pipeline worker.
Logs go to a temporary directory removed afterwards.

Usage: ``python benchmarks/overhead.py [--quick] [--repeats N] [--threads N] [--progress-to tty|file]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import importlib
import io
import itertools
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timed_module import build_mlp as build_net
from timed_module import timed_classifier  # benchmarks/ is this script's sys.path[0]
from torch.utils.data import DataLoader, TensorDataset

BATCH_SIZE = 64
IMPLEMENTATIONS = ("raw", "lightning_lib", "pytorch_lightning")


@dataclass(frozen=True)
class Case:
    """One model to time: its layer widths, dataset size and step counts."""

    name: str
    widths: tuple[int, ...]
    num_samples: int
    steps: int
    warmup: int


def cases(quick: bool) -> list[Case]:
    # Tiny: the framework's own cost dominates. Wide: compute dominates, overhead should vanish.
    # Datasets hold several batches so epoch boundaries (and their hooks) are part of the cost.
    if quick:
        return [
            Case("tiny_mlp", (32, 64, 10), 64 * 16, steps=60, warmup=10),
            Case("wide_mlp", (1024, 4096, 4096, 10), 64 * 4, steps=6, warmup=2),
        ]
    return [
        Case("tiny_mlp", (32, 64, 10), 64 * 128, steps=2000, warmup=100),
        Case("wide_mlp", (1024, 4096, 4096, 10), 64 * 16, steps=30, warmup=5),
    ]


def make_data(case: Case) -> TensorDataset:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(case.num_samples, case.widths[0], generator=gen)
    y = torch.randint(0, case.widths[-1], (case.num_samples,), generator=gen)
    return TensorDataset(x, y)


def make_loader(data: TensorDataset) -> DataLoader:
    return DataLoader(data, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(0))


class TerminalSink(io.TextIOWrapper):
    """Text stream onto ``os.devnull`` that claims to be a terminal, so progress bars draw fully."""

    def __init__(self) -> None:
        super().__init__(open(os.devnull, "wb"), encoding="utf-8")  # noqa: SIM115 - closed with the sink

    def isatty(self) -> bool:
        return True


def open_sink(progress_to: str) -> io.TextIOBase:
    return TerminalSink() if progress_to == "tty" else open(os.devnull, "w")


Timing = tuple[float, float]  # (mean, median) milliseconds per step of one run


def ms_per_step(stamps: list[float], warmup: int) -> Timing:
    """Mean and median interval between step starts after the warm-up, in milliseconds.

    The mean carries the periodic costs (logger flushes, epoch ends) and is the headline figure;
    the median shows the typical step and shrugs off hiccups from other processes on the machine.
    """
    timed = stamps[warmup:]
    intervals = [1000.0 * (b - a) for a, b in itertools.pairwise(timed)]
    return statistics.fmean(intervals), statistics.median(intervals)


def run_raw(case: Case, data: TensorDataset) -> Timing:
    torch.manual_seed(0)
    net = build_net(case.widths)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = make_loader(data)
    net.train()
    stamps: list[float] = []
    while len(stamps) < case.steps:
        for x, y in loader:
            stamps.append(time.perf_counter())
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            if len(stamps) == case.steps:
                break
    return ms_per_step(stamps, case.warmup)


def run_lightning(pl: Any, case: Case, data: TensorDataset, progress_to: str = "tty") -> Timing:
    """Fit with ``max_steps`` on a module whose training_step records when it starts."""
    stamps: list[float] = []

    Timed = timed_classifier(pl, lambda: build_net(case.widths), lambda: stamps.append(time.perf_counter()))

    torch.manual_seed(0)
    model = Timed()
    batches_per_epoch = math.ceil(len(data) / BATCH_SIZE)
    with tempfile.TemporaryDirectory(prefix="overhead-bench-") as root, open_sink(progress_to) as sink:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=case.steps,
            # Enough epochs to reach max_steps, stated explicitly so no default decides it.
            max_epochs=math.ceil(case.steps / batches_per_epoch) + 1,
            default_root_dir=root,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=True,
        )
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            trainer.fit(model, train_dataloaders=make_loader(data))
    if len(stamps) != case.steps:
        raise RuntimeError(f"{pl.__name__} ran {len(stamps)} training steps, expected {case.steps}.")
    return ms_per_step(stamps, case.warmup)


def _run_framework(pl: Any, progress_to: str, case: Case, data: TensorDataset) -> Timing:
    return run_lightning(pl, case, data, progress_to)


def import_optional(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def quiet_frameworks() -> None:
    # Startup banners and "few workers" hints would clutter stderr; they cost nothing per step.
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning_lib"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None  # empty: that framework is not installed


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a / b, 3)


def summarise(case: Case, samples: dict[str, list[Timing]]) -> dict[str, Any]:
    """Median over repeats of each run's mean (headline) and median (typical) step time."""
    result: dict[str, Any] = {"steps": case.steps, "warmup": case.warmup, "widths": list(case.widths)}
    mean = {i: _median([m for m, _ in v]) for i, v in samples.items()}
    typical = {i: _median([t for _, t in v]) for i, v in samples.items()}
    for impl in IMPLEMENTATIONS:
        result[f"{impl}_ms_per_step"] = _round(mean[impl], 4)
    for impl in IMPLEMENTATIONS[1:]:
        result[f"{impl}_vs_raw"] = _ratio(mean[impl], mean["raw"])
        own, raw = mean[impl], mean["raw"]
        result[f"{impl}_overhead_ms_per_step"] = None if own is None or raw is None else round(own - raw, 4)
    result["lightning_lib_vs_pytorch_lightning"] = _ratio(mean["lightning_lib"], mean["pytorch_lightning"])
    for impl in IMPLEMENTATIONS:
        result[f"{impl}_typical_ms_per_step"] = _round(typical[impl], 4)
    for impl in IMPLEMENTATIONS[1:]:
        result[f"{impl}_typical_vs_raw"] = _ratio(typical[impl], typical["raw"])
    result["runs_mean_ms_per_step"] = {i: [round(m, 4) for m, _ in v] for i, v in samples.items()}
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, one repeat: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5, quick 1)")
    # One thread by default: intra-op parallelism on a small machine adds noise, not insight.
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every run")
    parser.add_argument(
        "--progress-to",
        choices=("tty", "file"),
        default="tty",
        help="where the (enabled) progress bar writes: a fake terminal or a plain file, both /dev/null",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if repeats < 1:
        parser.error(f"Expected --repeats >= 1, received {repeats}.")

    torch.set_num_threads(args.threads)
    frameworks = {name: import_optional(name) for name in IMPLEMENTATIONS[1:]}
    quiet_frameworks()  # after the imports, which install their own logging handlers and levels
    runners: dict[str, Callable[[Case, TensorDataset], Timing]] = {"raw": run_raw}
    for name, module in frameworks.items():
        if module is not None:
            runners[name] = functools.partial(_run_framework, module, args.progress_to)

    results: dict[str, Any] = {}
    for case in cases(args.quick):
        data = make_data(case)
        samples: dict[str, list[Timing]] = {impl: [] for impl in IMPLEMENTATIONS}
        for _ in range(repeats):
            for impl, runner in runners.items():
                gc.collect()
                samples[impl].append(runner(case, data))
        results[case.name] = summarise(case, samples)

    report = {
        "benchmark": "training step overhead vs a raw PyTorch loop",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {name: getattr(m, "__version__", None) if m else None for name, m in frameworks.items()},
        "batch_size": BATCH_SIZE,
        "repeats": repeats,
        "quick": args.quick,
        "progress_to": args.progress_to,
        "models": results,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report


if __name__ == "__main__":
    main()
