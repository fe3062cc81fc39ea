"""Runs people can follow: readable names, the entry point as MLflow's source, the no-git warning."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import types
from pathlib import Path

import pytest

from tasks.config import TrainConfig
from tasks.follow import TAG_NO_GIT, mlflow_link, warn_if_no_git
from tasks.naming import last_segment, name_or_fallback, readable_name, run_name
from tasks.orchestration import entry_point, source_tags

REPO = Path(__file__).resolve().parents[2]
WHEN = dt.datetime(2026, 12, 6, 14, 32, 55, tzinfo=dt.UTC)


def _config(**extra: object) -> TrainConfig:
    data = {"source": "s3://bucket/landing/digits.csv", "target": "target"}
    return TrainConfig.model_validate({"model": "examples.digits:DigitsClassifier", "data": data, **extra})


def test_run_names_say_model_data_and_date() -> None:
    assert run_name(_config(), WHEN) == "DigitsClassifier-digits.csv-2026-12-06-1432"
    # a project's own data module (unvalidated copy: the import check is not what is tested here)
    project = _config().model_copy(update={"data": None, "datamodule": "my_project.data:SalesData"})
    assert run_name(project, WHEN) == "DigitsClassifier-SalesData-2026-12-06-1432"
    # another time zone is shown in UTC; a long part is cut so names stay apart when truncated
    east = dt.timezone(dt.timedelta(hours=2))
    assert readable_name("M", "d", WHEN.astimezone(east)).endswith("2026-12-06-1432")
    assert len(readable_name("M" * 200, "d", WHEN)) < 100
    assert last_segment("s3://b/x/part=2026-12-05/?versionId=3") == "part=2026-12-05"


def test_a_name_that_cannot_be_built_never_fails_the_run(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> str:
        raise KeyError("config")

    with caplog.at_level(logging.WARNING):
        assert name_or_fallback("training", broken).startswith("training-20")
    assert "readable name" in caplog.text


def test_mlflow_source_is_the_flow_or_the_cli_never_prefects_engine() -> None:
    engine = ["/venv/lib/python3.11/site-packages/prefect/engine.py"]
    assert entry_point("flows.training", engine) == "flows/training.py"
    assert entry_point("flows.training", ["/venv/bin/lightning-lib", "train", "--set", "x=1"]) == (
        "lightning-lib train"
    )
    assert entry_point("flows.predict", ["/repo/flows/cli.py", "predict"]) == "lightning-lib predict"
    flow = types.SimpleNamespace(fn=types.SimpleNamespace(__module__="flows.retraining"))
    assert source_tags(flow, types.SimpleNamespace(deployment_id="d-1"))["mlflow.source.type"] == "JOB"
    local = source_tags(flow, types.SimpleNamespace(deployment_id=None))
    assert local["mlflow.source.type"] == "LOCAL" and local["mlflow.source.name"].endswith(".py")
    assert source_tags(None, None) == {}


def test_outside_a_git_checkout_the_run_is_warned_about_and_tagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tasks.follow"):
        tags = warn_if_no_git(tmp_path)
    assert "not a git checkout" in tags[TAG_NO_GIT] and "reproduce` will refuse it" in tags[TAG_NO_GIT]
    assert "not a git checkout" in caplog.text
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
         "--allow-empty", "-m", "first"], check=True,
    )  # fmt: skip
    assert warn_if_no_git(tmp_path) == {}


def test_mlflow_link_names_the_page_and_how_to_open_a_local_store() -> None:
    assert mlflow_link("http://mlflow:5000", "1", "abc") == "http://mlflow:5000/#/experiments/1/runs/abc"
    local = mlflow_link("sqlite:////tmp/m.db", "1", "abc")
    assert (
        "/#/experiments/1/runs/abc" in local and "mlflow ui --backend-store-uri sqlite:////tmp/m.db" in local
    )
