"""``TabularDataModule``'s serving hooks: the loaders and the registered model share one preprocessor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from examples.tabular import Standardize, TabularDataModule

DIGITS_CSV = Path(__file__).resolve().parents[2] / "examples" / "data" / "digits.csv"


@pytest.fixture
def splits(tmp_path: Path) -> dict[str, Any]:
    """Train and val Parquet splits of the bundled digits (raw pixel counts 0..16)."""
    frame = pd.read_csv(DIGITS_CSV).head(150)
    uris = {}
    for split, rows in (("train", frame.iloc[:100]), ("val", frame.iloc[100:])):
        uris[f"{split}_uri"] = str(tmp_path / f"{split}.parquet")
        rows.to_parquet(uris[f"{split}_uri"], index=False)
    return uris


def _features() -> list[str]:
    return [f"pixel_{i}" for i in range(64)]


def _raw(uri: str) -> torch.Tensor:
    return torch.tensor(pd.read_parquet(uri)[_features()].to_numpy(dtype="float32"))


def _loader_inputs(loader: torch.utils.data.DataLoader) -> torch.Tensor:
    return torch.cat([batch[0] for batch in loader])


def test_the_loaders_apply_the_preprocessor_bit_for_bit(splits: dict[str, Any]) -> None:
    datamodule = TabularDataModule(**splits, features=_features(), min_std=1.0, batch_size=32)
    datamodule.setup("fit")
    preprocessor = datamodule.preprocessor()
    assert isinstance(preprocessor, Standardize) and preprocessor.mean.dtype == torch.float32
    raw_val = _raw(splits["val_uri"])
    with torch.no_grad():
        served = preprocessor(raw_val)
    # the same bits as the validation loader feeds the model, batch by batch
    assert torch.equal(_loader_inputs(datamodule.val_dataloader()), served)
    assert datamodule.mean is not None and datamodule.std is not None
    assert torch.equal(served, (raw_val - datamodule.mean) / datamodule.std)
    assert float(served.mean(dim=0).abs().max()) > 0  # standardised with the training rows, not these

    example = datamodule.serving_example()
    assert example.dtype == torch.float32 and torch.equal(example, _raw(splits["train_uri"])[:8])


def test_the_preprocessor_comes_back_from_the_checkpoint_state(splits: dict[str, Any]) -> None:
    trained = TabularDataModule(**splits, features=_features(), min_std=1.0)
    trained.setup("fit")
    # a module that never saw the training split, given the state a checkpoint holds
    restored = TabularDataModule(val_uri=splits["val_uri"], features=_features())
    with pytest.raises(RuntimeError, match="needs the training split or a restored state_dict"):
        restored.preprocessor()
    restored.load_state_dict(trained.state_dict())
    raw = _raw(splits["val_uri"])
    with torch.no_grad():
        assert torch.equal(restored.preprocessor()(raw), trained.preprocessor()(raw))
    with pytest.raises(RuntimeError, match=r"serving_example\(\) needs train_uri"):
        restored.serving_example()
    # after the state alone (no setup), the example is read from the training split
    lazy = TabularDataModule(**splits, features=_features())
    lazy.load_state_dict(trained.state_dict())
    assert torch.equal(lazy.serving_example(), trained.serving_example())


def test_without_standardisation_the_preprocessor_is_the_identity(splits: dict[str, Any]) -> None:
    datamodule = TabularDataModule(**splits, features=_features(), standardize=False)
    datamodule.setup("fit")
    assert isinstance(datamodule.preprocessor(), torch.nn.Identity)
    assert datamodule.state_dict() == {}
    assert torch.equal(_loader_inputs(datamodule.val_dataloader()), _raw(splits["val_uri"]))
