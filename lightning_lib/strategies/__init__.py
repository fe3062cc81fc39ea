"""Strategies at Lightning's import path: ``Strategy``, ``SingleDeviceStrategy``, ``DDPStrategy`` (which run on
``lightning_lib.distributed``), and the ones this library does not build (DeepSpeed, FSDP, model parallel,
XLA), which import and refuse to be constructed with an error that names the feature."""

from lightning_lib.distributed import DDPStrategy, SingleDeviceStrategy, Strategy
from lightning_lib.distributed.strategy import ParallelStrategy
from lightning_lib.strategies.unsupported import (
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceXLAStrategy,
    XLAStrategy,
)

__all__ = [
    "DDPStrategy",
    "DeepSpeedStrategy",
    "FSDPStrategy",
    "ModelParallelStrategy",
    "ParallelStrategy",
    "SingleDeviceStrategy",
    "SingleDeviceXLAStrategy",
    "Strategy",
    "XLAStrategy",
]
