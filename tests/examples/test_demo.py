"""The bundled example and the demo: they must train to a sane accuracy and leave their files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lightning_lib as pl
from lightning_lib.checkpoint import read_manifest
from lightning_lib.storage import LocalStore

pytest.importorskip("sklearn")

from examples import demo
from examples.digits import DigitsClassifier, DigitsDataModule

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_split_is_deterministic_disjoint_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, second = DigitsDataModule(seed=7), DigitsDataModule(seed=7)
    first.setup("fit")
    second.setup("fit")
    assert torch.equal(torch.get_rng_state(), before)

    assert first.train_set is not None and first.val_set is not None and first.test_set is not None
    assert second.train_set is not None
    assert torch.equal(first.train_set.tensors[0], second.train_set.tensors[0])
    sizes = [len(first.train_set), len(first.val_set), len(first.test_set)]
    assert sum(sizes) == 1797 and min(sizes) > 0
    # Standardised with the training split's own statistics.
    assert first.train_set.tensors[0].mean(dim=0).abs().max() < 1e-4

    other = DigitsDataModule(seed=8)
    other.setup("fit")
    assert other.train_set is not None
    assert not torch.equal(first.train_set.tensors[1], other.train_set.tensors[1])


def test_train_shuffle_is_reproducible() -> None:
    dm = DigitsDataModule(seed=3)
    dm.setup("fit")
    first = torch.cat([y for _, y in dm.train_dataloader()])
    second = torch.cat([y for _, y in dm.train_dataloader()])
    assert torch.equal(first, second)


def test_demo_trains_checkpoints_logs_and_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = demo.main(["--max-epochs", "2", "--root-dir", str(tmp_path), "--seed", "1"])

    assert summary["epochs"] == 2
    assert summary["global_step"] > 0
    best = Path(summary["best_model_path"])
    assert best.is_file() and read_manifest(LocalStore(best.parent), best.name) is not None  # committed
    assert torch.load(best, weights_only=True)["global_step"] == summary["global_step"]
    assert tmp_path in best.resolve().parents
    assert 0.5 < summary["best_val_acc"] <= 1.0
    assert set(summary["test"]) == {"test_loss", "test_acc"}
    assert summary["test"]["test_acc"] > 0.5

    metrics_csv = Path(summary["log_dir"]) / "metrics.csv"
    assert metrics_csv.is_file() and tmp_path in metrics_csv.resolve().parents
    with metrics_csv.open() as handle:
        columns = set(next(csv.reader(handle)))
    assert {"train_loss", "val_acc", "test_acc"} <= columns

    printed = capsys.readouterr().out
    assert "Digits demo summary" in printed and str(best) in printed


@pytest.mark.slow
def test_overhead_benchmark_quick_prints_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "overhead.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert report["quick"] is True
    assert set(report["models"]) == {"tiny_mlp", "wide_mlp"}
    for figures in report["models"].values():
        for impl in ("raw", "lightning_lib", "pytorch_lightning"):
            assert f"{impl}_ms_per_step" in figures
        assert figures["raw_ms_per_step"] > 0
        for impl in ("lightning_lib", "pytorch_lightning"):
            assert f"{impl}_vs_raw" in figures
            if figures[f"{impl}_ms_per_step"] is not None:
                assert figures[f"{impl}_vs_raw"] > 0


def test_predict_returns_class_indices_and_checkpoint_reloads(tmp_path: Path) -> None:
    pl.seed_everything(0)
    dm = DigitsDataModule(seed=0)
    model = DigitsClassifier(hidden=32)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    batches = trainer.predict(model, datamodule=dm)
    assert batches is not None
    predictions = torch.cat(batches)
    assert dm.test_set is not None and predictions.shape == (len(dm.test_set),)
    assert predictions.dtype == torch.long and predictions.min() >= 0 and predictions.max() < 10

    # Hyper-parameters travel with the checkpoint: the reloaded model has the same shape.
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    reloaded = DigitsClassifier.load_from_checkpoint(checkpoint)
    assert reloaded.hparams["hidden"] == 32
    assert all(torch.equal(a, b) for a, b in zip(reloaded.parameters(), model.parameters()))
