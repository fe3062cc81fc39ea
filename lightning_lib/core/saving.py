"""Hyper-parameters: collecting a constructor's arguments and keeping them as plain data."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence
from types import FrameType
from typing import Any

from lightning_lib.utilities.parsing import AttributeDict


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
        self.hparams.update(select_hparams(init_args, args, ignore))
        self.__dict__["_hparams_initial"] = copy_hparams(self.hparams)

    @property
    def hparams(self) -> AttributeDict:
        found: AttributeDict = self.__dict__.setdefault("_hparams", AttributeDict())
        return found

    @property
    def hparams_initial(self) -> AttributeDict:
        return copy_hparams(self.__dict__.get("_hparams_initial", AttributeDict()))
