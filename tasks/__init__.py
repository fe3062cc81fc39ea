"""Prefect tasks around ``lightning_lib``: small typed functions that pass URIs and small results.

Layout (DESIGN.md): ``flows -> tasks -> lightning_lib``. The config (``tasks.config``) imports no
Prefect, so a CLI can validate a file without paying for it; the task modules (``tasks.data``,
``tasks.training``, ``tasks.prediction``, ``tasks.registry``) are imported on first use of their names.
Importing ``tasks`` registers Prefect with ``lightning_lib`` (``tasks.orchestration``), without importing
Prefect: the flow run's tags on MLflow runs, and no relaunching of a flow process as a DDP rank.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tasks.config import DataConfig, MlflowConfig, TrainConfig, TrainerConfig
from tasks.imports import DisallowedImportError, allowed_prefixes, load_class
from tasks.orchestration import register_prefect

if TYPE_CHECKING:
    from tasks.data import DataValidationError, PreparedData, PreparedSplit, prepare, prepare_data
    from tasks.prediction import PredictionResult, predict
    from tasks.project_data import ProjectData, identify_data
    from tasks.registry import ModelVersionRef, PromotionDecision, promote, register
    from tasks.run_data import RunData
    from tasks.training import EvalResult, FitResult, fit, test, validate

register_prefect()

_LAZY = {
    "DataValidationError": "tasks.data",
    "PreparedData": "tasks.data",
    "PreparedSplit": "tasks.data",
    "prepare": "tasks.data",
    "prepare_data": "tasks.data",
    "EvalResult": "tasks.training",
    "FitResult": "tasks.training",
    "fit": "tasks.training",
    "validate": "tasks.training",
    "test": "tasks.training",
    "ProjectData": "tasks.project_data",
    "identify_data": "tasks.project_data",
    "RunData": "tasks.run_data",
    "PredictionResult": "tasks.prediction",
    "predict": "tasks.prediction",
    "ModelVersionRef": "tasks.registry",
    "PromotionDecision": "tasks.registry",
    "register": "tasks.registry",
    "promote": "tasks.registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DataConfig",
    "DataValidationError",
    "DisallowedImportError",
    "EvalResult",
    "FitResult",
    "MlflowConfig",
    "ModelVersionRef",
    "PredictionResult",
    "PreparedData",
    "PreparedSplit",
    "ProjectData",
    "PromotionDecision",
    "RunData",
    "TrainConfig",
    "TrainerConfig",
    "allowed_prefixes",
    "fit",
    "identify_data",
    "load_class",
    "predict",
    "prepare",
    "prepare_data",
    "promote",
    "register",
    "test",
    "validate",
]
