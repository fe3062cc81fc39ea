"""LightningDataModule: the data side of an experiment, with Lightning's hooks and state."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any

from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightning_lib.core.hooks import DataHooks
from lightning_lib.core.saving import HyperparametersMixin
from lightning_lib.utilities.model_helpers import register_hook_parent
from lightning_lib.utilities.parsing import AttributeDict


@register_hook_parent
class LightningDataModule(DataHooks, HyperparametersMixin):
    """Groups prepare_data, setup, the dataloaders and teardown for one dataset."""

    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"

    def __init__(self) -> None:
        self.trainer: Any = None
        self._hparams = AttributeDict()
        self._hparams_initial = AttributeDict()
        self._log_hyperparams = True

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        val_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        test_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        predict_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> LightningDataModule:
        """A data module whose dataloaders read the given datasets (or lists / dicts of them).

        The train loader shuffles (unless its dataset is iterable); every loader has ``batch_size``,
        ``num_workers`` and ``pin_memory=True``. ``batch_size`` and ``num_workers`` also go to ``__init__``
        when it accepts them, with ``datamodule_kwargs``.
        """

        def loaders(datasets: Any, shuffle: bool) -> Any:
            def build(dataset: Dataset[Any]) -> DataLoader[Any]:
                return DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=shuffle and not isinstance(dataset, IterableDataset),
                    num_workers=num_workers,
                    pin_memory=True,
                )

            if isinstance(datasets, Dataset):
                return build(datasets)
            if isinstance(datasets, Mapping):
                return {key: loaders(value, shuffle) for key, value in datasets.items()}
            return [loaders(dataset, shuffle) for dataset in datasets]

        parameters = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        offered = {"batch_size": batch_size, "num_workers": num_workers}
        datamodule = cls(
            **datamodule_kwargs, **{k: v for k, v in offered.items() if takes_any or k in parameters}
        )
        for hook, datasets in (
            ("train_dataloader", train_dataset),
            ("val_dataloader", val_dataset),
            ("test_dataloader", test_dataset),
            ("predict_dataloader", predict_dataset),
        ):
            if datasets is not None:
                setattr(datamodule, hook, _loader_hook(loaders, datasets, hook == "train_dataloader"))
        return datamodule

    def __str__(self) -> str:
        """One line per dataloader hook: ``{Train dataloader: size=64}`` (``None`` where it cannot be built)."""
        lines = []
        for label, hook in (
            ("Train dataloader", "train_dataloader"),
            ("Validation dataloader", "val_dataloader"),
            ("Test dataloader", "test_dataloader"),
            ("Predict dataloader", "predict_dataloader"),
        ):
            try:
                described = _describe_loaders(getattr(self, hook)())
            except Exception:  # a hook that cannot build its loader (setup not run yet) shows as None
                described = "None"
            lines.append(f"{{{label}: {described}}}")
        return os.linesep.join(lines)

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike[str],
        map_location: Any = None,
        hparams_file: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the datamodule from a checkpoint's datamodule hyper-parameters (``kwargs`` override) and
        load its ``state_dict`` when the checkpoint has one."""
        from lightning_lib.checkpoint._format import build_from_checkpoint

        return build_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, None, kwargs)

    def state_dict(self) -> dict[str, Any]:
        """State saved into checkpoints under the class's qualified name."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def on_exception(self, exception: BaseException) -> None:
        """Called when a run fails."""


def _loader_hook(build: Callable[[Any, bool], Any], datasets: Any, shuffle: bool) -> Callable[[], Any]:
    return lambda: build(datasets, shuffle)


def _dataset_size(loader: Any) -> str:
    dataset = getattr(loader, "dataset", None)
    return str(len(dataset)) if isinstance(dataset, Sized) else "NA"


def _describe_loaders(loaders: Any) -> str:
    if isinstance(loaders, DataLoader):
        return f"size={_dataset_size(loaders)}"
    items = list(loaders.values()) if isinstance(loaders, Mapping) else list(loaders)
    return " ; ".join(f"{i}. size={_dataset_size(loader)}" for i, loader in enumerate(items, start=1))
