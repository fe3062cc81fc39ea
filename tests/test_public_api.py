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
        "BackboneFinetuning",
        "BaseFinetuning",
        "BasePredictionWriter",
        "BatchSizeFinder",
        "Callback",
        "Checkpoint",
        "DeviceStatsMonitor",
        "EMAWeightAveraging",
        "EarlyStopping",
        "GradientAccumulationScheduler",
        "LambdaCallback",
        "LearningRateFinder",
        "LearningRateMonitor",
        "ModelCheckpoint",
        "ModelPruning",
        "ModelSummary",
        "OnExceptionCheckpoint",
        "ProgressBar",
        "RichModelSummary",
        "RichProgressBar",
        "SpikeDetection",
        "StochasticWeightAveraging",
        "TQDMProgressBar",
        "ThroughputMonitor",
        "Timer",
        "WeightAveraging",
    ],
    "lightning_lib.callbacks.progress": [
        "ProgressBar",
        "RichProgressBar",
        "RichProgressBarTheme",
        "TQDMProgressBar",
        "Tqdm",
        "convert_inf",
        "get_standard_metrics",
    ],
    "lightning_lib.loggers": [
        "CSVLogger",
        "CometLogger",
        "Logger",
        "MLFlowLogger",
        "TensorBoardLogger",
        "WandbLogger",
    ],
    "lightning_lib.tuner": ["Tuner"],
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
    "lightning_lib.core.mixins": ["HyperparametersMixin"],
    "lightning_lib.trainer": [
        "Trainer",
        "seed_everything",
    ],
    "lightning_lib.trainer.states": ["RunningStage", "TrainerFn", "TrainerState", "TrainerStatus"],
    # pytorch_lightning.utilities.__all__, less is_shared_filesystem (not built yet)
    "lightning_lib.utilities": [
        "AttributeDict",
        "CombinedLoader",
        "FLOAT16_EPSILON",
        "FLOAT32_EPSILON",
        "FLOAT64_EPSILON",
        "GradClipAlgorithmType",
        "LightningEnum",
        "disable_possible_user_warnings",
        "find_shared_parameters",
        "grad_norm",
        "is_picklable",
        "measure_flops",
        "move_data_to_device",
        "rank_zero_deprecation",
        "rank_zero_info",
        "rank_zero_only",
        "rank_zero_warn",
        "set_shared_parameters",
        "suggested_max_num_workers",
    ],
    "lightning_lib.utilities.exceptions": ["MisconfigurationException", "SIGTERMException"],
    "lightning_lib.utilities.model_helpers": ["is_overridden", "register_hook_parent"],
    "lightning_lib.utilities.rank_zero": [
        "DummyExperiment",
        "LightningDeprecationWarning",
        "WarningCache",
        "rank_from_environment",
        "rank_zero_debug",
        "rank_zero_deprecation",
        "rank_zero_experiment",
        "rank_zero_info",
        "rank_zero_only",
        "rank_zero_print",
        "rank_zero_warn",
    ],
    "lightning_lib.utilities.types": [
        "EVAL_DATALOADERS",
        "LRSchedulerConfig",
        "LRSchedulerConfigType",
        "LRSchedulerPLType",
        "LRSchedulerType",
        "LRSchedulerTypeTuple",
        "LRSchedulerTypeUnion",
        "OptimizerConfig",
        "OptimizerLRScheduler",
        "OptimizerLRSchedulerConfig",
        "STEP_OUTPUT",
        "TRAIN_DATALOADERS",
    ],
    "lightning_lib.utilities.data": [
        "extract_batch_size",
        "has_iterable_dataset",
        "has_len_all_ranks",
        "sized_len",
        "suggested_max_num_workers",
    ],
    "lightning_lib.utilities.warnings": ["PossibleUserWarning", "disable_possible_user_warnings"],
    "lightning_lib.strategies": [
        "DDPStrategy",
        "DeepSpeedStrategy",
        "FSDPStrategy",
        "ModelParallelStrategy",
        "ParallelStrategy",
        "SingleDeviceStrategy",
        "SingleDeviceXLAStrategy",
        "Strategy",
        "XLAStrategy",
    ],
    "lightning_lib.plugins": [
        "BitsandbytesPrecision",
        "DeepSpeedPrecision",
        "DoublePrecision",
        "FSDPPrecision",
        "HalfPrecision",
        "MixedPrecision",
        "Precision",
        "TransformerEnginePrecision",
        "XLAPrecision",
    ],
    "lightning_lib.profilers": [
        "AdvancedProfiler",
        "PassThroughProfiler",
        "Profiler",
        "PyTorchProfiler",
        "SimpleProfiler",
        "XLAProfiler",
    ],
    "lightning_lib.demos.boring_classes": [
        "BoringDataModule",
        "BoringDataModuleNoLen",
        "BoringModel",
        "DemoModel",
        "IterableBoringDataModule",
        "ManualOptimBoringModel",
        "RandomDataset",
        "RandomDictDataset",
        "RandomIterableDataset",
        "RandomIterableDatasetWithLen",
    ],
    "lightning_lib.loggers.mlflow": [
        "MLFlowLogger",
        "TAG_GIT_COMMIT",
        "TAG_GIT_DIRTY",
        "TAG_RUN_KEY",
        "clean_name",
        "example_input",
        "git_tags",
        "import_pytorch_flavor",
        "log_pytorch_model",
        "serving_parts",
        "warm_end_of_fit",
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
    assert sorted(module.__all__) == sorted(EXPORTED[name])


# Lightning's names that this library provides under the same module path (a user's import works)
LIGHTNING_PATHS = {
    "utilities": ["AttributeDict", "grad_norm", "measure_flops", "rank_zero_only", "rank_zero_warn"],
    "utilities.types": ["STEP_OUTPUT", "OptimizerLRScheduler", "EVAL_DATALOADERS", "TRAIN_DATALOADERS"],
    "utilities.exceptions": ["MisconfigurationException"],
    "utilities.model_helpers": ["is_overridden"],
    "utilities.rank_zero": ["rank_zero_only", "rank_zero_info", "rank_zero_warn", "rank_zero_debug"],
    "utilities.parsing": ["AttributeDict", "is_picklable"],
    "utilities.data": ["has_len_all_ranks"],
    "utilities.combined_loader": ["CombinedLoader"],
    "core.module": ["LightningModule"],
    "core.datamodule": ["LightningDataModule"],
    "core.optimizer": ["LightningOptimizer"],
    "trainer.trainer": ["Trainer"],
    "trainer.states": ["TrainerFn", "TrainerStatus", "RunningStage", "TrainerState"],
    "strategies": ["Strategy", "SingleDeviceStrategy", "DDPStrategy", "DeepSpeedStrategy", "FSDPStrategy"],
    "strategies.ddp": ["DDPStrategy"],
    "plugins": ["MixedPrecision", "DoublePrecision", "HalfPrecision", "Precision"],
    "plugins.precision": ["MixedPrecision", "DoublePrecision", "HalfPrecision", "Precision"],
    "profilers": ["SimpleProfiler", "AdvancedProfiler", "PassThroughProfiler", "PyTorchProfiler", "Profiler"],
    "profilers.simple": ["SimpleProfiler"],
    "profilers.base": ["PassThroughProfiler"],
    "demos.boring_classes": ["BoringModel", "BoringDataModule", "RandomDataset", "ManualOptimBoringModel"],
}


@pytest.mark.parametrize("path", sorted(LIGHTNING_PATHS))
def test_lightning_s_import_paths_exist(path: str) -> None:
    reference = pytest.importorskip(f"pytorch_lightning.{path}")
    ours = importlib.import_module(f"lightning_lib.{path}")
    for name in LIGHTNING_PATHS[path]:
        assert hasattr(reference, name), f"pytorch_lightning.{path} has no {name}: the pin is wrong"
        assert hasattr(ours, name), f"lightning_lib.{path} lacks Lightning's {name}"


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [member for member in module.__all__ if not hasattr(module, member)]
    assert missing == [], f"{name}.__all__ names what {name} does not define: {missing}"


def _defined_names(module: ModuleType) -> list[str]:
    """The public names a plain module (not a package) defines itself, imports left out."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_")]


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_public_name_is_exported(name: str) -> None:
    module = importlib.import_module(name)
    # a package re-exports what it imports; a plain module exports what it defines
    public = _public_names(module) if hasattr(module, "__path__") else _defined_names(module)
    unexported = sorted(set(public) - set(module.__all__))
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
