"""Logging the trained model as an MLflow model: signature, input example, registry and alias."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

_EXAMPLE_ROWS = 8  # > 1 so MLflow marks the batch dimension dynamic in the exported graph


def example_input(module: Any, trainer: Any) -> torch.Tensor | None:
    """The input example: ``module.example_input_array`` if it is a tensor, else the inputs of a first
    training batch (its first tensor: ``x`` of ``(x, y)``) built from the dataset's first rows.

    The rows are read by index and collated with the loader's ``collate_fn`` rather than by iterating the
    loader, which would draw from the global RNG (shuffling) after training and change what a seeded
    program does next.
    """
    example = getattr(module, "example_input_array", None)
    if isinstance(example, torch.Tensor):
        return example.detach().cpu()
    loader = getattr(trainer, "train_dataloader", None) if trainer is not None else None
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return None
    try:
        rows = min(len(dataset), getattr(loader, "batch_size", None) or _EXAMPLE_ROWS, _EXAMPLE_ROWS)
        collate = getattr(loader, "collate_fn", None) or torch.utils.data.default_collate
        batch: Any = collate([dataset[i] for i in range(rows)])
    except Exception:  # an iterable dataset or a collate that needs more context
        return None
    while isinstance(batch, list | tuple) and batch:
        batch = batch[0]
    return batch.detach().cpu() if isinstance(batch, torch.Tensor) else None


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (which ``log_model`` uses) at ``uri`` for the block only."""
    import mlflow

    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # pragma: no cover - older or newer mlflow without the helper
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
        return
    # MLflow's helper restores its global by unsetting MLFLOW_TRACKING_URI when no URI had been set
    # explicitly, which would leave the rest of the process (later tasks of a flow) on the default store.
    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def log_pytorch_model(
    tracking_uri: str,
    run_id: str,
    model: torch.nn.Module,
    example: torch.Tensor | None,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    alias: str | None = None,
) -> ModelInfo:
    """Log ``model`` to run ``run_id``; register it (and point ``alias`` at the version) when asked.

    MLflow's default format (``pt2``, an exported graph that loads without the user's classes) is tried
    first; models that cannot be exported fall back to the pickle format. Returns MLflow's ``ModelInfo``.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    signature = None
    example_np = None
    if example is not None:
        with torch.no_grad():
            output = model(example)
        example_np = example.numpy()
        if isinstance(output, torch.Tensor):
            signature = infer_signature(example_np, output.detach().cpu().numpy())
    kwargs: dict[str, Any] = {
        "name": name,
        "signature": signature,
        "input_example": example_np,
        "registered_model_name": registered_model_name,
        # explicit, so MLflow does not spend seconds inferring them in a subprocess
        "pip_requirements": [f"torch=={torch.__version__.split('+')[0]}"],
        "run_id": run_id,
    }
    client = mlflow.MlflowClient(tracking_uri)
    # The logged model is created here, in the run's experiment: left to log_model, it would go to the
    # process's active experiment (the default one, whose artifacts live in ./mlruns of the cwd).
    kwargs["model_id"] = client.create_logged_model(
        experiment_id=client.get_run(run_id).info.experiment_id, name=name, source_run_id=run_id
    ).model_id
    with _tracking_uri(tracking_uri):
        try:
            if example_np is None:
                raise ValueError("no input example: the pt2 format needs one")
            info = mlflow.pytorch.log_model(model, **kwargs)
        except Exception as exc:
            log.info("Logging the model as an exported graph failed (%s); logging it pickled.", exc)
            info = mlflow.pytorch.log_model(model, serialization_format="pickle", **kwargs)
    version = getattr(info, "registered_model_version", None)
    if alias and registered_model_name and version is not None:
        client.set_registered_model_alias(registered_model_name, alias, str(version))
    return info
