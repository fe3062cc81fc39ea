"""Warning categories users filter (Lightning's ``utilities.warnings``)."""

from __future__ import annotations

import warnings


class PossibleUserWarning(UserWarning):
    """A warning about a setting that is often a mistake but may be intended (few dataloader workers, ...)."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Ignore every :class:`PossibleUserWarning` (raised from ``module`` and below, if given)."""
    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)


__all__ = ["PossibleUserWarning", "disable_possible_user_warnings"]
