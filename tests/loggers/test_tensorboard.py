"""TensorBoardLogger: folders, versions, event files (read back with TensorBoard's EventAccumulator),
hyper-parameters, rank zero, the writer thread, and what pytorch_lightning's logger writes for the same fit."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.loggers import TensorBoardLogger
from lightning_lib.utilities.rank_zero import DummyExperiment, rank_zero_only
from tests.helpers import classification_data, make_classes, quiet_trainer_kwargs, reference_lightning

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

REPO = Path(__file__).resolve().parents[2]


def _events(log_dir: str | Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return accumulator


def _scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = _events(log_dir)
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def _hparams(log_dir: str | Path) -> dict[str, Any]:
    metadata = _events(log_dir).SummaryMetadata("_hparams_/session_start_info")
    data = plugin_data_pb2.HParamsPluginData.FromString(metadata.plugin_data.content)
    found: dict[str, Any] = {}
    for name, value in data.session_start_info.hparams.items():
        found[name] = getattr(value, value.WhichOneof("kind"))
    return found


def test_folders_and_versions(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    assert (logger.save_dir, logger.name, logger.version) == (str(tmp_path), "lightning_logs", 0)
    assert logger.root_dir == os.path.join(str(tmp_path), "lightning_logs")
    assert logger.log_dir == os.path.join(str(tmp_path), "lightning_logs", "version_0")
    assert not os.path.exists(logger.root_dir)  # nothing on disk before the first event
    logger.log_metrics({"a": 1.0}, step=0)
    logger.finalize("success")
    assert TensorBoardLogger(tmp_path).version == 1
    os.makedirs(tmp_path / "lightning_logs" / "version_7")
    (tmp_path / "lightning_logs" / "version_9").write_text("a file, not a version folder")
    assert TensorBoardLogger(tmp_path).version == 8
    named = TensorBoardLogger(tmp_path, name="", version="run-a", sub_dir="train")
    assert named.log_dir == os.path.join(str(tmp_path), "run-a", "train")
    assert TensorBoardLogger(tmp_path, name=None, version=3).log_dir == os.path.join(
        str(tmp_path), "version_3"
    )


def test_log_dir_expands_user_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TB_TEST_DIR", "expanded")
    logger = TensorBoardLogger(tmp_path, version=0, sub_dir="$TB_TEST_DIR")
    assert logger.log_dir.endswith(os.path.join("version_0", "expanded"))


def test_metrics_are_written_as_scalars(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, prefix="train")
    logger.log_metrics({"loss": torch.tensor(0.5), "acc": 0.25}, step=3)
    logger.log_metrics({"loss": 0.125}, step=4)
    logger.log_metrics({"both": {"a": 1.0, "b": 2.0}}, step=5)
    logger.finalize("success")
    scalars = _scalars(logger.log_dir)
    assert scalars["train-loss"] == [(3, 0.5), (4, 0.125)]
    assert scalars["train-acc"] == [(3, 0.25)]
    # add_scalars writes one run folder per key under log_dir
    assert _scalars(os.path.join(logger.log_dir, "train-both_a"))["train-both"] == [(5, 1.0)]


def test_an_unsupported_value_names_itself(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(ValueError, match="you tried to log abc which is currently not supported"):
        logger.log_metrics({"text": "abc"}, step=0)
    logger.finalize("failed")


def test_hyperparameters_for_the_hparams_tab_and_hparams_yaml(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    params = {
        "lr": 0.01,
        "layers": [1, 2],
        "opt": {"name": "adam", "betas": (0.9, 0.99)},
        "ns": Namespace(a=1),
    }
    logger.log_hyperparams(params)
    logger.finalize("success")
    assert _hparams(logger.log_dir) == {
        "lr": 0.01,
        "layers": "[1, 2]",
        "opt/name": "adam",
        "opt/betas": "(0.9, 0.99)",
        "ns/a": 1.0,
    }
    assert _scalars(logger.log_dir)["hp_metric"] == [(0, -1.0)]
    saved = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
    assert saved == {
        "lr": 0.01,
        "layers": [1, 2],
        "opt": {"name": "adam", "betas": [0.9, 0.99]},
        "ns": {"a": 1},
    }


def test_hp_metric_given_or_switched_off(tmp_path: Path) -> None:
    given = TensorBoardLogger(tmp_path, version="given")
    given.log_hyperparams({"lr": 0.1}, metrics=0.75, step=2)
    given.finalize("success")
    assert _scalars(given.log_dir)["hp_metric"] == [(2, 0.75)]
    off = TensorBoardLogger(tmp_path, version="off", default_hp_metric=False)
    off.log_hyperparams({"lr": 0.1})
    off.finalize("success")
    assert off.hparams == {"lr": 0.1}
    assert not os.path.exists(os.path.join(off.log_dir, "hparams.yaml"))  # nothing was written, no folder


def test_graph_when_training_starts(tmp_path: Path) -> None:
    model = make_classes(lightning_lib)["ClassifierModel"]()
    model.example_input_array = torch.randn(2, 32)
    for log_graph in (True, False):
        logger = TensorBoardLogger(tmp_path, log_graph=log_graph)
        kwargs = quiet_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1, logger=logger)
        lightning_lib.Trainer(**kwargs).fit(model, DataLoader(classification_data(16), batch_size=8))
        assert _events(logger.log_dir).Tags()["graph"] is log_graph
    silent = TensorBoardLogger(tmp_path, log_graph=True, version="none")
    with pytest.warns(UserWarning, match="`model.example_input_array` attribute is not set"):
        silent.log_graph(make_classes(lightning_lib)["ClassifierModel"]())
    with pytest.warns(UserWarning, match="which can't be traced by TensorBoard"):
        silent.log_graph(model, input_array=[1, 2])


def test_the_writer_thread_ends_at_finalize_and_a_later_run_reopens(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    assert set(threading.enumerate()) - before  # the writer's thread
    logger.finalize("success")
    assert set(threading.enumerate()) - before == set()
    logger.log_metrics({"a": 2.0}, step=1)  # the next fit of the same Trainer logs again
    logger.finalize("success")
    assert set(threading.enumerate()) - before == set()
    # two event files in log_dir (one per writer): their order is not the point
    assert sorted(_scalars(logger.log_dir)["a"]) == [(0, 1.0), (1, 2.0)]


def test_only_rank_zero_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = TensorBoardLogger(tmp_path)
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert list(tmp_path.iterdir()) == []


def test_pickled_copies_open_their_own_writer(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy._experiment is None and copy.log_dir == logger.log_dir
    logger.finalize("success")


def test_remote_save_dir_is_refused() -> None:
    with pytest.raises(
        ValueError, match="Expected a local save_dir for TensorBoardLogger, received 's3://b/x'"
    ):
        TensorBoardLogger("s3://b/x")


def test_tensorboard_is_imported_only_when_the_logger_writes(tmp_path: Path) -> None:
    code = (
        "import sys, lightning_lib\n"
        "from lightning_lib.loggers import TensorBoardLogger\n"
        f"logger = TensorBoardLogger({str(tmp_path)!r})\n"
        "print('tensorboard' in sys.modules, 'torch.utils.tensorboard' in sys.modules)\n"
        "logger.log_metrics({'a': 1.0}, step=0)\n"
        "logger.finalize('success')\n"
        "print('tensorboard' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def _fit(pl: ModuleType, root: Path) -> tuple[Any, Any]:
    pl.seed_everything(11)
    model = make_classes(pl)["ClassifierModel"](lr=0.02)
    logger = pl.loggers.TensorBoardLogger(root, name="exp")
    kwargs = quiet_trainer_kwargs(
        root, max_epochs=2, limit_train_batches=4, limit_val_batches=2, log_every_n_steps=2, logger=logger
    )
    trainer = pl.Trainer(**kwargs)
    data = DataLoader(classification_data(64), batch_size=8)
    trainer.fit(model, data, DataLoader(classification_data(32, seed=1), batch_size=8))
    return trainer, logger


@pytest.mark.parity
def test_a_fit_writes_what_lightning_writes(tmp_path: Path) -> None:
    pl = reference_lightning()
    before = set(threading.enumerate())
    our_trainer, ours = _fit(lightning_lib, tmp_path / "ours")
    _, theirs = _fit(pl, tmp_path / "theirs")
    assert set(threading.enumerate()) - before == set()  # both writers closed by the end of fit
    assert our_trainer.log_dir == ours.log_dir == str(tmp_path / "ours" / "exp" / "version_0")
    assert os.path.relpath(ours.log_dir, tmp_path / "ours") == os.path.relpath(
        theirs.log_dir, tmp_path / "theirs"
    )
    our_scalars, their_scalars = _scalars(ours.log_dir), _scalars(theirs.log_dir)
    assert our_scalars.keys() == their_scalars.keys()
    for tag, events in their_scalars.items():
        assert [s for s, _ in our_scalars[tag]] == [s for s, _ in events], tag
        torch.testing.assert_close([v for _, v in our_scalars[tag]], [v for _, v in events])
    assert _hparams(ours.log_dir) == _hparams(theirs.log_dir)
    our_yaml = yaml.safe_load(Path(ours.log_dir, "hparams.yaml").read_text())
    assert our_yaml == yaml.safe_load(Path(theirs.log_dir, "hparams.yaml").read_text())
