"""CometLogger with the real comet_ml client offline: what a fit writes (read back from the offline
archive), a later stage continuing the experiment, deprecated arguments, ranks, pickling, and no thread or
environment variable left behind."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import lightning_lib
from lightning_lib.demos.boring_classes import BoringModel
from lightning_lib.loggers import CometLogger
from lightning_lib.utilities.rank_zero import DummyExperiment, rank_zero_only
from tests.helpers import quiet_trainer_kwargs
from tests.loggers.offline_files import comet_archives, comet_graph, comet_metrics, comet_parameters

# looked up, not imported: the logger imports comet_ml itself, with its error reporting turned off
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("comet_ml") is None, reason="comet_ml is not installed"
)


@pytest.fixture
def comet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Comet quiet and away from the network and the user's files; archives under ``tmp_path/offline``."""
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no-comet-config"))
    monkeypatch.setenv("COMET_DISPLAY_SUMMARY_LEVEL", "0")
    monkeypatch.setenv("COMET_AUTO_LOG_ENV_HOST", "false")
    monkeypatch.setenv("COMET_AUTO_LOG_GIT_METADATA", "false")
    monkeypatch.setenv("COMET_AUTO_LOG_GIT_PATCH", "false")
    return tmp_path / "offline"


def _nothing_running() -> None:
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not [n for n in threads if "comet" in n.lower() or "Streamer" in n or "sentry" in n.lower()], (
        threads
    )


class HParamsModel(BoringModel):
    def __init__(
        self, lr: float = 0.1, nested: dict[str, Any] | None = None, token: str = "a-secret-value-123"
    ):
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("test_loss", self.step(batch))


def _trainer(root: Path, logger: Any, **kwargs: Any) -> Any:
    settings = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, "log_every_n_steps": 1}
    settings.update(kwargs)
    return lightning_lib.Trainer(**quiet_trainer_kwargs(root, logger=logger, **settings))


def test_missing_comet_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "comet_ml", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-lib\[comet\]'"):
        CometLogger(online=False)


def test_fit_writes_metrics_params_and_graph_offline(comet_env: Path, tmp_path: Path) -> None:
    before = {k: v for k, v in os.environ.items() if k.startswith("COMET")}
    logger = CometLogger(project="proj", online=False, offline_directory=str(comet_env), prefix="p")
    assert (logger.name, logger.save_dir) == ("proj", str(comet_env))
    key = logger.version
    assert isinstance(key, str) and len(key) == 32  # the experiment exists from the start, as in Lightning
    trainer = _trainer(tmp_path, logger)
    trainer.fit(HParamsModel(nested={"depth": 3}))
    _nothing_running()
    assert {k: v for k, v in os.environ.items() if k.startswith("COMET")} == before
    assert logger.version == key
    (archive,) = comet_archives(comet_env)
    assert archive.name.startswith(key)
    metrics = comet_metrics(archive)
    train = [(step, epoch) for name, _, step, epoch in metrics if name == "p_train_loss"]
    assert train == [(step, step // 4) for step in range(8)]
    assert [(step, epoch) for name, _, step, epoch in metrics if name == "p_val_loss"] == [(3, 0), (7, 1)]
    assert not [
        m for m in metrics if m[0] in ("epoch", "p_epoch")
    ]  # "epoch" is the values' epoch, not a metric
    params = comet_parameters(archive)
    assert params["lr"] == 0.1 and params["nested|depth"] == 3
    assert params["token"] == "***"  # credentials never reach the archive
    assert "Linear(in_features=32, out_features=2" in (comet_graph(archive) or "")


def test_a_later_stage_continues_the_experiment(comet_env: Path, tmp_path: Path) -> None:
    logger = CometLogger(project="proj", online=False, offline_directory=str(comet_env))
    trainer = _trainer(tmp_path, logger, max_epochs=1, limit_val_batches=0)
    model = HParamsModel()
    trainer.fit(model)
    key = logger.version
    trainer.test(model, verbose=False)
    _nothing_running()
    archives = comet_archives(comet_env)
    assert len(archives) == 2 and all(a.name.startswith(f"{key}-") for a in archives)
    assert [m[0] for m in comet_metrics(archives[1])] == ["test_loss"]


def test_deprecated_arguments_map_to_the_new_ones(comet_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lightning_lib.loggers.comet"):
        logger = CometLogger(
            experiment_name="run-a", project_name="old", offline=True, save_dir=str(comet_env)
        )
    assert "`experiment_name` is deprecated" in caplog.text and "`save_dir` is deprecated" in caplog.text
    assert (logger.name, logger.save_dir, logger._online) == ("old", str(comet_env), False)
    assert logger._comet_config.name == "run-a"
    logger.finalize("success")
    assert len(comet_archives(comet_env)) == 1
    _nothing_running()


def test_non_zero_rank_creates_no_experiment(comet_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = CometLogger(online=False, offline_directory=str(comet_env))
    assert isinstance(logger.experiment, DummyExperiment) and logger.version is None
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_hyperparams({"lr": 1})
    logger.finalize("success")
    assert logger._experiment is None and not comet_archives(comet_env)
    _nothing_running()


def test_pickled_logger_continues_its_experiment(comet_env: Path) -> None:
    logger = CometLogger(online=False, offline_directory=str(comet_env), api_key=None)
    key = logger.version
    copy = pickle.loads(pickle.dumps(logger))
    assert copy._experiment is None and copy._experiment_key == key
    logger.log_metrics({"a": 1.0}, step=0)
    logger.finalize("success")
    copy.log_metrics({"a": 2.0}, step=1)
    assert copy.version == key
    copy.finalize("success")
    _nothing_running()
    values = [m[:3] for archive in comet_archives(comet_env) for m in comet_metrics(archive)]
    assert values == [("a", 1.0, 0), ("a", 2.0, 1)]
