"""LearningRateMonitor: log the learning rate (and optionally momentum / weight decay) of each optimizer.

Names and timing follow ``pytorch_lightning.callbacks.LearningRateMonitor`` 2.x so dashboards built on
Lightning keep working: ``lr-<OptimizerClass>`` (``-1``, ``-2``... for further optimizers of the same
class), ``/pg<i>`` or ``/<param group name>`` per parameter group, the scheduler's ``name`` when given,
and ``-momentum`` / ``-weight_decay`` suffixes.
"""

from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.optim import Optimizer

from lightning_lib.callbacks.callback import Callback
from lightning_lib.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer


class LearningRateMonitor(Callback):
    """Log learning rates to the trainer's loggers during training.

    Args:
        logging_interval: ``"step"`` or ``"epoch"`` logs every optimizer at that interval; ``None`` logs
            each scheduled optimizer at its scheduler's ``interval`` (and unscheduled ones at both).
        log_momentum: also log momentum (``betas[0]`` for Adam-like optimizers, 0 when absent).
        log_weight_decay: also log each parameter group's weight decay.
    """

    def __init__(
        self,
        logging_interval: Literal["step", "epoch"] | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException("logging_interval should be `step` or `epoch` or `None`.")
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        # History of every logged value per name; users read it after fit.
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.loggers:
            raise MisconfigurationException(
                "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger."
            )
        if self.log_momentum and self._lacks_key(trainer, "momentum") and self._lacks_key(trainer, "betas"):
            warnings.warn(
                "You have set log_momentum=True, but some optimizers do not"
                " have momentum. This will log a value 0 for the momentum.",
                RuntimeWarning,
                stacklevel=2,
            )
        sched_names, seen, seen_types = self._find_names_from_schedulers(trainer.lr_scheduler_configs)
        opt_names, _ = self._find_names_from_optimizers(trainer.optimizers, seen, seen_types)
        names = list(itertools.chain.from_iterable(sched_names + opt_names))
        self.lrs = {name: [] for name in names}
        self.last_momentum_values = {f"{name}-momentum": None for name in names}
        self.last_weight_decay_values = {f"{name}-weight_decay": None for name in names}

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.logging_interval == "epoch" or not _should_update_logs(trainer):
            return
        stats = self._extract_stats(trainer, "step" if self.logging_interval is None else "any")
        self._log(trainer, stats)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.logging_interval == "step":
            return
        stats = self._extract_stats(trainer, "epoch" if self.logging_interval is None else "any")
        self._log(trainer, stats)

    @staticmethod
    def _lacks_key(trainer: Trainer, key: str) -> bool:
        if trainer.lr_scheduler_configs:
            return any(key not in cfg.scheduler.optimizer.defaults for cfg in trainer.lr_scheduler_configs)
        return any(key not in opt.defaults for opt in trainer.optimizers)

    @staticmethod
    def _log(trainer: Trainer, stats: dict[str, float]) -> None:
        if stats:
            step = trainer.progress.batches_that_stepped
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=step)

    def _extract_stats(self, trainer: Trainer, interval: str) -> dict[str, float]:
        """Collect the values to log now; names are recomputed because param groups may be added mid-fit."""
        stats: dict[str, float] = {}
        configs = trainer.lr_scheduler_configs
        sched_names, seen, seen_types = self._find_names_from_schedulers(configs)
        self._remap_keys(sched_names)
        for names, config in zip(sched_names, configs):
            if interval in (config.interval, "any"):
                stats.update(self._get_optimizer_stats(config.scheduler.optimizer, names))
        opt_names, unscheduled = self._find_names_from_optimizers(trainer.optimizers, seen, seen_types)
        self._remap_keys(opt_names)
        for optimizer, names in zip(unscheduled, opt_names):
            stats.update(self._get_optimizer_stats(optimizer, names))
        # Lightning exposes the values to other callbacks (e.g. ModelCheckpoint(monitor="lr-Adam")).
        device = getattr(getattr(trainer, "strategy", None), "root_device", None)
        trainer.callback_metrics.update({k: torch.as_tensor(v, device=device) for k, v in stats.items()})
        return stats

    def _get_optimizer_stats(self, optimizer: Optimizer, names: list[str]) -> dict[str, float]:
        stats: dict[str, float] = {}
        use_betas = "betas" in optimizer.defaults
        for group, name in zip(optimizer.param_groups, names):
            stats[name] = group["lr"]
            self.lrs.setdefault(name, []).append(group["lr"])
            if self.log_momentum:
                momentum = group["betas"][0] if use_betas else group.get("momentum", 0)
                stats[f"{name}-momentum"] = momentum
                self.last_momentum_values[f"{name}-momentum"] = momentum
            if self.log_weight_decay:
                stats[f"{name}-weight_decay"] = group["weight_decay"]
                self.last_weight_decay_values[f"{name}-weight_decay"] = group["weight_decay"]
        return stats

    def _remap_keys(self, names: list[list[str]], token: str = "/pg1") -> None:
        """Keep the history when an optimizer with one param group gains more (``lr-X`` -> ``lr-X/pg1``)."""
        for group_names in names:
            for new_name in group_names:
                old_name = new_name.replace(token, "")
                if token in new_name and old_name in self.lrs:
                    self.lrs[new_name] = self.lrs.pop(old_name)
                elif new_name not in self.lrs:
                    self.lrs[new_name] = []

    def _find_names_from_schedulers(
        self, configs: list[Any]
    ) -> tuple[list[list[str]], list[Optimizer], defaultdict[type, int]]:
        names: list[list[str]] = []
        seen: list[Optimizer] = []
        seen_types: defaultdict[type, int] = defaultdict(int)
        for config in configs:
            optimizer = config.scheduler.optimizer
            name = config.name if config.name is not None else "lr-" + type(optimizer).__name__
            names.append(self._names_for(optimizer, name, seen, seen_types, named=config.name is not None))
        return names, seen, seen_types

    def _find_names_from_optimizers(
        self, optimizers: list[Any], seen: list[Optimizer], seen_types: defaultdict[type, int]
    ) -> tuple[list[list[str]], list[Optimizer]]:
        names: list[list[str]] = []
        unscheduled: list[Optimizer] = []
        for optimizer in optimizers:
            # unwrap optimizer wrappers that keep the torch optimizer in `.optimizer`
            optimizer = getattr(optimizer, "optimizer", optimizer)
            if any(optimizer is s for s in seen):
                continue
            name = "lr-" + type(optimizer).__name__
            names.append(self._names_for(optimizer, name, seen, seen_types, named=False))
            unscheduled.append(optimizer)
        return names, unscheduled

    @staticmethod
    def _names_for(
        optimizer: Optimizer,
        name: str,
        seen: list[Optimizer],
        seen_types: defaultdict[type, int],
        named: bool,
    ) -> list[str]:
        """One metric name per param group, numbered per optimizer class like Lightning."""
        seen.append(optimizer)
        cls = type(optimizer)
        if not named:
            seen_types[cls] += 1
        groups = optimizer.param_groups
        group_names = [g.get("name", f"pg{i}") for i, g in enumerate(groups, start=1)]
        duplicates = {n for n in group_names if group_names.count(n) > 1}
        if duplicates:
            raise MisconfigurationException(
                "A single `Optimizer` cannot have multiple parameter groups with identical "
                f"`name` values. {name} has duplicated parameter group names {duplicates}"
            )
        # A class already counted more than once gets "-<n-1>", even on a named scheduler (Lightning does).
        if cls in seen_types and seen_types[cls] > 1:
            name = f"{name}-{seen_types[cls] - 1}"
        if len(groups) > 1:
            return [f"{name}/{pg_name}" for pg_name in group_names]
        pg_name = groups[0].get("name") if groups else None
        return [f"{name}/{pg_name}" if pg_name else name for _ in groups]


def _should_update_logs(trainer: Trainer) -> bool:
    """Lightning's rule for logging at a train batch: every ``log_every_n_steps`` logging steps.

    ``+ 1`` because the check happens before the batch steps; a stopping trainer always logs.
    """
    every = trainer.log_every_n_steps
    if every == 0:
        return False
    return (trainer.progress.batches_that_stepped + 1) % every == 0 or bool(trainer.should_stop)
