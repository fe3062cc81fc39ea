"""``SingleDeviceStrategy`` at Lightning's module path (``strategies.single_device``)."""

from lightning_lib.distributed import SingleDeviceStrategy

__all__ = ["SingleDeviceStrategy"]
