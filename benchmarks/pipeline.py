"""What running training as the ``training`` flow costs against a plain ``Trainer.fit``, in one run.

Prints one JSON object. Both sides train the bundled digits model on the same prepared Parquet splits
(the example config, ``--epochs`` epochs, CPU):

- ``plain``: ``seed_everything``, the data module and model built by hand, ``Trainer(...).fit`` with the
  Trainer's defaults (CSVLogger, ModelCheckpoint) in a temporary folder;
- ``flow``: ``flows.training.training(config)`` on embedded defaults (Prefect's temporary local API,
  MLflow on SQLite, checkpoints in a local folder): prepare (cached after the first round), fit with the
  MLflow logger and the Prefect progress artifact, validate, test, register, the summary artifact.

Per step: the median interval between the ends of consecutive training steps (the steady-state cost of a
step, logging and checkpoint hooks included), and the mean over the whole fit (epoch-end validation and
checkpoint saves included). Fixed overhead: the flow's wall time minus the plain fit's, minus the
per-step difference times the steps. Rounds alternate plain/flow so drift hits both alike; medians
are reported. The temporary Prefect API is started before the first round and not counted. All rounds share
one checkpoint root (each run has its own run key under it): the embedded MLflow database beside it is
created once, as on a user's machine, not once per round.

Usage: ``python benchmarks/pipeline.py [--epochs N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LIGHTNING_LIB_ALLOWED_IMPORTS", "benchmarks.")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # embedded defaults: the SQLite store under the run folder
os.environ.pop("PREFECT_API_URL", None)

import torch  # noqa: E402

import lightning_lib as pl  # noqa: E402
from benchmarks import pipeline_model  # noqa: E402
from flows.defaults import load_config  # noqa: E402
from tasks.config import TrainConfig  # noqa: E402
from tasks.data import prepare  # noqa: E402
from tasks.factory import build_datamodule  # noqa: E402

MODEL = "benchmarks.pipeline_model:TimedDigitsClassifier"


def step_times(ends: list[float]) -> tuple[float, float]:
    """(median, mean) interval between consecutive step ends, in ms."""
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    return statistics.median(gaps) * 1e3, statistics.fmean(gaps) * 1e3


def run_plain(config: TrainConfig, root: Path) -> dict[str, Any]:
    prepared = prepare(config)  # outside the timing: the flow's prepare_data is cached after round one
    pipeline_model.STEP_ENDS.clear()
    start = time.perf_counter()
    pl.seed_everything(config.seed)
    datamodule = build_datamodule(config, prepared)
    model = config.load_model_class()(**config.model_kwargs)
    kwargs = {k: v for k, v in config.trainer.to_kwargs().items() if v is not None}
    trainer = pl.Trainer(**kwargs, default_root_dir=str(root))
    trainer.fit(model, datamodule=datamodule)
    wall = time.perf_counter() - start
    median, mean = step_times(pipeline_model.STEP_ENDS)
    return {"wall_s": wall, "steps": trainer.global_step, "median_ms": median, "mean_ms": mean}


def run_flow(config: TrainConfig) -> dict[str, Any]:
    from flows.training import training

    pipeline_model.STEP_ENDS.clear()
    start = time.perf_counter()
    result = training(config)
    wall = time.perf_counter() - start
    median, mean = step_times(pipeline_model.STEP_ENDS)
    return {"wall_s": wall, "steps": result.fit.global_step, "median_ms": median, "mean_ms": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    rounds: dict[str, list[dict[str, Any]]] = {"plain": [], "flow": []}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        from prefect.testing.utilities import prefect_test_harness  # a temporary API, like the embedded one

        sink = io.StringIO()
        with prefect_test_harness(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            for i in range(args.repeats):
                base = load_config(
                    None,
                    [f"model={MODEL}", f"trainer.max_epochs={args.epochs}", f"model_kwargs.t_max={args.epochs}",
                     "trainer.enable_progress_bar=false", f"checkpoint_root={tmp}/checkpoints"],
                )  # fmt: skip
                rounds["plain"].append(run_plain(base, Path(tmp) / f"plain-{i}"))
                rounds["flow"].append(run_flow(base))

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[side])

    steps = rounds["flow"][0]["steps"]
    per_step_extra_s = (med("flow", "mean_ms") - med("plain", "mean_ms")) / 1e3
    fixed = med("flow", "wall_s") - med("plain", "wall_s") - per_step_extra_s * steps
    print(
        json.dumps(
            {
                "benchmark": "pipeline",
                "model": "digits MLP (64->128->10), batch 64, Adam",
                "epochs": args.epochs,
                "steps": steps,
                "repeats": args.repeats,
                "threads": args.threads,
                "plain_fit_wall_s": round(med("plain", "wall_s"), 3),
                "flow_wall_s": round(med("flow", "wall_s"), 3),
                "flow_fixed_overhead_s": round(fixed, 3),
                "plain_median_ms_per_step": round(med("plain", "median_ms"), 4),
                "flow_median_ms_per_step": round(med("flow", "median_ms"), 4),
                "per_step_ratio_median": round(med("flow", "median_ms") / med("plain", "median_ms"), 4),
                "plain_mean_ms_per_step": round(med("plain", "mean_ms"), 4),
                "flow_mean_ms_per_step": round(med("flow", "mean_ms"), 4),
                "per_step_ratio_mean": round(med("flow", "mean_ms") / med("plain", "mean_ms"), 4),
                "rounds": rounds,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "load_avg_1m": os.getloadavg()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
