"""``LightningCLI``: a command line (and config file) interface to the Trainer, the model and the data.

The same public API as ``pytorch_lightning.cli``: ``fit`` / ``validate`` / ``test`` / ``predict``
subcommands, ``--config`` files, ``--print_config``, the classes chosen by import path in subclass mode,
optimizers and learning rate schedulers from the command line, and the configuration saved next to the
logs by :class:`SaveConfigCallback`. Parsing is jsonargparse's (the ``cli`` extra,
``pip install 'lightning-lib[cli]'``); it is imported by this module only, so ``import lightning_lib``
works without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from functools import partial, update_wrapper
from pathlib import Path
from types import MethodType
from typing import Any, TypeVar, Union

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

import lightning_lib as pl
from lightning_lib.callbacks.callback import Callback
from lightning_lib.core.datamodule import LightningDataModule
from lightning_lib.core.module import LightningModule
from lightning_lib.trainer import Trainer
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.model_helpers import is_overridden
from lightning_lib.utilities.rank_zero import rank_zero_warn
from lightning_lib.utilities.seed import seed_everything

_INSTALL_HINT = (
    "LightningCLI needs jsonargparse with its signatures extra: install it with"
    " `pip install 'lightning-lib[cli]'` (or `pip install 'jsonargparse[signatures]>=4.39'`)."
)

try:
    from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, class_from_function

    _JSONARGPARSE_AVAILABLE = True
except ImportError:  # the `cli` extra is not installed: the names exist, using them says what to install
    _JSONARGPARSE_AVAILABLE = False
    ArgumentParser = object  # type: ignore[misc,assignment]
    Namespace = dict  # type: ignore[misc,assignment]


# Lightning's name for the same flag (its own tests and some user code read it)
_JSONARGPARSE_SIGNATURES_AVAILABLE = _JSONARGPARSE_AVAILABLE


def _require_jsonargparse() -> None:
    if not _JSONARGPARSE_AVAILABLE:
        raise ModuleNotFoundError(_INSTALL_HINT)


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau`` that also knows the metric it watches (``monitor``), so the CLI can
    configure it from the command line."""

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


ModuleType = TypeVar("ModuleType")
LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]  # noqa: UP007 - a runtime alias, as in Lightning
LRSchedulerType = Union[type[LRScheduler], type[ReduceLROnPlateau]]  # noqa: UP007
ArgsType = Union[list[str], dict[str, Any], Namespace, None]  # noqa: UP007
OptimizerCallable = Callable[[Iterable[Any]], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], Union[LRScheduler, ReduceLROnPlateau]]  # noqa: UP007

_LIGHTNING_BASES = (Trainer, LightningModule, LightningDataModule, Callback)


class LightningArgumentParser(ArgumentParser):
    """jsonargparse's parser with Lightning's helpers: arguments of a Trainer, module, datamodule or
    callback class (:meth:`add_lightning_class_args`), of an optimizer and of a learning rate scheduler."""

    def __init__(
        self,
        *args: Any,
        description: str = "Lightning Trainer command line tool",
        env_prefix: str = "PL",
        default_env: bool = False,
        **kwargs: Any,
    ) -> None:
        _require_jsonargparse()
        super().__init__(
            *args, description=description, env_prefix=env_prefix, default_env=default_env, **kwargs
        )
        self.callback_keys: list[str] = []
        # nested key -> (class or classes, the key its instance is linked to or "AUTOMATIC")
        self._optimizers: dict[str, tuple[type | tuple[type, ...], str]] = {}
        self._lr_schedulers: dict[str, tuple[type | tuple[type, ...], str]] = {}

    def add_lightning_class_args(
        self,
        lightning_class: Any,
        nested_key: str,
        subclass_mode: bool = False,
        required: bool = True,
    ) -> list[str]:
        """Add the ``__init__`` arguments of a Trainer, LightningModule, LightningDataModule or Callback
        class (or of a function returning one) under ``nested_key``; in ``subclass_mode`` any subclass is
        chosen by its import path (``class_path`` / ``init_args``)."""
        if callable(lightning_class) and not isinstance(lightning_class, type):
            lightning_class = class_from_function(lightning_class)
        if isinstance(lightning_class, type) and issubclass(lightning_class, _LIGHTNING_BASES):
            if issubclass(lightning_class, Callback):
                self.callback_keys.append(nested_key)
            if subclass_mode:
                added: list[str] = self.add_subclass_arguments(
                    lightning_class, nested_key, fail_untyped=False, required=required
                )
                return added
            added = self.add_class_arguments(
                lightning_class,
                nested_key,
                fail_untyped=False,
                instantiate=not issubclass(lightning_class, Trainer),
                sub_configs=True,
            )
            return added
        raise MisconfigurationException(
            f"Cannot add arguments from: {lightning_class}. You should provide either a callable or a subclass of: "
            "Trainer, LightningModule, LightningDataModule, or Callback."
        )

    def add_optimizer_args(
        self,
        optimizer_class: type[Optimizer] | tuple[type[Optimizer], ...] = (Optimizer,),
        nested_key: str = "optimizer",
        link_to: str = "AUTOMATIC",
    ) -> None:
        """Add an optimizer's arguments under ``nested_key`` (one class, or any subclass of a tuple of them);
        ``link_to`` names the argument its configuration is passed to, or "AUTOMATIC" for the generated
        ``configure_optimizers``."""
        classes = optimizer_class if isinstance(optimizer_class, tuple) else (optimizer_class,)
        if not all(isinstance(c, type) and issubclass(c, Optimizer) for c in classes):
            raise ValueError(
                f"Expected optimizer_class to be Optimizer subclasses, received {optimizer_class!r}."
            )
        kwargs: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": {"params"}}
        if isinstance(optimizer_class, tuple):
            self.add_subclass_arguments(optimizer_class, nested_key, **kwargs)
        else:
            self.add_class_arguments(optimizer_class, nested_key, sub_configs=True, **kwargs)
        self._optimizers[nested_key] = (optimizer_class, link_to)

    def add_lr_scheduler_args(
        self,
        lr_scheduler_class: Any = LRSchedulerTypeTuple,
        nested_key: str = "lr_scheduler",
        link_to: str = "AUTOMATIC",
    ) -> None:
        """Add a learning rate scheduler's arguments under ``nested_key``; see :meth:`add_optimizer_args`."""
        classes = lr_scheduler_class if isinstance(lr_scheduler_class, tuple) else (lr_scheduler_class,)
        if not all(isinstance(c, type) and issubclass(c, LRSchedulerTypeTuple) for c in classes):
            raise ValueError(
                f"Expected lr_scheduler_class to be LRScheduler or ReduceLROnPlateau subclasses, received"
                f" {lr_scheduler_class!r}."
            )
        kwargs: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": {"optimizer"}}
        if isinstance(lr_scheduler_class, tuple):
            self.add_subclass_arguments(lr_scheduler_class, nested_key, **kwargs)
        else:
            self.add_class_arguments(lr_scheduler_class, nested_key, sub_configs=True, **kwargs)
        self._lr_schedulers[nested_key] = (lr_scheduler_class, link_to)


class SaveConfigCallback(Callback):
    """Saves the run's full configuration as ``config.yaml`` in the Trainer's ``log_dir`` when the run
    sets up, once; an existing file is an error unless ``overwrite``. Override :meth:`save_config` to
    store it elsewhere too (an experiment tracker); with ``save_to_log_dir=False`` only there."""

    def __init__(
        self,
        parser: LightningArgumentParser,
        config: Namespace,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False
        if not save_to_log_dir and not is_overridden("save_config", self, SaveConfigCallback):
            raise ValueError(
                "`save_to_log_dir=False` only makes sense when subclassing SaveConfigCallback to implement "
                "`save_config` and it is desired to disable the standard behavior of saving to log_dir."
            )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            log_dir = trainer.log_dir
            config_path = os.path.join(log_dir, self.config_filename)
            if not self.overwrite:
                exists = os.path.isfile(config_path) if trainer.is_global_zero else False
                # every rank stops, not only the one that saw the file
                if trainer.strategy.broadcast(exists):
                    raise RuntimeError(
                        f"{self.__class__.__name__} expected {config_path} to NOT exist. Aborting to avoid overwriting"
                        " results of a previous run. You can delete the previous config file,"
                        " set `LightningCLI(save_config_callback=None)` to disable config saving,"
                        ' or set `LightningCLI(save_config_kwargs={"overwrite": True})` to overwrite the config file.'
                    )
            if trainer.is_global_zero:
                os.makedirs(log_dir, exist_ok=True)
                self.parser.save(
                    self.config,
                    config_path,
                    skip_none=False,
                    overwrite=self.overwrite,
                    multifile=self.multifile,
                )
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Store the configuration somewhere else as well (rank zero only); ``self.config`` holds it."""


class LightningCLI:
    """Parses the command line (or ``args``) and config files into a Trainer, a model and a datamodule,
    then runs the chosen subcommand (``fit``, ``validate``, ``test``, ``predict``) unless ``run=False``.

    Args:
        model_class: the LightningModule class (or a function returning one); None accepts any subclass,
            chosen with ``--model=path.to.Class``.
        datamodule_class: the LightningDataModule class; None makes ``--data`` optional, any subclass.
        save_config_callback: the callback class that saves the configuration, None for none.
        save_config_kwargs: its keyword arguments (``overwrite``, ``config_filename``, ...).
        trainer_class: the Trainer class (or a function returning one).
        trainer_defaults: defaults of the Trainer's arguments (``callbacks`` here are always added).
        seed_everything_default: the default of ``--seed_everything``: an int, True (a random seed) or
            False (no seeding).
        parser_kwargs: keyword arguments of the parser, or per subcommand (``{"fit": {...}}``).
        parser_class: the parser class.
        subclass_mode_model: accept subclasses of ``model_class`` (chosen by import path).
        subclass_mode_data: accept subclasses of ``datamodule_class``.
        args: arguments to parse instead of ``sys.argv[1:]``: a list of strings, a dict or a Namespace.
        run: whether to run a subcommand; with False there are no subcommands and nothing runs.
        auto_configure_optimizers: add ``--optimizer`` and ``--lr_scheduler`` and, when given, replace
            the model's ``configure_optimizers`` with them.
        load_from_checkpoint_support: accepted for compatibility; see the package README.
    """

    def __init__(
        self,
        model_class: type[LightningModule] | Callable[..., LightningModule] | None = None,
        datamodule_class: type[LightningDataModule] | Callable[..., LightningDataModule] | None = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type[Trainer] | Callable[..., Trainer] = Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        parser_kwargs: dict[str, Any] | dict[str, dict[str, Any]] | None = None,
        parser_class: type[LightningArgumentParser] = LightningArgumentParser,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
        load_from_checkpoint_support: bool = True,
    ) -> None:
        _require_jsonargparse()
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.parser_class = parser_class
        self.auto_configure_optimizers = auto_configure_optimizers
        self.load_from_checkpoint_support = load_from_checkpoint_support

        self.model_class = model_class
        # without a class any LightningModule subclass is accepted, chosen by its import path
        self._model_class = model_class or LightningModule
        self.subclass_mode_model = (model_class is None) or subclass_mode_model
        self.datamodule_class = datamodule_class
        self._datamodule_class = datamodule_class or LightningDataModule
        self.subclass_mode_data = (datamodule_class is None) or subclass_mode_data

        main_kwargs, subparser_kwargs = self._setup_parser_kwargs(self.parser_kwargs)
        self.setup_parser(run, main_kwargs, subparser_kwargs)
        self.parse_arguments(self.parser, args)
        self._parse_ckpt_path()

        self.subcommand = self.config["subcommand"] if run else None
        self._set_seed()

        self.before_instantiate_classes()
        self.instantiate_classes()
        self.after_instantiate_classes()

        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # ---- the parser ------------------------------------------------------------------------------------
    def _setup_parser_kwargs(self, parser_kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        names = self.subcommands().keys()
        main_kwargs = {k: v for k, v in parser_kwargs.items() if k not in names}
        subparser_kwargs = {k: v for k, v in parser_kwargs.items() if k in names}
        return main_kwargs, subparser_kwargs

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """A parser with ``--config``; ``kwargs`` are the parser's."""
        kwargs.setdefault("dump_header", [f"lightning_lib=={pl.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument(
            "-c",
            "--config",
            action=ActionConfigFile,
            help="Path to a configuration file in json or yaml format.",
        )
        return parser

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        """The main parser, with a parser per subcommand when ``add_subcommands``."""
        self.parser = self.init_parser(**main_kwargs)
        if add_subcommands:
            self._subcommand_method_arguments: dict[str, list[str]] = {}
            self._add_subcommands(self.parser, **subparser_kwargs)
        else:
            self._add_arguments(self.parser)

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Arguments every CLI has: ``--seed_everything``."""
        parser.add_argument(
            "--seed_everything",
            type=Union[bool, int],  # noqa: UP007 - jsonargparse reads the type at runtime
            default=self.seed_everything_default,
            help=(
                "Set to an int to run seed_everything with this value before classes instantiation."
                "Set to True to use a random seed."
            ),
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The Trainer's (``--trainer.*``), the model's (``--model.*``) and the datamodule's (``--data.*``)."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        trainer_defaults = {"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        parser.set_defaults(trainer_defaults)
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(
            self._datamodule_class,
            "data",
            subclass_mode=self.subclass_mode_data,
            required=self.datamodule_class is not None,
        )

    def _add_arguments(self, parser: LightningArgumentParser) -> None:
        self.add_default_arguments_to_parser(parser)
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:  # the user's add_arguments_to_parser may have added them
                parser.add_optimizer_args((Optimizer,))
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        self.link_optimizers_and_lr_schedulers(parser)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Override to add arguments (or links between them) to the parser."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Each subcommand and the arguments of its Trainer method that the CLI fills in itself."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        parser_subcommands = parser.add_subcommands()
        trainer_class = (
            self.trainer_class
            if isinstance(self.trainer_class, type)
            else class_from_function(self.trainer_class)
        )
        for subcommand in self.subcommands():
            description = _short_description(getattr(trainer_class, subcommand))
            subparser_kwargs = dict(kwargs.get(subcommand, {}))
            subparser_kwargs.setdefault("description", description)
            subcommand_parser = self._prepare_subcommand_parser(trainer_class, subcommand, **subparser_kwargs)
            self._subcommand_parsers[subcommand] = subcommand_parser
            parser_subcommands.add_subcommand(subcommand, subcommand_parser, help=description)

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        parser = self.init_parser(**kwargs)
        self._add_arguments(parser)
        # the Trainer method's own arguments (ckpt_path, verbose, ...), less those the CLI fills in
        skip: set[str | int] = set(self.subcommands()[subcommand])
        added: list[str] = parser.add_method_arguments(klass, subcommand, skip=skip)
        self._subcommand_method_arguments[subcommand] = added
        return parser

    @staticmethod
    def link_optimizers_and_lr_schedulers(parser: LightningArgumentParser) -> None:
        """Link each optimizer and scheduler group that is not "AUTOMATIC" to the argument it names."""
        for key, (class_type, link_to) in {**parser._optimizers, **parser._lr_schedulers}.items():
            if link_to == "AUTOMATIC":
                continue
            if isinstance(class_type, tuple):
                parser.link_arguments(key, link_to)
            else:
                parser.link_arguments(key, link_to, compute_fn=partial(_with_class_path, class_type))

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` (or the command line) into ``self.config``."""
        if args is not None and len(sys.argv) > 1:
            rank_zero_warn(
                "LightningCLI's args parameter is intended to run from within Python like if it were from the command "
                "line. To prevent mistakes it is not recommended to provide both args and command line arguments, got: "
                f"sys.argv[1:]={sys.argv[1:]}, args={args}."
            )
        if isinstance(args, dict | Namespace):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    def _parse_ckpt_path(self) -> None:
        """A checkpoint given as ``ckpt_path`` brings its model's hyper-parameters as defaults (the
        command line still wins over them); the file is read with ``weights_only=True``."""
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    # ---- instantiation ---------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        """Runs before the classes are instantiated (override to change ``self.config``)."""

    def instantiate_classes(self) -> None:
        """Instantiate the datamodule, the model and the Trainer from ``self.config``."""
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def after_instantiate_classes(self) -> None:
        """Runs after the classes are instantiated, before the subcommand."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer from its configuration (``kwargs`` override it), with the callbacks of the parser's
        callback groups, of ``trainer_defaults`` and the config-saving callback added."""
        extra_callbacks = [
            self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys
        ]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, extra_callbacks)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        key = "callbacks"
        if key in config:
            if config[key] is None:
                config[key] = []
            elif not isinstance(config[key], list):
                config[key] = [config[key]]
            config[key].extend(callbacks)
            if key in self.trainer_defaults:
                value = self.trainer_defaults[key]
                config[key] += value if isinstance(value, list) else [value]
            if self.save_config_callback and not config.get("fast_dev_run", False):
                config_callback = self.save_config_callback(
                    self._parser(self.subcommand),
                    self.config.get(str(self.subcommand), self.config),
                    **self.save_config_kwargs,
                )
                config[key].append(config_callback)
        else:
            rank_zero_warn(
                f"The `{self.trainer_class.__qualname__}` class does not expose the `{key}` argument so they will"
                " not be included."
            )
        trainer: Trainer = self.trainer_class(**config)
        return trainer

    def _parser(self, subcommand: str | None) -> LightningArgumentParser:
        if subcommand is None:
            return self.parser
        return self._subcommand_parsers[subcommand]

    @staticmethod
    def configure_optimizers(
        lightning_module: LightningModule,
        optimizer: Optimizer,
        lr_scheduler: LRSchedulerTypeUnion | None = None,
    ) -> Any:
        """What the generated ``configure_optimizers`` returns: the optimizer, with the scheduler (and the
        metric a ``ReduceLROnPlateau`` monitors) when there is one. Override to return something else."""
        if lr_scheduler is None:
            return optimizer
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": lr_scheduler, "monitor": lr_scheduler.monitor},
            }
        return [optimizer], [lr_scheduler]

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """With an optimizer given on the command line (or in a config), the model's ``configure_optimizers``
        becomes :meth:`configure_optimizers` over it and the scheduler."""
        if not self.auto_configure_optimizers:
            return
        parser = self._parser(subcommand)
        optimizers = _automatic(Optimizer, parser._optimizers)
        lr_schedulers = _automatic(LRSchedulerTypeTuple, parser._lr_schedulers)
        if not optimizers:
            return
        if len(optimizers) > 1 or len(lr_schedulers) > 1:
            raise MisconfigurationException(
                f"`{self.__class__.__name__}.add_configure_optimizers_method_to_model` expects at most one optimizer "
                f"and one lr_scheduler to be 'AUTOMATIC', but found {optimizers + lr_schedulers}. In this case the "
                "user is expected to link the argument groups and implement `configure_optimizers`, see "
                "https://lightning.ai/docs/pytorch/stable/common/lightning_cli.html"
                "#optimizers-and-learning-rate-schedulers"
            )
        optimizer_class = parser._optimizers[optimizers[0]][0]
        optimizer_init = self._get(self.config_init, optimizers[0])
        if not isinstance(optimizer_class, tuple):
            optimizer_init = _with_class_path(optimizer_class, optimizer_init)
        if not optimizer_init:  # nothing given: the model's own configure_optimizers stays
            return
        lr_scheduler_init = None
        if lr_schedulers:
            lr_scheduler_class = parser._lr_schedulers[lr_schedulers[0]][0]
            lr_scheduler_init = self._get(self.config_init, lr_schedulers[0])
            if not isinstance(lr_scheduler_class, tuple):
                lr_scheduler_init = _with_class_path(lr_scheduler_class, lr_scheduler_init)
        if is_overridden("configure_optimizers", self.model, LightningModule):
            rank_zero_warn(
                f"`{self.model.__class__.__name__}.configure_optimizers` will be overridden by "
                f"`{self.__class__.__name__}.configure_optimizers`."
            )
        optimizer = instantiate_class(self.model.parameters(), optimizer_init)
        lr_scheduler = instantiate_class(optimizer, lr_scheduler_init) if lr_scheduler_init else None
        fn = partial(self.configure_optimizers, optimizer=optimizer, lr_scheduler=lr_scheduler)
        update_wrapper(fn, self.configure_optimizers)  # is_overridden looks at the wrapped function's name
        self.model.configure_optimizers = MethodType(fn, self.model)

    def _get(self, config: Namespace, key: str, default: Any = None) -> Any:
        """``key`` of the running subcommand's configuration (or of the whole one without subcommands)."""
        return config.get(str(self.subcommand), config).get(key, default)

    # ---- running ---------------------------------------------------------------------------------------
    def _run_subcommand(self, subcommand: str) -> None:
        """``before_<subcommand>``, the subcommand (a method of the CLI of that name, else the Trainer's),
        then ``after_<subcommand>``."""
        before_fn = getattr(self, f"before_{subcommand}", None)
        if callable(before_fn):
            before_fn()
        default = getattr(self.trainer, subcommand)
        fn = getattr(self, subcommand, default)
        fn(**self._prepare_subcommand_kwargs(subcommand))
        after_fn = getattr(self, f"after_{subcommand}", None)
        if callable(after_fn):
            after_fn()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """The Trainer method's keyword arguments: the model, the datamodule and its own parsed arguments."""
        fn_kwargs = {
            k: v
            for k, v in self.config_init[subcommand].items()
            if k in self._subcommand_method_arguments[subcommand]
        }
        fn_kwargs["model"] = self.model
        if self.datamodule is not None:
            fn_kwargs["datamodule"] = self.datamodule
        return fn_kwargs

    def _set_seed(self) -> None:
        """Seed everything (workers too) as ``--seed_everything`` says; the seed used goes into the config,
        so the saved config.yaml reproduces the run."""
        config_seed = self._get(self.config, "seed_everything")
        if config_seed is False:
            return
        config_seed = (
            seed_everything(workers=True)
            if config_seed is True
            else seed_everything(config_seed, workers=True)
        )
        if self.subcommand:
            self.config[self.subcommand]["seed_everything"] = config_seed
        else:
            self.config["seed_everything"] = config_seed


def _automatic(class_type: Any, register: dict[str, tuple[type | tuple[type, ...], str]]) -> list[str]:
    """The keys of ``register`` whose classes are ``class_type`` subclasses and link to "AUTOMATIC"."""
    found = []
    for key, (base_class, link_to) in register.items():
        bases = base_class if isinstance(base_class, tuple) else (base_class,)
        if link_to == "AUTOMATIC" and any(issubclass(c, class_type) for c in bases):
            found.append(key)
    return found


def _class_path(class_type: type) -> str:
    return f"{class_type.__module__}.{class_type.__name__}"


def _with_class_path(class_type: type, init_args: Any = None) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": ...}`` for a group parsed without one (a single class)."""
    if init_args is not None and not isinstance(init_args, dict):
        init_args = init_args.as_dict()
    return {"class_path": _class_path(class_type), "init_args": init_args or {}}


def instantiate_class(args: Any, init: dict[str, Any]) -> Any:
    """Instantiate ``init["class_path"]`` with the positional ``args`` (a tuple for several) and the
    keyword arguments ``init["init_args"]``."""
    kwargs = init.get("init_args", {})
    if not isinstance(args, tuple):
        args = (args,)
    module_name, class_name = init["class_path"].rsplit(".", 1)
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)(*args, **kwargs)


def _short_description(component: object) -> str | None:
    """The first paragraph of a docstring, as the subcommand's help."""
    doc = component.__doc__
    if not doc:
        return None
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in first.splitlines())


__all__ = [
    "LRSchedulerCallable",
    "LightningArgumentParser",
    "LightningCLI",
    "OptimizerCallable",
    "ReduceLROnPlateau",
    "SaveConfigCallback",
    "instantiate_class",
]
