"""WandbLogger with the real wandb client in offline mode: what a fit writes (read back from the run's
``.wandb`` file), checkpoints as artifacts, media, ranks, pickling, and nothing left running afterwards."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lib
from lightning_lib.demos.boring_classes import BoringModel
from lightning_lib.loggers import WandbLogger
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import DummyExperiment, rank_zero_only
from tests.helpers import quiet_trainer_kwargs
from tests.loggers.offline_files import (
    wandb_artifacts,
    wandb_config,
    wandb_history,
    wandb_run_files,
    wandb_run_ids,
)

pytest.importorskip("wandb")
psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B's own folders under ``tmp_path``, its console quiet; the run mode is left to each test."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    yield tmp_path
    import wandb

    if wandb.run is not None:  # a failed test must not leave its run to the next one
        wandb.finish()
    wandb.teardown()


def _nothing_running() -> None:
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not [name for name in threads if "wandb" in name.lower() or "otel" in name.lower()], threads
    children = [p.name() for p in psutil.Process().children(recursive=True)]
    assert not [name for name in children if name.startswith("wandb")], children


class HParamsModel(BoringModel):
    def __init__(self, lr: float = 0.1, layers: int = 2, api_key: str = "sk-not-a-real-key-0123456789abcdef"):
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


def _fit(tmp_path: Path, logger: Any, **kwargs: Any) -> Any:
    settings = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, "log_every_n_steps": 1}
    settings.update(kwargs)
    trainer = lightning_lib.Trainer(**quiet_trainer_kwargs(tmp_path, logger=logger, **settings))
    trainer.fit(HParamsModel())
    return trainer


def test_import_does_not_import_wandb() -> None:
    code = "import sys, lightning_lib, lightning_lib.loggers; print('wandb' in sys.modules, 'comet_ml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_wandb_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-lib\[wandb\]'"):
        WandbLogger()


def test_arguments_and_properties_before_a_run(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = WandbLogger(save_dir=wandb_env, version="abc", project="proj", name="display", tags=["t"])
    assert (logger.name, logger.version, logger.save_dir) == ("proj", "abc", str(wandb_env))
    assert logger._wandb_init == {
        "name": "display",
        "project": "proj",
        "dir": str(wandb_env),
        "id": "abc",
        "resume": "allow",
        "anonymous": None,
        "tags": ["t"],
    }
    assert WandbLogger().name == "lightning_logs"
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    assert WandbLogger(id="x", anonymous=True)._wandb_init["anonymous"] == "allow"
    assert WandbLogger().name == "from-env"
    with pytest.raises(MisconfigurationException, match="log_model=True and offline=True"):
        WandbLogger(offline=True, log_model=True)
    _nothing_running()  # building a logger starts no run


def test_fit_logs_metrics_config_and_leaves_nothing_running(wandb_env: Path) -> None:
    logger = WandbLogger(project="proj", save_dir=wandb_env, offline=True)
    trainer = _fit(wandb_env, logger, enable_checkpointing=True)
    assert "WANDB_MODE" not in os.environ  # offline=True is this logger's, not the process's
    _nothing_running()
    (run_file,) = wandb_run_files(wandb_env)
    assert wandb_run_ids(run_file) == [logger.version]
    history = wandb_history(run_file)
    train = [(row["trainer/global_step"], row["train_loss"]) for row in history if "train_loss" in row]
    assert [step for step, _ in train] == list(range(8))
    assert all(isinstance(value, float) for _, value in train)
    assert [(row["trainer/global_step"], row["epoch"]) for row in history if "val_loss" in row] == [
        (3, 0),
        (7, 1),
    ]
    config = wandb_config(run_file)
    assert config["lr"] == 0.1 and config["layers"] == 2
    assert config["api_key"] == "***"  # credentials never reach the tracking files
    assert trainer.log_dir == logger.save_dir


def test_a_later_stage_resumes_the_same_run(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")

    class Tested(HParamsModel):
        def test_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("test_loss", self.step(batch))

    logger = WandbLogger(project="proj", save_dir=wandb_env)
    trainer = lightning_lib.Trainer(
        **quiet_trainer_kwargs(
            wandb_env, logger=logger, max_epochs=1, limit_train_batches=2, limit_val_batches=0
        )
    )
    model = Tested()
    trainer.fit(model)
    version = logger.version
    trainer.test(model, verbose=False)
    _nothing_running()
    assert logger.version == version
    files = wandb_run_files(wandb_env)
    assert [wandb_run_ids(f) for f in files] == [[version], [version]]
    assert any("test_loss" in row for row in wandb_history(files[1]))


def test_log_model_all_logs_each_checkpoint_as_an_artifact(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # offline by the environment: log_model is allowed
    logger = WandbLogger(project="proj", save_dir=wandb_env, log_model="all")
    # every checkpoint is kept: one replaced before its commit started may never be written at all
    checkpoint = lightning_lib.callbacks.ModelCheckpoint(monitor="step", mode="max", save_top_k=-1)
    _fit(wandb_env, logger, enable_checkpointing=True, callbacks=[checkpoint])
    _nothing_running()
    (run_file,) = wandb_run_files(wandb_env)
    artifacts = wandb_artifacts(run_file)
    assert [a["metadata"]["original_filename"] for a in artifacts] == [
        "epoch=0-step=4.ckpt",
        "epoch=1-step=8.ckpt",
    ]
    assert [a["metadata"]["score"] for a in artifacts] == [4, 8]
    for artifact in artifacts:
        assert (artifact["name"], artifact["type"], artifact["files"]) == (
            f"model-{logger.version}",
            "model",
            ["model.ckpt"],
        )
        assert sorted(artifact["aliases"]) == ["best", "latest"]
        assert artifact["metadata"]["ModelCheckpoint"] == {
            "monitor": "step",
            "mode": "max",
            "save_last": None,
            "save_top_k": -1,
            "save_weights_only": False,
            "_every_n_train_steps": 0,
        }


def test_log_model_true_logs_at_the_end_with_scores(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(project="proj", save_dir=wandb_env, log_model=True, checkpoint_name="my-model")
    checkpoint = lightning_lib.callbacks.ModelCheckpoint(monitor="step", mode="max", save_top_k=2)
    _fit(wandb_env, logger, enable_checkpointing=True, callbacks=[checkpoint])
    (run_file,) = wandb_run_files(wandb_env)
    artifacts = wandb_artifacts(run_file)
    assert {a["name"] for a in artifacts} == {"my-model"}
    scores = {
        a["metadata"]["original_filename"]: (a["metadata"]["score"], sorted(a["aliases"])) for a in artifacts
    }
    assert scores == {"epoch=0-step=4.ckpt": (4, ["latest"]), "epoch=1-step=8.ckpt": (8, ["best", "latest"])}


def test_media_tables_and_text(wandb_env: Path) -> None:
    logger = WandbLogger(project="proj", save_dir=wandb_env, offline=True)
    logger.log_text("samples", columns=["a", "b"], data=[["x", "y"]], step=3)
    logger.log_table("numbers", columns=["n"], data=[[1], [2]])
    logger.log_image("images", [torch.zeros(3, 8, 8), torch.ones(3, 8, 8)], step=4, caption=["zero", "one"])
    with pytest.raises(ValueError, match="Expected 2 items but only found 1 for caption"):
        logger.log_image("images", [torch.zeros(3, 8, 8), torch.ones(3, 8, 8)], caption=["zero"])
    with pytest.raises(TypeError, match='Expected a list as "images"'):
        logger.log_image("images", torch.zeros(3, 8, 8))  # type: ignore[arg-type]
    logger.finalize("success")
    _nothing_running()
    history = wandb_history(wandb_run_files(wandb_env)[0])
    assert history[0]["samples/_type"] == "table-file" and history[0]["trainer/global_step"] == 3
    assert (history[0]["samples/nrows"], history[0]["samples/ncols"]) == (1, 2)
    assert (history[1]["numbers/_type"], history[1]["numbers/nrows"]) == ("table-file", 2)
    assert history[2]["images/captions"] == ["zero", "one"] and history[2]["trainer/global_step"] == 4
    assert history[2]["images/count"] == 2


def test_non_zero_rank_starts_no_run(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = WandbLogger(project="proj", save_dir=wandb_env, offline=True)
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_hyperparams({"lr": 1})
    logger.log_image("i", [torch.zeros(3, 2, 2)])
    logger.finalize("success")
    assert logger._experiment is None and not wandb_run_files(wandb_env)


def test_pickled_logger_resumes_its_run_id(wandb_env: Path) -> None:
    logger = WandbLogger(project="proj", save_dir=wandb_env, offline=True)
    logger.log_metrics({"a": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy.version == logger.version and copy._experiment is None
    logger.finalize("success")
    copy.log_metrics({"a": 2.0}, step=1)
    copy.finalize("success")
    _nothing_running()
    files = wandb_run_files(wandb_env)
    assert [wandb_run_ids(f) for f in files] == [[logger.version], [logger.version]]


def test_queued_calls_are_made_at_exit_without_finalize(wandb_env: Path) -> None:
    script = (
        "from lightning_lib.loggers import WandbLogger\n"
        f"logger = WandbLogger(project='proj', save_dir={str(wandb_env)!r}, offline=True)\n"
        "for step in range(50):\n"
        "    logger.log_metrics({'a': float(step)}, step=step)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", script], cwd=wandb_env, env=env, check=True, timeout=300)
    (run_file,) = wandb_run_files(wandb_env)
    assert [row["a"] for row in wandb_history(run_file)] == [float(step) for step in range(50)]


class _SlowRun:
    """A run whose ``log`` waits for the test to let it go: shows who waits for whom, without timing."""

    id = "slow"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.logged: list[dict[str, Any]] = []

    def log(self, data: dict[str, Any]) -> None:
        assert self.release.wait(30)
        self.logged.append(data)


def test_logging_does_not_wait_for_the_client_and_experiment_does(wandb_env: Path) -> None:
    run = _SlowRun()
    logger = WandbLogger(experiment=run)
    value = torch.tensor(1.5)
    logger.log_metrics({"a": value}, step=2)
    value.add_(1)  # the queued value is the one at the call
    assert run.logged == []  # queued: the training thread did not wait for the client
    run.release.set()
    assert logger.experiment is run  # reading the run waits for what was queued
    assert run.logged == [{"a": 1.5, "trainer/global_step": 2}]
    logger.finalize("success")  # a run it was given is not finished by the logger
    assert not [t for t in threading.enumerate() if t.name == "wandb-logger-sender"]
