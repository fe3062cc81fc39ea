"""The crash-recovery setup of ``serve`` / ``deploy``: its settings, the two automations as the server
stores them (created once by name) and the deployments' tag and heartbeat. The recovery itself (a
SIGKILLed serving process, Crashed by the automation, rerun, resumed) is shown end to end in
``test_e2e_services.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.deploy import FLOWS, build_deployments, deploy
from flows.recovery import (
    CRASH_AFTER_ENV,
    CRASHED_AUTOMATION,
    HEARTBEAT_ENV,
    RECOVERY_TAG,
    RERUN_AFTER_ENV,
    RERUN_AUTOMATION,
    RERUNS_ENV,
    RecoverySettings,
    crashed_automation,
    ensure_crash_recovery,
    rerun_automation,
    with_recovery,
)

REPO = Path(__file__).resolve().parents[2]


def test_settings_default_to_three_missed_heartbeats_of_prefects_shortest_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (HEARTBEAT_ENV, CRASH_AFTER_ENV, RERUNS_ENV, RERUN_AFTER_ENV):
        monkeypatch.delenv(name, raising=False)
    assert RecoverySettings.from_env() == RecoverySettings(30, 90, 2, 60)
    monkeypatch.setenv(HEARTBEAT_ENV, "40")
    assert RecoverySettings.from_env() == RecoverySettings(40, 120, 2, 60)
    monkeypatch.setenv(CRASH_AFTER_ENV, "45")
    monkeypatch.setenv(RERUNS_ENV, "0")
    monkeypatch.setenv(RERUN_AFTER_ENV, "10")
    assert RecoverySettings.from_env() == RecoverySettings(40, 45, 0, 10)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (HEARTBEAT_ENV, "10", f"Expected {HEARTBEAT_ENV} to be a whole number >= 30, received '10'."),
        (CRASH_AFTER_ENV, "30", f"Expected {CRASH_AFTER_ENV} to be a whole number >= 31, received '30'."),
        (RERUNS_ENV, "-1", f"Expected {RERUNS_ENV} to be a whole number >= 0, received '-1'."),
        (RERUNS_ENV, "two", f"Expected {RERUNS_ENV} to be a whole number >= 0, received 'two'."),
        (RERUN_AFTER_ENV, "5", f"Expected {RERUN_AFTER_ENV} to be a whole number >= 10, received '5'."),
    ],
)
def test_bad_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as error:
        RecoverySettings.from_env()
    assert str(error.value) == expected


def test_a_threshold_within_one_heartbeat_or_a_wait_under_prefects_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Expected crash_after_s > heartbeat_s \(30\).*received 30"):
        RecoverySettings(30, 30, 1)
    with pytest.raises(ValueError, match=r"Expected rerun_after_s >= 10 .*received 9"):
        RecoverySettings(30, 90, 1, 9)


def test_the_crashed_automation_is_a_proactive_heartbeat_trigger_scoped_to_the_tag() -> None:
    automation = crashed_automation(RecoverySettings(30, 75, 2))
    trigger = automation.trigger
    assert trigger.posture.value == "Proactive" and trigger.within.total_seconds() == 75
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed",
    }
    assert trigger.for_each == {"prefect.resource.id"}
    related = trigger.match_related
    related = related[0] if isinstance(related, list) else related
    assert related.model_dump()["prefect.resource.id"] == f"prefect.tag.{RECOVERY_TAG}"
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"


def test_the_rerun_automation_schedules_again_only_the_first_reruns_left_crashed() -> None:
    automation = rerun_automation(RecoverySettings(30, 90, 2, 45))
    trigger = automation.trigger
    # fires once a Crashed run saw no state change for 45 s: a worker's second crash report of the killed
    # attempt has then come and gone, and a person's retry in the meantime is not doubled
    assert trigger.posture.value == "Proactive" and trigger.within.total_seconds() == 45
    assert trigger.after == {"prefect.flow-run.Crashed"}
    assert {
        "prefect.flow-run.Scheduled",
        "prefect.flow-run.Pending",
        "prefect.flow-run.Running",
    } <= trigger.expect
    assert "prefect.flow-run.Crashed" not in trigger.expect and trigger.for_each == {"prefect.resource.id"}
    assert trigger.match.model_dump()["prefect.run-count"] == ["1", "2"]
    (action,) = automation.actions
    assert action.state.value == "SCHEDULED" and action.force
    assert automation.enabled
    assert not rerun_automation(RecoverySettings(30, 90, 0)).enabled


def test_with_recovery_adds_the_tag_and_for_work_pools_the_heartbeat() -> None:
    settings = RecoverySettings(45, 100, 1)
    options = {"parameters": {}, "tags": ["mine", RECOVERY_TAG], "job_variables": {"env": {"A": "1"}}}
    served = with_recovery(options, settings, job_env=False)
    assert served["tags"] == ["mine", RECOVERY_TAG] and served["job_variables"] == {"env": {"A": "1"}}
    pooled = with_recovery({"parameters": {}}, settings, job_env=True)
    assert pooled == {
        "parameters": {},
        "tags": [RECOVERY_TAG],
        "job_variables": {"env": {HEARTBEAT_ENV: "45"}},
    }
    # a value the deployment sets itself wins
    kept = with_recovery({"job_variables": {"env": {HEARTBEAT_ENV: "60"}}}, settings, job_env=True)
    assert kept["job_variables"]["env"][HEARTBEAT_ENV] == "60"


def test_served_deployments_carry_the_recovery_tag() -> None:
    deployments = build_deployments(recovery=RecoverySettings())
    assert {d.name for d in deployments} == set(FLOWS)
    assert all(RECOVERY_TAG in d.tags for d in deployments)


@pytest.mark.usefixtures("prefect_harness")
def test_the_automations_are_created_once_by_name_and_updated_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import SyncPrefectClient, get_client

    updated: list[str] = []
    update = SyncPrefectClient.update_automation

    def spy(self: SyncPrefectClient, automation_id: object, automation: object) -> None:
        updated.append(automation.name)  # type: ignore[attr-defined]
        update(self, automation_id, automation)  # type: ignore[arg-type]

    monkeypatch.setattr(SyncPrefectClient, "update_automation", spy)
    first = ensure_crash_recovery(RecoverySettings(30, 90, 2))
    # the same settings again (a restarted serve): untouched, so the server keeps the heartbeats it saw
    assert ensure_crash_recovery(RecoverySettings(30, 90, 2)) == first and updated == []
    second = ensure_crash_recovery(RecoverySettings(30, 60, 1))
    assert first == second and set(first) == {CRASHED_AUTOMATION, RERUN_AUTOMATION}
    with get_client(sync_client=True) as client:
        (crashed,) = client.read_automations_by_name(CRASHED_AUTOMATION)
        (rerun,) = client.read_automations_by_name(RERUN_AUTOMATION)
    assert updated == [CRASHED_AUTOMATION, RERUN_AUTOMATION]
    assert crashed.trigger.within.total_seconds() == 60  # the second call's settings
    assert rerun.trigger.match.model_dump()["prefect.run-count"] == ["1"]
    assert crashed.actions[0].state.value == "CRASHED" and rerun.actions[0].force


@pytest.mark.usefixtures("prefect_harness")
def test_deploy_tags_the_deployments_sets_the_heartbeat_and_the_automations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    monkeypatch.setenv(HEARTBEAT_ENV, "35")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="recovery-pool", type="process"))
    ids = deploy("recovery-pool", source=str(REPO))
    with get_client(sync_client=True) as client:
        deployments = [client.read_deployment(i) for i in ids]
        crashed = client.read_automations_by_name(CRASHED_AUTOMATION)
    assert all(RECOVERY_TAG in d.tags for d in deployments)
    assert all(d.job_variables["env"][HEARTBEAT_ENV] == "35" for d in deployments)
    assert [a.trigger.within.total_seconds() for a in crashed] == [105]
