"""``HyperparametersMixin`` at Lightning's path (``lightning.pytorch.core.mixins.hparams_mixin``)."""

from lightning_lib.core.saving import HyperparametersMixin

__all__ = ["HyperparametersMixin"]
