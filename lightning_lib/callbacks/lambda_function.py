"""LambdaCallback: build a callback on the fly from functions, one per hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning_lib.callbacks.callback import Callback

# Every hook of the Callback base; state_dict/load_state_dict are not hooks (Lightning rejects them too).
_HOOK_NAMES = frozenset(
    name
    for name, value in vars(Callback).items()
    if callable(value) and (name.startswith("on_") or name in ("setup", "teardown"))
)


class LambdaCallback(Callback):
    """A callback whose hooks are the given functions.

    Example::

        LambdaCallback(on_train_epoch_end=lambda trainer, pl_module: print(trainer.current_epoch))

    Args:
        **hooks: any :class:`Callback` hook name mapped to a callable taking that hook's arguments;
            ``None`` values are ignored, unknown names raise ``TypeError``.
    """

    def __init__(self, **hooks: Callable[..., Any] | None) -> None:
        unknown = sorted(set(hooks) - _HOOK_NAMES)
        if unknown:
            raise TypeError(
                f"LambdaCallback.__init__() got unexpected keyword argument(s): {', '.join(unknown)}"
            )
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"Expected `{name}` to be callable, received {type(fn).__name__}.")
            # An instance attribute shadows the no-op method, exactly as Lightning does it.
            setattr(self, name, fn)
