"""The Trainer (``trainer.trainer``), its states (``trainer.states``) and its argument checks (``trainer.arguments``).

``Trainer`` is loaded on first use: the states and argument checks are imported by the layers the
Trainer itself is built from (loops, checkpoints, callbacks), which must not pull in the Trainer.
"""

import typing

from lightning_lib.utilities.seed import seed_everything

if typing.TYPE_CHECKING:
    from lightning_lib.trainer.trainer import Trainer

__all__ = ["Trainer", "seed_everything"]


def __getattr__(name: str) -> typing.Any:
    if name == "Trainer":
        from lightning_lib.trainer.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'lightning_lib.trainer' has no attribute {name!r}")
