"""Lightning's precision plugins that this library does not build: importable, refusing construction with
an error that names the feature."""

from __future__ import annotations

from typing import Any, NoReturn

from lightning_lib.plugins.precision import Precision


def _unsupported(feature: str) -> NoReturn:
    raise NotImplementedError(
        f"{feature} is not supported by lightning_lib; use Trainer(precision=...) with one of"
        ' "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true".'
    )


class BitsandbytesPrecision(Precision):
    """8-bit / 4-bit quantised layers through bitsandbytes: not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("BitsandbytesPrecision (bitsandbytes quantisation)")


class DeepSpeedPrecision(Precision):
    """DeepSpeed's precision: not supported (nor is DeepSpeed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("DeepSpeedPrecision (DeepSpeed)")


class FSDPPrecision(Precision):
    """FSDP's mixed precision: not supported (nor is FSDP)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("FSDPPrecision (fully sharded data parallel)")


class TransformerEnginePrecision(Precision):
    """FP8 through NVIDIA Transformer Engine: not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("TransformerEnginePrecision (FP8 through Transformer Engine)")


class XLAPrecision(Precision):
    """TPU precision through torch_xla: not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("XLAPrecision (TPUs through torch_xla)")


__all__ = [
    "BitsandbytesPrecision",
    "DeepSpeedPrecision",
    "FSDPPrecision",
    "TransformerEnginePrecision",
    "XLAPrecision",
]
