"""Deployments (served and on a work pool) and the console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows import cli
from flows.defaults import EXAMPLE_CONFIG, load_config
from flows.deploy import DEFAULT_CRON, FLOWS, build_deployments, deploy
from tasks.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def test_bundled_example_config_loads_wherever_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert Path(config.data.source).is_file() and config.model == "examples.digits:DigitsClassifier"
    assert load_config(None, ["trainer.max_epochs=2"]).trainer.max_epochs == 2
    assert TrainConfig.from_yaml(EXAMPLE_CONFIG).data.source == "examples/data/digits.csv"


def test_served_deployments_cover_every_flow_with_a_schedule_and_a_limit_for_retraining() -> None:
    deployments = {d.name: d for d in build_deployments(cron="*/5 * * * *")}
    assert set(deployments) == set(FLOWS)
    retraining = deployments["retraining"]
    assert [s.schedule.cron for s in retraining.schedules] == ["*/5 * * * *"]
    assert retraining.concurrency_limit == 1
    assert not deployments["training"].schedules
    # and the upstream stage's data-landed event of the served model, whose partition becomes the window
    [trigger] = retraining.triggers
    assert trigger.expect == {"lightning-lib.data.landed"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "lightning-lib.data.digits-classifier"}
    assert trigger.parameters == {"partition": "{{ event.resource['lightning-lib.partition'] }}"}
    assert trigger.posture == "Reactive" and trigger.threshold == 1
    assert not any(d.triggers for name, d in deployments.items() if name != "retraining")
    # the form's defaults are the bundled example, validated
    TrainConfig.model_validate(deployments["training"].parameters["config"])
    schema = deployments["training"]._parameter_openapi_schema.model_dump()
    assert "config" in schema["properties"]


@pytest.mark.usefixtures("prefect_harness")
def test_deploy_to_a_work_pool_registers_every_flow() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="test-pool", type="process"))
    ids = deploy("test-pool", source=str(REPO))
    assert len(ids) == len(FLOWS)
    with get_client(sync_client=True) as client:
        deployments = [client.read_deployment(i) for i in ids]
    assert {d.work_pool_name for d in deployments} == {"test-pool"}
    retraining = next(d for d in deployments if d.name == "retraining")
    assert retraining.schedules[0].schedule.cron == DEFAULT_CRON
    assert retraining.entrypoint == "flows.retraining.retraining"  # a module path, as serve uses
    # its trigger is an automation the deployment owns, running it with the event's partition
    with get_client(sync_client=True) as client:
        automations = client.read_resource_related_automations(f"prefect.deployment.{retraining.id}")
    [automation] = automations
    assert automation.trigger.expect == {"lightning-lib.data.landed"}
    [action] = automation.actions
    assert action.deployment_id == retraining.id
    assert action.parameters == {"partition": "{{ event.resource['lightning-lib.partition'] }}"}


def test_cli_help_is_complete(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "retrain", "reproduce", "predict", "serve", "config"):
        assert command in out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--config" in capsys.readouterr().out


def test_cli_config_validates_and_applies_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["config", "trainer.max_epochs=3", "--run-key", "k1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["trainer"]["max_epochs"] == 3 and shown["run_key"] == "k1"
    assert cli.main(["config", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Training run configuration"


def test_cli_bad_config_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: evil.module:Thing\ndata: {source: x.csv, target: y}\n")
    assert cli.main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "outside the allowed module prefixes" in err and "Traceback" not in err
    assert cli.main(["train", "trainer.max_epochs=-5"]) == 2
    assert "max_epochs" in capsys.readouterr().err


def test_cli_train_runs_the_flow_and_prints_where_everything_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], prefect_harness: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = cli.main(
        [
            "train",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.enable_progress_bar=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "test_acc" in out and "best checkpoint" in out and str(tmp_path / "runs" / "checkpoints") in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "/runs/flow-run/" in out
    assert (tmp_path / "runs" / "mlflow" / "mlflow.db").is_file()
