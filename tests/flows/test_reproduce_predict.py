"""Reproducing a past run from MLflow, and batch scoring with the champion."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from flows.predict import predict_flow
from flows.reproduce import ReproductionRefused, compare_metrics, reproduce
from flows.training import training
from tasks.config import TrainConfig
from tasks.prediction import DATA_ROOTS_ENV, PREDICTION_COLUMN, PredictionRefused
from tasks.tracking import tracking_uri
from tests.flows.conftest import DIGITS_CSV

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_reproduce_gives_identical_metrics_and_says_so(
    git_project: Path, make_config: Callable[..., TrainConfig]
) -> None:
    config = make_config()
    original = training(config)
    outcome = reproduce(original.mlflow_run_id, tracking_uri=tracking_uri(config))
    assert outcome.match, outcome.differences
    assert "match" in outcome.message and "exactly" in outcome.message
    assert outcome.reproduced_run_id != original.mlflow_run_id
    assert outcome.reproduced_metrics["test_acc"] == original.test_metrics["test_acc"]


def test_reproduce_refuses_changed_data_unless_allowed(
    git_project: Path, tmp_path: Path, make_config: Callable[..., TrainConfig]
) -> None:
    source = tmp_path / "digits.csv"
    shutil.copy(DIGITS_CSV, source)
    config = make_config(**{"data.source": str(source)})
    original = training(config, register_model=False)
    frame = pd.read_csv(source)
    frame.loc[0, "pixel_10"] = 16  # the data changed since the run
    frame.to_csv(source, index=False)
    with pytest.raises(ReproductionRefused, match="sha256") as info:
        reproduce(original.mlflow_run_id, tracking_uri=tracking_uri(config))
    assert "allow_data_change=True" in str(info.value)
    outcome = reproduce(original.mlflow_run_id, tracking_uri=tracking_uri(config), allow_data_change=True)
    assert "Allowed differences" in outcome.message


def test_reproduce_refuses_another_code_version(
    git_project: Path, make_config: Callable[..., TrainConfig]
) -> None:
    config = make_config()
    original = training(config, register_model=False)
    (git_project / "train.py").write_text("# changed, not committed\n")
    with pytest.raises(ReproductionRefused, match="uncommitted changes"):
        reproduce(original.mlflow_run_id, tracking_uri=tracking_uri(config))


def test_reproduce_refuses_a_failed_run_up_front_unless_allowed(
    git_project: Path, make_config: Callable[..., TrainConfig]
) -> None:
    from mlflow import MlflowClient

    config = make_config()
    original = training(config, register_model=False)
    client = MlflowClient(tracking_uri(config))
    client.set_terminated(original.mlflow_run_id, status="FAILED")
    experiment = original.fit.mlflow_experiment_id
    before = len(client.search_runs([experiment]))
    with pytest.raises(ReproductionRefused, match="the original run ended FAILED") as info:
        reproduce(original.mlflow_run_id, tracking_uri=tracking_uri(config))
    assert "allow_unfinished_run=True (--allow-unfinished-run)" in str(info.value)
    assert len(client.search_runs([experiment])) == before  # refused before any training
    outcome = reproduce(original.mlflow_run_id, tracking_uri=tracking_uri(config), allow_unfinished_run=True)
    assert "Allowed differences: the original run ended FAILED" in outcome.message


def test_compare_metrics_reports_each_difference() -> None:
    assert compare_metrics({"a": 1.0}, {"a": 1.0}) == (True, {})
    match, diff = compare_metrics({"a": 1.0, "b": 2.0}, {"a": 1.5})
    assert not match and diff == {"a": 0.5, "b": float("inf")}
    assert compare_metrics({"a": 1.0}, {"a": 1.0 + 1e-9}, rel_tol=1e-6)[0]


def test_predict_flow_scores_with_the_champion(
    tmp_path: Path, make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path))  # the deployment's data roots
    config = make_config(**{"trainer.max_epochs": 3, "trainer.limit_train_batches": 10})
    trained = training(config)
    table = pd.read_csv(DIGITS_CSV).head(50).drop(columns=["target"])
    table.insert(0, "id", range(1000, 1050))  # extra columns (ids) pass through untouched
    source = tmp_path / "to_score.csv"
    table.to_csv(source, index=False)
    output = tmp_path / "out" / "predictions.parquet"
    result = predict_flow(
        str(source), "digits-test", output_uri=str(output), tracking_uri=tracking_uri(config)
    )
    scored = pd.read_parquet(output)
    assert result.rows == 50 and list(scored["id"]) == list(range(1000, 1050))
    # the same as the trained model applied by hand, with the training statistics from the checkpoint
    from examples.digits import DigitsClassifier
    from lightning_lib.checkpoint._format import load_file

    checkpoint = load_file(trained.checkpoint_uri)
    stats = checkpoint["TabularDataModule"]
    model = DigitsClassifier.load_from_checkpoint(trained.checkpoint_uri).eval()
    x = torch.tensor(table.drop(columns=["id"]).to_numpy(dtype="float32"))
    x = (x - torch.tensor(stats["mean"])) / torch.tensor(stats["std"])
    with torch.no_grad():
        expected = model(x).argmax(dim=1).numpy()
    assert (scored[PREDICTION_COLUMN].to_numpy() == expected).all()

    # issue 14: the output never replaces a file predict did not write, the source stays under the data
    # roots; both refused before scoring, naming the path. Re-running onto its own output is fine.
    uri = tracking_uri(config)
    assert predict_flow(str(source), "digits-test", output_uri=str(output), tracking_uri=uri).rows == 50
    # without output_uri: next to the input, where the user looks (issue 13); the scored columns are
    # staged outside the model's data root, so nothing is written there; the version that scored is recorded
    data_root = Path(config.prepared_data_root())
    default = predict_flow(str(source), "digits-test", tracking_uri=uri)
    assert Path(default.uri) == tmp_path / "to_score.predictions.parquet" and default.sha256 == result.sha256
    assert default.model == "digits-test version 1 (champion)"
    assert not (data_root / "predictions").exists() and not (data_root / "scoring").exists()
    # a typo in the model's name says that no such model exists, and names the close one; a real model
    # without the alias says that
    with pytest.raises(LookupError, match=r"No registered model 'digits-tset' .*Did you mean 'digits-test'"):
        predict_flow(str(source), "digits-tset", tracking_uri=uri)
    with pytest.raises(LookupError, match=r"'digits-test' has no 'staging' alias .*its aliases: 'champion'"):
        predict_flow(str(source), "digits-test", alias="staging", tracking_uri=uri)
    precious = tmp_path / "run.yaml"
    precious.write_text("model: mine\n")
    foreign = tmp_path / "other.parquet"
    table.to_parquet(foreign)
    for target, reason in (
        (precious, "Expected the output to be a .parquet or .pq name"),
        (foreign, f"Refusing to replace {str(foreign)!r}: a file is there that predict did not write"),
    ):
        before = target.read_bytes()
        with pytest.raises(PredictionRefused, match=re.escape(reason)):
            predict_flow(str(source), "digits-test", output_uri=str(target), tracking_uri=uri)
        assert target.read_bytes() == before
    outside = tmp_path.parent / f"{tmp_path.name}-outside.csv"
    shutil.copy(source, outside)
    for refused in (outside, tmp_path / ".." / outside.name):
        with pytest.raises(
            PredictionRefused, match=r"Refusing the source .*expected a path under the data roots"
        ):
            predict_flow(str(refused), "digits-test", tracking_uri=uri)
    link = tmp_path / "link.csv"
    link.symlink_to(outside)  # inside by name, outside once resolved
    with pytest.raises(PredictionRefused, match="Refusing the source"):
        predict_flow(str(link), "digits-test", tracking_uri=uri)
    outside.unlink()


def test_predict_with_an_unknown_model_says_none_exists(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    with pytest.raises(LookupError, match=r"No registered model 'never-trained' at .*none yet"):
        predict_flow(str(DIGITS_CSV), "never-trained", tracking_uri=tracking_uri(make_config()))
