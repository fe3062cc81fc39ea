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
        "g": torch.nn.ReLU,
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
