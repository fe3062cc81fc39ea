"""``configure_optimizers``: every form Lightning accepts, scheduler configs, and LightningOptimizer."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer

from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.types import LRSchedulerConfig, LRSchedulerTypeTuple

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

_SCHEDULER_KEYS = {"scheduler", "name", "interval", "frequency", "reduce_on_plateau", "monitor", "strict"}
_OPTIMIZER_DICT_KEYS = {"optimizer", "lr_scheduler", "monitor"}
_FORMS = (
    "an optimizer; a list or tuple of optimizers; two lists ([optimizers], [schedulers]); a dict with an"
    ' "optimizer" key and optional "lr_scheduler" and "monitor" keys; a list or tuple of such dicts; or None'
)


def _is_plateau(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


# under manual optimization the user steps the schedulers: what tells the Trainer how to step them is ignored
_MANUAL_IGNORED_KEYS = ("reduce_on_plateau", "monitor", "strict")


def _manual_scheduler_config(scheduler: Any) -> LRSchedulerConfig:
    if not isinstance(scheduler, Mapping):
        return LRSchedulerConfig(scheduler)
    ignored = [key for key in scheduler if key in _MANUAL_IGNORED_KEYS]
    if ignored:
        warnings.warn(
            f"The lr scheduler dict contains the key(s) {ignored}, but the keys will be ignored. You need to call"
            " `lr_scheduler.step()` manually in manual optimization.",
            RuntimeWarning,
            stacklevel=5,
        )
    if "scheduler" not in scheduler:
        raise MisconfigurationException(
            f'Expected the lr scheduler dict to have a "scheduler" key, received keys {sorted(scheduler)}.'
        )
    # interval and frequency still matter to LearningRateMonitor, which logs on them
    return LRSchedulerConfig(
        scheduler=scheduler["scheduler"],
        name=scheduler.get("name"),
        interval=scheduler.get("interval", "epoch"),
        frequency=scheduler.get("frequency", 1),
    )


def _scheduler_config(scheduler: Any, monitor: str | None, automatic: bool = True) -> LRSchedulerConfig:
    if not automatic:
        return _manual_scheduler_config(scheduler)
    if isinstance(scheduler, Mapping):
        if "scheduler" not in scheduler:
            raise MisconfigurationException(
                'Expected the lr scheduler dict to have a "scheduler" key, received keys'
                f" {sorted(scheduler)}."
            )
        unknown = set(scheduler) - _SCHEDULER_KEYS
        if unknown:
            warnings.warn(
                f"Found unsupported keys in the lr scheduler dict: {sorted(unknown)}; supported keys are"
                f" {sorted(_SCHEDULER_KEYS)}.",
                RuntimeWarning,
                stacklevel=4,
            )
        interval = scheduler.get("interval", "epoch")
        if interval not in ("step", "epoch"):
            raise MisconfigurationException(
                f'Expected the lr scheduler dict\'s "interval" to be "step" or "epoch", received {interval!r}.'
            )
        frequency = scheduler.get("frequency", 1)
        if not isinstance(frequency, int) or frequency < 1:
            raise MisconfigurationException(
                f'Expected the lr scheduler dict\'s "frequency" >= 1, received {frequency!r}.'
            )
        sched = scheduler["scheduler"]
        plateau = scheduler.get("reduce_on_plateau", _is_plateau(sched))
        config_monitor = scheduler.get("monitor", monitor)
        if plateau and config_monitor is None:
            raise MisconfigurationException(
                "Expected a monitor when a ReduceLROnPlateau scheduler is used, for example"
                ' {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}};'
                " received none."
            )
        return LRSchedulerConfig(
            scheduler=sched,
            name=scheduler.get("name"),
            interval=interval,
            frequency=frequency,
            reduce_on_plateau=plateau,
            monitor=config_monitor,
            strict=scheduler.get("strict", True),
        )
    if _is_plateau(scheduler):
        if monitor is None:
            raise MisconfigurationException(
                "Expected a monitor for the ReduceLROnPlateau scheduler: return it as"
                ' {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}};'
                " received a bare scheduler."
            )
        return LRSchedulerConfig(scheduler, reduce_on_plateau=True, monitor=monitor)
    return LRSchedulerConfig(scheduler)


def _from_optimizer_dict(
    conf: Mapping[str, Any], automatic: bool = True
) -> tuple[Optimizer, list[LRSchedulerConfig]]:
    if "optimizer" not in conf:
        raise MisconfigurationException(
            f'Expected the optimizer dict to have an "optimizer" key, received keys {sorted(conf)}.'
        )
    unknown = set(conf) - _OPTIMIZER_DICT_KEYS
    if unknown:
        warnings.warn(
            f"Found unsupported keys in the optimizer configuration: {sorted(unknown)}.",
            RuntimeWarning,
            stacklevel=4,
        )
    scheds: list[LRSchedulerConfig] = []
    if conf.get("lr_scheduler") is not None:
        scheds.append(_scheduler_config(conf["lr_scheduler"], conf.get("monitor"), automatic))
    return conf["optimizer"], scheds


def parse_optimizers(
    conf: Any, automatic: bool = True, custom_scheduler_step: bool = False
) -> tuple[list[Optimizer], list[LRSchedulerConfig]]:
    """Normalise what ``configure_optimizers`` returned into optimizers and scheduler configs.

    Under manual optimization (``automatic=False``) the user steps the schedulers: a ReduceLROnPlateau
    needs no monitor and keys that only tell the Trainer how to step are ignored, with a warning.
    ``custom_scheduler_step`` says the module overrides ``lr_scheduler_step``, which may then step
    schedulers that do not follow torch's API.
    """
    optimizers: list[Any]
    schedulers: list[LRSchedulerConfig] = []
    if conf is None:
        warnings.warn(
            "`configure_optimizers` returned None; this fit will run without an optimizer.",
            UserWarning,
            stacklevel=3,
        )
        return [], []
    if isinstance(conf, Optimizer):
        optimizers = [conf]
    elif isinstance(conf, Mapping):
        opt, schedulers = _from_optimizer_dict(conf, automatic)
        optimizers = [opt]
    elif (
        isinstance(conf, Sequence)
        and len(conf) == 2
        and isinstance(conf[0], list)
        and all(isinstance(o, Optimizer) for o in conf[0])
    ):
        optimizers = list(conf[0])
        sched_part = conf[1] if isinstance(conf[1], list | tuple) else [conf[1]]
        schedulers = [_scheduler_config(s, None, automatic) for s in sched_part]
    elif isinstance(conf, Sequence) and conf and all(isinstance(d, Mapping) for d in conf):
        optimizers = []
        for item in conf:
            opt, scheds = _from_optimizer_dict(item, automatic)
            optimizers.append(opt)
            schedulers.extend(scheds)
    elif isinstance(conf, Sequence) and conf and all(isinstance(o, Optimizer) for o in conf):
        optimizers = list(conf)
    else:
        raise MisconfigurationException(
            f"Expected `configure_optimizers` to return {_FORMS}; received {_describe(conf)}."
        )
    for opt in optimizers:
        if not isinstance(opt, Optimizer):
            raise MisconfigurationException(
                f"Expected a torch.optim.Optimizer in `configure_optimizers`, received {_describe(opt)}."
            )
    _check_schedulers(optimizers, schedulers, automatic and not custom_scheduler_step)
    return optimizers, schedulers


def _describe(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of [{', '.join(type(v).__name__ for v in value)}]"
    return type(value).__name__


def _check_schedulers(
    optimizers: list[Optimizer], configs: list[LRSchedulerConfig], trainer_steps: bool
) -> None:
    """Schedulers are saved in checkpoints (so need ``state_dict``), belong to a returned optimizer, and,
    when the Trainer steps them with torch's API (``trainer_steps``), follow that API."""
    for config in configs:
        sched = config.scheduler
        name = type(sched).__name__
        if not (
            callable(getattr(sched, "state_dict", None)) and callable(getattr(sched, "load_state_dict", None))
        ):
            raise TypeError(
                f"The provided lr scheduler `{name}` is invalid. It should have `state_dict` and `load_state_dict`"
                " methods defined."
            )
        if trainer_steps and not isinstance(sched, LRSchedulerTypeTuple):
            raise MisconfigurationException(
                f"The provided lr scheduler `{name}` doesn't follow PyTorch's LRScheduler API: expected a"
                " torch.optim.lr_scheduler scheduler, received one that is not. You should override the"
                " `LightningModule.lr_scheduler_step` hook with your own logic if you are using a custom LR"
                " scheduler."
            )
        owner = getattr(sched, "optimizer", None)
        if owner is not None and all(owner is not opt for opt in optimizers):
            raise MisconfigurationException(
                f"Expected every scheduler to be attached to an optimizer returned by `configure_optimizers`;"
                f" {name} is attached to another one."
            )


class LightningOptimizer:
    """Wraps a torch optimizer so that ``step`` runs the Trainer's precision handling and hooks.

    As in Lightning, the wrapper's class derives from the wrapped optimizer's (``LightningSGD`` for an
    ``SGD``), so ``isinstance(opt, torch.optim.SGD)`` holds and ``repr`` reads ``LightningSGD (...)``;
    attributes it does not define are the wrapped optimizer's.
    """

    def __init__(self, optimizer: Optimizer, trainer: Trainer | None = None) -> None:
        self.__dict__["_optimizer"] = optimizer
        self.__dict__["_trainer"] = trainer
        cls = type(self)
        if cls is LightningOptimizer:
            name = "Lightning" + type(optimizer).__name__
            object.__setattr__(self, "__class__", type(name, (LightningOptimizer, type(optimizer)), {}))

    @property
    def optimizer(self) -> Optimizer:
        return self._optimizer

    def __getattr__(self, name: str) -> Any:
        # only reached for names the wrapper lacks; "_optimizer" itself missing means a half-built object
        if name == "_optimizer":
            raise AttributeError(name)
        return getattr(self._optimizer, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._optimizer, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # the derived class is made per optimizer class at runtime: a copy is rebuilt from the wrapped one
        return (LightningOptimizer, (self._optimizer, self._trainer))

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Step through the precision plugin; in manual optimization this also counts a global step.

        Outside a Trainer (no ``trainer``) it is the wrapped optimizer's ``step``.
        """
        from lightning_lib.loop.step import optimizer_step

        if self._trainer is None:
            return (
                self._optimizer.step(closure, **kwargs)
                if closure is not None
                else self._optimizer.step(**kwargs)
            )
        return optimizer_step(self._trainer, self._optimizer, closure, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state)
