"""``DDPStrategy`` at Lightning's module path (``strategies.ddp``)."""

from lightning_lib.distributed import DDPStrategy

__all__ = ["DDPStrategy"]
