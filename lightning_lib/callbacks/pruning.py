"""ModelPruning: prune parameters during training with ``torch.nn.utils.prune``.

At the end of every training epoch (or validation epoch, ``prune_on_train_epoch_end=False``) the chosen
parameters are pruned by ``amount``, locally per parameter or globally over all of them; with the lottery
ticket hypothesis the surviving weights are then reset to their values when the fit started (or
re-drawn). A checkpoint holds the pruned weights as plain tensors (``weight``, not ``weight_orig`` and
``weight_mask``) when ``make_pruning_permanent``, so it loads into the unpruned model class.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from copy import deepcopy
from functools import partial
from typing import TYPE_CHECKING, Any

import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

from lightning_lib.callbacks.callback import Callback
from lightning_lib.core.module import LightningModule
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.rank_zero import rank_zero_debug, rank_zero_only

if TYPE_CHECKING:
    from lightning_lib.trainer import Trainer

log = logging.getLogger(__name__)

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ln_structured": torch_prune.ln_structured,
    "l1_unstructured": torch_prune.l1_unstructured,
    "random_structured": torch_prune.random_structured,
    "random_unstructured": torch_prune.random_unstructured,
}
_METHODS: dict[str, type[torch_prune.BasePruningMethod]] = {
    "ln_structured": torch_prune.LnStructured,
    "l1_unstructured": torch_prune.L1Unstructured,
    "random_structured": torch_prune.RandomStructured,
    "random_unstructured": torch_prune.RandomUnstructured,
}
# containers are never pruned themselves: their leaves are
_CONTAINERS = (LightningModule, nn.Sequential, nn.ModuleList, nn.ModuleDict)

_PARAM_TUPLE = tuple[nn.Module, str]
_PARAM_LIST = Sequence[_PARAM_TUPLE]


class ModelPruning(Callback):
    """Prune the model's parameters during training (``torch.nn.utils.prune``).

    Args:
        pruning_fn: ``"l1_unstructured"``, ``"random_unstructured"``, ``"ln_structured"``,
            ``"random_structured"``, or a ``BasePruningMethod`` subclass (the class; global pruning only).
        parameters_to_prune: ``(module, "weight")`` pairs; every weight and bias of the leaves when empty.
        parameter_names: the parameter names considered when ``parameters_to_prune`` is empty.
        use_global_unstructured: prune over all parameters at once rather than each one by ``amount``.
        amount: a fraction (float), a count (int), or ``callable(epoch)`` returning either.
        apply_pruning: whether to prune, or ``callable(epoch)`` deciding it per epoch.
        make_pruning_permanent: remove the re-parametrisation at the end of training and in checkpoints.
        use_lottery_ticket_hypothesis: after pruning, reset the kept weights to their initial values
            (bool, or ``callable(epoch)``).
        resample_parameters: with the lottery ticket, draw new initial values instead.
        pruning_dim: the dimension of structured pruning.
        pruning_norm: the norm of ``ln_structured``.
        verbose: 0 silent, 1 logs the overall sparsity, 2 also per parameter.
        prune_on_train_epoch_end: prune at the end of the training epoch, else of the validation epoch.
    """

    PARAMETER_NAMES = ("weight", "bias")

    def __init__(
        self,
        pruning_fn: Callable[..., Any] | str,
        parameters_to_prune: _PARAM_LIST = (),
        parameter_names: list[str] | None = None,
        use_global_unstructured: bool = True,
        amount: int | float | Callable[[int], int | float] = 0.5,
        apply_pruning: bool | Callable[[int], bool] = True,
        make_pruning_permanent: bool = True,
        use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = True,
        resample_parameters: bool = False,
        pruning_dim: int | None = None,
        pruning_norm: int | None = None,
        verbose: int = 0,
        prune_on_train_epoch_end: bool = True,
    ) -> None:
        self._use_global_unstructured = use_global_unstructured
        self._parameters_to_prune = parameters_to_prune
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = resample_parameters
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._parameter_names = parameter_names or self.PARAMETER_NAMES
        self._global_kwargs: dict[str, Any] = {}
        # per pruned module: a copy of it at setup and which (index, name) entries it serves
        self._original_layers: dict[int, dict[str, Any]] | None = None
        self._pruning_method_name: str | None = None
        for name in self._parameter_names:
            if name not in self.PARAMETER_NAMES:
                raise MisconfigurationException(
                    f"The provided `parameter_names` name: {name} isn't in {self.PARAMETER_NAMES}"
                )
        if isinstance(pruning_fn, str):
            pruning_fn = self._resolve_named_fn(pruning_fn.lower(), pruning_dim, pruning_norm)
        elif self._is_pruning_method(pruning_fn):
            if not use_global_unstructured:
                raise MisconfigurationException(
                    "PyTorch `BasePruningMethod` is currently only supported with `use_global_unstructured=True`."
                )
        else:
            raise MisconfigurationException(
                f"`pruning_fn` is expected to be a str in {list(_FUNCTIONS)}"
                f" or a PyTorch `BasePruningMethod`. Found: {pruning_fn}."
                " HINT: if passing a `BasePruningMethod`, pass the class, not an instance"
            )
        pruning_type = getattr(pruning_fn, "PRUNING_TYPE", None)
        if use_global_unstructured and pruning_type != "unstructured":
            raise MisconfigurationException(
                'Only the "unstructured" PRUNING_TYPE is supported with `use_global_unstructured=True`.'
                f" Found method {pruning_fn} of type {pruning_type}. "
            )
        self.pruning_fn = pruning_fn
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        if not (isinstance(amount, (int, float)) or callable(amount)):
            raise MisconfigurationException(
                "`amount` should be provided and be either an int, a float or Callable function."
                f" Received {amount!r}."
            )
        self.amount = amount
        if verbose not in (0, 1, 2):
            raise MisconfigurationException(f"`verbose` must be any of (0, 1, 2). Received {verbose!r}.")
        self._verbose = verbose

    def _resolve_named_fn(self, name: str, dim: int | None, norm: int | None) -> Callable[..., Any]:
        if name not in _FUNCTIONS:
            raise MisconfigurationException(
                f"The provided `pruning_fn` {name} isn't available in PyTorch's"
                f" built-in functions: {list(_FUNCTIONS)} "
            )
        kwargs: dict[str, Any] = {}
        if name.endswith("_structured"):
            if dim is None:
                raise MisconfigurationException(
                    "When requesting `structured` pruning, the `pruning_dim` should be provided."
                )
            if name == "ln_structured":
                if norm is None:
                    raise MisconfigurationException(
                        "When requesting `ln_structured` pruning, the `pruning_norm` should be provided."
                    )
                kwargs["n"] = norm
            kwargs["dim"] = dim
        return self._create_pruning_fn(name, **kwargs)

    def filter_parameters_to_prune(self, parameters_to_prune: _PARAM_LIST = ()) -> _PARAM_LIST:
        """Override to choose which of the ``(module, name)`` pairs are pruned."""
        return parameters_to_prune

    def _create_pruning_fn(self, pruning_fn: str, **kwargs: Any) -> Callable[..., Any]:
        """The ``BasePruningMethod`` class for global pruning, else the function with ``kwargs`` bound."""
        if self._use_global_unstructured:
            method = _METHODS[pruning_fn]
            self._global_kwargs = kwargs
            self._pruning_method_name = method.__name__
            return method
        function = _FUNCTIONS[pruning_fn]
        self._pruning_method_name = function.__name__
        return partial(function, **kwargs)

    def make_pruning_permanent(self, module: nn.Module) -> None:
        """Fold the masks into the weights and remove the pruning re-parametrisation from ``module``."""
        for sub in module.modules():
            for key, hook in list(sub._forward_pre_hooks.items()):
                if isinstance(hook, torch_prune.BasePruningMethod):
                    hook.remove(sub)
                    del sub._forward_pre_hooks[key]

    @staticmethod
    def _copy_param(new: nn.Module, old: nn.Module, name: str) -> None:
        target = getattr(new, name + "_orig", None)
        if target is None:
            target = getattr(new, name, None)
        source = getattr(old, name, None)
        if isinstance(target, Tensor) and isinstance(source, Tensor):
            target.data = source.data.to(target.device)

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the kept weights to their values at setup (or freshly drawn ones with ``resample_parameters``)."""
        assert self._original_layers is not None
        for layer in self._original_layers.values():
            original = layer["data"]
            if self._resample_parameters and callable(getattr(original, "reset_parameters", None)):
                original = deepcopy(original)  # the setup values stay for the next epochs
                original.reset_parameters()
            for index, name in layer["names"]:
                module, _ = self._parameters_to_prune[index]
                self._copy_param(module, original, name)

    def _apply_local_pruning(self, amount: int | float) -> None:
        for module, name in self._parameters_to_prune:
            self.pruning_fn(module, name=name, amount=amount)

    def _resolve_global_kwargs(self, amount: int | float) -> dict[str, Any]:
        self._global_kwargs["amount"] = amount
        accepted = set(inspect.signature(self.pruning_fn).parameters) - {"self"}
        return {k: v for k, v in self._global_kwargs.items() if k in accepted}

    def _apply_global_pruning(self, amount: int | float) -> None:
        torch_prune.global_unstructured(
            self._parameters_to_prune, pruning_method=self.pruning_fn, **self._resolve_global_kwargs(amount)
        )

    @staticmethod
    def _get_pruned_stats(module: nn.Module, name: str) -> tuple[int, int]:
        mask = getattr(module, f"{name}_mask", None)
        if mask is None:
            return 0, 1
        return int((mask == 0).sum().item()), mask.numel()

    def apply_pruning(self, amount: int | float) -> None:
        """Prune ``parameters_to_prune`` by ``amount`` (logging the sparsity when ``verbose``)."""
        before = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune] if self._verbose else []
        if self._use_global_unstructured:
            self._apply_global_pruning(amount)
        else:
            self._apply_local_pruning(amount)
        if self._verbose:
            after = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune]
            self._log_sparsity_stats(before, after, amount=amount)

    @rank_zero_only
    def _log_sparsity_stats(
        self, prev: list[tuple[int, int]], curr: list[tuple[int, int]], amount: int | float = 0
    ) -> None:
        total = sum(size for _, size in curr)
        was = sum(zeros for zeros, _ in prev)
        now = sum(zeros for zeros, _ in curr)
        log.info(
            f"Applied `{self._pruning_method_name}`. Pruned:"
            f" {was}/{total} ({was / total:.2%}) -> {now}/{total} ({now / total:.2%})"
        )
        if self._verbose != 2:
            return
        for (module, name), (was_zeros, was_size), (now_zeros, now_size) in zip(
            self._parameters_to_prune, prev, curr
        ):
            log.info(
                f"Applied `{self._pruning_method_name}` to `{module!r}.{name}` with amount={amount}. Pruned:"
                f" {was_zeros} ({was_zeros / was_size:.2%}) -> {now_zeros} ({now_zeros / now_size:.2%})"
            )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        sanitized = self.sanitize_parameters_to_prune(
            pl_module, self._parameters_to_prune, parameter_names=self._parameter_names
        )
        self._parameters_to_prune = self.filter_parameters_to_prune(sanitized)
        if self._use_lottery_ticket_hypothesis:
            self._original_layers = {}
            for index, (module, name) in enumerate(self._parameters_to_prune):
                layer = self._original_layers.setdefault(id(module), {"data": deepcopy(module), "names": []})
                layer["names"].append((index, name))

    def _run_pruning(self, current_epoch: int) -> None:
        prune = self._apply_pruning(current_epoch) if callable(self._apply_pruning) else self._apply_pruning
        amount = self.amount(current_epoch) if callable(self.amount) else self.amount
        if not prune or not amount:
            return
        self.apply_pruning(amount)
        lottery = self._use_lottery_ticket_hypothesis
        if lottery(current_epoch) if callable(lottery) else lottery:
            self.apply_lottery_ticket_hypothesis()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._prune_on_train_epoch_end:
            rank_zero_debug("`ModelPruning.on_train_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and not self._prune_on_train_epoch_end:
            rank_zero_debug("`ModelPruning.on_validation_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._make_pruning_permanent:
            rank_zero_debug("`ModelPruning.on_train_end`. Pruning is made permanent for this checkpoint")
            self.make_pruning_permanent(pl_module)

    def _make_pruning_permanent_on_state_dict(self, pl_module: LightningModule) -> dict[str, Any]:
        """The module's state with each ``X_orig`` * ``X_mask`` pair folded into ``X``, on the CPU."""
        state = pl_module.state_dict()
        pruned = {key[: -len("_mask")] for key in state if key.endswith("_mask")}
        for name in pruned:
            original = state.pop(name + "_orig")
            mask = state.pop(name + "_mask")
            state[name] = mask.to(dtype=original.dtype) * original
        return {key: value.cpu() if isinstance(value, Tensor) else value for key, value in state.items()}

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._make_pruning_permanent:
            rank_zero_debug(
                "`ModelPruning.on_save_checkpoint`. Pruning is made permanent for this checkpoint"
            )
            checkpoint["state_dict"] = self._make_pruning_permanent_on_state_dict(pl_module)

    @staticmethod
    def sanitize_parameters_to_prune(
        pl_module: LightningModule, parameters_to_prune: _PARAM_LIST = (), parameter_names: Sequence[str] = ()
    ) -> _PARAM_LIST:
        """Check ``parameters_to_prune`` against the model, or list every weight/bias of its leaves when empty."""
        names = parameter_names or ModelPruning.PARAMETER_NAMES
        leaves = [m for m in pl_module.modules() if not isinstance(m, _CONTAINERS)]
        if not parameters_to_prune:
            return [(m, p) for p in names for m in leaves if isinstance(getattr(m, p, None), nn.Parameter)]
        well_formed = isinstance(parameters_to_prune, (list, tuple)) and all(
            len(pair) == 2 and isinstance(pair[0], nn.Module) and isinstance(pair[1], str)
            for pair in parameters_to_prune
        )
        if not well_formed:
            raise MisconfigurationException(
                "The provided `parameters_to_prune` should either be list of tuple"
                " with 2 elements: (nn.Module, parameter_name_to_prune) or None"
            )
        missing_modules = [m for m, _ in parameters_to_prune if m not in leaves]
        missing_parameters = [n for m, n in parameters_to_prune if m in leaves and not hasattr(m, n)]
        if missing_modules or missing_parameters:
            raise MisconfigurationException(
                "Some provided `parameters_to_prune` don't exist in the model."
                f" Found missing modules: {missing_modules} and missing parameters: {missing_parameters}"
            )
        return parameters_to_prune

    @staticmethod
    def _is_pruning_method(method: Any) -> bool:
        return inspect.isclass(method) and issubclass(method, torch_prune.BasePruningMethod)
