"""The pipeline's latency (issue 13), each figure with its baseline measured in the same run.

Prints one JSON object with four parts (``--only`` picks some):

- ``flow``: in one process, on embedded defaults (a temporary local Prefect API started before the first
  round and not counted, MLflow on SQLite, local checkpoints), rounds alternate three ways of training the
  bundled digits model for ``--epochs`` epochs on the same prepared Parquet splits:

  * ``plain``: ``Trainer(...).fit`` with the Trainer's defaults (CSVLogger, one checkpoint per epoch);
  * ``bare``: a bare ``@flow`` that only builds the pipeline's MLflow logger and ModelCheckpoint (the
    same settings as the ``fit`` task: model logging, curves, system metrics, best + last) and calls
    ``Trainer.fit``: the baseline of target 1;
  * ``training``: ``flows.training.training(config)``: prepare (cached), fit, validate, test, register,
    the summary artifact.

  Figures: wall time of each (median over rounds), ``training - bare`` (target <= 0.5 s), and the time
  from the end of the last training step until the flow returns (target < 2 s), for the first round
  (``cold``: the process's first fit, as in a CLI run or a deployment's flow-run process) and the median
  of the other rounds (``warm``). For the two flows, the same figures also up to the flow run's
  Completed state (its timestamp, set when the flow's work and its result are done), and
  ``prefect_tail_s``, from Completed until the call returns: Prefect 3.9 then joins its flow-run
  heartbeat thread, which sleeps in whole seconds from the flow run's start, so a flow's wall time
  moves in steps of about 1 s whatever its own work (a flow whose work ends just past a step pays
  nearly 1 s more than one ending just before it). The flows run as ``lightning-lib train`` runs them on
  the temporary API, without flow-run heartbeats (``flows.embedded.run_settings``), which removes that
  wait; ``--flow-heartbeats`` keeps them, as in served runs.
- ``demo``: ``lightning-lib train`` (what ``make demo`` runs) in a subprocess, in an empty folder: with a
  ``PREFECT_HOME`` that has no database (the temporary API creates it: an install that did not prepare
  it), then with a home whose database was created as ``make install`` creates it (its time recorded),
  the first run after that install and a second one; wall time to exit (target < 15 s), and the time
  from the last training step to the printed result. ``--baseline-tree`` runs the same with another checkout
  on ``PYTHONPATH`` (the code before a change) in the same run.
- ``deployment``: a ``prefect server start`` and ``lightning-lib serve`` against it; on the idle served
  process, ``--deployment-runs`` runs of the ``training`` deployment submitted one after the other
  (``run_deployment(timeout=0)``), each timed from submission until the runner picked it up (Pending:
  its process is being started) and until it is Running (that process has imported the flow); target:
  started within 2 s. Served three ways: as ``serve`` does (runs forked from a forkserver that has
  imported the flows, polled every second; timed once the forkserver is ready), the baseline with
  Prefect's own start (``LIGHTNING_LIB_SERVE_START_METHOD=spawn``: a fresh interpreter per run), and
  Prefect's defaults alone (spawn, ``PREFECT_RUNNER_POLL_FREQUENCY=10``). Each run is cancelled once
  Running, and its final state is recorded (Cancelled: the cancellation reached its process); the next run
  is submitted once it ended. Then on a process work pool (``--deployment-setups pool``): ``prefect
  work-pool create --type process``, the deployments registered on it by ``lightning-lib serve --work-pool
  POOL --source`` this tree, and the same runs on an idle worker of three kinds, one after the other:
  ``lightning-lib worker --pool POOL`` (Prefect's process worker polling every second, runs forked from a
  forkserver that imported the flows; timed once that forkserver is ready), ``prefect worker start`` with
  ``PREFECT_WORKER_QUERY_SECONDS=1`` (the baseline: a fresh supervisor interpreter, then a fresh engine
  interpreter per run) and ``prefect worker start`` with Prefect's defaults (polling every 10 s).

Every part records the 1-minute load average when it starts and ends: on a shared machine these figures
move with other people's work.

Usage: ``python benchmarks/latency.py [--epochs N] [--repeats N] [--only flow,demo,deployment]
[--baseline-tree PATH] [--deployment-runs N] [--deployment-setups serve,pool]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LIGHTNING_LIB_ALLOWED_IMPORTS", "benchmarks.")
for _name, _value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "1")):
    os.environ.setdefault(_name, _value)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # embedded defaults: the SQLite store under the run folder
os.environ.pop("PREFECT_API_URL", None)

MODEL = "benchmarks.pipeline_model:TimedDigitsClassifier"
STEP_FILE_VARIABLE = "LIGHTNING_LIB_BENCH_STEP_FILE"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


# -- part 1 and 2: the flow against a bare flow and a plain fit, in one process ---------------------------


def _config(root: str, epochs: int, tag: str) -> Any:
    from flows.defaults import load_config

    return load_config(
        None,
        [f"model={MODEL}", f"trainer.max_epochs={epochs}", f"model_kwargs.t_max={epochs}",
         "trainer.enable_progress_bar=false", f"checkpoint_root={root}/checkpoints",
         f"data.data_root={root}/prepared"],
    )  # fmt: skip


def _timed(run: Any) -> dict[str, float]:
    from benchmarks import pipeline_model

    pipeline_model.STEP_ENDS.clear()
    start = time.perf_counter()
    wall_offset = time.time() - start  # the Completed state's timestamp is wall-clock time
    state = run()
    end = time.perf_counter()
    ends = pipeline_model.STEP_ENDS
    timed = {
        "wall_s": end - start,
        "to_first_step_s": ends[0] - start,
        "after_last_step_s": end - ends[-1],
        "steps": len(ends),
    }
    if state is not None:  # a flow run's final state
        if not state.is_completed():
            raise RuntimeError(f"Expected the flow run to complete, received {state!r}.")
        completed = state.timestamp.timestamp() - wall_offset
        timed.update(
            to_completed_s=completed - start,
            after_last_step_to_completed_s=completed - ends[-1],
            prefect_tail_s=end - completed,
        )
    return timed


def part_flow(epochs: int, repeats: int, heartbeats: bool = False) -> dict[str, Any]:
    import torch
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    import lightning_lib as pl
    from flows.embedded import run_settings
    from flows.training import training
    from lightning_lib.callbacks import ModelCheckpoint
    from tasks.data import prepare
    from tasks.factory import build_datamodule, build_logger, build_trainer, checkpoint_dir

    torch.set_num_threads(1)

    def plain(config: Any, root: Path) -> None:
        prepared = prepare(config)
        pl.seed_everything(config.seed)
        datamodule = build_datamodule(config, prepared)
        model = config.load_model_class()(**config.model_kwargs)
        kwargs = {k: v for k, v in config.trainer.to_kwargs().items() if v is not None}
        pl.Trainer(**kwargs, default_root_dir=str(root)).fit(model, datamodule=datamodule)

    @flow(name="bare-fit")
    def bare(config: Any, run_key: str) -> None:
        prepared = prepare(config)
        pl.seed_everything(config.seed)
        datamodule = build_datamodule(config, prepared)
        model = config.load_model_class()(**config.model_kwargs)
        checkpoint = ModelCheckpoint(
            dirpath=checkpoint_dir(config, run_key), **config.checkpoint.callback_kwargs()
        )
        trainer = build_trainer(config, [checkpoint], build_logger(config, run_key))
        trainer.fit(model, datamodule=datamodule)

    def runner(way: str, config: Any, tag: str) -> Any:
        if way == "plain":
            return lambda: plain(config, Path(config.checkpoint_root).parent / tag)
        # the flows' final states (the same runs; the state carries when the run was Completed)
        if way == "bare":
            return lambda: bare(config, f"bare-{tag}-{time.time_ns()}", return_state=True)
        return lambda: training(config, return_state=True)

    rounds: dict[str, list[dict[str, float]]] = {"plain": [], "bare": [], "training": []}
    loads = {"start": load()}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        sink = io.StringIO()
        try:
            with (
                prefect_test_harness(server_startup_timeout=300),
                # as `lightning-lib train` runs flows on the temporary API: no flow-run heartbeats (with
                # them, as in served runs, each flow's end waits 0-1 s more for the heartbeat thread)
                contextlib.nullcontext() if heartbeats else run_settings(),
                contextlib.redirect_stdout(sink),
                contextlib.redirect_stderr(sink),
            ):
                prepare(_config(tmp, epochs, "prepare"))  # the Parquet splits, shared by all (cached)
                for i in range(repeats):
                    # the order rotates: the first fit of the process pays the imports, once per way
                    order = ["training", "bare", "plain"][i % 3 :] + ["training", "bare", "plain"][: i % 3]
                    for way in order:
                        config = _config(tmp, epochs, f"{way}-{i}")
                        rounds[way].append(_timed(runner(way, config, f"{way}-{i}")))
        finally:
            os.chdir(cwd)
    loads["end"] = load()

    def fig(way: str, key: str, which: str) -> float | None:
        values = [r[key] for r in rounds[way] if key in r]
        if not values:
            return None
        if which == "cold":
            return round(values[0], 3)
        return median(values[1:] if len(values) > 1 else values)

    warm_extra = [
        t["wall_s"] - b["wall_s"] for t, b in zip(rounds["training"][1:], rounds["bare"][1:], strict=True)
    ]
    warm_extra_completed = [
        t["to_completed_s"] - b["to_completed_s"]
        for t, b in zip(rounds["training"][1:], rounds["bare"][1:], strict=True)
    ]
    flows = ("bare", "training")
    return {
        "epochs": epochs,
        "flow_run_heartbeats": heartbeats,
        "steps": rounds["training"][0]["steps"],
        "repeats": repeats,
        "load_avg_1m": loads,
        "wall_s": {way: {"warm_median": fig(way, "wall_s", "warm")} for way in rounds},
        "training_minus_bare_s": {
            "warm_median_of_walls": round(
                (fig("training", "wall_s", "warm") or 0) - (fig("bare", "wall_s", "warm") or 0), 3
            ),
            "per_round": [round(x, 3) for x in warm_extra],
            "target_s": 0.5,
        },
        "after_last_step_s": {
            way: {
                "cold": fig(way, "after_last_step_s", "cold"),
                "warm_median": fig(way, "after_last_step_s", "warm"),
            }
            for way in rounds
        },
        "after_last_step_target_s": 2.0,
        "up_to_completed_state": {
            "to_completed_s": {way: {"warm_median": fig(way, "to_completed_s", "warm")} for way in flows},
            "training_minus_bare_s": {
                "warm_median_of_differences": median(warm_extra_completed),
                "per_round": [round(x, 3) for x in warm_extra_completed],
            },
            "after_last_step_s": {
                way: {
                    "cold": fig(way, "after_last_step_to_completed_s", "cold"),
                    "warm_median": fig(way, "after_last_step_to_completed_s", "warm"),
                }
                for way in flows
            },
            "prefect_tail_s": {way: {"warm_median": fig(way, "prefect_tail_s", "warm")} for way in flows},
        },
        "to_first_step_s": {way: {"warm_median": fig(way, "to_first_step_s", "warm")} for way in rounds},
        "rounds": {way: [{k: round(v, 3) for k, v in r.items()} for r in rs] for way, rs in rounds.items()},
        "note": "cold = the first round of the process, whichever way ran it first (the order rotates per round)",
    }


# -- part 4: the demo command end to end -------------------------------------------------------------


def _run_cli(tree: Path, home: Path, cwd: Path, epochs: int, timeout: float) -> dict[str, Any]:
    cwd.mkdir(parents=True, exist_ok=True)
    step_file = cwd / "last-step.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DO_NOT_TRACK"))}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(tree), LIGHTNING_LIB_ALLOWED_IMPORTS="benchmarks.")
    env[STEP_FILE_VARIABLE] = str(step_file)
    command = [sys.executable, "-m", "flows.cli", "train", f"model={MODEL}", f"trainer.max_epochs={epochs}",
               f"model_kwargs.t_max={epochs}"]  # fmt: skip
    start_wall = time.time()
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, str]] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.perf_counter() - start, line.rstrip()))
    code = process.wait(timeout)
    wall = time.perf_counter() - start
    text = "\n".join(line for _, line in lines)

    def when(pattern: str) -> float | None:
        return next((t for t, line in lines if re.search(pattern, line)), None)

    result_at = when(r"^Training finished")
    last_step = float(step_file.read_text()) - start_wall if step_file.exists() else None
    return {
        "exit_code": code,
        "wall_s": round(wall, 2),
        "api_notice_at_s": when(r"Starting temporary server"),
        "flow_run_begins_at_s": when(r"Beginning flow run"),
        "last_step_at_s": None if last_step is None else round(last_step, 2),
        "result_printed_at_s": result_at,
        "after_last_step_to_result_s": None
        if last_step is None or result_at is None
        else round(result_at - last_step, 2),
        "traceback": "Traceback" in text,
        "telemetry_notice": "telemetry" in text.lower(),
        "progress_lines": sum("Starting Prefect's temporary local API:" in line for _, line in lines),
        "tail": [line for _, line in lines[-3:]] if code else [],
    }


def _prepare_database(home: Path, timeout: float) -> float:
    """Seconds to create Prefect's local database in ``home``, as ``make install`` does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env=env, capture_output=True, check=True, timeout=timeout,
    )  # fmt: skip
    return round(time.perf_counter() - start, 2)


def part_demo(epochs: int, trees: dict[str, Path], timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {"load_avg_1m": {"start": load()}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, tree in trees.items():
            runs: dict[str, Any] = {}
            # no Prefect database at all: the first run after an install that did not prepare it
            fresh = Path(tmp) / f"{name}-fresh-home"
            runs["fresh_prefect_home"] = _run_cli(tree, fresh, Path(tmp) / f"{name}-fresh", epochs, timeout)
            # what `make install` does since issue 13, then the first and a second run
            home = Path(tmp) / f"{name}-home"
            runs["install_prepares_database_s"] = _prepare_database(home, timeout)
            for attempt in ("first_run_after_install", "second_run"):
                runs[attempt] = _run_cli(tree, home, Path(tmp) / f"{name}-{attempt}", epochs, timeout)
            out[name] = runs
    out["load_avg_1m"]["end"] = load()
    out["target_wall_s"] = 15.0
    return out


# -- part 3: a deployment run's start on an idle served process -------------------------------------------


# what ``serve`` (or ``lightning-lib worker``) logs once its runs start from the forkserver, or when they
# start Prefect's way after all
_FORKSERVER_LOG = re.compile(r"runs start (from a forkserver|Prefect's way)")
POOL = "latency-process-pool"


def _client_env(server: Any, *dropped: str) -> dict[str, str]:
    """This tree's environment for a served or worker process talking to ``server`` (and nothing else)."""
    drop = ("PREFECT_", "LIGHTNING_LIB_SERVE_", *dropped)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(server.env(), PYTHONPATH=str(REPO), LIGHTNING_LIB_ALLOWED_IMPORTS="benchmarks.")
    return env


def _wait_forkserver(log: Path, started: float, deadline: float) -> float | None:
    """Seconds from ``started`` until the process logging to ``log`` had its forkserver ready (None: its runs
    start Prefect's way after all)."""
    while time.monotonic() < deadline:
        found = _FORKSERVER_LOG.search(log.read_text(errors="replace"))
        if found:
            return round(time.perf_counter() - started, 2) if found[1] != "Prefect's way" else None
        time.sleep(0.2)
    return None


def _time_runs(client: Any, root: Path, runs: int, epochs: int) -> list[dict[str, Any]]:
    """Submit ``runs`` runs of the ``training`` deployment one at a time on an idle runner or worker, each
    timed until picked up (Pending) and Running, then cancelled and waited for (its final state kept)."""
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    results: list[dict[str, Any]] = []
    for _ in range(runs):
        config = _config(str(root), epochs, "deployment").model_dump(mode="json")
        submitted = time.perf_counter()
        flow_run = run_deployment("training/training", parameters={"config": config}, timeout=0)
        seen: dict[str, float] = {}
        while time.perf_counter() - submitted < 120 and "RUNNING" not in seen:
            state = client.read_flow_run(flow_run.id).state
            kind = state.type.value if state is not None else "NONE"
            seen.setdefault(kind, time.perf_counter() - submitted)
            time.sleep(0.05)
        with contextlib.suppress(Exception):
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        # the cancelled run's process ends (a worker sees the cancellation at its next poll); then idle again
        deadline = time.monotonic() + 60
        final = client.read_flow_run(flow_run.id).state
        while time.monotonic() < deadline and (final is None or not final.is_final()):
            time.sleep(0.5)
            final = client.read_flow_run(flow_run.id).state
        time.sleep(3.0)
        results.append({
            "picked_up_s": round(seen.get("PENDING", seen.get("RUNNING", float("nan"))), 2),
            "running_s": round(seen.get("RUNNING", float("nan")), 2),
            "final_state": final.type.value if final is not None else None,
        })  # fmt: skip
    return results


def _serve_and_time(
    server: Any, root: Path, poll: str | None, start_method: str | None, runs: int, epochs: int
) -> tuple[float | None, list[dict[str, Any]]]:
    """Serve, wait until idle (the forkserver ready), submit ``runs`` runs one at a time; returns the
    seconds from starting ``serve`` until its forkserver was ready (None: not used) and each run's times."""
    from prefect.client.orchestration import get_client

    from tests.prefect_server import kill_group, spawn

    env = _client_env(server)
    if poll is not None:
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = poll
    if start_method is not None:
        env["LIGHTNING_LIB_SERVE_START_METHOD"] = start_method
    root.mkdir(parents=True, exist_ok=True)
    log = root / "serve.log"
    started = time.perf_counter()
    serve = spawn([sys.executable, "-m", "flows.cli", "serve"], log, env, root)
    ready_s: float | None = None
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    client.read_deployment_by_name("training/training")
                    break
                time.sleep(0.5)
            if start_method != "spawn":
                ready_s = _wait_forkserver(log, started, deadline)
            time.sleep(3.0)  # the runner's first poll is behind it: the served process is idle
            results = _time_runs(client, root, runs, epochs)
    finally:
        kill_group(serve)
    return ready_s, results


def _deploy_to_pool(server: Any, root: Path) -> None:
    """What an operator types: a process work pool, then the deployments on it with this tree as their
    source (the worker's run changes into it and imports the flows from there)."""
    root.mkdir(parents=True, exist_ok=True)
    env = _client_env(server)
    for command in (
        ["-m", "prefect", "work-pool", "create", POOL, "--type", "process"],
        ["-m", "flows.cli", "serve", "--work-pool", POOL, "--source", str(REPO)],
    ):
        subprocess.run([sys.executable, *command], env=env, cwd=root, capture_output=True, check=True,
                       timeout=300)  # fmt: skip


def _worker_and_time(
    server: Any, root: Path, command: list[str], env_extra: dict[str, str], runs: int, epochs: int
) -> tuple[float | None, list[dict[str, Any]]]:
    """Start a worker of the pool (``command``), wait until it polls (and its forkserver is ready, for
    ``lightning-lib worker``), submit ``runs`` runs one at a time; returns the seconds from starting the
    worker until its forkserver was ready (None: not used) and each run's times."""
    from prefect.client.orchestration import get_client

    from tests.prefect_server import kill_group, spawn

    env = _client_env(server) | env_extra
    root.mkdir(parents=True, exist_ok=True)
    log = root / "worker.log"
    started = time.perf_counter()
    worker = spawn([sys.executable, *command], log, env, root)
    ready_s: float | None = None
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not any(
                w.status.value == "ONLINE" for w in client.read_workers_for_work_pool(POOL)
            ):
                time.sleep(0.5)
            if "flows.cli" in command:
                ready_s = _wait_forkserver(log, started, deadline)
            time.sleep(3.0)  # the worker's first poll is behind it: it is idle
            results = _time_runs(client, root, runs, epochs)
    finally:
        kill_group(worker)
    return ready_s, results


def _figures(timed: list[dict[str, Any]], ready_s: float | None, forkserver: bool) -> dict[str, Any]:
    return {
        "runs": timed,
        "picked_up_median_s": median([r["picked_up_s"] for r in timed]),
        "running_median_s": median([r["running_s"] for r in timed]),
    } | ({"forkserver_ready_after_start_s": ready_s} if forkserver else {})


def _ratio(out: dict[str, Any], ours: str, baseline: str) -> float | None:
    a, b = out.get(ours, {}).get("running_median_s"), out.get(baseline, {}).get("running_median_s")
    return round(a / b, 3) if a and b else None


def part_deployment(runs: int, epochs: int, setups: set[str]) -> dict[str, Any]:
    from tests.prefect_server import PrefectServer

    out: dict[str, Any] = {"load_avg_1m": {"start": load()}}
    with tempfile.TemporaryDirectory() as tmp:
        server = PrefectServer(Path(tmp) / "server")
        server.start(timeout=300)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            # Prefect reads the environment once: the flow part may have imported it already
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                if "serve" in setups:
                    ways = (
                        ("serve_default", None, None),
                        ("serve_spawn_baseline", None, "spawn"),
                        ("prefect_defaults_spawn_poll_10s", "10", "spawn"),
                    )
                    for name, poll, start_method in ways:
                        ready_s, timed = _serve_and_time(
                            server, Path(tmp) / name, poll, start_method, runs, epochs
                        )
                        out[name] = _figures(timed, ready_s, start_method is None)
                    out["running_median_ratio_to_spawn"] = _ratio(
                        out, "serve_default", "serve_spawn_baseline"
                    )
                if "pool" in setups:
                    # after serve's setups: deploying moves the same deployments onto the work pool
                    _deploy_to_pool(server, Path(tmp) / "deploy")
                    prefect_worker = ["-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"]
                    ways_pool: tuple[tuple[str, list[str], dict[str, str]], ...] = (
                        ("pool_lightning_lib_worker", ["-m", "flows.cli", "worker", "--pool", POOL], {}),
                        ("pool_prefect_worker_poll_1s", prefect_worker, {"PREFECT_WORKER_QUERY_SECONDS": "1"}),
                        ("pool_prefect_worker_defaults", prefect_worker, {}),
                    )  # fmt: skip
                    for name, command, env_extra in ways_pool:
                        ready_s, timed = _worker_and_time(
                            server, Path(tmp) / name, command, env_extra, runs, epochs
                        )
                        out[name] = _figures(timed, ready_s, "flows.cli" in command)
                    out["pool_running_median_ratio_to_prefect_worker_poll_1s"] = _ratio(
                        out, "pool_lightning_lib_worker", "pool_prefect_worker_poll_1s"
                    )
        finally:
            server.stop()
    out["load_avg_1m"]["end"] = load()
    out["target_s"] = 2.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--only", default="flow,demo,deployment")
    parser.add_argument(
        "--baseline-tree", type=Path, default=None, help="another checkout for the demo's baseline"
    )
    parser.add_argument("--deployment-runs", type=int, default=3)
    parser.add_argument(
        "--deployment-setups",
        default="serve,pool",
        help="deployment part: serve (lightning-lib serve), pool (a process work pool and its workers)",
    )
    parser.add_argument(
        "--flow-heartbeats",
        action="store_true",
        help="flow part: keep Prefect's flow-run heartbeats (served runs' setting; the CLI's runs send none)",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.epochs < 1 or args.repeats < 1 or args.deployment_runs < 1:
        parser.error("Expected --epochs, --repeats and --deployment-runs >= 1.")
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - {"flow", "demo", "deployment"}
    if unknown:
        parser.error(f"Expected --only among flow, demo, deployment; received {sorted(unknown)}.")
    setups = {p.strip() for p in args.deployment_setups.split(",") if p.strip()}
    if not setups or setups - {"serve", "pool"}:
        parser.error(f"Expected --deployment-setups among serve, pool; received {args.deployment_setups!r}.")
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    report: dict[str, Any] = {"benchmark": "latency", "model": "digits MLP (64->128->10), batch 64, Adam"}
    if "flow" in parts:
        report["flow"] = part_flow(args.epochs, args.repeats, args.flow_heartbeats)
    if "demo" in parts:
        trees = {"this_tree": REPO}
        if args.baseline_tree is not None:
            trees["baseline_tree"] = args.baseline_tree.resolve()
        report["demo"] = part_demo(args.epochs, trees, args.timeout)
    if "deployment" in parts:
        report["deployment"] = part_deployment(args.deployment_runs, 1, setups)
    report.update(
        python=platform.python_version(),
        cpus=os.cpu_count(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
