"""The ``reproduce`` flow: run a past MLflow run again and say whether its metrics come out the same.

It rebuilds the config from the run's ``config.*`` params and checks, before any work, that the code
(git commit, clean work tree) and the data (sha256 of the source) are the ones the run used; a
difference is refused with the reason unless the caller allows it. The rerun goes through the
``training`` flow (without registering), then every metric the original run has is compared.
"""

from __future__ import annotations

import math

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict

from flows.summary import metrics_table, mlflow_lines
from flows.training import training
from tasks.data import input_digest
from tasks.runs import CodeVersion, RunRecord, current_code_version, read_run, run_metrics
from tasks.tracking import resolve_tracking_uri


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
    record: RunRecord, code: CodeVersion, input_sha256: str, allow_code_change: bool, allow_data_change: bool
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
    elif record.input_sha256 != input_sha256:
        data_reasons.append(
            f"the data at {record.config.data.source} has sha256 {input_sha256}, the run used {record.input_sha256}"
        )
    refused = (code_reasons if not allow_code_change else []) + (
        data_reasons if not allow_data_change else []
    )
    if refused:
        hints = []
        if code_reasons and not allow_code_change:
            hints.append("allow_code_change=True")
        if data_reasons and not allow_data_change:
            hints.append("allow_data_change=True")
        raise ReproductionRefused(
            f"Not reproducing MLflow run {record.run_id}: "
            + "; ".join(refused)
            + f". Pass {' and '.join(hints)} "
            "to run it anyway (the metrics may then differ)."
        )
    return code_reasons + data_reasons


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


@flow(name="reproduce", persist_result=True, result_serializer="json", log_prints=True)
def reproduce(
    run_id: str,
    tracking_uri: str | None = None,
    allow_code_change: bool = False,
    allow_data_change: bool = False,
    rel_tol: float = 0.0,
    allow_unfinished_run: bool = False,
) -> ReproduceResult:
    """Rerun MLflow run ``run_id`` from its recorded config and compare the metrics (exact by default).

    Only a run that ended FINISHED is reproduced unless ``allow_unfinished_run`` (see
    :func:`check_finished`)."""
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
    waived = check_reproducible(
        record, current_code_version(), input_digest(config), allow_code_change, allow_data_change
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
]
