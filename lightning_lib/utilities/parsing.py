"""Small helpers over plain data: ``AttributeDict`` and ``is_picklable`` (Lightning's ``utilities.parsing``)."""

from __future__ import annotations

import pickle
from typing import Any


class AttributeDict(dict[str, Any]):
    """A dict whose keys are also attributes (``model.hparams.lr``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"Missing attribute {key!r}") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        del self[key]

    def __repr__(self) -> str:
        if not self:
            return ""
        width = max(len(str(k)) for k in self)
        return "\n".join(f'"{k}":{" " * (width - len(str(k)) + 1)}{v!r}' for k, v in sorted(self.items()))


def is_picklable(obj: object) -> bool:
    """Whether ``obj`` survives ``pickle.dumps`` (hyper-parameters that do not are left out of checkpoints)."""
    try:
        pickle.dumps(obj)
    except (pickle.PicklingError, pickle.PickleError, AttributeError, RecursionError, TypeError):
        return False
    return True


def _attr_holders(model: Any, attribute: str) -> list[Any]:
    """Every place that holds ``attribute``, in Lightning's order: the model, its hparams, then the
    attached Trainer's datamodule and the datamodule's hparams."""
    holders: list[Any] = []
    if hasattr(model, attribute):
        holders.append(model)
    hparams = getattr(model, "hparams", None)
    if hparams is not None and attribute in hparams:
        holders.append(hparams)
    trainer = getattr(model, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None:
        if hasattr(datamodule, attribute):
            holders.append(datamodule)
        dm_hparams = getattr(datamodule, "hparams", None)
        if dm_hparams is not None and attribute in dm_hparams:
            holders.append(dm_hparams)
    return holders


def _missing(attribute: str) -> AttributeError:
    return AttributeError(
        f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the datamodule."
    )


def lightning_hasattr(model: Any, attribute: str) -> bool:
    """Whether ``attribute`` is on the model, its hparams, the datamodule or the datamodule's hparams."""
    return bool(_attr_holders(model, attribute))


def lightning_getattr(model: Any, attribute: str) -> Any:
    """The value of ``attribute`` from the last place that holds it (the datamodule wins over the model)."""
    holders = _attr_holders(model, attribute)
    if not holders:
        raise _missing(attribute)
    holder = holders[-1]
    return holder[attribute] if isinstance(holder, dict) else getattr(holder, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    """Set ``attribute`` to ``value`` in every place that holds it."""
    holders = _attr_holders(model, attribute)
    if not holders:
        raise _missing(attribute)
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)


__all__ = ["AttributeDict", "is_picklable", "lightning_getattr", "lightning_hasattr", "lightning_setattr"]
