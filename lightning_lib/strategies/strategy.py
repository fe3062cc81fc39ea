"""``Strategy`` at Lightning's module path (``strategies.strategy``)."""

from lightning_lib.distributed import Strategy

__all__ = ["Strategy"]
