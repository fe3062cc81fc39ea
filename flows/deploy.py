"""Deployments of the flows: served from this process on the embedded setup, or deployed to a work pool.

``serve`` runs every flow in the serving process (no worker needed) with a cron schedule for
``retraining``, which an upstream stage's ``lightning-lib.data.landed`` event also triggers (below);
``deploy`` registers the same deployments on a work pool (process, Docker, Kubernetes) whose workers
pull the code from ``source``. A run is then triggered from the UI, with
``prefect deployment run 'training/training'``, or through the API with ``run_deployment``, the same call
the UI makes.

Event trigger of ``retraining``: an event named ``lightning-lib.data.landed`` whose resource id is
``lightning-lib.data.<registered model name>`` (the model of the config given to ``serve`` / ``deploy``)
starts a run with ``partition`` set to the resource's ``lightning-lib.partition`` label (``YYYY-MM-DD``),
over the deployment's other parameters: the data window is that day. An upstream stage sends it with
``tasks.events.emit_data_landed(model_name, partition, source=None)``; the trigger is an automation owned
by the deployment, replaced whenever the deployment is applied again.

Served runs start from a forkserver (``flows._forkserver``): a process started with ``serve`` imports the
flows once, then forks one process per run, so a run is Running about a second after it is picked up instead
of after a fresh interpreter's ~5 s of imports. ``LIGHTNING_LIB_SERVE_START_METHOD=spawn`` gets Prefect's
own start back (a fresh interpreter per run). Runs on a process work pool start the same way when its worker
is ``lightning-lib worker --pool NAME`` (``flows.worker``) rather than ``prefect worker start``.
"""

from __future__ import annotations

from typing import Any

from flows._forkserver import install_forkserver_starts, start_method
from flows.defaults import load_config, serve_poll_seconds
from flows.pipeline import example_pipeline
from flows.predict import predict_flow
from flows.recovery import RecoverySettings, ensure_crash_recovery, with_recovery
from flows.reproduce import reproduce
from flows.retraining import retraining
from flows.training import training
from tasks.config import TrainConfig
from tasks.events import DATA_LANDED, PARTITION_LABEL, data_resource_id

DEFAULT_CRON = "0 3 * * *"  # retrain nightly at 03:00 (the server's timezone: UTC unless configured)

# name -> (flow, entrypoint for deployments from source). Module paths, as ``serve`` uses: a worker's flow
# run then imports flows.training like every other process; a file path ("flows/training.py:training")
# would load the file a second time as a module named "training", whose results a client cannot decode.
FLOWS: dict[str, tuple[Any, str]] = {
    "training": (training, "flows.training.training"),
    "retraining": (retraining, "flows.retraining.retraining"),
    "reproduce": (reproduce, "flows.reproduce.reproduce"),
    "predict": (predict_flow, "flows.predict.predict_flow"),
    "example-pipeline": (example_pipeline, "flows.pipeline.example_pipeline"),
}

# What the forkserver that starts served runs imports before its first fork: the flows' modules (and with
# them Prefect, torch, the library and the tasks), and what a fit's MLflow logger imports for its end
# (flows._preload: MLflow's PyTorch flavor, torch's export, Pillow), which a fresh process would pay
# during the run (~4 s).
SERVE_PRELOAD: tuple[str, ...] = (
    *dict.fromkeys(entrypoint.rpartition(".")[0] for _, entrypoint in FLOWS.values()),
    "mlflow",
    "mlflow.models",
    "flows._preload",
)


def deployment_options(
    config: TrainConfig | None = None, cron: str | None = DEFAULT_CRON
) -> dict[str, dict[str, Any]]:
    """Per deployment: default parameters (the form's initial values), schedule and concurrency."""
    cfg = (config or load_config()).model_dump(mode="json")
    model_name = cfg["mlflow"].get("registered_model_name") or "model"
    return {
        "training": {"parameters": {"config": cfg}, "description": "Train, evaluate and register a model."},
        "retraining": {
            "parameters": {"config": cfg},
            "cron": cron,
            # a schedule firing while the previous retraining still runs waits for it (never overlaps)
            "concurrency_limit": 1,
            "triggers": [data_landed_trigger(model_name)],
            "description": "Scheduled retraining with champion/challenger promotion; also run when the "
            "model's data lands (event lightning-lib.data.landed).",
        },
        "reproduce": {"description": "Rerun a past MLflow run and compare its metrics."},
        "predict": {
            # a model trained on a table scores a table (the config's, as an example); one trained on its
            # project's own data module scores that module's predict data
            "parameters": {"model_name": model_name}
            | ({"source": cfg["data"]["source"]} if cfg.get("data") else {}),
            "description": "Batch scoring with the champion.",
        },
        "example-pipeline": {"parameters": {"config": cfg}, "description": "Land data, train, score."},
    }


def data_landed_trigger(model_name: str) -> Any:
    """The ``retraining`` deployment's trigger: each data-landed event of ``model_name`` starts a run on
    the event's partition (rendered by the server from the event with Jinja)."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"retrain {model_name} when its data lands",
        expect={DATA_LANDED},
        match={"prefect.resource.id": data_resource_id(model_name)},
        parameters={"partition": f"{{{{ event.resource['{PARTITION_LABEL}'] }}}}"},
    )


def build_deployments(
    config: TrainConfig | None = None,
    cron: str | None = DEFAULT_CRON,
    recovery: RecoverySettings | None = None,
) -> list[Any]:
    """The runner deployments ``serve`` hosts, one per flow, each named like its flow and tagged for the
    crash recovery (``flows.recovery``)."""
    from prefect.deployments.runner import EntrypointType

    recovery = recovery or RecoverySettings.from_env()
    options = {
        name: with_recovery(option, recovery, job_env=False)
        for name, option in deployment_options(config, cron).items()
    }
    # by module path ("flows.training.training"), not file path: a run then imports flows.training, so
    # its results and models are the same classes as everywhere else (not a second copy named "training")
    return [
        flow.to_deployment(name=name, entrypoint_type=EntrypointType.MODULE_PATH, **options[name])
        for name, (flow, _) in FLOWS.items()
    ]


def serve(
    config: TrainConfig | None = None, cron: str | None = DEFAULT_CRON, limit: int | None = None
) -> None:
    """Serve every deployment from this process until interrupted (the embedded setup); its flow runs send
    heartbeats, and the server marks Crashed and reruns those whose process died (``flows.recovery``)."""
    import os

    from prefect import serve as prefect_serve

    recovery = RecoverySettings.from_env()
    poll_seconds = serve_poll_seconds()
    start_method()  # a bad LIGHTNING_LIB_SERVE_START_METHOD is refused before anything starts
    # the flow-run processes this runner starts copy its environment: they beat at the automation's rate
    os.environ.update(recovery.flow_run_env())
    # started now, the forkserver imports the flows while the deployments are registered; runs picked up
    # before it is ready start Prefect's way
    starts = install_forkserver_starts(SERVE_PRELOAD)
    try:
        deployments = build_deployments(config, cron, recovery)
        ensure_crash_recovery(recovery)
        # polled every second (not Prefect's 10 s): a submitted run starts within about a second
        prefect_serve(*deployments, limit=limit, query_seconds=poll_seconds)
    finally:
        if starts is not None:
            starts.uninstall()


def deploy(
    work_pool: str,
    source: str,
    image: str | None = None,
    config: TrainConfig | None = None,
    cron: str | None = DEFAULT_CRON,
) -> list[Any]:
    """Register the deployments on ``work_pool``; workers load the flows from ``source`` (a git URL or a
    folder they can read), with the crash recovery set up on the server (``flows.recovery``). Returns the
    deployment ids."""
    recovery = RecoverySettings.from_env()
    options = {
        name: with_recovery(option, recovery, job_env=True)
        for name, option in deployment_options(config, cron).items()
    }
    ids = []
    for name, (flow, entrypoint) in FLOWS.items():
        remote = flow.from_source(source=source, entrypoint=entrypoint)
        ids.append(
            remote.deploy(
                name=name, work_pool_name=work_pool, image=image, build=False, push=False, **options[name]
            )
        )
    ensure_crash_recovery(recovery)
    return ids


__all__ = [
    "DEFAULT_CRON",
    "FLOWS",
    "SERVE_PRELOAD",
    "build_deployments",
    "data_landed_trigger",
    "deploy",
    "deployment_options",
    "serve",
]
