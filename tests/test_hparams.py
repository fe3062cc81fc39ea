"""save_hyperparameters and hparams: what is collected, how it is snapshotted, logged and kept as plain data.

Expected values were taken from pytorch_lightning 2.6 running the same classes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import lightning_lib as pl
from lightning_lib.core.saving import AttributeDict, to_plain
from tests.support import CountingModel, loader, trainer_kwargs


class _All(pl.LightningModule):
    def __init__(self, a: int = 1, b: str = "x", *args: Any, c: Any = None, **kwargs: Any) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_all_arguments_including_kwargs() -> None:
    assert _All(2, c=3, d=4).hparams == {"a": 2, "b": "x", "c": 3, "d": 4}
    assert _All(2, "y", 9, 10, c=3).hparams == {"a": 2, "b": "y", "c": 3}  # *args are not hparams


def test_selected_names() -> None:
    class Model(pl.LightningModule):
        def __init__(self, a: int = 1, b: int = 2, c: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters("a", "c")

    assert Model(5).hparams == {"a": 5, "c": 3}


def test_ignore_a_name_or_a_list() -> None:
    class Model(pl.LightningModule):
        def __init__(self, a: int = 1, net: Any = None, b: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters(ignore=["net"])

    class One(pl.LightningModule):
        def __init__(self, a: int = 1, net: Any = None) -> None:
            super().__init__()
            self.save_hyperparameters(ignore="net")

    assert Model(net=torch.nn.Linear(1, 1)).hparams == {"a": 1, "b": 2}
    assert One().hparams == {"a": 1}


@dataclasses.dataclass
class _Config:
    lr: float = 0.1
    layers: tuple[int, ...] = (4, 2)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"lr": 0.1, "n": 3}, {"lr": 0.1, "n": 3}),
        (argparse.Namespace(lr=0.2), {"lr": 0.2}),
        (_Config(), {"lr": 0.1, "layers": (4, 2)}),
    ],
)
def test_a_dict_namespace_or_dataclass(given: Any, expected: dict[str, Any]) -> None:
    class Model(pl.LightningModule):
        def __init__(self, config: Any) -> None:
            super().__init__()
            self.save_hyperparameters(config)

    assert dict(Model(given).hparams) == expected


def test_inheritance_collects_every_init_and_the_subclass_wins() -> None:
    class Base(pl.LightningModule):
        def __init__(self, a: int = 1, b: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters()

    class Child(Base):
        def __init__(self, a: int = 10, c: int = 3) -> None:
            super().__init__(a=a * 2)

    class KwChild(Base):
        def __init__(self, c: int = 3, **kwargs: Any) -> None:
            super().__init__(**kwargs)

    hparams = Child().hparams
    assert hparams == {"a": 10, "b": 2, "c": 3}
    assert list(hparams) == ["a", "b", "c"]  # base keys first, as in Lightning
    assert KwChild(c=4, a=5).hparams == {"a": 5, "b": 2, "c": 4}


def test_save_in_a_subclass_after_the_base_did() -> None:
    class Base(pl.LightningModule):
        def __init__(self, a: int = 1, b: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters()

    class Child(Base):
        def __init__(self, a: int = 10, c: int = 3) -> None:
            super().__init__(a=a)
            self.save_hyperparameters()

    assert Child(c=5).hparams == {"a": 10, "b": 2, "c": 5}


def test_two_calls_accumulate() -> None:
    class Model(pl.LightningModule):
        def __init__(self, a: int = 1, b: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters("a")
            self.save_hyperparameters("b")

    model = Model()
    assert model.hparams == {"a": 1, "b": 2} and model.hparams_initial == {"a": 1, "b": 2}


def test_hparams_initial_is_a_snapshot() -> None:
    class Model(pl.LightningModule):
        def __init__(self, lr: float = 0.1, sizes: Any = None) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.hparams.lr = 0.5

    model = Model(sizes=[1, 2])
    assert model.hparams.lr == 0.5 and model.hparams_initial.lr == 0.1
    model.hparams.sizes.append(3)
    assert model.hparams_initial.sizes == [1, 2]
    model.hparams_initial["lr"] = 9  # a copy each time
    assert model.hparams_initial.lr == 0.1


def test_no_save_means_empty_hparams() -> None:
    model = CountingModel()
    assert model.hparams == {} and isinstance(model.hparams, AttributeDict)
    assert model.hparams_initial == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("zzz",), r"not __init__ arguments: \['zzz'\]; available: \['a'\]"),
        ((5,), "argument names, a dict, a Namespace or a dataclass, received int"),
    ],
)
def test_bad_arguments(args: tuple[Any, ...], message: str) -> None:
    class Model(pl.LightningModule):
        def __init__(self, a: int = 1) -> None:
            super().__init__()
            self.save_hyperparameters(*args)

    with pytest.raises(ValueError, match=message):
        Model()


def test_attribute_dict() -> None:
    hparams = AttributeDict(a=1)
    hparams.b = 2
    assert hparams == {"a": 1, "b": 2} and hparams.a == 1
    del hparams.a
    assert "a" not in hparams
    with pytest.raises(AttributeError, match=r"Missing attribute 'zzz'"):
        _ = hparams.zzz
    assert repr(AttributeDict(lr=0.1, name="x")) == '"lr":   0.1\n"name": \'x\''
    assert repr(AttributeDict()) == ""


def test_to_plain_makes_checkpoint_safe_data() -> None:
    value = {
        "ns": argparse.Namespace(a=1),
        "cfg": _Config(),
        "tuple": (1, "x"),
        "module": torch.nn.Linear(1, 1),
        1: None,
    }
    plain = to_plain(value)
    assert plain["ns"] == {"a": 1}
    assert plain["cfg"] == {"lr": 0.1, "layers": [4, 2]}
    assert plain["tuple"] == [1, "x"]
    assert plain["module"].startswith("Linear(")
    assert plain["1"] is None


# ---- logging ---------------------------------------------------------------------------------------------
class _Logged(CountingModel):
    def __init__(self, lr: float = 0.1, name: str = "m", log_hparams: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters(logger=log_hparams)


def _hparams_yaml(trainer: pl.Trainer) -> Any:
    path = Path(trainer.logger.log_dir) / "hparams.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


class _DataModule(pl.LightningDataModule):
    def __init__(self, batch_size: int = 2, n: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self) -> Any:
        return loader(self.hparams.n, batch_size=self.hparams.batch_size)


def test_hparams_are_logged_with_the_datamodule_ones(tmp_path: Path) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, logger=pl.loggers.CSVLogger(tmp_path)))
    trainer.fit(_Logged(lr=0.3), datamodule=_DataModule(batch_size=4))
    assert _hparams_yaml(trainer) == {"lr": 0.3, "name": "m", "log_hparams": True, "batch_size": 4, "n": 8}


def test_save_hyperparameters_logger_false_is_not_logged(tmp_path: Path) -> None:
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, logger=pl.loggers.CSVLogger(tmp_path)))
    model = _Logged(log_hparams=False)
    trainer.fit(model)
    assert not _hparams_yaml(trainer)
    assert model.hparams.lr == 0.1


def test_clashing_model_and_datamodule_hparams(tmp_path: Path) -> None:
    class DataModule(_DataModule):
        def __init__(self, lr: float = 0.9) -> None:
            super().__init__()
            self.save_hyperparameters()

    model = _Logged()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, logger=pl.loggers.CSVLogger(tmp_path)))
    with pytest.raises(
        ValueError, match=r"hyper-parameters to agree, received different values for \['lr'\]"
    ):
        trainer.fit(model, datamodule=DataModule())
    assert model.train_steps == 0


def test_datamodule_save_hyperparameters() -> None:
    class DataModule(pl.LightningDataModule):
        def __init__(self, batch_size: int = 4, root: str = "/data") -> None:
            super().__init__()
            self.save_hyperparameters(ignore="root")

    datamodule = DataModule(batch_size=16)
    assert datamodule.hparams == {"batch_size": 16}
    datamodule.hparams.batch_size = 2
    assert datamodule.hparams_initial == {"batch_size": 16}
