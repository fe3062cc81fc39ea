"""Issue 11, point 6: the registered MLflow model predicts what the pipeline predicts, from raw rows.

The digits table is standardised by its data module with training statistics; the registered model must
carry them (from the checkpoint), so ``mlflow.pyfunc`` on raw feature rows and the ``predict`` flow on the
same rows give the same classes, and the same logits as the module on the pipeline's own inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from examples.digits import DigitsClassifier
from examples.tabular import TabularDataModule
from flows.predict import predict_flow
from flows.training import training
from lightning_lib.checkpoint import load_file
from tasks.config import TrainConfig
from tasks.prediction import DATA_ROOTS_ENV, PREDICTION_COLUMN
from tasks.tracking import tracking_uri
from tasks.training import deliver_pending
from tests.flows.conftest import DIGITS_CSV

mlflow = pytest.importorskip("mlflow")
pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]


def test_the_champion_predicts_from_raw_rows_what_the_predict_flow_predicts(
    tmp_path: Path, make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path))
    config = make_config(**{"trainer.max_epochs": 2, "trainer.limit_train_batches": 10})
    trained = training(config)
    assert trained.champion
    uri = tracking_uri(config)

    table = pd.read_csv(DIGITS_CSV).drop(columns=["target"])  # every row, raw pixel counts
    source = tmp_path / "to_score.parquet"
    table.to_parquet(source, index=False)
    output = tmp_path / "out" / "predictions.parquet"
    predict_flow(str(source), "digits-test", output_uri=str(output), tracking_uri=uri)
    predicted = pd.read_parquet(output)[PREDICTION_COLUMN].to_numpy()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ URIs resolve through the global client
    raw = table.to_numpy(dtype="float32")
    served = mlflow.pyfunc.load_model("models:/digits-test@champion").predict(raw)
    assert served.shape == (len(table), 10)
    np.testing.assert_array_equal(served.argmax(axis=1), predicted)  # all 1797 rows agree

    # the logits too: the champion's module on the inputs the pipeline's own loader builds from these rows
    checkpoint = load_file(trained.fit.best_checkpoint_uri)
    datamodule = TabularDataModule(features=list(table.columns), predict_uri=str(source), batch_size=64)
    datamodule.load_state_dict(checkpoint["TabularDataModule"])
    datamodule.setup("predict")
    inputs = torch.cat([batch[0] for batch in datamodule.predict_dataloader()])
    module = DigitsClassifier.load_from_checkpoint(trained.fit.best_checkpoint_uri).eval()
    with torch.no_grad():
        logits = module(inputs).numpy()
    np.testing.assert_allclose(served, logits, rtol=1e-5, atol=1e-5)

    # the delayed delivery (MLflow away at the end of the fit) logs the same model from the checkpoint
    redelivered = deliver_pending(
        config, trained.fit.model_copy(update={"model_uri": None}), trained.prepared
    )
    assert redelivered.model_uri is not None and redelivered.model_uri != trained.fit.model_uri
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(redelivered.model_uri).predict(raw), served)
