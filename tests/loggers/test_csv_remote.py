"""CSVLogger with an ``s3://`` save_dir, against the moto S3 server of the ``s3_endpoint`` fixture."""

from __future__ import annotations

import csv
import io
import os
import uuid
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import lightning_lib
from lightning_lib.loggers import CSVLogger
from lightning_lib.loggers.csv import RemoteExperimentWriter
from lightning_lib.storage import StorageError, open_store
from tests.helpers import ClassifierDataModule, ClassifierModel

pytestmark = pytest.mark.services


@pytest.fixture
def s3_root(s3_endpoint: str) -> str:
    """A fresh ``s3://bucket/<unique prefix>`` so tests sharing the session's server never collide."""
    return f"{s3_endpoint}/{uuid.uuid4().hex}"


def keys(root: str) -> list[str]:
    return [info.key for info in open_store(root).list()]


def read_text(uri: str) -> str:
    root, _, key = uri.rpartition("/")
    return open_store(root).get_bytes(key).decode("utf-8")


def read_rows(uri: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(read_text(uri), newline="")))


# ---------------------------------------------------------------- layout and versions


def test_layout_and_properties(s3_root: str) -> None:
    logger = CSVLogger(s3_root, name="exp")
    assert logger.save_dir == s3_root
    assert logger.version == 0
    assert logger.root_dir == f"{s3_root}/exp"
    assert logger.log_dir == f"{s3_root}/exp/version_0"

    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize("success")
    assert isinstance(logger.experiment, RemoteExperimentWriter)
    assert logger.experiment.metrics_file_path == f"{s3_root}/exp/version_0/metrics.csv"
    assert keys(s3_root) == ["exp/version_0/hparams.yaml", "exp/version_0/metrics.csv"]
    assert read_rows(f"{logger.log_dir}/metrics.csv") == [{"loss": "1.0", "step": "0"}]
    assert yaml.safe_load(read_text(f"{logger.log_dir}/hparams.yaml")) == {"lr": 0.1}


def test_uris_are_joined_with_slashes(s3_root: str) -> None:
    assert CSVLogger(s3_root + "/").log_dir == f"{s3_root}/lightning_logs/version_0"
    for name in (None, ""):
        logger = CSVLogger(s3_root, name=name, version="run-a")
        assert logger.root_dir == s3_root
        assert logger.log_dir == f"{s3_root}/run-a"
    assert CSVLogger(s3_root, version=5).log_dir == f"{s3_root}/lightning_logs/version_5"


def test_nothing_written_until_logged_and_saved(s3_root: str) -> None:
    logger = CSVLogger(s3_root)
    _ = logger.log_dir, logger.root_dir, logger.version
    logger.finalize("success")  # nothing logged: must stay a no-op
    assert keys(s3_root) == []

    logger.log_metrics({"a": 1.0})
    assert keys(s3_root) == []  # buffered; an object store has no folder to create
    logger.save()
    assert keys(s3_root) == ["lightning_logs/version_0/metrics.csv"]


def test_version_discovery_lists_version_prefixes(s3_root: str) -> None:
    store = open_store(s3_root)
    for key in ("version_0/metrics.csv", "version_3/checkpoints/a.ckpt", "version_x/f", "other/version_9/f"):
        store.put_bytes(f"lightning_logs/{key}", b"x")
    store.put_bytes("lightning_logs/version_7", b"an object, not a version prefix")
    store.put_bytes("lightning_logs2/version_8/f", b"another experiment")
    store.put_bytes("other/version_9/f", b"x")
    assert CSVLogger(s3_root).version == 4
    assert CSVLogger(s3_root, name="other").version == 10
    assert CSVLogger(s3_root, name="missing").version == 0


def test_successive_loggers_get_new_versions(s3_root: str) -> None:
    versions = []
    for _ in range(3):
        logger = CSVLogger(s3_root)
        logger.log_metrics({"a": 1.0}, step=0)
        logger.finalize("success")
        versions.append(logger.version)
    assert versions == [0, 1, 2]
    assert keys(s3_root) == [f"lightning_logs/version_{i}/metrics.csv" for i in range(3)]


def test_reused_version_warns_and_replaces_old_metrics(s3_root: str) -> None:
    first = CSVLogger(s3_root, version=0)
    first.log_metrics({"old": 1.0}, step=0)
    first.finalize("success")

    second = CSVLogger(s3_root, version=0)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        second.log_metrics({"new": 2.0}, step=0)
    # the old rows stay until new ones replace them: a fit resuming from a checkpoint would keep them
    assert read_rows(f"{second.log_dir}/metrics.csv") == [{"old": "1.0", "step": "0"}]
    second.finalize("success")
    assert read_rows(f"{second.log_dir}/metrics.csv") == [{"new": "2.0", "step": "0"}]


# ---------------------------------------------------------------- metrics.csv


def test_each_flush_uploads_the_whole_file(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = CSVLogger(s3_root, flush_logs_every_n_steps=2)
    writer = logger.experiment
    store = writer.store
    puts: list[tuple[str, bytes]] = []
    real_put = store.put_bytes

    def recording_put(key: str, data: Any, **kwargs: Any) -> None:
        puts.append((key, bytes(data)))
        real_put(key, data, **kwargs)

    monkeypatch.setattr(store, "put_bytes", recording_put)
    uri = f"{logger.log_dir}/metrics.csv"
    logger.log_metrics({"train_loss": 1.0}, step=0)
    assert puts == []
    logger.log_metrics({"train_loss": 0.5}, step=1)
    logger.log_metrics({"val_loss": 0.7, "epoch": 0}, step=1)
    logger.log_metrics({"train_loss": 0.25}, step=2)
    logger.log_metrics({"train_loss": 0.125}, step=3)
    logger.finalize("success")

    assert [key for key, _ in puts] == ["metrics.csv"] * 3
    assert puts[0][1] == b"step,train_loss\r\n0,1.0\r\n1,0.5\r\n"
    assert puts[1][1] == (b"epoch,step,train_loss,val_loss\r\n,0,1.0,\r\n,1,0.5,\r\n0,1,,0.7\r\n,2,0.25,\r\n")
    assert puts[2][1] == puts[1][1] + b",3,0.125,\r\n"
    assert read_text(uri).encode() == puts[2][1]
    assert writer.metrics == []


def test_failed_upload_keeps_rows_for_the_next_save(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = CSVLogger(s3_root)
    store = logger.experiment.store
    real_put = store.put_bytes

    def failing_put(key: str, data: Any, **kwargs: Any) -> None:
        raise StorageError("injected outage")

    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    monkeypatch.setattr(store, "put_bytes", failing_put)
    logger.log_metrics({"a": 2.0, "b": 3.0}, step=1)
    with pytest.raises(StorageError, match="injected outage"):
        logger.save()
    assert len(logger.experiment.metrics) == 1
    assert read_rows(f"{logger.log_dir}/metrics.csv") == [{"a": "1.0", "step": "0"}]

    monkeypatch.setattr(store, "put_bytes", real_put)
    logger.finalize("success")
    assert read_rows(f"{logger.log_dir}/metrics.csv") == [
        {"a": "1.0", "b": "", "step": "0"},
        {"a": "2.0", "b": "3.0", "step": "1"},
    ]


STEPS: list[tuple[dict[str, object], int | None]] = [
    ({"sanity/acc": 1.0}, None),
    ({"train_loss": torch.tensor(0.9), "epoch": 0}, 0),
    ({"train_loss": torch.tensor(0.7123456789)}, 1),
    ({"train_loss": 0.5, "lr-SGD": 0.1}, 2),
    ({"val_loss": torch.tensor(0.6), "val_acc": 0.75, "epoch": 0}, 2),
    ({"train_loss": torch.tensor(0.3, dtype=torch.float64), "epoch": 1}, 3),
    ({"note": 'a "quoted", value\nwith a newline'}, 4),
    ({"count": torch.tensor(7)}, None),
]
HPARAMS = {
    "lr": 0.01,
    "nothing": None,
    "layers": [64, 32],
    "optim": {"name": "adam", "betas": [0.9, 0.999]},
    "unicode": "é",
}


@pytest.mark.parametrize("flush_every", [1, 2, 100])
@pytest.mark.parametrize("prefix", ["", "run"])
def test_same_bytes_as_the_local_logger(s3_root: str, tmp_path: Path, flush_every: int, prefix: str) -> None:
    local = CSVLogger(tmp_path, prefix=prefix, flush_logs_every_n_steps=flush_every)
    remote = CSVLogger(s3_root, prefix=prefix, flush_logs_every_n_steps=flush_every)
    for logger in (local, remote):
        logger.log_hyperparams(Namespace(**HPARAMS))
        logger.log_hyperparams({"extra": 3})
        for metrics, step in STEPS:
            logger.log_metrics(dict(metrics), step=step)
        logger.finalize("success")

    for filename in ("metrics.csv", "hparams.yaml"):
        with open(os.path.join(local.log_dir, filename), "rb") as f:
            assert read_text(f"{remote.log_dir}/{filename}").encode("utf-8") == f.read(), filename


def test_hparams_merge_and_rewrite(s3_root: str) -> None:
    logger = CSVLogger(s3_root)
    logger.log_hyperparams(None)
    assert yaml.safe_load(read_text(f"{logger.log_dir}/hparams.yaml")) == {}
    logger.log_hyperparams(Namespace(lr=0.1, inner=Namespace(depth=2)))
    logger.log_hyperparams({"batch_size": 8, "lr": 0.2, "t": torch.tensor(0.5)})
    text = read_text(f"{logger.log_dir}/hparams.yaml")
    assert "!!python" not in text
    assert yaml.safe_load(text) == {"batch_size": 8, "inner": {"depth": 2}, "lr": 0.2, "t": 0.5}


# ---------------------------------------------------------------- Trainer end to end


def fit(root: str) -> lightning_lib.Trainer:
    lightning_lib.seed_everything(0)
    trainer = lightning_lib.Trainer(
        default_root_dir=root,
        max_epochs=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(ClassifierModel(), datamodule=ClassifierDataModule(batch_size=16, n=64))
    return trainer


def test_trainer_with_s3_default_root_dir(
    s3_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    trainer = fit(s3_root)
    assert list(cwd.iterdir()) == []  # nothing went to a local "s3:" folder
    logger = trainer.logger
    assert isinstance(logger, CSVLogger)
    log_dir = f"{s3_root}/lightning_logs/version_0"
    assert logger.log_dir == trainer.log_dir == log_dir
    ckpt_dir = f"{log_dir}/checkpoints"
    assert trainer.checkpoint_callback.dirpath == ckpt_dir
    best = trainer.checkpoint_callback.best_model_path
    assert best == f"{ckpt_dir}/epoch=1-step=8.ckpt"

    stored = keys(s3_root)
    assert stored == [
        "lightning_logs/version_0/checkpoints/epoch=1-step=8.ckpt",
        "lightning_logs/version_0/hparams.yaml",
        "lightning_logs/version_0/metrics.csv",
    ]
    rows = read_rows(f"{log_dir}/metrics.csv")
    assert [r["step"] for r in rows if r["train_loss_step"]] == [str(i) for i in range(8)]
    assert [r["epoch"] for r in rows if r["val_loss"]] == ["0", "1"]

    # the same seeded run with a local default_root_dir logs the same bytes
    local = fit(str(tmp_path / "local"))
    for filename in ("metrics.csv", "hparams.yaml"):
        with open(os.path.join(local.log_dir, filename), "rb") as f:
            assert read_text(f"{log_dir}/{filename}").encode("utf-8") == f.read(), filename

    # the checkpoint on S3 loads back
    restored = ClassifierModel.load_from_checkpoint(best)
    for name, tensor in trainer.lightning_module.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name

    # a second run picks the next version from the listing
    second = fit(s3_root)
    assert second.log_dir == f"{s3_root}/lightning_logs/version_1"
    assert second.checkpoint_callback.best_model_path == (
        f"{s3_root}/lightning_logs/version_1/checkpoints/epoch=1-step=8.ckpt"
    )
    assert len(keys(f"{s3_root}/lightning_logs/version_1")) == 3  # the checkpoint, hparams, metrics
