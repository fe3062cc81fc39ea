"""The public API, pinned: what each public package exports is a decision, never a side effect of a refactor.

A name added to or removed from a package's ``__all__`` must be added to or removed from the lists
below too; a public name defined in a package but left out of its ``__all__`` fails here as well.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import pytest

EXPORTED = {
    "lightning_lib": [
        "Callback",
        "LightningDataModule",
        "LightningModule",
        "Trainer",
        "__version__",
        "callbacks",
        "loggers",
        "seed_everything",
    ],
    "lightning_lib.callbacks": [
        "Callback",
        "Checkpoint",
        "EarlyStopping",
        "LambdaCallback",
        "LearningRateMonitor",
        "ModelCheckpoint",
        "ModelSummary",
        "ProgressBar",
        "TQDMProgressBar",
        "Timer",
    ],
    "lightning_lib.loggers": ["CSVLogger", "Logger", "MLFlowLogger"],
    "lightning_lib.distributed": [
        "ClusterEnvironment",
        "DDPStrategy",
        "RankFailedError",
        "SingleDeviceStrategy",
        "Strategy",
        "from_environment",
        "launched_by_trainer",
        "launched_externally",
    ],
    "lightning_lib.checkpoint": [
        "CheckpointExistsError",
        "CheckpointFallbackWarning",
        "CheckpointNotFoundError",
        "CheckpointWriter",
        "CommittedCheckpoint",
        "CorruptCheckpointError",
        "InvalidManifestError",
        "cleanup_orphans",
        "delete_checkpoint",
        "download_verified",
        "latest_valid",
        "list_committed",
        "load_file",
        "load_manifest",
        "load_verified",
        "read_manifest",
        "read_verified",
        "write_checkpoint",
    ],
    "lightning_lib.storage": [
        "AccessDeniedError",
        "BucketNotFound",
        "FileSource",
        "GrowingFile",
        "HashingWriter",
        "LocalStore",
        "MissingCredentialsError",
        "ObjectInfo",
        "ObjectNotFound",
        "ObjectStore",
        "PreconditionFailed",
        "PrehashedFile",
        "S3Store",
        "StorageError",
        "is_remote",
        "join_uri",
        "local_path",
        "open_store",
        "parse_s3_uri",
        "split_uri",
    ],
    "lightning_lib.core": [
        "LightningDataModule",
        "LightningModule",
    ],
    "lightning_lib.trainer": [
        "Trainer",
    ],
    "lightning_lib.loggers.mlflow": [
        "MLFlowLogger",
        "TAG_GIT_COMMIT",
        "TAG_GIT_DIRTY",
        "TAG_RUN_KEY",
        "example_input",
        "git_tags",
        "log_pytorch_model",
    ],
}


def _public_names(module: ModuleType) -> list[str]:
    """The names a reader of ``module`` takes as its API: no leading underscore, and not a submodule.

    Submodules are left out because importing any of them sets it as an attribute of its package, so
    which ones appear depends on what was imported before, not on the package.
    """
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    ]


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_all_is_the_pinned_list(name: str) -> None:
    module = importlib.import_module(name)
    # the order inside __all__ is ruff's (RUF022: constants, classes, then functions); the pin is the set
    assert sorted(module.__all__) == EXPORTED[name]


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [member for member in module.__all__ if not hasattr(module, member)]
    assert missing == [], f"{name}.__all__ names what {name} does not define: {missing}"


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_public_name_is_exported(name: str) -> None:
    module = importlib.import_module(name)
    unexported = sorted(set(_public_names(module)) - set(module.__all__))
    assert unexported == [], f"{name} defines public names left out of __all__: {unexported}"


def _private_library_imports(source: Path) -> list[str]:
    """``lightning_lib`` modules or names behind a leading underscore that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_lib"):
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name.startswith("lightning_lib")]
        else:
            continue
        found += [
            f"{source.name}:{node.lineno} {target}"
            for target in targets
            if any(part.startswith("_") and part != "__version__" for part in target.split("."))
        ]
    return found


@pytest.mark.parametrize("package", ["tasks", "flows", "examples"])
def test_the_pipeline_uses_only_the_library_s_public_api(package: str) -> None:
    root = Path(__file__).resolve().parents[1] / package
    private = [hit for source in sorted(root.rglob("*.py")) for hit in _private_library_imports(source)]
    assert private == [], f"{package}/ imports lightning_lib internals: {private}"


def test_the_private_import_check_sees_private_imports(tmp_path: Path) -> None:
    source = tmp_path / "user.py"
    source.write_text(
        "import lightning_lib.storage._s3\n"
        "from lightning_lib.checkpoint import _format\n"
        "from lightning_lib.storage import open_store\n"
        "from lightning_lib import __version__\n"
    )
    assert _private_library_imports(source) == [
        "user.py:1 lightning_lib.storage._s3",
        "user.py:2 lightning_lib.checkpoint._format",
    ]
