"""Logging the trained model as an MLflow model: signature, input example, registry and alias."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from lightning_lib.loggers.mlflow._flavor import import_pytorch_flavor

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

_EXAMPLE_ROWS = 8  # > 1 so MLflow marks the batch dimension dynamic in the exported graph


class _ServingModel(torch.nn.Module):
    """The data module's preprocessor, then the model: what the registered MLflow model runs on raw inputs.

    A module-level class with both parts as submodules, so it exports with ``torch.export`` (their
    buffers become the graph's constants) and pickles by reference when it cannot be exported.
    """

    def __init__(self, preprocessor: torch.nn.Module, model: torch.nn.Module) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.model = model

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.model(self.preprocessor(inputs))


def serving_parts(datamodule: Any) -> tuple[torch.nn.Module | None, torch.Tensor | None]:
    """The data module's optional serving hooks: ``(preprocessor(), serving_example())``, each None when
    the data module (or ``datamodule`` itself) lacks it.

    The preprocessor comes back as an independent copy in eval mode (later changes to the data module
    do not reach a logged model); the example as at most 8 rows on the CPU, a single row repeated once so
    that the exported graph keeps a dynamic batch dimension (``torch.export`` fixes dimensions of size 1).
    """
    if datamodule is None:
        return None, None
    owner = type(datamodule).__name__
    preprocessor = None
    hook = getattr(datamodule, "preprocessor", None)
    if callable(hook):
        built = hook()
        if not isinstance(built, torch.nn.Module):
            raise TypeError(
                f"Expected {owner}.preprocessor() to return a torch.nn.Module, received {type(built).__name__}."
            )
        preprocessor = copy.deepcopy(built).eval()
    example = None
    hook = getattr(datamodule, "serving_example", None)
    if callable(hook):
        raw = hook()
        if not isinstance(raw, torch.Tensor) or raw.dim() < 1 or len(raw) < 1:
            shape = f"shape {tuple(raw.shape)}" if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise TypeError(
                f"Expected {owner}.serving_example() to return a tensor of at least one row, received {shape}."
            )
        example = raw.detach().cpu()[:_EXAMPLE_ROWS]
        if len(example) == 1:
            example = example.repeat(2, *([1] * (example.dim() - 1)))
    return preprocessor, example


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
    preprocessor: torch.nn.Module | None = None,
) -> ModelInfo:
    """Log ``model`` to run ``run_id``; register it (and point ``alias`` at the version) when asked.

    With ``preprocessor`` (a data module's :func:`serving_parts`), the logged model is the preprocessor
    followed by ``model``, and ``example`` is a raw input: the signature is over what a user passes.
    MLflow's default format (``pt2``, an exported graph that loads without the user's classes) is tried
    first; models that cannot be exported fall back to the pickle format. Returns MLflow's ``ModelInfo``.
    """
    import mlflow

    import_pytorch_flavor()
    import mlflow.pytorch
    from mlflow.models import infer_signature

    if preprocessor is not None:
        model = _ServingModel(preprocessor, model).eval()
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
    experiment_id = client.get_run(run_id).info.experiment_id

    def new_logged_model() -> str:
        # Created here, in the run's experiment: left to log_model, it would go to the process's active
        # experiment (the default one, whose artifacts live in ./mlruns of the cwd).
        return str(
            client.create_logged_model(experiment_id=experiment_id, name=name, source_run_id=run_id).model_id
        )

    with _tracking_uri(tracking_uri):
        if example_np is None:
            info = mlflow.pytorch.log_model(
                model, serialization_format="pickle", model_id=new_logged_model(), **kwargs
            )
        else:
            exported_id = new_logged_model()
            try:
                info = mlflow.pytorch.log_model(model, model_id=exported_id, **kwargs)
            except Exception as exc:
                log.info("Logging the model as an exported graph failed (%s); logging it pickled.", exc)
                # log_model records the run's output before it exports: the attempt's logged model
                # cannot take a second one, and would be left behind empty
                with contextlib.suppress(Exception):
                    client.delete_logged_model(exported_id)
                info = mlflow.pytorch.log_model(
                    model, serialization_format="pickle", model_id=new_logged_model(), **kwargs
                )
    version = getattr(info, "registered_model_version", None)
    if alias and registered_model_name and version is not None:
        client.set_registered_model_alias(registered_model_name, alias, str(version))
    return info
