"""The ``reproduce`` flow: run a past MLflow run again and say whether its metrics come out the same.

It rebuilds the config from the run's ``config.*`` params and checks, before any work, that the code
(git commit, clean work tree) and the data (sha256 of the source) are the ones the run used; a
difference is refused with the reason unless the caller allows it. The rerun goes through the
``training`` flow (without registering), then every metric the original run has is compared.
"""

from __future__ import annotations

import math
from typing import Annotated

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from flows.summary import metrics_table, mlflow_lines
from flows.training import training
from tasks.config import TrainConfig
from tasks.data import input_digest
from tasks.follow import mlflow_link, say
from tasks.naming import flow_parameter, name_or_fallback, readable_name, scheduled_time
from tasks.project_data import identify
from tasks.runs import CodeVersion, RunRecord, current_code_version, read_run, run_metrics
from tasks.sources import LISTING_ARTIFACT, SourceListing, compare
from tasks.tracking import resolve_tracking_uri
from tasks.training import LISTING_ARTIFACT_PATH


class ReproductionRefused(ValueError):
    """The code or the data differ from the original run's, or it did not finish (never retried:
    rerunning will not fix it)."""


FINISHED = "FINISHED"


def check_finished(record: RunRecord, allow_unfinished_run: bool) -> str | None:
    """Refuse a run that did not end FINISHED, before anything is read or trained.

    A FAILED run most likely fails again the same way, after retraining up to the failure; a KILLED or
    still RUNNING one has partial metrics to compare with. So only finished runs are reproduced unless
    the caller allows it; then the waiver is returned, said up front and repeated in the result.
    """
    if record.status == FINISHED:
        return None
    reason = (
        f"the original run ended {record.status}"
        if record.status != "RUNNING"
        else ("the original run is still RUNNING (or was never ended)")
    )
    if not allow_unfinished_run:
        raise ReproductionRefused(
            f"Not reproducing MLflow run {record.run_id}: {reason}, so its metrics are not a finished "
            "run's and the rerun would likely end the same way. Pass allow_unfinished_run=True "
            "(--allow-unfinished-run) to rerun it anyway."
        )
    return reason


class ReproduceResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    original_run_id: str
    reproduced_run_id: str
    match: bool
    message: str
    original_metrics: dict[str, float]
    reproduced_metrics: dict[str, float]
    differences: dict[str, float]  # metric -> |original - reproduced|, only those that differ


def check_reproducible(
    record: RunRecord,
    code: CodeVersion,
    input_sha256: str | None,
    allow_code_change: bool,
    allow_data_change: bool,
    data_difference: str | None = None,
) -> list[str]:
    """Why this run cannot be repeated as it was (empty when it can); raises unless allowed."""
    code_reasons: list[str] = []
    if record.git_commit is None:
        code_reasons.append("the original run has no git commit tag")
    elif code.git_commit != record.git_commit:
        code_reasons.append(f"the code is at commit {code.git_commit}, the run used {record.git_commit}")
    if record.git_dirty:
        code_reasons.append("the original run was made from a work tree with uncommitted changes")
    if code.git_dirty:
        code_reasons.append("the work tree has uncommitted changes")
    data_reasons: list[str] = []
    if record.input_sha256 is None:
        data_reasons.append("the original run has no data digest tag")
    elif input_sha256 is None:
        data_reasons.append(f"the data module {record.config.datamodule} now declares no data_sources()")
    elif record.input_sha256 != input_sha256:
        if record.config.data is not None:
            what = f"the data at {record.config.data.source} has sha256"
        else:
            what = "the data module's sources have fingerprint"
        data_reasons.append(data_difference or f"{what} {input_sha256}, the run used {record.input_sha256}")
    refused = (code_reasons if not allow_code_change else []) + (
        data_reasons if not allow_data_change else []
    )
    if refused:
        hints = []
        if code_reasons and not allow_code_change:
            hints.append("allow_code_change=True (--allow-code-change)")
        if data_reasons and not allow_data_change:
            hints.append("allow_data_change=True (--allow-data-change)")
        raise ReproductionRefused(
            f"Not reproducing MLflow run {record.run_id}: "
            + "; ".join(refused)
            + f". Pass {' and '.join(hints)} "
            "to run it anyway (the metrics may then differ)."
        )
    return code_reasons + data_reasons


def current_data(tracking_uri: str, record: RunRecord, config: TrainConfig) -> tuple[str | None, str | None]:
    """The data's digest now and, when it differs from the run's, what differs first.

    A table is hashed (its bytes); a project's data module is identified as a fit would (its
    ``prepare_data``, then the fingerprint of its ``data_sources()``), and a changed fingerprint is
    compared with the listing logged to the original run, naming the first object added, removed or
    changed (or, without that artifact, the first source that differs)."""
    if config.data is not None:
        return input_digest(config), None
    now = identify(config)
    if now.digest is None or record.input_sha256 in (None, now.digest):
        return now.digest, None
    listing = now.listing()
    original = original_listing(tracking_uri, record.run_id)
    difference = compare(original, listing) if original is not None and listing is not None else None
    if difference is None:
        return now.digest, (
            f"the data module's sources have fingerprint {now.digest}, the run used {record.input_sha256} "
            "(the run's listing artifact is missing, so the first differing object cannot be named)"
        )
    return now.digest, f"the data differs from the run's: {difference.message}"


def original_listing(tracking_uri: str, run_id: str) -> SourceListing | None:
    """The listing of data sources logged to run ``run_id``, or None when it has none."""
    import tempfile

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="lightning-lib-listing-") as folder:
        try:
            path = MlflowClient(tracking_uri).download_artifacts(
                run_id, f"{LISTING_ARTIFACT_PATH}/{LISTING_ARTIFACT}", folder
            )
        except (MlflowException, OSError):
            return None
        with open(path, "rb") as handle:
            return SourceListing.from_bytes(handle.read())


def compare_metrics(
    original: dict[str, float], reproduced: dict[str, float], rel_tol: float = 0.0
) -> tuple[bool, dict[str, float]]:
    """Every metric of the original run, compared; missing ones count as different (difference inf)."""
    differences: dict[str, float] = {}
    for name, value in sorted(original.items()):
        other = reproduced.get(name)
        if other is None:
            differences[name] = math.inf
        elif not (other == value or math.isclose(other, value, rel_tol=rel_tol, abs_tol=0.0)):
            differences[name] = abs(other - value)
    return not differences, differences


def reproduce_run_name() -> str:
    """``flow_run_name`` of the reproduce flow: the run reproduced and the date."""
    return name_or_fallback(
        "reproduce",
        lambda: readable_name("reproduce", str(flow_parameter("run_id"))[:12], scheduled_time()),
    )


@flow(
    name="reproduce",
    flow_run_name=reproduce_run_name,
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def reproduce(
    run_id: Annotated[str, Field(min_length=1)],
    tracking_uri: str | None = None,
    allow_code_change: bool = False,
    allow_data_change: bool = False,
    rel_tol: Annotated[float, Field(ge=0.0)] = 0.0,
    allow_unfinished_run: bool = False,
) -> ReproduceResult:
    """Rerun MLflow run ``run_id`` from its recorded config and compare the metrics (exact by default).

    Only a run that ended FINISHED is reproduced unless ``allow_unfinished_run`` (see
    :func:`check_finished`).

    Args:
        run_id: The MLflow run to reproduce.
        tracking_uri: The MLflow server that has it; `None` means `MLFLOW_TRACKING_URI`, else the local
            SQLite file.
        allow_code_change: Rerun although the code differs from the run's git commit (or has
            uncommitted changes); the metrics may then differ.
        allow_data_change: Rerun although the data's digest differs from the run's.
        rel_tol: Relative tolerance of the metric comparison; 0 means exactly equal.
        allow_unfinished_run: Rerun a run that did not end FINISHED (failed, killed or still running).
    """
    uri = resolve_tracking_uri(tracking_uri)
    record = read_run(uri, run_id)
    unfinished = check_finished(record, allow_unfinished_run)
    if unfinished:
        print(f"Reproducing MLflow run {run_id} although {unfinished} (allowed): it may fail the same way.")
    config = record.config.model_copy(
        update={
            "run_key": None,
            "mlflow": record.config.mlflow.model_copy(
                update={"tracking_uri": uri, "registered_model_name": None}
            ),
        }
    )
    digest, difference = current_data(uri, record, config)
    waived = check_reproducible(
        record, current_code_version(), digest, allow_code_change, allow_data_change, difference
    )
    if unfinished:
        waived.insert(0, unfinished)
    result = training(config, register_model=False)
    reproduced = run_metrics(uri, result.mlflow_run_id)
    match, differences = compare_metrics(record.metrics, reproduced, rel_tol)
    verdict = "match" if match else f"differ in {len(differences)} of {len(record.metrics)} metrics"
    exactness = "exactly" if rel_tol == 0 else f"within rel_tol={rel_tol}"
    message = f"Metrics of run {result.mlflow_run_id} {verdict} those of run {run_id}" + (
        f" ({exactness})." if match else "."
    )
    if waived:
        message += " Allowed differences: " + "; ".join(waived) + "."
    print(message)
    say("MLflow run of the reproduction: %s", mlflow_link(uri, record.experiment_id, result.mlflow_run_id))
    create_markdown_artifact(
        "\n".join(
            [
                f"# Reproduction of `{run_id}`",
                "",
                message,
                "",
                metrics_table({"original": record.metrics, "reproduced": reproduced}),
                "",
                *mlflow_lines(uri, record.experiment_id, result.mlflow_run_id),
            ]
        ),
        key="reproduce-summary",
    )
    return ReproduceResult(
        original_run_id=run_id,
        reproduced_run_id=result.mlflow_run_id,
        match=match,
        message=message,
        original_metrics=record.metrics,
        reproduced_metrics=reproduced,
        differences=differences,
    )


__all__ = [
    "ReproduceResult",
    "ReproductionRefused",
    "check_finished",
    "check_reproducible",
    "compare_metrics",
    "reproduce",
    "reproduce_run_name",
]
