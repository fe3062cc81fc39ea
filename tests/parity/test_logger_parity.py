"""WandbLogger and CometLogger: the same fit logged by pytorch_lightning's logger and by ours, each with the
real client offline, read back from the files the clients wrote: the same metric names, steps, epochs and
values, the same hyper-parameters, the same checkpoint folder, the same artifacts."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import lightning_lib
from tests.helpers import quiet_trainer_kwargs, reference_lightning
from tests.loggers.offline_files import (
    comet_archives,
    comet_metrics,
    comet_parameters,
    wandb_artifacts,
    wandb_config,
    wandb_history,
    wandb_run_files,
)

pytestmark = pytest.mark.parity


def _libs() -> list[ModuleType]:
    return [reference_lightning(), lightning_lib]


def _model(pl: ModuleType) -> Any:
    boring = importlib.import_module(f"{pl.__name__}.demos.boring_classes").BoringModel

    class Logged(boring):  # type: ignore[misc, valid-type]
        def __init__(self, lr: float = 0.1, depth: int = 3, nested: dict[str, Any] | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().training_step(batch, batch_idx)
            self.log("train_loss", out["loss"])
            self.log("per_epoch", out["loss"], on_step=False, on_epoch=True)
            return out

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().validation_step(batch, batch_idx)
            self.log("val_loss", out["x"])
            return out

    return Logged(nested={"a": 1, "b": "text"})


def _fit(pl: ModuleType, root: Path, logger: Any, **kwargs: Any) -> Any:
    pl.seed_everything(11, verbose=False)
    settings: dict[str, Any] = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2}
    settings.update(log_every_n_steps=1, enable_checkpointing=True, **kwargs)
    trainer = pl.Trainer(**quiet_trainer_kwargs(root, logger=logger, **settings))
    trainer.fit(_model(pl))
    return trainer


def _same_rows(ours: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    assert [sorted(row) for row in ours] == [sorted(row) for row in reference]
    for mine, theirs in zip(ours, reference):
        for key, value in theirs.items():
            if isinstance(value, float):
                assert math.isclose(mine[key], value, rel_tol=1e-5), (key, mine[key], value)
            else:
                assert mine[key] == value, key


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_logs_what_lightning_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv(
        "WANDB_MODE", "offline"
    )  # both offline alike (Lightning's offline=True forbids log_model)
    found = []
    for pl in _libs():
        root = tmp_path / pl.__name__
        logger = pl.loggers.WandbLogger(project="proj", save_dir=root, log_model=True)
        trainer = _fit(pl, root, logger)
        version = logger.version
        folder = Path(trainer.checkpoint_callback.dirpath).relative_to(root)
        if wandb.run is not None:  # Lightning's logger leaves its run open
            wandb.finish()
        wandb.teardown()
        (run_file,) = wandb_run_files(root)
        artifacts = wandb_artifacts(run_file)
        for artifact in artifacts:
            artifact["name"] = artifact["name"].replace(version, "<id>")
        found.append(
            (wandb_history(run_file), wandb_config(run_file), str(folder).replace(version, "<id>"), artifacts)
        )
    (ref_history, ref_config, ref_folder, ref_artifacts), (history, config, folder, artifacts) = found
    assert ref_history and ref_artifacts
    _same_rows(history, ref_history)
    assert config == ref_config
    assert folder == ref_folder
    assert artifacts == ref_artifacts


@pytest.mark.skipif(importlib.util.find_spec("comet_ml") is None, reason="comet_ml is not installed")
def test_comet_logs_what_lightning_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no-comet-config"))
    monkeypatch.setenv("COMET_DISPLAY_SUMMARY_LEVEL", "0")
    monkeypatch.setenv("COMET_AUTO_LOG_ENV_HOST", "false")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    # Lightning sets it for the whole process; monkeypatch restores it afterwards
    monkeypatch.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
    # Lightning's online=False also disables the experiment (nothing is written): its offline archive
    # comes from Comet's own setting instead
    monkeypatch.setenv("COMET_START_ONLINE", "false")
    found = []
    for pl in _libs():
        root = tmp_path / pl.__name__
        options: dict[str, Any] = {} if pl is not lightning_lib else {"online": False}
        (root / "offline").mkdir(parents=True)
        logger = pl.loggers.CometLogger(
            project="proj", offline_directory=str(root / "offline"), prefix="x", **options
        )
        trainer = _fit(pl, root, logger)
        folder = str(Path(trainer.checkpoint_callback.dirpath).relative_to(root)).replace(
            logger.version, "<key>"
        )
        if logger._experiment is not None:  # Lightning's logger only flushes at the end of the fit
            logger._experiment.end()
        (archive,) = comet_archives(root / "offline")
        found.append((comet_metrics(archive), comet_parameters(archive), folder))
    (ref_metrics, ref_params, ref_folder), (metrics, params, folder) = found
    assert ref_metrics
    assert [m[0::2] for m in metrics] == [m[0::2] for m in ref_metrics]  # name, step and epoch
    for mine, theirs in zip(metrics, ref_metrics):
        assert math.isclose(mine[1], theirs[1], rel_tol=1e-5), (mine, theirs)
    assert params == ref_params
    assert folder == ref_folder
