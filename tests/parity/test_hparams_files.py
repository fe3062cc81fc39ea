"""Lightning's hyper-parameter files (``core.saving``) and ``core.mixins.HyperparametersMixin``: the same files,
values read back, warnings and errors as pytorch_lightning."""

from __future__ import annotations

import argparse
import importlib
import os
import warnings
from typing import Any

import pytest
import torch

from tests.helpers import reference_lightning

pytestmark = pytest.mark.parity


def _program(package: str, folder: str) -> list[Any]:
    saving = importlib.import_module(f"{package}.core.saving")
    mixin = importlib.import_module(f"{package}.core.mixins").HyperparametersMixin
    out: list[Any] = []
    os.makedirs(folder)
    yaml_path, csv_path = os.path.join(folder, "h.yaml"), os.path.join(folder, "h.csv")
    hparams = {
        "a": 1,
        "b": [1, 2],
        "c": (3, 4),
        "d": {"x": 1.5, "y": None},
        "e": "s",
        "f": True,
    }
    saving.save_hparams_to_yaml(yaml_path, hparams)
    with open(yaml_path, encoding="utf-8") as handle:
        out.append(handle.read())
    out.append(saving.load_hparams_from_yaml(yaml_path))
    saving.save_hparams_to_tags_csv(
        csv_path, argparse.Namespace(size=32, lr=0.001, root="./x", flag=False, lst=[1])
    )
    with open(csv_path, encoding="utf-8") as handle:
        out.append(handle.read())
    out.append(saving.load_hparams_from_tags_csv(csv_path))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out.append(saving.load_hparams_from_yaml(os.path.join(folder, "none.yaml")))
        out.append(saving.load_hparams_from_tags_csv(os.path.join(folder, "none.csv")))
    out.append([(w.category, str(w.message).replace(folder, "<dir>")) for w in record])
    with pytest.raises(RuntimeError, match="Missing folder") as missing:
        saving.save_hparams_to_yaml(os.path.join(folder, "absent", "h.yaml"), {})
    out.append(str(missing.value).replace(folder, "<dir>"))
    nested = {"c": 4, "a": {"b": 1, "z": 0}}
    saving.update_hparams(nested, {"a": {"b": 2}, "c": 1, "n": {"k": 1}})
    out.append(nested)

    class Configured(mixin):  # type: ignore[misc, valid-type]
        def __init__(self, x: int, y: int = 2, **kwargs: Any) -> None:
            super().__init__()
            self.save_hyperparameters()

    configured = Configured(1, 3, k=7)
    out += [dict(configured.hparams), dict(configured.hparams_initial), saving.CHECKPOINT_PAST_HPARAMS_KEYS]
    return out


def test_hparams_files_match_lightning(tmp_path: Any) -> None:
    reference_lightning()
    ours = _program("lightning_lib", str(tmp_path / "ours"))
    assert ours == _program("pytorch_lightning", str(tmp_path / "ref"))
    assert ours[1]["c"] == (3, 4) and ours[3]["lst"] == [1]  # tuples and literals read back as written


def test_save_hparams_to_yaml_refuses_what_is_not_a_mapping(tmp_path: Any) -> None:
    from lightning_lib.core.saving import save_hparams_to_yaml

    with pytest.raises(TypeError, match=r"hparams must be dictionary.*received list"):
        save_hparams_to_yaml(str(tmp_path / "h.yaml"), [1])  # type: ignore[arg-type]


def _rebuilt_from_checkpoints(pl: Any, folder: Any) -> list[Any]:
    from torch.utils.data import DataLoader, TensorDataset

    class Base(pl.LightningModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.layer(batch[0]).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self) -> Any:
            return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)

    class Keywords(Base):
        def __init__(self, x: int = 1, y: str = "a") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(2, 1)

    class OneDict(Base):
        def __init__(self, conf: dict[str, Any]) -> None:
            super().__init__()
            self.save_hyperparameters(conf)
            self.layer = torch.nn.Linear(2, 1)

    class OneNamespace(Base):
        def __init__(self, ns: Any) -> None:
            super().__init__()
            self.save_hyperparameters(ns)
            self.layer = torch.nn.Linear(2, 1)

    class Data(pl.LightningDataModule):
        def __init__(self, bs: int = 2, name: str = "dm") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.restored: Any = None

        def train_dataloader(self) -> Any:
            return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=self.hparams.bs)

        def state_dict(self) -> dict[str, Any]:
            return {"position": 5}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.restored = state_dict

    def fit(model: Any, name: str, datamodule: Any = None) -> str:
        trainer = pl.Trainer(
            max_epochs=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=str(folder),
        )
        trainer.fit(model, datamodule=datamodule)
        path = str(folder / f"{name}.ckpt")
        trainer.save_checkpoint(path)
        return path

    out: list[Any] = []
    for cls, kwargs in (
        (Keywords, {"x": 3}),
        (OneDict, {"conf": {"lr": 0.1, "n": 2}}),
        (OneNamespace, {"ns": argparse.Namespace(lr=0.2)}),
    ):
        path = fit(cls(**kwargs), cls.__name__)
        checkpoint = torch.load(path, weights_only=True)
        out.append((checkpoint.get("hparams_name"), checkpoint["hyper_parameters"]))
        out.append(dict(cls.load_from_checkpoint(path).hparams))
    path = fit(Keywords(), "with_data", Data(bs=4))
    data = Data.load_from_checkpoint(path)
    out += [dict(data.hparams), data.restored, dict(Data.load_from_checkpoint(path, name="other").hparams)]
    (folder / "h.yaml").write_text("x: 9\n")
    (folder / "h.csv").write_text("key,value\ny,csv\n")
    for name in ("h.yaml", "h.csv"):
        out.append(
            dict(
                Keywords.load_from_checkpoint(
                    str(folder / "Keywords.ckpt"), hparams_file=folder / name
                ).hparams
            )
        )
    with pytest.raises(ValueError, match=r"\.csv, \.yml or \.yaml is required for `hparams_file`"):
        Keywords.load_from_checkpoint(str(folder / "Keywords.ckpt"), hparams_file=folder / "h.txt")
    return out


def test_load_from_checkpoint_rebuilds_like_lightning(tmp_path: Any) -> None:
    """One dict or Namespace saved as hyper-parameters goes back under its __init__ argument; a datamodule is
    rebuilt from its own hyper-parameters and state; an hparams file replaces the checkpoint's."""
    import lightning_lib

    (tmp_path / "ours").mkdir()
    (tmp_path / "ref").mkdir()
    ours = _rebuilt_from_checkpoints(lightning_lib, tmp_path / "ours")
    assert ours == _rebuilt_from_checkpoints(reference_lightning(), tmp_path / "ref")
    assert ours[2] == ("conf", {"lr": 0.1, "n": 2}) and ours[7] == {"position": 5}


def test_a_class_saved_by_name_is_written_like_lightning_but_never_resolved_when_read(tmp_path: Any) -> None:
    """Deliberate difference: Lightning's reader resolves ``!!python/name`` tags to objects of imported
    modules; a hyper-parameter file may come from anywhere, so ours reads plain data and tuples only."""
    import os as os_module

    from lightning_lib.core import saving

    reference = importlib.import_module("pytorch_lightning.core.saving")
    saving.save_hparams_to_yaml(tmp_path / "ours.yaml", {"act": torch.nn.ReLU, "c": (1, 2)})
    reference.save_hparams_to_yaml(tmp_path / "ref.yaml", {"act": torch.nn.ReLU, "c": (1, 2)})
    assert (tmp_path / "ours.yaml").read_text() == (tmp_path / "ref.yaml").read_text()
    with pytest.raises(
        ValueError, match=r"found a Python tag .*python/name:torch\.nn\.modules\.activation\.ReLU"
    ):
        saving.load_hparams_from_yaml(tmp_path / "ours.yaml")
    (tmp_path / "evil.yaml").write_text("run: !!python/name:os.system\n")
    with pytest.raises(ValueError, match="never Python objects by name"):
        saving.load_hparams_from_yaml(tmp_path / "evil.yaml")
    assert reference.load_hparams_from_yaml(tmp_path / "evil.yaml") == {"run": os_module.system}
    (tmp_path / "plain.yaml").write_text("c: !!python/tuple [1, 2]\nd: {x: 1.5}\n")
    assert saving.load_hparams_from_yaml(tmp_path / "plain.yaml") == {"c": (1, 2), "d": {"x": 1.5}}
