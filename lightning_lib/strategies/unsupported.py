"""Lightning's strategies that this library does not build: importable, so code that names them loads, and
refusing construction with one error that says which feature is missing and what to use instead."""

from __future__ import annotations

from typing import Any, NoReturn


def unsupported_feature(feature: str, instead: str = 'strategy="ddp" or a single device') -> NoReturn:
    """Raise the error for a Lightning feature lightning_lib does not provide."""
    raise NotImplementedError(f"{feature} is not supported by lightning_lib; use {instead}.")


class DeepSpeedStrategy:
    """DeepSpeed (ZeRO sharding, offload): not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unsupported_feature("DeepSpeedStrategy (DeepSpeed)")


class FSDPStrategy:
    """Fully Sharded Data Parallel: not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unsupported_feature("FSDPStrategy (fully sharded data parallel)")


class ModelParallelStrategy:
    """Tensor / 2D model parallelism: not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unsupported_feature("ModelParallelStrategy (tensor and 2D model parallelism)")


class XLAStrategy:
    """TPUs through torch_xla: not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unsupported_feature("XLAStrategy (TPUs through torch_xla)", "a CPU or CUDA accelerator")


class SingleDeviceXLAStrategy:
    """One TPU core through torch_xla: not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unsupported_feature("SingleDeviceXLAStrategy (TPUs through torch_xla)", "a CPU or CUDA accelerator")


__all__ = [
    "DeepSpeedStrategy",
    "FSDPStrategy",
    "ModelParallelStrategy",
    "SingleDeviceXLAStrategy",
    "XLAStrategy",
    "unsupported_feature",
]
