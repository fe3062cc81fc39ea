"""Plugins at Lightning's import path: the precision plugins (``Trainer(plugins=[MixedPrecision(...)])`` or
``Trainer(precision=...)``), and the ones this library does not build (bitsandbytes, DeepSpeed, FSDP,
Transformer Engine, XLA), which import and refuse to be constructed with an error naming the feature."""

from lightning_lib.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from lightning_lib.plugins.unsupported import (
    BitsandbytesPrecision,
    DeepSpeedPrecision,
    FSDPPrecision,
    TransformerEnginePrecision,
    XLAPrecision,
)

__all__ = [
    "BitsandbytesPrecision",
    "DeepSpeedPrecision",
    "DoublePrecision",
    "FSDPPrecision",
    "HalfPrecision",
    "MixedPrecision",
    "Precision",
    "TransformerEnginePrecision",
    "XLAPrecision",
]
