"""``TabularDataModule``: train/val/test Parquet files (local or ``s3://``) as tensors for the Trainer.

It is the data side of the pipeline: ``tasks.data.prepare_data`` writes the splits and returns their
URIs and digests, and the ``fit`` task passes ``PreparedData.datamodule_kwargs()`` here along with the
config's ``datamodule_kwargs`` (batch size, ...). Only paths, names and numbers come in, so the module's
hyper-parameters are plain data and checkpoints stay loadable with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as pl
from examples.loaders import seeded_loader
from lightning_lib.storage import open_store, split_uri


def read_parquet_uri(uri: str, expected_sha256: str | None = None) -> Any:
    """A DataFrame from a Parquet object; with ``expected_sha256``, its bytes must match that digest."""
    import pandas as pd  # deferred: pandas is a pipeline dependency, not one of lightning_lib

    root, name = split_uri(uri)
    raw = open_store(root).get_bytes(name)
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise ValueError(f"Expected {uri} to have sha256 {expected_sha256}; its content has changed.")
    return pd.read_parquet(io.BytesIO(raw))


class Standardize(torch.nn.Module):
    """``(x - mean) / std`` per feature column, with the statistics as buffers (float32 like the inputs)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TabularDataModule(pl.LightningDataModule):
    """Numeric feature columns -> float32 inputs; the target -> int64 classes or float32 values.

    Features are standardised with the training split's mean and std (kept in ``state_dict`` so that a
    checkpoint predicts with the statistics it was trained with); a std below ``min_std`` counts as
    ``1`` so that an almost-constant column does not blow up (use 1.0 for pixel data like the digits).
    The standardisation is :meth:`preprocessor`, which the loaders apply and the registered MLflow model
    carries, so that both compute the same model inputs from the same raw rows.
    """

    def __init__(
        self,
        train_uri: str | None = None,
        val_uri: str | None = None,
        test_uri: str | None = None,
        features: list[str] | None = None,
        target: str = "target",
        predict_uri: str | None = None,
        sha256: dict[str, str] | None = None,
        batch_size: int = 64,
        standardize: bool = True,
        min_std: float = 1e-6,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1, received {batch_size}.")
        if min_std <= 0:
            raise ValueError(f"Expected min_std > 0, received {min_std}.")
        if not features:
            raise ValueError("Expected features to name at least one column.")
        self.save_hyperparameters()
        self.uris = {"train": train_uri, "val": val_uri, "test": test_uri, "predict": predict_uri}
        self.sha256 = dict(sha256 or {})
        self.features = list(features)
        self.target = target
        self.batch_size = batch_size
        self.standardize = standardize
        self.min_std = min_std
        self.seed = seed
        self.num_workers = num_workers
        self.datasets: dict[str, TensorDataset] = {}
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    # -- data ---------------------------------------------------------------------------------------

    def _frame(self, split: str) -> Any:
        uri = self.uris[split]
        if uri is None:
            raise ValueError(f"Expected {split}_uri to be set to use the {split} split.")
        return read_parquet_uri(uri, self.sha256.get(split))

    def _inputs(self, frame: Any, split: str) -> torch.Tensor:
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"Expected feature columns {missing} in the {split} split {self.uris[split]}.")
        # a copy: pandas may hand out a read-only array, which torch warns about
        return torch.tensor(frame[self.features].to_numpy(dtype="float32"))

    def _dataset(self, split: str) -> TensorDataset:
        frame = self._frame(split)
        x = self._inputs(frame, split)
        if split == "predict" and self.target not in frame.columns:
            return TensorDataset(x)  # scoring new data: there is no label yet
        values = frame[self.target].to_numpy()
        is_class = values.dtype.kind in "iub"
        y = torch.as_tensor(values.astype("int64" if is_class else "float32"))
        return TensorDataset(x, y)

    def setup(self, stage: str | None = None) -> None:
        """Read the splits the stage needs (once) and the training statistics if they are not known yet."""
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict" if self.uris["predict"] else "test",),
        }.get(stage or "", ("train", "val", "test"))
        for split in needed:
            if split in self.datasets or (split == "val" and stage == "fit" and self.uris["val"] is None):
                continue  # fitting without a validation split is allowed, as in Lightning
            self.datasets[split] = self._dataset(split)
        if self.standardize and self.mean is None and self.uris["train"] is not None:
            train = self.datasets.get("train")
            if train is None:
                train = self._dataset("train")
            inputs = train.tensors[0]
            self.mean = inputs.mean(dim=0)
            std = inputs.std(dim=0) if len(inputs) > 1 else torch.ones_like(self.mean)
            self.std = torch.where(std < self.min_std, torch.ones_like(std), std)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self.datasets.get(split)
        if dataset is None:
            raise RuntimeError(
                f"TabularDataModule.setup() must load the {split} split before its dataloader."
            )
        if self.standardize:
            x, *rest = dataset.tensors
            with torch.no_grad():
                dataset = TensorDataset(self.preprocessor()(x), *rest)
        return seeded_loader(dataset, self.batch_size, self.seed, shuffle, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if self.uris["predict"] else "test")

    # -- serving --------------------------------------------------------------------------------------

    def preprocessor(self) -> torch.nn.Module:
        """Raw float32 feature rows ``(N, F)`` -> the model's inputs: :class:`Standardize` with the training
        statistics, or the identity with ``standardize=False``."""
        if not self.standardize:
            return torch.nn.Identity()
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardisation needs the training split or a restored state_dict.")
        return Standardize(self.mean, self.std)

    def serving_example(self) -> torch.Tensor:
        """The first (at most 8) raw training feature rows, float32: the registered model's input example."""
        train = self.datasets.get("train")
        if train is None:
            if self.uris["train"] is None:
                raise RuntimeError(
                    "TabularDataModule.serving_example() needs train_uri: it shows training rows."
                )
            train = self._dataset("train")
        return train.tensors[0][:8].clone()

    # -- checkpoint state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The standardisation statistics, as plain lists (``weights_only=True`` loads them)."""
        if self.mean is None or self.std is None:
            return {}
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "mean" in state_dict and "std" in state_dict:
            self.mean = torch.tensor(state_dict["mean"], dtype=torch.float32)
            self.std = torch.tensor(state_dict["std"], dtype=torch.float32)
