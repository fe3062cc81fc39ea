"""The ``Logger`` base class and the parameter helpers that concrete loggers share."""

from __future__ import annotations

import dataclasses
import enum
import json
import statistics
from abc import ABC, abstractmethod
from argparse import Namespace
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightning_lib.utilities.rank_zero import DummyExperiment, rank_zero_experiment, rank_zero_only

if TYPE_CHECKING:
    from lightning_lib.callbacks.model_checkpoint import ModelCheckpoint


# What reaches a logger's backend: on a non-zero rank of a distributed run these do nothing, and
# ``experiment`` is a dummy, so every rank can run the same script with the same logger.
RANK_ZERO_METHODS = (
    "log_metrics",
    "log_hyperparams",
    "log_graph",
    "log_dataset",
    "log_exception",
    "save",
    "flush",
    "finalize",
    "after_save_checkpoint",
)


class Logger(ABC):
    """Base class for experiment loggers, with the interface of Lightning 2.x's ``Logger``.

    Subclasses must implement ``name``, ``version``, ``log_metrics`` and ``log_hyperparams``; every other
    member has a harmless default so a logger only overrides what its backend supports. The backend calls
    of every subclass run on the global-zero process only (Lightning asks subclasses to decorate them
    with ``@rank_zero_only``; here it is done for them).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in RANK_ZERO_METHODS:
            method = getattr(cls, name, None)  # also what a mixin before Logger in the bases defines
            if callable(method) and not getattr(method, "_rank_zero_only", False):
                setattr(cls, name, rank_zero_only(method))
        prop = getattr(cls, "experiment", None)
        if isinstance(prop, property) and prop.fget is not None:
            cls.experiment = property(rank_zero_experiment(prop.fget), prop.fset, prop.fdel, prop.__doc__)  # type: ignore[method-assign,assignment]

    @property
    @abstractmethod
    def name(self) -> str | None:
        """The experiment name."""

    @property
    @abstractmethod
    def version(self) -> int | str | None:
        """The experiment version."""

    @property
    def root_dir(self) -> str | None:
        """Directory holding all versions of the experiment, or ``None`` when nothing is saved locally."""
        return None

    @property
    def log_dir(self) -> str | None:
        """Directory of this version of the experiment, or ``None`` when nothing is saved locally."""
        return None

    @property
    def save_dir(self) -> str | None:
        """Directory where the logs are saved, or ``None`` when nothing is saved locally."""
        return None

    @property
    def experiment(self) -> Any:
        """The backend object (a writer, a client, a run); ``None`` for loggers without one."""
        return None

    @property
    def group_separator(self) -> str:
        """Separator the backend uses to group metric names into sections."""
        return "/"

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record ``metrics`` (name -> value) at ``step``."""

    @abstractmethod
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record the hyper-parameters of the run."""

    def log_graph(self, model: torch.nn.Module, input_array: torch.Tensor | None = None) -> None:  # noqa: B027 (optional hook)
        """Record the model graph; a no-op unless the backend can show graphs."""

    def save(self) -> None:  # noqa: B027 (optional hook)
        """Persist whatever the logger has buffered."""

    def finalize(self, status: str) -> None:
        """Finish the experiment with ``status`` ("success", "failed", ...); saves by default."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:  # noqa: B027 (optional hook)
        """Called by the checkpoint callback after it has saved a checkpoint."""


def _convert_params(params: Any) -> dict[str, Any]:
    """Return ``params`` as a new plain ``dict``: accepts None, a mapping, a Namespace or a dataclass."""
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return dict(vars(params))
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    if isinstance(params, Mapping):
        return dict(params)
    raise TypeError(
        f"Expected params to be a dict, an argparse.Namespace or a dataclass, received {type(params).__name__}."
    )


def _as_mapping(value: Any) -> Mapping[Any, Any] | None:
    """The mapping view of a nested container of params, or ``None`` if ``value`` is a leaf."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, Namespace) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return _convert_params(value)
    return None


def _flatten_dict(params: Mapping[Any, Any], delimiter: str = "/", parent_key: str = "") -> dict[str, Any]:
    """Flatten nested params into one level, joining keys with ``delimiter``.

    Nested mappings, Namespaces and dataclasses are expanded, and so is a non-empty list whose items are all
    mappings (its keys get the item index): ``{"a": {"b": 1}, "l": [{"c": 2}]} -> {"a/b": 1, "l/0/c": 2}``.
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        full_key = f"{parent_key}{delimiter}{key}" if parent_key else str(key)
        nested = _as_mapping(value)
        if nested is not None:
            flat.update(_flatten_dict(nested, delimiter, full_key))
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                flat.update(_flatten_dict(item, delimiter, f"{full_key}{delimiter}{index}"))
        else:
            flat[full_key] = value
    return flat


def _sanitize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return flat params whose values are bool/int/float/str; anything else becomes its ``str()``.

    Backends that take scalar params (MLflow) cannot store lists or objects, so those are stringified.
    """
    sanitized: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
            value = value.item()
        sanitized[key] = value if type(value) in (bool, int, float, str) else str(value)
    return sanitized


def _plain_data(value: Any) -> Any:
    """Convert ``value`` into data ``yaml.safe_dump`` writes: dicts, lists, str, int, float, bool and None.

    Mappings, Namespaces and dataclasses become dicts, tuples and sets become lists, tensors and numpy values
    become numbers or nested lists, enums become their name (as Lightning writes them), and any other object
    becomes its ``str()`` so the file never needs a Python-specific YAML tag to be read back.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return value.tolist()
    nested = _as_mapping(value)
    if nested is not None:
        return {_plain_key(k): _plain_data(v) for k, v in nested.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain_data(item) for item in value]
    for base in (int, float, str):
        # subclasses of the primitives would need a tag; write them as the primitive they are
        if isinstance(value, base):
            return base(value)
    return str(value)


def _plain_key(key: Any) -> Any:
    """A mapping key YAML can write without a tag."""
    return key if type(key) in (bool, int, float, str) else str(key)


def _sanitize_callable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Replace callable values by what they return when called without arguments (a factory's product).

    A callable that needs arguments, raises, or returns another callable is recorded by its name instead.
    """

    def resolve(value: Any) -> Any:
        if not callable(value):
            return value
        try:
            result = value()
        except Exception:
            return getattr(value, "__name__", None)
        return getattr(value, "__name__", None) if callable(result) else result

    return {key: resolve(value) for key, value in params.items()}


def _convert_json_serializable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``params`` with every value JSON can hold kept, nested dicts converted too, the rest as ``str``.

    What a backend that stores its config as JSON (W&B) receives: ``Path("a")`` becomes ``"a"``.
    """
    converted: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            converted[key] = _convert_json_serializable(value)
        elif _json_safe(value):
            converted[key] = value
        else:
            converted[key] = str(value)
    return converted


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _detached_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metrics`` whose tensors are detached CPU copies, one-element ones plain numbers.

    What a logger hands to a background thread: the values as they are at the call, whatever the training
    loop does to those tensors afterwards.
    """
    values: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.item() if value.numel() == 1 else value.detach().cpu().clone()
        values[key] = value
    return values


def _add_prefix(metrics: Mapping[str, Any], prefix: str, separator: str) -> dict[str, Any]:
    """Return ``metrics`` with ``prefix + separator`` in front of every key (unchanged if no prefix)."""
    if not prefix:
        return dict(metrics)
    return {f"{prefix}{separator}{key}": value for key, value in metrics.items()}


class DummyLogger(Logger):
    """Accepts every call and records nothing: what ``fast_dev_run`` logs to, as in Lightning.

    Any method a concrete logger may have (``log_text``, ``log_image``, ...) exists here as a no-op, so
    user code written for the logger it replaces keeps running.
    """

    def __init__(self) -> None:
        super().__init__()
        self._experiment = DummyExperiment()

    @property
    def experiment(self) -> DummyExperiment:
        """A stateless experiment that swallows every call."""
        return self._experiment

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        """Discard the metrics."""

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        """Discard the hyper-parameters."""

    def __getitem__(self, index: int) -> DummyLogger:
        # ``self.logger[0].experiment.add_image(...)`` in code written for a list of loggers
        return self

    def __getattr__(self, name: str) -> Callable[..., None]:
        # only reached for names the class lacks; dunder lookups (pickle, copy) must keep failing normally
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> None:
            return None

        return method


def merge_dicts(
    dicts: Sequence[Mapping[Any, Any]],
    agg_key_funcs: Mapping[Any, Any] | None = None,
    default_func: Callable[[Sequence[float]], float] = statistics.mean,
) -> dict[Any, Any]:
    """Merge dictionaries into one, aggregating the values found under the same key.

    ``agg_key_funcs`` maps a key to the function that aggregates its list of values (a nested mapping for a
    nested dict); keys without one use ``default_func`` (the mean). ``None`` values are left out, and a
    nested dict is merged recursively: ``merge_dicts([{"a": 1, "d": {"x": 1}}, {"a": 3, "d": {"x": 3}}])``
    is ``{"a": 2, "d": {"x": 2}}``.
    """
    funcs = agg_key_funcs or {}
    keys: dict[Any, None] = {}
    for d in dicts:
        keys.update(dict.fromkeys(d))
    merged: dict[Any, Any] = {}
    for key in keys:
        values = [d[key] for d in dicts if d.get(key) is not None]
        func = funcs.get(key)
        if values and isinstance(values[0], dict):
            merged[key] = merge_dicts(values, func, default_func)
        else:
            merged[key] = (func or default_func)(values)
    return merged


__all__ = ["DummyExperiment", "DummyLogger", "Logger", "merge_dicts", "rank_zero_experiment"]
