"""Hyper-parameters: collecting a constructor's arguments, keeping them as plain data, and Lightning's
YAML / tags-CSV files for them (``save_hparams_to_yaml``, ``load_hparams_from_yaml``, ...)."""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import dataclasses
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from types import FrameType
from typing import Any

from lightning_lib.utilities.parsing import AttributeDict
from lightning_lib.utilities.rank_zero import rank_zero_warn

# the checkpoint keys earlier Lightning releases stored hyper-parameters under
CHECKPOINT_PAST_HPARAMS_KEYS = ("hparams", "module_arguments")


def collect_init_args(frame: FrameType, owner: object) -> dict[str, Any]:
    """Arguments of every ``__init__`` on the stack that constructs ``owner``; the subclass wins."""
    collected: list[dict[str, Any]] = []
    current: FrameType | None = frame
    while current is not None and current.f_code.co_name == "__init__":
        info = inspect.getargvalues(current)
        if not info.args or info.locals.get(info.args[0]) is not owner:
            break
        args = {name: info.locals[name] for name in info.args[1:] if name in info.locals}
        if info.keywords and isinstance(info.locals.get(info.keywords), Mapping):
            args.update(info.locals[info.keywords])
        collected.append(args)
        current = current.f_back
    # innermost (base class) first, so the base's keys come first and the subclass's values win
    merged: dict[str, Any] = {}
    for args in collected:
        merged.update(args)
    return merged


def select_hparams(
    init_args: dict[str, Any], args: Sequence[Any], ignore: str | Iterable[str] | None
) -> dict[str, Any]:
    """What ``save_hyperparameters(*args, ignore=...)`` keeps."""
    ignore_set = {ignore} if isinstance(ignore, str) else set(ignore or ())
    if len(args) == 1 and not isinstance(args[0], str):
        only = args[0]
        if isinstance(only, argparse.Namespace):
            return dict(vars(only))
        if dataclasses.is_dataclass(only) and not isinstance(only, type):
            return dataclasses.asdict(only)
        if isinstance(only, Mapping):
            return dict(only)
        raise ValueError(
            "Expected save_hyperparameters() to receive argument names, a dict, a Namespace or a"
            f" dataclass, received {type(only).__name__}."
        )
    if args:
        missing = [a for a in args if a not in init_args]
        if missing:
            raise ValueError(
                f"save_hyperparameters() received names that are not __init__ arguments: {missing};"
                f" available: {sorted(init_args)}."
            )
        selected = {a: init_args[a] for a in args}
    else:
        selected = dict(init_args)
    return {k: v for k, v in selected.items() if k not in ignore_set}


def to_plain(value: Any) -> Any:
    """Plain data for checkpoints loaded with ``weights_only=True``: no user classes survive."""
    if isinstance(value, bool | int | float | str | type(None)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, argparse.Namespace):
        return to_plain(vars(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if hasattr(value, "model_dump"):  # pydantic models
        return to_plain(value.model_dump())
    return str(value)


def copy_hparams(hparams: Mapping[str, Any]) -> AttributeDict:
    try:
        return AttributeDict(copy.deepcopy(dict(hparams)))
    except Exception:  # objects that cannot be deep-copied are shared, as Lightning does
        return AttributeDict(dict(hparams))


class HyperparametersMixin:
    """``save_hyperparameters`` / ``hparams`` / ``hparams_initial`` for modules and datamodules.

    State lives in ``__dict__`` directly so that on an ``nn.Module`` it bypasses the parameter and
    submodule bookkeeping of ``__setattr__``.
    """

    def save_hyperparameters(
        self, *args: Any, ignore: str | Iterable[str] | None = None, frame: Any = None, logger: bool = True
    ) -> None:
        """Record the ``__init__`` arguments (or the named ones) in ``self.hparams``."""
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        init_args = collect_init_args(frame, self) if frame is not None else {}
        self.__dict__["_log_hyperparams"] = logger
        selected = select_hparams(init_args, args, ignore)
        # the __init__ argument the hyper-parameters rebuild on load_from_checkpoint: one object passed in
        # (a dict, a Namespace) goes back under its argument's name, separate arguments as keywords
        if len(args) == 1 and not isinstance(args[0], str):
            names = [name for name, value in init_args.items() if _same_value(value, args[0])]
            self.__dict__["_hparams_name"] = names[0] if names else None
        else:
            self.__dict__["_hparams_name"] = "kwargs" if selected or args else None
        self.hparams.update(selected)
        self.__dict__["_hparams_initial"] = copy_hparams(self.hparams)

    @property
    def hparams(self) -> AttributeDict:
        found: AttributeDict = self.__dict__.setdefault("_hparams", AttributeDict())
        return found

    @property
    def hparams_initial(self) -> AttributeDict:
        return copy_hparams(self.__dict__.get("_hparams_initial", AttributeDict()))


def update_hparams(hparams: dict[str, Any], updates: Mapping[str, Any]) -> None:
    """Merge ``updates`` into ``hparams`` in place, descending into nested dicts present in both."""
    for key, value in updates.items():
        if key in hparams and isinstance(value, Mapping) and isinstance(hparams[key], dict):
            update_hparams(hparams[key], value)
        else:
            hparams[key] = value


def _as_dict(hparams: Any) -> Any:
    if isinstance(hparams, argparse.Namespace):
        return vars(hparams)
    if isinstance(hparams, AttributeDict):
        return dict(hparams)
    return hparams


def _require_folder(path: str | os.PathLike[str]) -> None:
    folder = os.path.dirname(os.fspath(path))
    if not os.path.isdir(folder or "."):
        raise RuntimeError(f"Missing folder: {folder}.")


def save_hparams_to_yaml(
    config_yaml: str | os.PathLike[str],
    hparams: dict[str, Any] | argparse.Namespace,
    use_omegaconf: bool = True,
) -> None:
    """Write ``hparams`` to a YAML file; values YAML cannot represent are left out with a warning.

    ``use_omegaconf`` is accepted for Lightning's signature; OmegaConf containers are not supported here.
    """
    import yaml

    _require_folder(config_yaml)
    hparams = _as_dict(hparams)
    if not isinstance(hparams, dict):
        raise TypeError(
            f"hparams must be dictionary: expected a dict or an argparse.Namespace, received {type(hparams).__name__}."
        )
    kept: dict[str, Any] = {}
    for key, value in hparams.items():
        try:
            yaml.dump(value)
        except (TypeError, ValueError, yaml.YAMLError):
            rank_zero_warn(f"Skipping '{key}' parameter because it is not possible to safely dump to YAML.")
            continue
        kept[key] = _as_dict(value)
    with open(config_yaml, "w", encoding="utf-8") as handle:
        yaml.dump(kept, handle)


def load_hparams_from_yaml(config_yaml: str | os.PathLike[str], use_omegaconf: bool = True) -> dict[str, Any]:
    """The hyper-parameters of a YAML file (``{}`` with a warning when the file does not exist)."""
    import yaml

    if not os.path.isfile(config_yaml):
        rank_zero_warn(f"Missing Tags: {config_yaml}.", category=RuntimeWarning)
        return {}
    with open(config_yaml, encoding="utf-8") as handle:
        try:
            loaded = yaml.load(handle, Loader=_hparams_loader())  # a SafeLoader subclass
        except yaml.constructor.ConstructorError as error:
            tag = getattr(error.problem_mark, "name", config_yaml)
            raise ValueError(
                f"Expected plain YAML data in the hyper-parameter file {os.fspath(config_yaml)!r}, found a Python "
                f"tag ({error.problem}; in {tag}): only plain values and tuples are read back, never Python "
                "objects by name."
            ) from None
    return loaded if loaded is not None else {}


def _hparams_loader() -> Any:
    """PyYAML's safe loader plus the tuples ``yaml.dump`` writes (``!!python/tuple``).

    Lightning reads hyper-parameter files with the full loader, which also resolves ``!!python/name`` to
    any attribute of an imported module; a hyper-parameter file may come from anywhere, so nothing but plain
    data (and tuples) is constructed here: another Python tag is refused by PyYAML, naming it.
    """
    import yaml

    class _HparamsLoader(yaml.SafeLoader):
        pass

    def construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a sequence for {node.tag}", node.start_mark
            )
        return tuple(loader.construct_sequence(node))

    _HparamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", construct_tuple)
    return _HparamsLoader


def save_hparams_to_tags_csv(
    tags_csv: str | os.PathLike[str], hparams: dict[str, Any] | argparse.Namespace
) -> None:
    """Write ``hparams`` as ``key,value`` rows under a header."""
    _require_folder(tags_csv)
    hparams = _as_dict(hparams)
    with open(tags_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "value"])
        for key, value in hparams.items():
            writer.writerow([key, value])


def _parse_csv_value(text: str) -> Any:
    """A CSV cell back as the Python literal it was written from, else the text itself."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_hparams_from_tags_csv(tags_csv: str | os.PathLike[str]) -> dict[str, Any]:
    """The hyper-parameters of a tags CSV file (``{}`` with a warning when the file does not exist)."""
    if not os.path.isfile(tags_csv):
        rank_zero_warn(f"Missing Tags: {tags_csv}.", category=RuntimeWarning)
        return {}
    with open(tags_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return {row[0]: _parse_csv_value(row[1]) for row in rows[1:]}


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:  # values whose comparison fails or is ambiguous (tensors) are not the same
        return False


def load_hparams_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The hyper-parameters of a ``.yaml``/``.yml`` or ``.csv`` file (``load_from_checkpoint(hparams_file=...)``)."""
    extension = os.fspath(path).rsplit(".", 1)[-1].lower()
    if extension == "csv":
        return load_hparams_from_tags_csv(path)
    if extension in ("yml", "yaml"):
        return load_hparams_from_yaml(path)
    raise ValueError(".csv, .yml or .yaml is required for `hparams_file`")


def instantiate_from_checkpoint(
    cls: type,
    checkpoint: dict[str, Any],
    hparams_file: str | os.PathLike[str] | None,
    overrides: dict[str, Any],
) -> Any:
    """``cls`` rebuilt from a checkpoint's hyper-parameters (a file's replace them, ``overrides`` win), as
    Lightning's ``load_from_checkpoint`` does for a LightningModule or a LightningDataModule."""
    key = cls.CHECKPOINT_HYPER_PARAMS_KEY  # type: ignore[attr-defined]
    if hparams_file is not None:
        checkpoint[key] = load_hparams_file(hparams_file)
    loaded: dict[str, Any] = {}
    if key == "hyper_parameters":  # a module's hyper-parameters under the keys of older releases
        for past in CHECKPOINT_PAST_HPARAMS_KEYS:
            loaded.update(checkpoint.get(past) or {})
    loaded.update(checkpoint.get(key) or {})
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    names = [
        name
        for name, p in list(params.items())[1:]
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    hparams_name = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_NAME)  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = (
        {hparams_name: loaded} if hparams_name and hparams_name in names else dict(loaded)
    )
    kwargs.update(overrides)
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return cls(**kwargs)
