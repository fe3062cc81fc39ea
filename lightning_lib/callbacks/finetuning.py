"""Fine-tuning callbacks: freeze modules before training, unfreeze them into new optimizer param groups.

The param groups a callback adds are recorded (by parameter name) in its checkpoint state; a resumed fit
rebuilds them in ``on_fit_start``, after ``configure_optimizers`` and before the optimizer states are
loaded, so the saved optimizer state finds the groups it was saved with.

One addition to Lightning's state: which parameters were frozen (and which BatchNorm layers did not
track statistics) when the checkpoint was taken. ``setup`` freezes the modules again on resume, and
Lightning leaves what was unfrozen before the checkpoint frozen: the resumed fit would silently stop
training it. Here it is put back, so a resumed fit trains what the interrupted one trained.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import Module, ModuleDict
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_lib.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)

Modules = Module | Iterable[Module | Iterable[Any]]


def multiplicative(epoch: int) -> float:
    """``BackboneFinetuning``'s default ``lambda_func``: double the backbone's learning rate every epoch."""
    return 2.0


class BaseFinetuning(Callback):
    """Base class for fine-tuning: implement ``freeze_before_training`` and ``finetune_function``.

    ``freeze_before_training(pl_module)`` runs in ``setup``, before ``configure_optimizers`` (which should
    then only pass parameters with ``requires_grad``); ``finetune_function(pl_module, epoch, optimizer)``
    runs at the start of every training epoch, for each optimizer, and typically calls
    ``unfreeze_and_add_param_group``.
    """

    def __init__(self) -> None:
        # per optimizer index, its param groups with parameter names in place of the parameters
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False
        # from a checkpoint: the names of the frozen parameters and of the BatchNorm layers not tracking stats
        self._frozen: tuple[set[str], set[str]] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = True
        # checkpoints of Lightning before 1.6 stored the metadata as the whole state
        self._internal_optimizer_metadata = state_dict.get("internal_optimizer_metadata", state_dict)
        if "frozen_parameters" in state_dict:
            self._frozen = (set(state_dict["frozen_parameters"]), set(state_dict["untracked_batchnorms"]))

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if state is None:
            return
        state["frozen_parameters"] = [n for n, p in pl_module.named_parameters() if not p.requires_grad]
        state["untracked_batchnorms"] = [
            n for n, m in pl_module.named_modules() if isinstance(m, _BatchNorm) and not m.track_running_stats
        ]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._restarting:
            return
        self._restarting = False
        if self._frozen is not None:
            frozen, untracked = self._frozen
            self._frozen = None
            for name, param in pl_module.named_parameters():
                param.requires_grad = name not in frozen
            for name, module in pl_module.named_modules():
                if isinstance(module, _BatchNorm):
                    module.track_running_stats = name not in untracked
        if not self._internal_optimizer_metadata:
            return
        by_name = dict(pl_module.named_parameters())
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            saved = self._internal_optimizer_metadata.get(opt_idx)
            if saved is not None:
                optimizer.param_groups = self._apply_mapping_to_param_groups(saved, by_name)

    @staticmethod
    def flatten_modules(modules: Modules) -> list[Module]:
        """The leaf modules of ``modules`` plus the parents that hold parameters themselves."""
        if isinstance(modules, ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable):
            found: list[Module] = []
            for item in modules:
                found.extend(BaseFinetuning.flatten_modules(item))
            candidates: Iterable[Module] = found
        else:
            candidates = modules.modules()
        return [m for m in candidates if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(
        modules: Modules, train_bn: bool = True, requires_grad: bool = True
    ) -> Iterator[torch.nn.Parameter]:
        """The parameters of ``modules`` whose ``requires_grad`` is ``requires_grad`` (BatchNorm's only with ``train_bn``)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            # direct parameters only: a parent holding parameters is listed next to its children
            for param in module.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        """Unfreeze every parameter of ``modules``; BatchNorm layers track running statistics again."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: Module) -> None:
        """Freeze the direct parameters of ``module``; a BatchNorm layer stops tracking running statistics."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze ``modules``; with ``train_bn`` their BatchNorm layers stay trainable."""
        for module in BaseFinetuning.flatten_modules(modules):
            if train_bn and isinstance(module, _BatchNorm):
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable[Any]) -> list[Any]:
        """``params`` minus those already in one of ``optimizer``'s param groups (with a warning if any).

        Parameters are compared by identity (Lightning compares values, so it also drops a new
        parameter that merely equals one in the optimizer, e.g. two freshly initialised BatchNorm weights).
        """
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        kept: list[Any] = []
        skipped = False
        for param in params:
            if id(param) in present:
                skipped = True
            else:
                kept.append(param)
        if skipped:
            warnings.warn(
                "The provided params to be frozen already exist within another group of this optimizer."
                " Those parameters will be skipped.\n"
                "HINT: Did you init your optimizer in `configure_optimizer` as such:\n"
                f" {type(optimizer)}(filter(lambda p: p.requires_grad, self.parameters()), ...) ",
                UserWarning,
                stacklevel=3,
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: Modules,
        optimizer: torch.optim.Optimizer,
        lr: float | None = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        """Unfreeze ``modules`` and add their parameters to ``optimizer`` as a new param group.

        Its learning rate is ``lr``, or the first group's divided by ``initial_denom_lr``; parameters the
        optimizer already has are left out.
        """
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        params = BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True)
        new = BaseFinetuning.filter_on_optimizer(optimizer, params)
        if new:
            optimizer.add_param_group({"params": new, "lr": group_lr})

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.freeze_before_training(pl_module)

    @staticmethod
    def _apply_mapping_to_param_groups(
        param_groups: list[dict[str, Any]], mapping: dict[Any, Any]
    ) -> list[dict[str, Any]]:
        """The groups with each entry of ``params`` replaced through ``mapping`` (parameter <-> name)."""
        return [
            {
                **{k: v for k, v in group.items() if k != "params"},
                "params": [mapping[p] for p in group["params"]],
            }
            for group in param_groups
        ]

    def _store(
        self,
        pl_module: LightningModule,
        opt_idx: int,
        num_param_groups: int,
        current_param_groups: list[dict[str, Any]],
    ) -> None:
        names = {p: n for n, p in pl_module.named_parameters()}
        recorded = self._internal_optimizer_metadata.get(opt_idx)
        if recorded is None:
            self._internal_optimizer_metadata[opt_idx] = self._apply_mapping_to_param_groups(
                current_param_groups, names
            )
        elif num_param_groups != len(current_param_groups):
            # only the groups added in this epoch: the earlier ones are recorded already
            recorded.extend(
                self._apply_mapping_to_param_groups(current_param_groups[num_param_groups:], names)
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            before = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, opt_idx, before, optimizer.param_groups)

    def finetune_function(
        self, pl_module: LightningModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        """Override to unfreeze modules at the start of epoch ``epoch``."""
        raise NotImplementedError

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Override to freeze modules before the optimizers are configured."""
        raise NotImplementedError


class BackboneFinetuning(BaseFinetuning):
    """Train ``pl_module.backbone`` from epoch ``unfreeze_backbone_at_epoch`` on, with its own learning rate.

    The backbone is frozen before training. At the unfreeze epoch it joins the optimizer as a new param
    group at ``backbone_initial_lr`` (or the current learning rate times ``backbone_initial_ratio_lr``);
    every later epoch its learning rate is multiplied by ``lambda_func(epoch + 1)``, and with
    ``should_align`` it stops at the current learning rate of the first group.

    Args:
        unfreeze_backbone_at_epoch: epoch at which the backbone starts training.
        lambda_func: factor applied to the backbone's learning rate each epoch after that.
        backbone_initial_ratio_lr: the backbone's first learning rate relative to the current one.
        backbone_initial_lr: the backbone's first learning rate (overrides the ratio).
        should_align: cap the backbone's learning rate at the current learning rate.
        initial_denom_lr: passed to ``unfreeze_and_add_param_group``.
        train_bn: keep the backbone's BatchNorm layers trainable while it is frozen.
        verbose: log both learning rates each epoch.
        rounding: digits of the logged learning rates.
    """

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict["previous_backbone_lr"]
        super().load_state_dict(state_dict)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(getattr(pl_module, "backbone", None), Module):
            # Lightning raises MisconfigurationException here
            raise ValueError(
                "The LightningModule should have a nn.Module `backbone` attribute, received"
                f" {type(getattr(pl_module, 'backbone', None)).__name__}."
            )
        super().on_fit_start(trainer, pl_module)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.freeze(pl_module.backbone)

    def finetune_function(
        self, pl_module: LightningModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        current_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            backbone_lr = (
                self.backbone_initial_lr
                if self.backbone_initial_lr is not None
                else current_lr * self.backbone_initial_ratio_lr
            )
            self.previous_backbone_lr = backbone_lr
            self.unfreeze_and_add_param_group(
                pl_module.backbone,
                optimizer,
                backbone_lr,
                train_bn=self.train_bn,
                initial_denom_lr=self.initial_denom_lr,
            )
        elif epoch > self.unfreeze_backbone_at_epoch:
            assert self.previous_backbone_lr is not None
            backbone_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and backbone_lr > current_lr:
                backbone_lr = current_lr
            optimizer.param_groups[-1]["lr"] = backbone_lr
            self.previous_backbone_lr = backbone_lr
        else:
            return
        if self.verbose:
            log.info(
                f"Current lr: {round(current_lr, self.rounding)}, Backbone lr: {round(backbone_lr, self.rounding)}"
            )
