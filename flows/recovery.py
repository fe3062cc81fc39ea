"""Crash recovery by the orchestrator: a flow run whose process died is marked Crashed and run again.

A SIGKILLed serving process or worker leaves its flow run RUNNING on the server: nobody is left to report
the crash. ``serve`` and ``deploy`` therefore set up, on the Prefect server, two automations scoped to the
flow runs of this project's deployments (tagged ``lightning-lib``):

- *crashed flow runs*: a proactive trigger on Prefect's flow-run heartbeat (every
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds, at least 30 in Prefect 3): when no heartbeat and no
  terminal state arrives within ``LIGHTNING_LIB_CRASH_AFTER_S`` seconds (default three heartbeats) of the
  last heartbeat, the flow run is set Crashed. ``prefect flow-run retry`` then works too.
- *re-run crashed flow runs*: a flow run that is Crashed (set by the first automation, or by a runner or
  worker that saw its flow process die) and stays untouched for ``LIGHTNING_LIB_RERUN_AFTER_S`` seconds
  (default 60) is scheduled again, at most ``LIGHTNING_LIB_CRASH_RERUNS`` times (default 2; Prefect's
  ``prefect.run-count`` bounds it). The flow run keeps its id, so the training flow derives the same run
  key and resumes from its last committed checkpoint, in the same MLflow run. A person who retries it
  first (``prefect flow-run retry``) is not doubled by the automation.

The wait before the re-run is there because a Prefect 3.9 worker reports a killed flow process twice:
once at once, then again after it has run the flow's crash hooks in a fresh interpreter (seconds to tens
of seconds). Re-run at once, the second report lands on the new attempt, marks it Crashed while it runs,
and the re-run of that starts a third attempt that finds the run key taken. Arriving while the run is
still Crashed, the second report is refused by the server and changes nothing.

Both are created or updated by name, so serving again (or from several machines) never duplicates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

RECOVERY_TAG = "lightning-lib"
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
CRASH_AFTER_ENV = "LIGHTNING_LIB_CRASH_AFTER_S"
RERUNS_ENV = "LIGHTNING_LIB_CRASH_RERUNS"
RERUN_AFTER_ENV = "LIGHTNING_LIB_RERUN_AFTER_S"
CRASHED_AUTOMATION = "lightning-lib: mark flow runs without heartbeat Crashed"
RERUN_AUTOMATION = "lightning-lib: re-run crashed flow runs"

# Prefect 3 sends a flow run's heartbeat at most every 30 s (its settings refuse less); ours default to
# that minimum rather than Prefect's 180 s, so a dead process is found within about 1.5 minutes
MIN_HEARTBEAT_S = 30
DEFAULT_MISSED_HEARTBEATS = 3
DEFAULT_RERUNS = 2
# longer than a worker takes to report a killed process the second time (see above); Prefect's proactive
# triggers wait at least 10 s
DEFAULT_RERUN_AFTER_S = 60
MIN_RERUN_AFTER_S = 10
_TERMINAL = ("Completed", "Failed", "Cancelled", "Crashed")
# every state a flow run can leave Crashed for (the names Prefect's state events carry): any of them
# within the wait means someone else acted on the run
_MOVED_ON = (
    "Scheduled", "Late", "AwaitingRetry", "AwaitingConcurrencySlot", "Pending", "Running", "Retrying",
    "Paused", "Suspended", "Cancelling", "Cancelled", "Completed", "Failed",
)  # fmt: skip


def _int_env(name: str, minimum: int, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"Expected {name} to be a whole number >= {minimum}, received {text!r}.") from None
    if value < minimum:
        raise ValueError(f"Expected {name} to be a whole number >= {minimum}, received {text!r}.")
    return value


@dataclass(frozen=True)
class RecoverySettings:
    """How often flow runs send heartbeats, how long a silent one lives, how often a crashed one reruns
    and how long it stays Crashed before that."""

    heartbeat_s: int = MIN_HEARTBEAT_S
    crash_after_s: int = DEFAULT_MISSED_HEARTBEATS * MIN_HEARTBEAT_S
    reruns: int = DEFAULT_RERUNS
    rerun_after_s: int = DEFAULT_RERUN_AFTER_S

    def __post_init__(self) -> None:
        if self.heartbeat_s < MIN_HEARTBEAT_S:
            raise ValueError(
                f"Expected heartbeat_s >= {MIN_HEARTBEAT_S} (Prefect's shortest heartbeat), "
                f"received {self.heartbeat_s}."
            )
        if self.crash_after_s <= self.heartbeat_s:
            raise ValueError(
                f"Expected crash_after_s > heartbeat_s ({self.heartbeat_s}): a live flow run would be marked "
                f"Crashed between two heartbeats; received {self.crash_after_s}."
            )
        if self.reruns < 0:
            raise ValueError(f"Expected reruns >= 0, received {self.reruns}.")
        if self.rerun_after_s < MIN_RERUN_AFTER_S:
            raise ValueError(
                f"Expected rerun_after_s >= {MIN_RERUN_AFTER_S} (Prefect's shortest proactive trigger), "
                f"received {self.rerun_after_s}."
            )

    @classmethod
    def from_env(cls) -> RecoverySettings:
        """From ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, ``LIGHTNING_LIB_CRASH_AFTER_S``,
        ``LIGHTNING_LIB_CRASH_RERUNS`` and ``LIGHTNING_LIB_RERUN_AFTER_S``, each defaulted when unset; a bad
        value is refused with its name."""
        heartbeat = _int_env(HEARTBEAT_ENV, MIN_HEARTBEAT_S, MIN_HEARTBEAT_S)
        crash_after = _int_env(CRASH_AFTER_ENV, heartbeat + 1, DEFAULT_MISSED_HEARTBEATS * heartbeat)
        reruns = _int_env(RERUNS_ENV, 0, DEFAULT_RERUNS)
        return cls(
            heartbeat,
            crash_after,
            reruns,
            _int_env(RERUN_AFTER_ENV, MIN_RERUN_AFTER_S, DEFAULT_RERUN_AFTER_S),
        )

    def flow_run_env(self) -> dict[str, str]:
        """What a flow run's process needs to send heartbeats at the rate the automation expects."""
        return {HEARTBEAT_ENV: str(self.heartbeat_s)}


def _scope() -> dict[str, str | list[str]]:
    # deployments carry the tag and their flow runs inherit it: other projects' runs on the server are left alone
    return {"prefect.resource.id": f"prefect.tag.{RECOVERY_TAG}", "prefect.resource.role": "tag"}


def crashed_automation(settings: RecoverySettings) -> Any:
    """The automation that sets a flow run Crashed once its heartbeats stopped (Prefect's zombie detection)."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=CRASHED_AUTOMATION,
        description=(
            f"A flow run of a lightning-lib deployment that sent no heartbeat (every {settings.heartbeat_s} s) "
            f"and reached no final state for {settings.crash_after_s} s has lost its process: mark it Crashed."
        ),
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=_scope(),
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{name}" for name in _TERMINAL)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=settings.crash_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=f"No heartbeat for {settings.crash_after_s} s: the flow run's process is gone.",
            )
        ],
    )


def rerun_automation(settings: RecoverySettings) -> Any:
    """The automation that schedules a flow run again once it has stayed Crashed for ``rerun_after_s``
    seconds, while it has run at most ``reruns`` times."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    # prefect.run-count is how many times the flow run has been Running: runs 1..reruns are rerun
    counts = [str(n) for n in range(1, settings.reruns + 1)]
    return AutomationCore(
        name=RERUN_AUTOMATION,
        description=(
            f"Schedule a flow run of a lightning-lib deployment that stayed Crashed for {settings.rerun_after_s} s "
            f"again (as `prefect flow-run retry` does), up to {settings.reruns} times: it keeps its id, so "
            "training resumes under the same run key."
        ),
        enabled=settings.reruns > 0,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*", "prefect.run-count": counts or ["1"]},
            match_related=_scope(),
            after={"prefect.flow-run.Crashed"},
            expect={f"prefect.flow-run.{name}" for name in _MOVED_ON},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=settings.rerun_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                state=StateType.SCHEDULED,
                force=True,  # Crashed is final: only a forced transition leaves it, as the CLI's retry does
                message="Crashed: scheduled again by lightning-lib's crash recovery.",
            )
        ],
    )


def _comparable(automation: Any) -> dict[str, Any]:
    """What an automation does, without its trigger's id (a new one each time the model is built)."""
    fields = {
        "name",
        "description",
        "enabled",
        "trigger",
        "actions",
        "actions_on_trigger",
        "actions_on_resolve",
    }
    dumped = automation.model_dump(mode="json", include=fields)
    dumped["trigger"].pop("id", None)
    return dict(_ordered(dumped))


def _ordered(value: Any) -> Any:
    # the trigger's event names are sets: their order in a dump means nothing
    if isinstance(value, dict):
        return {key: _ordered(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_ordered(item) for item in value]
        return sorted(items) if all(isinstance(item, str) for item in items) else items
    return value


def ensure_crash_recovery(settings: RecoverySettings | None = None) -> dict[str, Any]:
    """Create or update the two automations on the configured Prefect server (by name, so repeated calls
    leave one of each); returns their ids by name.

    An unchanged automation is left as it is: an update gives its trigger a new id, and the server then
    forgets the heartbeats it was waiting on, so a flow run that died just before a restarted ``serve``
    would never be marked Crashed."""
    from prefect.client.orchestration import get_client

    settings = settings or RecoverySettings.from_env()
    ids: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        for automation in (crashed_automation(settings), rerun_automation(settings)):
            existing = client.read_automations_by_name(automation.name)
            if existing:
                if _comparable(existing[0]) != _comparable(automation):
                    client.update_automation(existing[0].id, automation)
                for duplicate in existing[1:]:  # two servings that raced: keep one
                    client.delete_automation(duplicate.id)
                ids[automation.name] = existing[0].id
            else:
                ids[automation.name] = client.create_automation(automation)
    return ids


def with_recovery(options: dict[str, Any], settings: RecoverySettings, *, job_env: bool) -> dict[str, Any]:
    """A deployment's options with the recovery tag (and, for work pools, the heartbeat in the flow
    run's environment: the worker's own settings do not reach the job)."""
    tags = [*options.get("tags", []), RECOVERY_TAG]
    updated = {**options, "tags": list(dict.fromkeys(tags))}
    if job_env:
        variables = dict(options.get("job_variables") or {})
        variables["env"] = {**settings.flow_run_env(), **(variables.get("env") or {})}
        updated["job_variables"] = variables
    return updated


__all__ = [
    "CRASHED_AUTOMATION",
    "CRASH_AFTER_ENV",
    "HEARTBEAT_ENV",
    "RECOVERY_TAG",
    "RERUNS_ENV",
    "RERUN_AFTER_ENV",
    "RERUN_AUTOMATION",
    "RecoverySettings",
    "crashed_automation",
    "ensure_crash_recovery",
    "rerun_automation",
    "with_recovery",
]
