"""MLflow's PyTorch flavor is imported without pytorch_lightning (3-4 s of imports in every fresh process
that logs a model), and MLflow's autologging for pytorch_lightning still works when asked for."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("pytorch_lightning")  # the case this is about: it is installed

REPO = Path(__file__).resolve().parents[2]


def _fresh(program: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_the_flavor_loads_without_pytorch_lightning_and_autolog_can_still_import_it() -> None:
    seen = _fresh(
        """
        import json, sys
        from lightning_lib.loggers.mlflow import import_pytorch_flavor
        flavor = import_pytorch_flavor()
        before = {
            "lightning": "pytorch_lightning" in sys.modules,
            "mark_left": "mlflow.pytorch._lightning_autolog" in sys.modules,
            "api": all(hasattr(flavor, n) for n in ("log_model", "save_model", "load_model", "autolog")),
        }
        import mlflow.pytorch._lightning_autolog  # what mlflow.pytorch.autolog() imports when called
        before["lightning_after_autolog_import"] = "pytorch_lightning" in sys.modules
        print(json.dumps(before))
        """
    )
    assert seen == {
        "lightning": False,
        "mark_left": False,
        "api": True,
        "lightning_after_autolog_import": True,
    }


def test_nothing_changes_where_pytorch_lightning_is_already_imported() -> None:
    seen = _fresh(
        """
        import json
        import pytorch_lightning
        from lightning_lib.loggers.mlflow import import_pytorch_flavor
        flavor = import_pytorch_flavor()
        print(json.dumps({"callback": hasattr(flavor, "MlflowModelCheckpointCallback")}))
        """
    )
    assert seen == {"callback": True}
