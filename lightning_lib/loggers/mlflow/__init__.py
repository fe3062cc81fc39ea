"""MLFlowLogger and its background sender, run bookkeeping, artifacts and model logging."""

from lightning_lib.loggers.mlflow._logger import MLFlowLogger

__all__ = ["MLFlowLogger"]
