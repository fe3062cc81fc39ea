"""MLflow's PyTorch flavor (``mlflow.pytorch``), imported without pytorch_lightning.

When pytorch_lightning is installed (as it is for every team moving from it), ``import mlflow.pytorch``
also imports MLflow's autologging support for it, and with it pytorch_lightning and torch's compiler stack:
3-4 s on this machine, in every fresh process that logs or loads a model (the CLI, each deployment run),
and, on the logger's warm-up thread, beside the first training steps. Saving, logging and loading models
never use that part. :func:`import_pytorch_flavor` imports the flavor with that one optional module
marked absent, which MLflow itself treats as "pytorch_lightning is not installed", then removes the mark:
``mlflow.pytorch.autolog()`` still imports it for real when called. What differs: the flavor's
``MlflowModelCheckpointCallback`` attribute (a pytorch_lightning callback) is not set. Nothing changes
where pytorch_lightning or the flavor was imported before.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

_AUTOLOG_MODULE = "mlflow.pytorch._lightning_autolog"
_LOCK = threading.Lock()


def import_pytorch_flavor() -> ModuleType:
    """``mlflow.pytorch``, imported without its pytorch_lightning autologging module (see the module's
    docstring); raises ``ImportError`` as ``import mlflow.pytorch`` would."""
    with _LOCK:
        marked = "mlflow.pytorch" not in sys.modules and "pytorch_lightning" not in sys.modules
        marked = marked and _AUTOLOG_MODULE not in sys.modules
        if marked:
            sys.modules[_AUTOLOG_MODULE] = None  # type: ignore[assignment]  # "not installed" to importers
        try:
            import mlflow.pytorch
        finally:
            if marked and sys.modules.get(_AUTOLOG_MODULE, ...) is None:
                del sys.modules[_AUTOLOG_MODULE]
    return mlflow.pytorch
