"""Parameters shared between modules (tied weights), which a move to another device must keep tied."""

from __future__ import annotations

from torch import nn


def find_shared_parameters(module: nn.Module) -> list[list[str]]:
    """Groups of the qualified names that refer to one parameter, for each parameter used more than once."""
    names_of: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
    return [names for names in names_of.values() if len(names) > 1]


def set_shared_parameters(module: nn.Module, shared_params: list[list[str]]) -> nn.Module:
    """Tie again each group from :func:`find_shared_parameters`: every name refers to the first one's tensor."""
    for group in shared_params:
        source = module.get_parameter(group[0])
        for name in group[1:]:
            owner_path, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_path) if owner_path else module
            setattr(owner, attr, source)
    return module


__all__ = ["find_shared_parameters", "set_shared_parameters"]
