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


__all__ = ["AttributeDict", "is_picklable"]
