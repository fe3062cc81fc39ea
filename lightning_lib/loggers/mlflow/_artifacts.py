"""What the MLflow logger records besides numbers: dataset inputs, the metric-curve PNG, the model.

Datasets: :func:`dataset_spec` turns a dataset object into an MLflow dataset input. It understands, in
this order, an ``__mlflow_dataset__`` attribute (a dict, or a callable returning one, with ``name``,
``digest``, ``source`` and optional ``schema``/``profile``), a ``digest`` attribute (with optional
``name`` and ``source`` attributes), and a ``torch.utils.data.TensorDataset``, whose digest is the sha256
of every tensor's dtype, shape and bytes. Anything else is not recorded automatically; call
``MLFlowLogger.log_dataset`` for it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import operator
import os
from collections.abc import Mapping
from typing import Any

import torch

from lightning_lib.loggers.mlflow._transport import DatasetSpec
from lightning_lib.loggers.redact import redact_mapping, redact_text

log = logging.getLogger(__name__)

MAX_DIGEST_LENGTH = 36  # MLflow's limit for a dataset digest


def source_type_of(source: str) -> str:
    """MLflow's source type for a URI: ``s3``, ``http``, ``local`` or ``code``."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in ("s3", "s3a"):
        return "s3"
    if scheme in ("http", "https"):
        return "http"
    if scheme == "file" or (not scheme and (os.path.isabs(source) or os.path.exists(source))):
        return "local"
    return "code"


def make_spec(
    name: str, digest: str, source: str, schema: Any = None, profile: Any = None, context: str = "training"
) -> DatasetSpec:
    """A scrubbed :class:`DatasetSpec`; ``schema``/``profile`` may be dicts (stored as JSON)."""
    digest = str(digest)
    if len(digest) > MAX_DIGEST_LENGTH:
        digest = digest[:MAX_DIGEST_LENGTH]  # a prefix of a hash still identifies the data
    source = redact_text(str(source))
    return DatasetSpec(
        name=str(name)[:500],
        digest=digest,
        source_type=source_type_of(source),
        source=json.dumps({"uri": source}),
        schema=schema if schema is None or isinstance(schema, str) else json.dumps(schema),
        profile=profile if profile is None or isinstance(profile, str) else json.dumps(profile),
        context=context,
    )


def _tensor_digest(tensors: tuple[torch.Tensor, ...]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().data)  # the buffer itself: no copy
    return digest.hexdigest()


def _tensor_schema(tensors: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    # MLflow's "tensorspec" layout, so the UI can show it: a JSON string per role.
    def spec(t: torch.Tensor) -> list[dict[str, Any]]:
        dtype = str(t.dtype).removeprefix("torch.")
        return [{"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": [-1, *t.shape[1:]]}}]

    features = json.dumps(spec(tensors[0])) if tensors else None
    targets = (
        json.dumps(functools.reduce(operator.iadd, (spec(t) for t in tensors[1:]), []))
        if len(tensors) > 1
        else None
    )
    return {"mlflow_tensorspec": {"features": features, "targets": targets}}


def dataset_spec(dataset: Any, default_name: str = "train") -> DatasetSpec | None:
    """The dataset input for ``dataset``, or ``None`` when it does not describe itself (see module doc)."""
    described = getattr(dataset, "__mlflow_dataset__", None)
    if callable(described):
        described = described()
    if isinstance(described, Mapping) and described.get("digest"):
        return make_spec(
            described.get("name", default_name),
            described["digest"],
            described.get("source", type(dataset).__name__),
            described.get("schema"),
            described.get("profile"),
        )
    digest = getattr(dataset, "digest", None)
    if isinstance(digest, str) and digest:
        name = getattr(dataset, "name", None)
        return make_spec(
            name if isinstance(name, str) and name else default_name,
            digest,
            str(getattr(dataset, "source", type(dataset).__name__)),
        )
    if isinstance(dataset, torch.utils.data.TensorDataset):
        tensors = tuple(dataset.tensors)
        return make_spec(
            default_name,
            _tensor_digest(tensors),
            "TensorDataset",
            _tensor_schema(tensors),
            {"num_rows": len(dataset)},
        )
    return None


def detached_copy(module: torch.nn.Module, weights: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """An independent copy of ``module`` without its Trainer and with scrubbed hyper-parameters.

    What a pickled model carries must not include the Trainer (loggers, threads, data) nor credentials
    that reached ``hparams``. ``weights`` (a state dict), when given, replaces the copy's weights.
    """
    shallow = copy.copy(module)
    state = shallow.__dict__
    if "_trainer" in state:
        state["_trainer"] = None
    for attr in ("_hparams", "_hparams_initial"):
        hparams = state.get(attr)
        if isinstance(hparams, Mapping):
            clean, _ = redact_mapping({str(k): v for k, v in hparams.items()})
            state[attr] = type(hparams)(clean) if isinstance(hparams, dict) else clean
    clone = copy.deepcopy(shallow)
    if weights is not None:
        clone.load_state_dict(dict(weights))
    return clone.eval()


def best_weights(path: str) -> Mapping[str, Any] | None:
    """The ``state_dict`` of a checkpoint (file, committed folder or ``s3://``), read with the library's
    own verified loader (``weights_only=True``); None, with a warning, when it cannot be read."""
    if not path:
        return None
    from lightning_lib.checkpoint._format import load_file

    try:
        checkpoint = load_file(path, map_location="cpu")
    except Exception as exc:
        log.warning("Could not read the best checkpoint %s (%s): logging the final weights.", path, exc)
        return None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    return state if isinstance(state, Mapping) else None
