"""Lightning's ``core.mixins``: the hyper-parameters mixin modules and datamodules share."""

from lightning_lib.core.mixins.hparams_mixin import HyperparametersMixin

__all__ = ["HyperparametersMixin"]
