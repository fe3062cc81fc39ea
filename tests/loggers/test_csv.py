"""Tests for CSVLogger, its ExperimentWriter and the shared Logger helpers."""

from __future__ import annotations

import csv
import dataclasses
import enum
import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lightning_lib.loggers import CSVLogger, Logger
from lightning_lib.loggers.logger import _convert_params, _flatten_dict, _plain_data, _sanitize_params


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_header(path: str) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def read_yaml(logger: CSVLogger) -> object:
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------- layout and versions


def test_layout_and_properties(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="exp")
    assert isinstance(logger, Logger)
    assert logger.save_dir == str(tmp_path)
    assert logger.name == "exp"
    assert logger.version == 0
    assert logger.root_dir == os.path.join(str(tmp_path), "exp")
    assert logger.log_dir == os.path.join(str(tmp_path), "exp", "version_0")
    assert logger.group_separator == "/"

    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize("success")
    assert sorted(os.listdir(logger.log_dir)) == ["hparams.yaml", "metrics.csv"]


def test_default_name_and_none_name(tmp_path: Path) -> None:
    assert CSVLogger(tmp_path).log_dir == os.path.join(str(tmp_path), "lightning_logs", "version_0")
    for name in (None, ""):
        logger = CSVLogger(tmp_path, name=name)
        assert logger.name == ""
        assert logger.log_dir == os.path.join(str(tmp_path), "version_0")


def test_nothing_created_until_logging(tmp_path: Path) -> None:
    save_dir = tmp_path / "logs"
    logger = CSVLogger(save_dir)
    _ = logger.log_dir, logger.root_dir, logger.version
    logger.finalize("success")  # nothing logged: must stay a no-op
    assert not save_dir.exists()

    logger.log_metrics({"a": 1.0})
    assert os.path.isdir(logger.log_dir)
    assert not os.path.exists(os.path.join(logger.log_dir, "metrics.csv"))  # buffered, not flushed


def test_version_increments_to_next_free_number(tmp_path: Path) -> None:
    root = tmp_path / "lightning_logs"
    for name in ("version_0", "version_3", "version_x", "other"):
        (root / name).mkdir(parents=True)
    (root / "version_7").write_text("a file, not a version folder")
    assert CSVLogger(tmp_path).version == 4


def test_successive_loggers_get_new_versions(tmp_path: Path) -> None:
    versions = []
    for _ in range(3):
        logger = CSVLogger(tmp_path)
        logger.log_metrics({"a": 1.0}, step=0)
        logger.finalize("success")
        versions.append(logger.version)
    assert versions == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "lightning_logs")) == ["version_0", "version_1", "version_2"]


def test_version_is_fixed_at_first_access(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    assert logger.version == 0
    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)
    assert logger.version == 0


def test_explicit_int_and_str_versions(tmp_path: Path) -> None:
    assert CSVLogger(tmp_path, version=5).log_dir == os.path.join(
        str(tmp_path), "lightning_logs", "version_5"
    )
    logger = CSVLogger(tmp_path, version="run-a")
    assert logger.version == "run-a"
    assert logger.log_dir == os.path.join(str(tmp_path), "lightning_logs", "run-a")
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    assert os.path.isfile(os.path.join(str(tmp_path), "lightning_logs", "run-a", "metrics.csv"))


def test_reused_version_warns_and_replaces_old_metrics(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"old": 1.0}, step=0)
    first.finalize("success")

    second = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        second.log_metrics({"new": 2.0}, step=0)
    second.finalize("success")
    assert read_rows(os.path.join(second.log_dir, "metrics.csv")) == [{"new": "2.0", "step": "0"}]


def test_pathlike_save_dir(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path / "sub")
    assert isinstance(logger.save_dir, str)
    assert logger.save_dir == str(tmp_path / "sub")


def test_invalid_flush_interval() -> None:
    with pytest.raises(ValueError, match="Expected flush_logs_every_n_steps >= 1, received 0"):
        CSVLogger("unused", flush_logs_every_n_steps=0)


# ---------------------------------------------------------------- metrics.csv


def test_rows_have_sorted_header_with_step(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 0.5, "acc": 0.25}, step=3)
    logger.save()
    path = os.path.join(logger.log_dir, "metrics.csv")
    assert read_header(path) == ["acc", "loss", "step"]
    assert read_rows(path) == [{"acc": "0.25", "loss": "0.5", "step": "3"}]


def test_step_defaults_to_running_row_count(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=2)
    for i in range(5):
        logger.log_metrics({"a": float(i)})
    logger.finalize("success")
    rows = read_rows(os.path.join(logger.log_dir, "metrics.csv"))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4"]


def test_header_widens_when_new_key_appears(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"train_loss": 1.0}, step=0)
    logger.save()
    logger.log_metrics({"train_loss": 0.5}, step=1)
    logger.save()
    assert read_header(path) == ["step", "train_loss"]

    logger.log_metrics({"val_loss": 0.7, "epoch": 0}, step=1)
    logger.save()
    assert read_header(path) == ["epoch", "step", "train_loss", "val_loss"]
    assert read_rows(path) == [
        {"epoch": "", "step": "0", "train_loss": "1.0", "val_loss": ""},
        {"epoch": "", "step": "1", "train_loss": "0.5", "val_loss": ""},
        {"epoch": "0", "step": "1", "train_loss": "", "val_loss": "0.7"},
    ]
    assert not os.path.exists(path + ".tmp")

    # a later row without the new keys appends under the same header
    logger.log_metrics({"train_loss": 0.25}, step=2)
    logger.finalize("success")
    assert read_rows(path)[-1] == {"epoch": "", "step": "2", "train_loss": "0.25", "val_loss": ""}


def test_flush_every_n_calls(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"a": 0.0}, step=10)
    logger.log_metrics({"a": 1.0}, step=20)
    assert not os.path.exists(path)
    logger.log_metrics({"a": 2.0}, step=30)
    assert len(read_rows(path)) == 3
    logger.log_metrics({"a": 3.0}, step=40)
    logger.log_metrics({"a": 4.0}, step=50)
    assert len(read_rows(path)) == 3
    logger.finalize("success")
    assert [r["step"] for r in read_rows(path)] == ["10", "20", "30", "40", "50"]


def test_save_flushes_and_clears_buffer(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    logger.save()  # nothing buffered: must not duplicate rows
    assert len(read_rows(os.path.join(logger.log_dir, "metrics.csv"))) == 1
    assert logger.experiment.metrics == []


def test_tensor_values_converted_at_log_time(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    value = torch.tensor(0.5)
    logger.log_metrics({"loss": value, "count": torch.tensor(3)}, step=0)
    value.add_(1.0)  # an in-place update after logging must not change the logged row
    row = logger.experiment.metrics[0]
    assert row == {"loss": 0.5, "count": 3, "step": 0}
    assert type(row["loss"]) is float and type(row["count"]) is int
    logger.finalize("success")
    assert read_rows(os.path.join(logger.log_dir, "metrics.csv")) == [
        {"count": "3", "loss": "0.5", "step": "0"}
    ]


def test_float_precision_round_trips(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    value = torch.tensor(0.1, dtype=torch.float32)
    logger.log_metrics({"x": value}, step=0)
    logger.finalize("success")
    assert float(read_rows(os.path.join(logger.log_dir, "metrics.csv"))[0]["x"]) == value.item()


def test_prefix_joins_with_dash(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, prefix="fold1")
    logger.log_metrics({"loss": 1.0, "val/acc": 0.5}, step=0)
    logger.finalize("success")
    assert read_header(os.path.join(logger.log_dir, "metrics.csv")) == ["fold1-loss", "fold1-val/acc", "step"]


# ---------------------------------------------------------------- hparams.yaml


def test_hparams_nested_dict(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    params = {"lr": 0.01, "optim": {"name": "adam", "betas": [0.9, 0.99]}, "layers": (32, 16), "flag": True}
    logger.log_hyperparams(params)
    assert read_yaml(logger) == {
        "flag": True,
        "layers": [32, 16],
        "lr": 0.01,
        "optim": {"betas": [0.9, 0.99], "name": "adam"},
    }


def test_hparams_namespace_and_merge(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(Namespace(lr=0.1, inner=Namespace(depth=2)))
    logger.log_hyperparams({"batch_size": 8, "lr": 0.2})  # later calls merge and override
    assert read_yaml(logger) == {"batch_size": 8, "inner": {"depth": 2}, "lr": 0.2}


def test_hparams_none_writes_empty_mapping(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(None)
    assert read_yaml(logger) == {}


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Config:
    width: int = 4
    act: type = torch.nn.ReLU


def test_hparams_tensors_and_objects_become_plain_data(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(
        {
            "scalar": torch.tensor(0.5),
            "weights": torch.tensor([1.0, 2.0]),
            "np": np.float64(0.25),
            "arr": np.array([[1, 2]]),
            "color": Color.RED,
            "config": Config(),
            "module": torch.nn.Linear(2, 1),
            "fn": print,
            "s": {3},
        }
    )
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as f:
        text = f.read()
    assert "!!python" not in text
    data = yaml.safe_load(text)
    assert data["scalar"] == 0.5
    assert data["weights"] == [1.0, 2.0]
    assert data["np"] == 0.25
    assert data["arr"] == [[1, 2]]
    assert data["color"] == "RED"
    assert data["config"] == {"width": 4, "act": str(torch.nn.ReLU)}
    assert data["module"] == str(torch.nn.Linear(2, 1))
    assert data["fn"] == str(print)
    assert data["s"] == [3]


def test_hparams_are_a_snapshot(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    params = {"opt": {"lr": 0.1}}
    logger.log_hyperparams(params)
    params["opt"]["lr"] = 0.5
    logger.log_hyperparams({"other": 1})
    assert read_yaml(logger) == {"opt": {"lr": 0.1}, "other": 1}


# ---------------------------------------------------------------- helpers


def test_flatten_dict() -> None:
    params = {
        "a": {"b": {"c": 1}},
        "ns": Namespace(x=2),
        5: {"k": 3},
        "dl": [{"p": 1}, {"q": 2}],
        "l": [1, 2],
        "empty": [],
        "cfg": Config(),
    }
    assert _flatten_dict(params) == {
        "a/b/c": 1,
        "ns/x": 2,
        "5/k": 3,
        "dl/0/p": 1,
        "dl/1/q": 2,
        "l": [1, 2],
        "empty": [],
        "cfg/width": 4,
        "cfg/act": torch.nn.ReLU,
    }
    assert _flatten_dict({"a": {"b": 1}}, delimiter=".") == {"a.b": 1}


def test_convert_params() -> None:
    assert _convert_params(None) == {}
    assert _convert_params(Namespace(a=1)) == {"a": 1}
    assert _convert_params(Config()) == {"width": 4, "act": torch.nn.ReLU}
    original = {"a": 1}
    converted = _convert_params(original)
    assert converted == original and converted is not original
    with pytest.raises(TypeError, match="Expected params to be a dict"):
        _convert_params([1, 2])


def test_sanitize_params() -> None:
    out = _sanitize_params(
        {
            "f": 0.5,
            "i": 1,
            "b": True,
            "s": "x",
            "l": [1, 2],
            "t": torch.tensor(2.0),
            "n": np.int64(3),
            "none": None,
        }
    )
    assert out == {"f": 0.5, "i": 1, "b": True, "s": "x", "l": "[1, 2]", "t": 2.0, "n": 3, "none": "None"}


def test_plain_data_keeps_primitives() -> None:
    assert _plain_data({"a": [1, 2.5, "s", None, False]}) == {"a": [1, 2.5, "s", None, False]}
    assert _plain_data({Color.RED: 1}) == {"Color.RED": 1}


def test_base_logger_defaults() -> None:
    class Minimal(Logger):
        name = "m"
        version = 1

        def __init__(self) -> None:
            self.saved = 0

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            pass

        def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
            pass

        def save(self) -> None:
            self.saved += 1

    logger = Minimal()
    assert (logger.root_dir, logger.log_dir, logger.save_dir, logger.experiment) == (None, None, None, None)
    assert logger.group_separator == "/"
    logger.log_graph(torch.nn.Linear(1, 1))
    logger.after_save_checkpoint(object())
    logger.finalize("success")
    assert logger.saved == 1

    with pytest.raises(TypeError):
        Logger()  # type: ignore[abstract]


# ---------------------------------------------------------------- parity with pytorch_lightning

# step=None only on the first row: after a flush Lightning restarts the implicit step at 0 (it counts the
# buffered rows), while this library keeps counting; see test_step_defaults_to_running_row_count.
STEPS: list[tuple[dict[str, object], int | None]] = [
    ({"sanity/acc": 1.0}, None),
    ({"train_loss": torch.tensor(0.9), "epoch": 0}, 0),
    ({"train_loss": torch.tensor(0.7123456789)}, 1),
    ({"train_loss": 0.5, "lr-SGD": 0.1}, 2),
    ({"val_loss": torch.tensor(0.6), "val_acc": 0.75, "epoch": 0}, 2),
    ({"train_loss": torch.tensor(0.3, dtype=torch.float64), "epoch": 1}, 3),
    ({"test/acc": torch.tensor(1.0)}, 4),
    ({"count": torch.tensor(7)}, 4),
]

HPARAMS = {
    "lr": 0.01,
    "batch_size": 32,
    "name": "boring",
    "flag": False,
    "nothing": None,
    "layers": [64, 32],
    "optim": {"name": "adam", "betas": [0.9, 0.999], "nested": {"eps": 1e-8}},
    "unicode": "é",
}


@pytest.mark.parity
@pytest.mark.parametrize("flush_every", [1, 2, 100])
@pytest.mark.parametrize("prefix", ["", "run"])
def test_parity_with_pytorch_lightning(tmp_path: Path, flush_every: int, prefix: str) -> None:
    pl_loggers = pytest.importorskip("pytorch_lightning.loggers")
    theirs = pl_loggers.CSVLogger(tmp_path / "pl", prefix=prefix, flush_logs_every_n_steps=flush_every)
    ours = CSVLogger(tmp_path / "ours", prefix=prefix, flush_logs_every_n_steps=flush_every)

    for logger in (theirs, ours):
        logger.log_hyperparams(Namespace(**HPARAMS))
        logger.log_hyperparams({"extra": 3})
        for metrics, step in STEPS:
            logger.log_metrics(dict(metrics), step=step)
        logger.finalize("success")

    assert os.path.relpath(ours.log_dir, tmp_path / "ours") == os.path.relpath(
        theirs.log_dir, tmp_path / "pl"
    )
    for filename in ("metrics.csv", "hparams.yaml"):
        with open(os.path.join(theirs.log_dir, filename), "rb") as f:
            expected = f.read()
        with open(os.path.join(ours.log_dir, filename), "rb") as f:
            assert f.read() == expected, filename


@pytest.mark.parity
def test_version_parity_with_pytorch_lightning(tmp_path: Path) -> None:
    pl_loggers = pytest.importorskip("pytorch_lightning.loggers")
    for name in ("version_0", "version_2", "version_x", "other"):
        (tmp_path / "lightning_logs" / name).mkdir(parents=True)
    for kwargs in ({}, {"name": None}, {"version": "custom"}, {"version": 9}):
        theirs = pl_loggers.CSVLogger(tmp_path, **kwargs)
        ours = CSVLogger(tmp_path, **kwargs)
        assert (ours.name, ours.version, ours.root_dir, ours.log_dir, ours.save_dir) == (
            theirs.name,
            theirs.version,
            theirs.root_dir,
            theirs.log_dir,
            theirs.save_dir,
        )
