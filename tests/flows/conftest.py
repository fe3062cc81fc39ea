"""Small, fast pipeline configs over the bundled digits table, each in its own folder."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
DIGITS_CSV = REPO / "examples" / "data" / "digits.csv"


def digits_config(root: Path, **changes: Any) -> TrainConfig:
    """A config that trains in a couple of seconds; ``changes`` are dotted overrides (``trainer.max_epochs``)."""
    data: dict[str, Any] = {
        "model": "examples.digits:DigitsClassifier",
        "model_kwargs": {"hidden": 32, "t_max": 2},
        "datamodule_kwargs": {"batch_size": 64, "min_std": 1.0},
        "data": {"source": str(DIGITS_CSV), "target": "target"},
        "trainer": {
            "max_epochs": 2,
            "limit_train_batches": 4,
            "limit_val_batches": 2,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "accelerator": "cpu",
        },
        "checkpoint_root": str(root / "checkpoints"),
        "mlflow": {
            "tracking_uri": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
            "experiment_name": "flows-test",
            "registered_model_name": "digits-test",
        },
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (root / "mlflow").mkdir(parents=True, exist_ok=True)
    return TrainConfig.model_validate(data)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., TrainConfig]:
    def make(**changes: Any) -> TrainConfig:
        return digits_config(tmp_path, **changes)

    return make


def make_git_project(folder: Path) -> Path:
    """``folder`` as a clean git work tree with one commit: the code version runs made there are tagged
    with (files created later stay untracked, which does not make the tree dirty)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text("# the user's project\n")
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "train.py"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "init"],
    ):
        subprocess.run(command, cwd=folder, check=True)
    return folder


@pytest.fixture
def git_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean git work tree as the working directory."""
    project = make_git_project(tmp_path / "project")
    monkeypatch.chdir(project)
    return project


@pytest.fixture
def prefect_start_restored() -> Iterator[None]:
    """Prefect's engine-command starter (``run_process``) as it was, and no forkserver starts installed,
    after the test: the tests of ``flows._forkserver`` install them."""
    import prefect.runner._starter_engine as starter

    from flows import _forkserver

    original = starter.run_process
    yield
    starter.run_process = original
    _forkserver._installed = None
