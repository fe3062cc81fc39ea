"""Step time and peak GPU memory: a raw PyTorch loop, lightning_lib and pytorch_lightning in one run.

Prints one JSON object on stdout. Two cases: ``tiny_mlp`` (32->64->10, batch 64), where a framework's
own per-step cost dominates, and ``compute_bound`` (1024->8192->8192->8192->10, batch 512, ~143M
parameters, ~10 ms a step in fp32 on an H100), where it should vanish.

Fairness: all three train the same network (built on the device) with Adam(lr=1e-3) through the same
DataLoader over a CPU TensorDataset, ``pin_memory=True`` on CUDA. The raw loop is the best-practice
one: ``non_blocking=True`` copies (as both Lightnings make), ``zero_grad(set_to_none=True)``, no value
read back; under 16-mixed / bf16-mixed it wraps the forward in ``torch.autocast`` (fp16 with a
GradScaler). ``--loader batched`` (default) gives the dataset a BatchSampler's index lists, so a batch
is one gather rather than 64 collated samples and the loader hides no framework overhead. Both
Lightnings run with the flags in ``TRAINER_FLAGS`` (no logger, progress bar, summary or checkpoints:
loops are compared, not loggers) and log ``train_loss`` in ``training_step`` as user code does.

A step is one cycle from the start of ``training_step`` (raw: the start of the forward, after the
copy) to the next. The device is synchronised when step ``warmup`` starts and when step ``warmup +
steps`` starts, never in between, so a framework that syncs or stalls in its hot path pays for it:
ms per step = window time / steps. Runs are interleaved (raw, lightning_lib, pytorch_lightning, raw,
...) for ``--repeats`` rounds; figures are medians over rounds. Peak memory is
``torch.cuda.max_memory_allocated`` (after ``reset_peak_memory_stats``) above what was allocated when
the run started; null on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import importlib
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.util import find_spec
from typing import Any

import torch
import torch.nn.functional as F
from timed_module import build_mlp as build_net
from timed_module import timed_classifier  # benchmarks/ is this script's sys.path[0]
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

IMPLEMENTATIONS = ("raw", "lightning_lib", "pytorch_lightning")
# lightning_lib's step time over the raw loop's, from the issue (pytorch_lightning measured 1.71x
# on the tiny MLP on an H100).
TARGETS = {"tiny_mlp": 1.05, "compute_bound": 1.02}
TRAINER_FLAGS = dict.fromkeys(
    ("logger", "enable_progress_bar", "enable_model_summary", "enable_checkpointing"), False
)
AUTOCAST = {"32-true": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One model to time: layer widths, batch size, batches per epoch and step counts."""

    name: str
    widths: tuple[int, ...]
    batch_size: int
    batches_per_epoch: int
    steps: int
    warmup: int


def cases(quick: bool, steps: int | None) -> list[Case]:
    # Several epochs per run, so epoch boundaries (and their hooks) are inside the timed window.
    if quick:
        tiny = Case("tiny_mlp", (32, 64, 10), 64, 16, steps=30, warmup=5)
        big = Case("compute_bound", (128, 512, 512, 10), 64, 4, steps=6, warmup=2)
    else:
        tiny = Case("tiny_mlp", (32, 64, 10), 64, 64, steps=2000, warmup=200)
        # fwd+bwd ~440 GFLOP a step; Adam then reads and writes ~4 GB of parameters and states.
        big = Case("compute_bound", (1024, 8192, 8192, 8192, 10), 512, 8, steps=100, warmup=10)
    if steps is not None:  # --steps sets the tiny case; the big one times a twentieth of it
        tiny, big = replace(tiny, steps=steps), replace(big, steps=max(3, steps // 20))
    return [tiny, big]


def make_data(case: Case) -> TensorDataset:
    gen = torch.Generator().manual_seed(1234)
    n = case.batch_size * case.batches_per_epoch
    x = torch.randn(n, case.widths[0], generator=gen)
    return TensorDataset(x, torch.randint(0, case.widths[-1], (n,), generator=gen))


def make_loader(data: TensorDataset, case: Case, device: torch.device, kind: str) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    pin = device.type == "cuda"
    if kind == "batched":
        sampler = BatchSampler(RandomSampler(data, generator=gen), case.batch_size, drop_last=False)
        return DataLoader(data, sampler=sampler, batch_size=None, pin_memory=pin)
    return DataLoader(data, batch_size=case.batch_size, shuffle=True, generator=gen, pin_memory=pin)


class Window:
    """Counts step starts; syncs and reads the clock only at the two edges of the timed window."""

    def __init__(self, case: Case, device: torch.device) -> None:
        self.first, self.last = case.warmup, case.warmup + case.steps
        self.device = device
        self.calls = 0
        self.start = self.end = math.nan

    @property
    def done(self) -> bool:
        return self.calls > self.last

    def mark(self) -> None:
        if self.calls in (self.first, self.last):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            self.start, self.end = (now, self.end) if self.calls == self.first else (self.start, now)
        self.calls += 1


def run_raw(case: Case, data: TensorDataset, device: torch.device, precision: str, loader: str) -> Window:
    torch.manual_seed(0)
    net = build_net(case.widths, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    dtype = AUTOCAST[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    window = Window(case, device)
    batches = make_loader(data, case, device, loader)  # one loader for all epochs, as a Trainer keeps
    while not window.done:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            window.mark()
            if window.done:
                break
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
    return window


def run_lightning(
    pl: Any, case: Case, data: TensorDataset, device: torch.device, precision: str, loader: str
) -> Window:
    window = Window(case, device)

    Timed = timed_classifier(pl, lambda: build_net(case.widths, device), window.mark)

    torch.manual_seed(0)
    model = Timed()
    total = window.last + 1  # the step that closes the window runs but is not timed
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as root:
        trainer = pl.Trainer(
            accelerator=device.type,
            devices=1,
            precision=precision,
            max_steps=total,
            max_epochs=math.ceil(total / case.batches_per_epoch) + 1,
            default_root_dir=root,
            **TRAINER_FLAGS,
        )
        trainer.fit(model, train_dataloaders=make_loader(data, case, device, loader))
    if not window.done:
        raise RuntimeError(f"{pl.__name__} ran {window.calls} training steps, expected {total}.")
    return window


Sample = tuple[float, float | None]  # (ms per step, peak MiB above the start) of one run
Runner = Callable[[Case, TensorDataset], Window]


def measure(runner: Runner, case: Case, data: TensorDataset, device: torch.device) -> Sample:
    gc.collect()  # the previous run's model and optimizer states must not count here
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
        window = runner(case, data)
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20 if cuda else None
    return 1000.0 * (window.end - window.start) / (window.last - window.first), peak


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None  # empty: not installed, or on CPU


def _rounded(values: dict[str, float | None], digits: int) -> dict[str, float | None]:
    return {k: None if v is None else round(v, digits) for k, v in values.items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def summarise(case: Case, samples: dict[str, list[Sample]]) -> dict[str, Any]:
    ms = {i: _median([t for t, _ in samples[i]]) for i in IMPLEMENTATIONS}
    mem = {i: _median([m for _, m in samples[i]]) for i in IMPLEMENTATIONS}
    per_round = {
        i: _median([t / r for (t, _), (r, _) in zip(samples[i], samples["raw"])]) for i in IMPLEMENTATIONS[1:]
    }
    ours = _ratio(ms["lightning_lib"], ms["raw"])
    return {
        "widths": list(case.widths),
        "batch_size": case.batch_size,
        "batches_per_epoch": case.batches_per_epoch,
        "steps": case.steps,
        "warmup": case.warmup,
        "ms_per_step": _rounded(ms, 4),
        "vs_raw": {i: _ratio(ms[i], ms["raw"]) for i in IMPLEMENTATIONS[1:]},
        "overhead_ms_per_step": _rounded({i: _diff(ms[i], ms["raw"]) for i in IMPLEMENTATIONS[1:]}, 4),
        "vs_raw_median_of_rounds": _rounded(per_round, 3),
        "lightning_lib_vs_pytorch_lightning": _ratio(ms["lightning_lib"], ms["pytorch_lightning"]),
        "target_lightning_lib_vs_raw": TARGETS[case.name],
        "lightning_lib_meets_target": None if ours is None else ours <= TARGETS[case.name],
        "peak_memory_mib": _rounded(mem, 3),
        "memory_vs_raw": {i: _ratio(mem[i], mem["raw"]) for i in IMPLEMENTATIONS[1:]},
        "runs_ms_per_step": {i: [round(t, 4) for t, _ in v] for i, v in samples.items()},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available")
    parser.add_argument("--precision", choices=tuple(AUTOCAST), default="32-true")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5, quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps of the tiny MLP (default 2000)")
    parser.add_argument("--loader", choices=("batched", "per-sample"), default="batched")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if repeats < 1 or (args.steps is not None and args.steps < 1):
        parser.error(f"Expected --repeats and --steps >= 1, received {repeats} and {args.steps}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("Expected a CUDA device for --device cuda, but torch finds none.")
    if device.type == "cpu" and args.precision == "16-mixed":
        parser.error("Expected --precision 32-true or bf16-mixed on CPU (no fp16 autocast there).")

    # On a small shared CPU, intra-op threads fighting other processes turn a 1 ms step into 80 ms.
    if args.threads is not None or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    # a framework that is not installed gets null figures
    frameworks = {n: importlib.import_module(n) if find_spec(n) else None for n in IMPLEMENTATIONS[1:]}
    # After the imports, which install their own handlers: banners and hints would clutter stderr.
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning_lib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    options = {"device": device, "precision": args.precision, "loader": args.loader}
    runners: dict[str, Runner] = {"raw": functools.partial(run_raw, **options)}
    for name, module in frameworks.items():
        if module is not None:
            runners[name] = functools.partial(run_lightning, module, **options)

    results: dict[str, Any] = {}
    for case in cases(args.quick, args.steps):
        data = make_data(case)
        samples: dict[str, list[Sample]] = {i: [] for i in IMPLEMENTATIONS}
        for _ in range(repeats):
            for impl, runner in runners.items():
                samples[impl].append(measure(runner, case, data, device))
        results[case.name] = summarise(case, samples)

    report = {
        "benchmark": "step time and peak memory vs a raw PyTorch loop",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "torch_cpu_threads": torch.get_num_threads(),
        },
        "versions": {n: getattr(m, "__version__", None) if m else None for n, m in frameworks.items()},
        "precision": args.precision,
        "loader": args.loader,
        "lightning_trainer_flags": TRAINER_FLAGS,
        "lightning_training_step_logs": "self.log('train_loss', loss) every step",
        "repeats": repeats,
        "quick": args.quick,
        "targets_lightning_lib_vs_raw": TARGETS,
        "cases": results,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report


if __name__ == "__main__":
    main()
