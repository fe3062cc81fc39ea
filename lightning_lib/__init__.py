"""A fast, dependable re-implementation of the PyTorch Lightning API: ``import lightning_lib as pl``."""

import logging as _logging

from lightning_lib import callbacks, loggers
from lightning_lib.callbacks import Callback
from lightning_lib.checkpoint._format import LIBRARY_VERSION as __version__
from lightning_lib.core.datamodule import LightningDataModule
from lightning_lib.core.module import LightningModule
from lightning_lib.trainer import Trainer
from lightning_lib.utilities.seed import seed_everything

# Like Lightning: INFO messages (model summary, early stopping) are shown unless the app configured logging.
# The handler is named so that an app that configures logging later (the pipeline's CLI, whose Prefect
# console handler prints these records too) can remove it instead of printing every line twice.
_log = _logging.getLogger("lightning_lib")
if not _logging.getLogger().handlers and not _log.handlers:
    _log.setLevel(_logging.INFO)
    _handler = _logging.StreamHandler()
    _handler.set_name("lightning_lib.console")
    _log.addHandler(_handler)

__all__ = [
    "Callback",
    "LightningDataModule",
    "LightningModule",
    "Trainer",
    "__version__",
    "callbacks",
    "loggers",
    "seed_everything",
]
