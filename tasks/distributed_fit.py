"""The ``fit`` task over several processes: the task launches torchrun, each rank runs this module.

The task stays one Prefect task with its retries: it writes a spec (config, prepared data, run key),
runs ``torchrun --standalone --nproc-per-node=N -m tasks.distributed_fit SPEC`` and waits. Rank zero
writes the FitResult and a progress file the task turns into the Prefect progress artifact. torchrun
stops every rank when one fails; the task then raises, Prefect retries it, and the new launch resumes
from the last committed checkpoint of the same run key, as a single-process fit does.

Across nodes (infra/k8s/multinode-training.yaml) torchrun runs on every node with
``--config FILE --run-key KEY`` instead of a spec: rank zero prepares the data and shares it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from pydantic import TypeAdapter

from lightning_lib.callbacks import Callback
from lightning_lib.distributed import launched_by_trainer, launched_externally
from lightning_lib.loggers.redact import redact_text
from lightning_lib.storage import join_uri, open_store, split_uri
from lightning_lib.trainer.arguments import parse_devices, resolve_accelerator
from tasks.config import TrainConfig
from tasks.retry import DistributedFitFailed, DistributedFitRefused
from tasks.run_data import RunData

if TYPE_CHECKING:
    from tasks.training import FitResult

RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"
ERROR_FILE = "error-rank{rank}.json"
_LEASE_POLL_S = 1.0  # how often the parent checks the run key's lease while torchrun runs


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def processes_per_node(config: TrainConfig) -> int:
    """How many processes ``config.trainer`` asks for on this machine (its devices).

    The count comes from a parameter (a UI form, an API call): on CPU it is bounded by the CPUs this
    worker may use, so a parameter cannot make the task launch more processes than the machine runs
    (the library, like Lightning, would oversubscribe).
    """
    trainer = config.trainer
    device_type = resolve_accelerator(trainer.accelerator)
    processes = len(parse_devices(device_type, trainer.devices))
    cpus = usable_cpus()
    if device_type == "cpu" and processes > cpus:
        raise ValueError(
            f"Expected trainer.devices <= {cpus} (the CPUs this worker may use) for a CPU run, "
            f"received {trainer.devices!r} ({processes} processes)."
        )
    return processes


def needs_launch(config: TrainConfig) -> bool:
    """More than one process, and nobody (torchrun) started them yet."""
    if launched_externally() or launched_by_trainer():
        return False
    return processes_per_node(config) * config.trainer.num_nodes > 1


def launch_fit(
    config: TrainConfig,
    prepared: RunData,
    run_key: str,
    init_from: str | None,
    lease_check: Callable[[], None] | None = None,
) -> FitResult:
    """Run the fit under torchrun on this machine's devices and return rank zero's result.

    ``lease_check`` (the run key's ``RunLease.check``, held by this process, not by the ranks) is polled
    while torchrun runs; when it raises (the lease was lost), every rank is killed and its error raised.
    """
    from tasks.training import FitResult

    if config.trainer.num_nodes > 1:
        raise ValueError(
            f"Expected num_nodes=1 for a fit launched by the task, received {config.trainer.num_nodes}: several"
            " machines are started by their own torchrun (see infra/k8s/multinode-training.yaml)."
        )
    nproc = processes_per_node(config)
    with tempfile.TemporaryDirectory(prefix="lightning-lib-ddp-") as work:
        folder = Path(work)
        spec = {
            "config": config.model_dump(mode="json"),
            "prepared": prepared.model_dump(mode="json"),
            "run_key": run_key,
            "init_from": init_from,
            "workdir": str(folder),
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "tasks.distributed_fit",
            "--spec",
            str(folder / "spec.json"),
        ]
        returncode, tail = _run_forwarding(
            command, folder / PROGRESS_FILE, f"Training {run_key}", lease_check=lease_check
        )
        errors = [json.loads(p.read_text()) for p in sorted(folder.glob("error-rank*.json"))]
        if returncode != 0 or not (folder / RESULT_FILE).exists():
            # a rank's own error decides (bad input is refused); the others' are what its death caused
            permanent = [e for e in errors if not e["transient"] and not e["collateral"]]
            if permanent:
                first = permanent[0]
                raise DistributedFitRefused(
                    redact_text(f"Rank {first['rank']} failed: {first['type']}: {first['message']}")
                )
            detail = "; ".join(f"rank {e['rank']}: {e['type']}: {e['message']}" for e in errors) or tail
            raise DistributedFitFailed(
                redact_text(
                    f"torchrun ({nproc} processes) exited with code {returncode}; the run resumes from its"
                    f" last committed checkpoint when retried. {detail}"
                )
            )
        return FitResult.model_validate_json((folder / RESULT_FILE).read_text())


def _run_forwarding(
    command: list[str],
    progress_file: Path,
    description: str,
    lease_check: Callable[[], None] | None = None,
    poll_s: float = _LEASE_POLL_S,
) -> tuple[int, str]:
    """Run torchrun, echoing its output and keeping the last lines; mirror the progress file to Prefect.

    Every ``poll_s`` seconds ``lease_check`` is called; if it raises, the process group is killed at once
    (SIGKILL, no SIGTERM): on SIGTERM the ranks would save a checkpoint into a folder whose run key another
    fit holds now, which is the mixing the lease exists to prevent. Its exception is then raised.
    """
    from tasks.progress import PrefectProgress, in_prefect_run

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # its own process group: a cancelled or timed-out task ends every rank, not just torchrun
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True
    )
    tail: deque[str] = deque(maxlen=30)
    progress = PrefectProgress(description=description) if in_prefect_run() else None
    stop = threading.Event()
    try:
        if progress is not None:
            progress.start(None, None, (0, 0))  # here: the artifact is created in the task run's context
        mirror = threading.Thread(target=_mirror_progress, args=(progress_file, progress, stop), daemon=True)
        mirror.start()
        assert proc.stdout is not None
        # the output is read by a thread so that this one can poll the lease while torchrun runs
        reader = threading.Thread(target=_forward_output, args=(proc.stdout, tail), daemon=True)
        reader.start()
        while True:
            try:
                returncode = proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                if lease_check is None:
                    continue
                try:
                    lease_check()
                except BaseException:
                    _end_group(proc, graceful=False)
                    raise
        reader.join(timeout=10)  # the ranks may outlive torchrun a moment, holding the pipe open
    finally:
        stop.set()
        if proc.poll() is None:  # interrupted here (cancellation, timeout): no rank may go on alone
            _end_group(proc)
    mirror.join(timeout=10)
    if progress is not None:
        progress.finish(done=returncode == 0)
    return returncode, "\n".join(tail)


def _forward_output(stream: Any, tail: deque[str]) -> None:
    for line in stream:
        sys.stdout.write(line)
        tail.append(line.rstrip())


def _end_group(proc: subprocess.Popen[str], graceful: bool = True) -> None:
    steps = ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)) if graceful else ((signal.SIGKILL, 10.0),)
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # SIGTERM first: the ranks checkpoint at their next batch boundary
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _mirror_progress(path: Path, progress: Any, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        if progress is None or not path.exists():
            continue
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now: read it next time
        progress.update(state["step"], state["epoch"], state.get("total"), state.get("max_epochs"))


class ProgressFile(Callback):
    """Rank zero's fit progress as a small JSON file, rewritten at most once a second."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._written = 0.0
        self._static: dict[str, Any] = {}

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from tasks.progress import planned_steps

        self._static = {"total": planned_steps(trainer), "max_epochs": trainer.max_epochs}
        self._write(trainer)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if time.monotonic() - self._written >= self.interval:
            self._write(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer)

    def _write(self, trainer: Any) -> None:
        if not trainer.is_global_zero:
            return
        state = {**self._static, "step": trainer.global_step, "epoch": trainer.current_epoch}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.path)
        self._written = time.monotonic()


# ---- the worker: one per rank, started by torchrun -------------------------------------------------------
def _report_error(workdir: Path | None, exc: BaseException) -> None:
    from tasks.retry import is_transient

    if workdir is None:
        return
    rank = int(os.environ.get("RANK", "0"))
    # a rank that dies with an exception says whether retrying can help (torchrun only sees exit codes), and
    # whether its error is only the echo of another rank's death (a broken connection, a stop request)
    report = {
        "rank": rank,
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "transient": is_transient(exc),
        "collateral": is_collateral(exc),
    }
    (workdir / ERROR_FILE.format(rank=rank)).write_text(json.dumps(report))


_PEER_FAILURE_SIGNS = (
    "connection reset",
    "connection closed",
    "broken pipe",
    "timed out",
    "socket",
    "gloo",
    "nccl",
)


def is_collateral(exc: BaseException) -> bool:
    """Whether ``exc`` is what a rank sees when another rank dies or the run is stopped, not a cause."""
    from lightning_lib.utilities.exceptions import SIGTERMException

    if isinstance(exc, SIGTERMException | KeyboardInterrupt | dist.DistError):
        return True
    # the Trainer turns an interrupt into SystemExit(1) after its graceful shutdown, as Lightning does
    if isinstance(exc, SystemExit) and isinstance(exc.__cause__, KeyboardInterrupt):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(sign in text for sign in _PEER_FAILURE_SIGNS)


def _prepared_by_rank_zero(config: TrainConfig, timeout: float = 1800.0) -> RunData:
    """Across nodes without a spec: rank zero prepares the data (into shared storage, e.g. S3); the other
    ranks find it at its content address (same source bytes, same split) once its manifest is written.

    A project's own data module is identified by rank zero alone (its ``prepare_data`` runs there first,
    then in each node's ``Trainer.fit`` as Lightning runs it); the other ranks neither log nor commit, so
    they go without the fingerprint."""
    from tasks.data import MANIFEST_NAME, load_prepared, prepare, prepared_folder
    from tasks.project_data import ProjectData, identify

    rank_zero = int(os.environ.get("RANK", "0")) == 0
    if config.data is None:
        if rank_zero:
            return identify(config)
        return ProjectData(
            datamodule=config.datamodule, dataset_id="identified-by-rank-zero", fingerprint=None
        )
    if rank_zero:
        return prepare(config)
    folder = prepared_folder(config)
    root, name = split_uri(join_uri(folder, MANIFEST_NAME))
    store = open_store(root)
    deadline = time.monotonic() + timeout
    while not store.exists(name):  # the manifest is written last: its presence means the splits are there
        if time.monotonic() > deadline:
            raise TimeoutError(f"Rank 0 did not prepare the data at {folder} within {timeout:.0f}s.")
        time.sleep(1.0)
    # a previous run's manifest may be there while rank 0 rewrites identical splits: each file is replaced
    # atomically (local rename, S3 put), and the content is the same
    return load_prepared(join_uri(folder, MANIFEST_NAME))


def worker_main(argv: list[str] | None = None) -> int:
    """One rank: rebuild the fit from the spec (or config) and run it; rank zero writes the result."""
    from tasks.training import fit_model

    parser = argparse.ArgumentParser(prog="python -m tasks.distributed_fit")
    parser.add_argument("--spec", type=Path, help="written by the fit task")
    parser.add_argument("--config", type=Path, help="a TrainConfig YAML file (multi-node jobs)")
    parser.add_argument("--run-key", help="with --config: the run's key")
    args = parser.parse_args(argv)
    workdir: Path | None = None
    try:
        if args.spec is not None:
            spec = json.loads(args.spec.read_text())
            workdir = Path(spec["workdir"])
            config = TrainConfig.model_validate(spec["config"])
            prepared = TypeAdapter(RunData).validate_python(spec["prepared"])
            run_key, init_from = spec["run_key"], spec["init_from"]
        else:
            if args.config is None or not args.run_key:
                parser.error("expected --spec, or --config with --run-key")
            config = TrainConfig.from_yaml(args.config, [])
            prepared = _prepared_by_rank_zero(config)
            run_key, init_from = args.run_key, None
        progress = [ProgressFile(workdir / PROGRESS_FILE)] if workdir is not None else []
        result = fit_model(
            config, prepared, run_key, init_from, progress_artifact=False, extra_callbacks=progress
        )
        if workdir is not None and int(os.environ.get("RANK", "0")) == 0:
            (workdir / RESULT_FILE).write_text(result.model_dump_json())
        return 0
    except BaseException as exc:
        _report_error(workdir, exc)
        raise


if __name__ == "__main__":
    sys.exit(worker_main())
