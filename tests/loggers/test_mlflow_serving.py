"""The logged MLflow model carries the data module's preprocessing: ``serving_parts`` and the composed model.

A toy data module serves raw uint8 "images" (N, 4, 8) and preprocesses them with statistics of its
training split (buffers of a module); the registered model must predict from the raw images exactly what
the LightningModule predicts from the preprocessed ones. Everything goes to a local SQLite MLflow store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as pl
from lightning_lib.loggers import MLFlowLogger
from lightning_lib.loggers.mlflow import log_pytorch_model, serving_parts
from lightning_lib.loggers.mlflow._model import _ServingModel
from tests.helpers import ClassifierDataModule, ClassifierModel

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")

SHAPE = (4, 8)  # 32 pixels: ClassifierModel's 32 inputs


class PixelScaler(torch.nn.Module):
    """Raw uint8 images -> centred, scaled float32 rows: buffers only, as the contract asks."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset.clone())
        self.register_buffer("scale", scale.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1).to(torch.float32) - self.offset) / self.scale


def raw_images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


class RawPixelsDataModule(pl.LightningDataModule):
    """Random raw images and labels; its loaders apply :meth:`preprocessor`, its state is the statistics."""

    def __init__(self, batch_size: int = 16, example: bool = True) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.with_example = example
        self.offset: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None

    def setup(self, stage: str) -> None:
        self.train_raw = raw_images(64, seed=0)
        self.train_y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
        if self.offset is None:
            pixels = self.train_raw.flatten(1).to(torch.float32)
            self.offset, self.scale = pixels.mean(dim=0), pixels.std(dim=0).clamp_min(1.0)

    def preprocessor(self) -> torch.nn.Module:
        assert self.offset is not None and self.scale is not None
        return PixelScaler(self.offset, self.scale)

    def serving_example(self) -> torch.Tensor:
        if not self.with_example:
            raise AssertionError("not called: the test removes the hook instead")
        return self.train_raw[:8]

    def train_dataloader(self) -> DataLoader:
        with torch.no_grad():
            inputs = self.preprocessor()(self.train_raw)
        return DataLoader(TensorDataset(inputs, self.train_y), batch_size=self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        assert self.offset is not None and self.scale is not None
        return {"offset": self.offset.tolist(), "scale": self.scale.tolist()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.offset = torch.tensor(state_dict["offset"])
        self.scale = torch.tensor(state_dict["scale"])


class Branchy(torch.nn.Module):
    """A forward with Python-side, data-dependent control flow: ``torch.export`` refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        return out if bool(out.sum() > 0) else -out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A SQLite MLflow store with one run; model URIs resolve through it."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("serving", artifact_location=str(tmp_path / "artifacts"))
    return uri, client.create_run(experiment).info.run_id


def _expected(model: torch.nn.Module, preprocessor: torch.nn.Module, raw: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(preprocessor(raw)).numpy()


def _signature_inputs(info: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of each tensor the logged model's signature takes."""
    specs = [spec.to_dict()["tensor-spec"] for spec in info.signature.inputs.inputs]
    return [(spec["dtype"], tuple(spec["shape"])) for spec in specs]


def test_serving_parts_reads_the_optional_hooks() -> None:
    assert serving_parts(None) == (None, None)
    plain = ClassifierDataModule()
    assert serving_parts(plain) == (None, None)  # no hooks: nothing changes for the logger

    datamodule = RawPixelsDataModule()
    datamodule.setup("fit")
    preprocessor, example = serving_parts(datamodule)
    assert isinstance(preprocessor, PixelScaler) and not preprocessor.training
    assert example is not None and torch.equal(example, datamodule.train_raw[:8])
    # an independent copy: what the data module does later never reaches a logged model
    assert datamodule.offset is not None
    datamodule.offset += 1
    assert not torch.equal(preprocessor.offset, datamodule.offset)

    datamodule.serving_example = lambda: datamodule.train_raw  # type: ignore[method-assign]
    assert len(serving_parts(datamodule)[1]) == 8  # type: ignore[arg-type]
    datamodule.serving_example = lambda: datamodule.train_raw[:1]  # type: ignore[method-assign]
    single = serving_parts(datamodule)[1]
    # one row repeated: torch.export would fix a batch dimension of size 1
    assert single is not None and single.shape == (2, *SHAPE) and torch.equal(single[0], single[1])


@pytest.mark.parametrize(
    ("hook", "value", "message"),
    [
        ("preprocessor", lambda: {"mean": 0.0}, r"preprocessor\(\) to return a torch.nn.Module, received dict"),
        ("serving_example", lambda: [1, 2], r"serving_example\(\) to return a tensor of at least one row, "
         "received list"),
        ("serving_example", lambda: torch.zeros(0, 3), r"serving_example\(\) to return a tensor of at least one row, received "
         r"shape \(0, 3\)"),
    ],
)  # fmt: skip
def test_serving_parts_names_a_hook_that_returns_the_wrong_thing(hook: str, value: Any, message: str) -> None:
    datamodule = RawPixelsDataModule()
    datamodule.setup("fit")
    setattr(datamodule, hook, value)
    with pytest.raises(TypeError, match=rf"Expected RawPixelsDataModule\.{message}"):
        serving_parts(datamodule)


def test_the_composed_model_is_exported_and_predicts_from_raw_inputs(store: tuple[str, str]) -> None:
    uri, run_id = store
    datamodule = RawPixelsDataModule()
    datamodule.setup("fit")
    preprocessor, example = serving_parts(datamodule)
    assert preprocessor is not None
    model = ClassifierModel().eval()
    info = log_pytorch_model(uri, run_id, model, example, preprocessor=preprocessor)

    # the signature is over what a user passes: raw uint8 images with a free batch dimension
    assert _signature_inputs(info) == [("uint8", (-1, 4, 8))]
    location = mlflow.MlflowClient(uri).get_logged_model(info.model_id).artifact_location
    assert any(path.name == "model.pt2" for path in Path(location.removeprefix("file://")).rglob("*"))
    raw = raw_images(37, seed=5)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(raw.numpy())
    np.testing.assert_array_equal(served, _expected(model, preprocessor, raw))


def test_a_model_that_cannot_be_exported_is_logged_pickled_with_its_preprocessor(
    store: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    uri, run_id = store
    datamodule = RawPixelsDataModule()
    datamodule.setup("fit")
    preprocessor, example = serving_parts(datamodule)
    assert preprocessor is not None
    model = Branchy().eval()
    with caplog.at_level(logging.INFO, logger="lightning_lib.loggers.mlflow._model"):
        info = log_pytorch_model(uri, run_id, model, example, preprocessor=preprocessor)
    assert "logging it pickled" in caplog.text
    client = mlflow.MlflowClient(uri)
    experiment = client.get_run(run_id).info.experiment_id
    # the failed export's logged model is not left behind next to the pickled one
    assert [m.model_id for m in client.search_logged_models([experiment])] == [info.model_id]
    assert _signature_inputs(info) == [("uint8", (-1, 4, 8))]
    loaded = mlflow.pytorch.load_model(info.model_uri)
    assert isinstance(loaded, _ServingModel) and isinstance(loaded.preprocessor, PixelScaler)
    raw = raw_images(11, seed=6)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(raw.numpy())
    np.testing.assert_array_equal(served, _expected(model, preprocessor, raw))


def _fit(tmp_path: Path, uri: str, datamodule: pl.LightningDataModule) -> tuple[Any, Any]:
    """Fit ClassifierModel on ``datamodule`` for an epoch with a model-logging MLFlowLogger: the module and
    the logged model's ModelInfo."""
    logger = MLFlowLogger(experiment_name="serving-fit", tracking_uri=uri, log_model=True)
    model = ClassifierModel()
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path),
        max_epochs=1,
        limit_val_batches=0,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert logger.logged_model_info is not None
    return model, logger.logged_model_info


def test_the_model_logged_at_the_end_of_a_fit_carries_the_data_module_s_preprocessing(
    tmp_path: Path, store: tuple[str, str]
) -> None:
    uri, _ = store
    datamodule = RawPixelsDataModule()
    model, info = _fit(tmp_path, uri, datamodule)
    assert _signature_inputs(info) == [("uint8", (-1, 4, 8))]
    raw = raw_images(23, seed=7)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(raw.numpy())
    # bit for bit what the module computes on the data module's own preprocessing of the same images
    np.testing.assert_array_equal(served, _expected(model, datamodule.preprocessor(), raw))


def test_without_serving_hooks_the_logged_model_is_the_module_alone(
    tmp_path: Path, store: tuple[str, str]
) -> None:
    uri, _ = store
    model, info = _fit(tmp_path, uri, ClassifierDataModule())
    # the example is a training batch's inputs, as before the hooks existed
    assert _signature_inputs(info) == [("float32", (-1, 32))]
    x = torch.randn(9, 32)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(x.numpy())
    np.testing.assert_array_equal(served, _expected(model, torch.nn.Identity(), x))


def test_a_preprocessor_without_an_example_is_logged_without_a_signature(
    tmp_path: Path, store: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    uri, _ = store

    class NoExample(RawPixelsDataModule):
        serving_example = None  # type: ignore[assignment]

    datamodule = NoExample()
    with caplog.at_level(logging.WARNING, logger="lightning_lib.loggers.mlflow._logger"):
        model, info = _fit(tmp_path, uri, datamodule)
    assert "no serving_example()" in caplog.text
    assert info.signature is None
    loaded = mlflow.pytorch.load_model(info.model_uri)
    raw = raw_images(5, seed=8)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(raw).numpy(), _expected(model, datamodule.preprocessor(), raw))
