"""``is_overridden``: whether a module, data module or callback implements a hook itself.

The Trainer calls a hook only where it is overridden; an attribute set to ``None`` on the instance
(``model.validation_step = None``) counts as not implemented, which is Lightning's way to switch a step
off. Functions wrapped with ``functools.wraps``, ``functools.partial`` objects and ``Mock(wraps=...)``
count as the function they wrap.
"""

from __future__ import annotations

import functools
from typing import Any
from unittest import mock

# The classes whose hooks ``is_overridden`` compares against when no ``parent`` is given. The classes
# register themselves when their module is imported (this package is a leaf and imports none of them).
_default_parents: list[type] = []


def register_hook_parent(cls: type) -> type:
    """Make ``cls`` a default ``parent`` of :func:`is_overridden` for its instances (a class decorator)."""
    if cls not in _default_parents:
        _default_parents.append(cls)
    return cls


def _unwrap(fn: Any) -> Any:
    if hasattr(fn, "__wrapped__"):
        # a wrapper of ``None`` (``update_wrapper(partial(f, None), None)``) wraps no implementation
        fn = fn.__wrapped__
        if fn is None:
            return None
    if isinstance(fn, mock.Mock):
        return fn._mock_wraps
    if isinstance(fn, functools.partial):
        return fn.func
    return fn


def _code(fn: Any) -> Any:
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__code__", fn)


def _overrides(instance: object, method_name: str, parent: type) -> bool:
    """Whether ``instance.method_name`` differs from ``parent.method_name`` (``None`` means it does not)."""
    impl = _unwrap(getattr(instance, method_name, None))
    if impl is None:
        return False
    default = getattr(parent, method_name, None)
    if default is None:
        return True
    return _code(impl) is not _code(_unwrap(default))


def is_overridden(method_name: str, instance: object | None = None, parent: type | None = None) -> bool:
    """Whether ``instance`` implements ``method_name`` itself rather than inheriting ``parent``'s.

    ``parent`` defaults to the LightningModule, LightningDataModule or Callback base ``instance`` is an
    instance of; ``instance=None`` (no module attached yet) is never overridden.
    """
    if instance is None:
        return False
    if parent is None:
        parent = next((base for base in _default_parents if isinstance(instance, base)), None)
        if parent is None:
            raise ValueError(
                "Expected instance to be a LightningModule, LightningDataModule or Callback when no parent is"
                f" given, received {type(instance).__name__}."
            )
    if getattr(parent, method_name, None) is None:
        raise ValueError(f"Expected parent {parent.__name__} to define {method_name!r}, it does not.")
    return _overrides(instance, method_name, parent)


__all__ = ["is_overridden", "register_hook_parent"]
