"""One run key, one run: what a fit checks before it trains (issue 14, points 4 to 6).

:func:`hold_run_key` is the start of every fit. In order, before any training, checkpoint or MLflow write:

1. **One fit at a time.** It takes the run key's lease (:mod:`tasks.lease`) in the checkpoint folder; a
   second fit of the key is refused with the holder named. The lease is renewed while the fit runs and
   released when it ends, also on failure; a holder that crashed is taken over (see ``tasks.lease``).
2. **The config the run started with.** The first fit of a run key writes ``run.json`` into its checkpoint
   folder (once, with a conditional put): the config as flat params and the digest of the input data. The
   MLflow run keeps the same config as its ``config.*`` params and the digest as its ``data.input_sha256``
   tag. Two copies, so that neither a wiped checkpoint folder nor a deleted MLflow run loses it: a fit
   compares its config with ``run.json``, or with the MLflow run's params when the folder has no record
   (a run started before this check existed, or a wiped folder). The record is read as the current
   code would write it (:func:`normalise`): a field added since the run started compares as its default,
   so a run recorded before ``data.num_classes`` existed still resumes. Any difference is refused,
   naming each field with both values. Policy: refuse rather than start a new run, because the run key is the run's
   identity (one checkpoint folder, one MLflow run, what ``reproduce`` reads back); a changed config is a
   new run and gets a new run key (a warm start from the old run's checkpoint is ``init_from``).
   Locations and presentation may change between attempts (``checkpoint_root``, ``data.data_root``,
   ``data.source`` when the bytes are the same, the MLflow tracking URI, experiment and registered
   model name, ``trainer.enable_progress_bar``); everything that decides what is trained may not.
3. **Lost checkpoints.** When the folder holds no committed checkpoint while the key's MLflow run has
   metric history, and either ``run.json`` is gone too (the folder was wiped or is on a fresh bucket) or
   the MLflow run recorded a checkpoint (``checkpoint.latest.uri``), the checkpoints were lost: a fit
   would start from step 0 and append a second copy of every metric to that run. Refused, naming the
   MLflow run, its last step and the empty folder, and what to do. Policy: refuse rather than start a new
   MLflow run for the key, since two runs under one key would make every later lookup ambiguous. A first
   attempt that died before its first commit keeps ``run.json`` and never recorded a checkpoint, so its
   retry still starts over from step 0. It replays that attempt's steps exactly, as any resume replays the
   steps after its checkpoint, and the MLflow logger does not send again a point the run has recorded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import typing
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from lightning_lib.callbacks import Callback
from lightning_lib.checkpoint import list_committed
from lightning_lib.distributed import launched_by_trainer, launched_externally
from lightning_lib.storage import ObjectNotFound, PreconditionFailed, join_uri, open_store
from tasks.config import PARAMS_PREFIX, TrainConfig
from tasks.factory import checkpoint_dir
from tasks.lease import Holder, RunLease, held_by_ancestor
from tasks.params import flatten
from tasks.tracking import tracking_uri

if TYPE_CHECKING:
    from lightning_lib.storage import ObjectStore
    from tasks.run_data import RunData
    from tasks.runs import KeyedRun

log = logging.getLogger(__name__)

RECORD_NAME = "run.json"
# as tasks.training tags the run (imported here it would be a cycle): a table's sha256, or the fingerprint
# of a project data module's sources
TAG_INPUT_SHA256 = "data.input_sha256"
TAG_FINGERPRINT = "data.fingerprint"
TAG_LATEST_CHECKPOINT = "checkpoint.latest.uri"
DATA_FIELD = "data (input_sha256)"

# Where things are and how they are shown, not what is trained: these may change between attempts.
NOT_COMPARED = frozenset(
    PARAMS_PREFIX + name
    for name in (
        "run_key",
        "checkpoint_root",
        "data.data_root",
        "data.source",
        "mlflow.tracking_uri",
        "mlflow.experiment_name",
        "mlflow.registered_model_name",
        "trainer.enable_progress_bar",
    )
)


class RunConfigMismatchError(ValueError):
    """A run key was started with another config (or data) than this fit's: refused, never retried."""


class LostCheckpointsError(LookupError):
    """A run key's MLflow run has history but its checkpoints are gone: refused, never retried."""


def _show(value: str | None, limit: int = 200) -> str:
    if value is None:
        return "(absent)"
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _default_param(name: str) -> str | None:
    """The flat param text of config field ``name``'s default, or None (required, or not a field of a
    section: a ``model_kwargs`` key has no default)."""
    model: Any = TrainConfig
    parts = name[len(PARAMS_PREFIX) :].split(".")
    for depth, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return None
        info = fields[part]
        if depth < len(parts) - 1:
            # an optional section (``data: DataConfig | None``) holds the fields of its model
            members = typing.get_args(info.annotation) or (info.annotation,)
            model = next((m for m in members if hasattr(m, "model_fields")), None)
            continue
        if info.is_required():
            return None
        value = to_jsonable_python(info.get_default(call_default_factory=True))
        return flatten({"v": value}).get("v")  # None when a non-empty mapping would expand
    return None


def normalise(recorded: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    """The recorded params as this version writes them: a field the record lacks (it did not exist when
    the run started) reads as its default, and values read back the way the current code encodes them.

    Policy: a run started before a field existed is the same run as long as the current config leaves
    that field at its default; set to anything else, the field is named as a difference. The record is
    validated by ``TrainConfig`` with the fields that are not compared (locations) taken from the current
    config, so a moved folder cannot make it invalid. A record that no longer validates (a field since
    removed, a bound since tightened) falls back to filling in only the defaults of the missing fields,
    and whatever still differs is named.
    """
    config_params = {n: v for n, v in recorded.items() if n.startswith(PARAMS_PREFIX)}
    others = {n: v for n, v in recorded.items() if not n.startswith(PARAMS_PREFIX)}
    probe = {n: v for n, v in config_params.items() if n not in NOT_COMPARED}
    probe.update({n: v for n, v in current.items() if n in NOT_COMPARED})
    try:
        flat = TrainConfig.from_flat_params(probe).to_flat_params()
    except ValueError:  # pydantic's ValidationError is one
        defaults = {
            n: _default_param(n) for n in current if n.startswith(PARAMS_PREFIX) and n not in recorded
        }
        flat = {**{n: v for n, v in defaults.items() if v is not None}, **config_params}
    return {**flat, **others}


def differences(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """``field: recorded -> current`` for every compared config field (and the data digest) that differs,
    after :func:`normalise` (a field the record predates compares as its default)."""
    recorded = normalise(recorded, current)
    names = {n for n in (*recorded, *current) if n.startswith(PARAMS_PREFIX) or n == DATA_FIELD}
    out = []
    for name in sorted(names - NOT_COMPARED):
        before, now = recorded.get(name), current.get(name)
        if before is not None and now is not None and before == now:
            continue
        if name == DATA_FIELD and (before is None or now is None):
            continue  # a record without the digest cannot tell
        label = name[len(PARAMS_PREFIX) :] if name.startswith(PARAMS_PREFIX) else name
        out.append(f"{label}: started with {_show(before)}, now {_show(now)}")
    return out


def _current(config: TrainConfig, prepared: RunData) -> dict[str, str]:
    current = config.to_flat_params()
    if prepared.digest is not None:  # a data module that declares no sources has no digest to compare
        current[DATA_FIELD] = prepared.digest
    return current


def _read_record(store: ObjectStore) -> dict[str, Any] | None:
    try:
        data = json.loads(store.get_bytes(RECORD_NAME))
    except ObjectNotFound:
        return None
    except ValueError as exc:
        raise RunConfigMismatchError(
            f"Expected {join_uri(store.uri, RECORD_NAME)} to be the JSON record of the config the run key "
            f"started with, received unreadable content ({exc}); restore it, or use another run_key."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise RunConfigMismatchError(
            f"Expected {join_uri(store.uri, RECORD_NAME)} to hold the run's 'params', received "
            f"{type(data).__name__} without them; restore it, or use another run_key."
        )
    return data


def _recorded_params(record: Mapping[str, Any] | None, run: KeyedRun | None) -> tuple[dict[str, str], str]:
    if record is not None:
        params = {str(k): str(v) for k, v in record["params"].items()}
        if record.get("input_sha256"):
            params[DATA_FIELD] = str(record["input_sha256"])
        return params, "its record"
    if run is not None and any(n.startswith(PARAMS_PREFIX) for n in run.params):
        params = dict(run.params)
        digest = run.tags.get(TAG_INPUT_SHA256) or run.tags.get(TAG_FINGERPRINT)
        if digest:
            params[DATA_FIELD] = digest
        return params, f"the params of its MLflow run {run.run_id}"
    return {}, ""


def check_run_identity(config: TrainConfig, prepared: RunData, run_key: str, store: ObjectStore) -> None:
    """Points 2 and 3 of the module docstring; writes ``run.json`` when the run key is new to the folder."""
    from tasks.runs import find_keyed_run, last_logged_step

    uri = tracking_uri(config)
    record = _read_record(store)
    run = find_keyed_run(uri, config.mlflow.experiment_name, run_key)
    current = _current(config, prepared)
    recorded, source = _recorded_params(record, run)
    if recorded:
        changed = differences(recorded, current)
        if changed:
            raise RunConfigMismatchError(
                f"Run key {run_key!r} was started with another config ({source} in "
                f"{store.uri if record is not None else 'MLflow'}); this fit would resume it with: "
                + "; ".join(changed)
                + ". Refused before training: one run key is one run. Run again with the config it started "
                "with, or give the new config a new run_key (init_from warm-starts from a checkpoint)."
            )
    if run is not None and run.metric_names and not list_committed(store):
        recorded_checkpoint = run.tags.get(TAG_LATEST_CHECKPOINT)
        if record is None or recorded_checkpoint:
            step = last_logged_step(uri, run)
            what = f"it recorded checkpoint {recorded_checkpoint}" if recorded_checkpoint else "no run.json"
            raise LostCheckpointsError(
                f"Run key {run_key!r} has no committed checkpoint in {store.uri} ({what}), but its MLflow run "
                f"{run.run_id} (experiment {run.experiment_id}, {run.status}) has history up to step {step}: "
                "the checkpoints were lost. A fit would start from step 0 and log a second copy of every "
                "metric into that run, so nothing was trained. Restore the checkpoints into that folder to "
                "continue the run; or train from scratch under a new run_key (or after deleting that MLflow "
                f"run: mlflow runs delete --run-id {run.run_id})."
            )
    if record is None:
        body = {
            "run_key": run_key,
            "params": config.to_flat_params(),
            "input_sha256": prepared.digest,
            "created": time.time(),
        }
        with contextlib.suppress(PreconditionFailed):  # written meanwhile: compared at the next fit
            store.put_bytes(
                RECORD_NAME, json.dumps(body, indent=1, sort_keys=True).encode(), if_none_match=True
            )


class LeaseGuard(Callback):
    """Stops the fit at its next batch when its lease was lost, before it trains, logs or commits more."""

    def __init__(self, lease: RunLease) -> None:
        self.lease = lease

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.lease.check()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self.lease.check()


def _end_crashed_attempt(
    config: TrainConfig, run_key: str, holder: Holder, renewed_at: float, why: str
) -> None:
    """The attempt that held the lease died (a SIGKILL, a lost machine): its MLflow run, left RUNNING, ends
    KILLED at that attempt's last sign of life before this fit reopens it."""
    from tasks.runs import end_crashed_attempt

    what = f"the attempt of {holder.describe(renewed_at)} died ({why})"
    try:
        run_id = end_crashed_attempt(
            tracking_uri(config), config.mlflow.experiment_name, run_key, renewed_at, what
        )
    except Exception as exc:  # the record of a crash must not stop its recovery
        log.warning(
            "Could not mark the MLflow run of run key %s KILLED (%s: %s).", run_key, type(exc).__name__, exc
        )
        return
    if run_id is not None:
        log.warning(
            "Marked MLflow run %s of run key %s KILLED: %s; this fit resumes it.", run_id, run_key, what
        )


def _rank() -> int | None:
    """This process's global rank when it is one of several started by a launcher, else None."""
    if launched_externally() or launched_by_trainer():
        return int(os.environ.get("RANK", "0"))
    return None


@contextlib.contextmanager
def hold_run_key(config: TrainConfig, prepared: RunData, run_key: str) -> Iterator[list[Any]]:
    """Hold the run key for the body (see the module docstring); yields the callbacks the fit adds.

    Under torchrun, the fit task that launched the ranks holds the lease and made the checks: its ranks
    go ahead. Without such a parent (a multi-node job started by torchrun itself) rank zero takes the
    lease and checks; the other ranks follow rank zero (torchrun stops them if it is refused).
    """
    store = open_store(checkpoint_dir(config, run_key))
    rank = _rank()
    if rank is not None and (rank != 0 or held_by_ancestor(store, run_key) is not None):
        yield []
        return
    lease = RunLease.acquire(store, run_key).start()
    try:
        check_run_identity(config, prepared, run_key, store)
        if lease.crashed is not None:
            _end_crashed_attempt(config, run_key, *lease.crashed)
        yield [LeaseGuard(lease)]
    finally:
        lease.release()


__all__ = [
    "NOT_COMPARED",
    "RECORD_NAME",
    "LeaseGuard",
    "LostCheckpointsError",
    "RunConfigMismatchError",
    "check_run_identity",
    "differences",
    "hold_run_key",
    "normalise",
]
