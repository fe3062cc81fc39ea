"""Collections of dataloaders, nested as deep as wanted, behave as in pytorch_lightning: the batches the steps
receive, the batch counts under the limits, and what ``trainer.*_dataloader(s)`` return."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib
from tests.helpers import quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


def _loader(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n).float()), batch_size=1)


def _shape(tree: Any) -> Any:
    """The structure of ``tree`` with each leaf replaced by its type name (loaders) or its values (batches)."""
    if isinstance(tree, dict):
        return {key: _shape(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_shape(value) for value in tree)
    if isinstance(tree, torch.Tensor):
        return tree.tolist()
    return type(tree).__name__


def _nested_program(pl: ModuleType, tmp_path: Any) -> dict[str, Any]:
    seen: list[Any] = []

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(("train", batch_idx, _shape(batch)))
            return self.layer(torch.ones(1, 1)).sum()

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            seen.append(("val", batch_idx, dataloader_idx, _shape(batch)))

        def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            seen.append(("test", batch_idx, dataloader_idx, _shape(batch)))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        **quiet_trainer_kwargs(tmp_path, max_epochs=1, num_sanity_val_steps=0, limit_train_batches=0.2)
    )
    trainer.fit(
        Model(),
        train_dataloaders={"a_b": [_loader(10), _loader(10)], "c_d_e": [_loader(5), _loader(5), _loader(5)]},
        val_dataloaders={"x": [_loader(2), _loader(3)], "y": _loader(1)},
    )
    fit = {
        "num_training_batches": trainer.num_training_batches,
        "num_val_batches": trainer.num_val_batches,
        "train_dataloader": _shape(trainer.train_dataloader),
        "val_dataloaders": _shape(trainer.val_dataloaders),
    }
    trainer.test(Model(), dataloaders=([_loader(1), _loader(2)], _loader(1)), verbose=False)
    return {
        "fit": fit,
        "num_test_batches": trainer.num_test_batches,
        "test_dataloaders": _shape(trainer.test_dataloaders),
        "seen": seen,
    }


def test_nested_collections_of_loaders_match_lightning(tmp_path: Any) -> None:
    ref = reference_lightning()
    ours = _nested_program(lightning_lib, tmp_path / "ours")
    assert ours == _nested_program(ref, tmp_path / "ref")
    # what the comparison pins: the counts come from the longest train loader, not the collection's size
    assert ours["fit"]["num_training_batches"] == 2
    assert ours["fit"]["val_dataloaders"] == {"x": ["DataLoader", "DataLoader"], "y": "DataLoader"}


@pytest.mark.parametrize(
    "val",
    [
        pytest.param(lambda: [_loader(2)], id="list-of-one"),
        pytest.param(lambda: (_loader(2), _loader(1)), id="tuple"),
        pytest.param(lambda: _loader(2), id="single"),
        pytest.param(lambda: {"a": _loader(1)}, id="dict"),
    ],
)
def test_eval_dataloaders_keep_the_structure_given(tmp_path: Any, val: Any) -> None:
    def program(pl: ModuleType, root: Any) -> list[Any]:
        class Model(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                return self.layer(torch.ones(1, 1)).sum()

            def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                pass

            def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                pass

            def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> int:
                return 1

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        trainer = pl.Trainer(**quiet_trainer_kwargs(root, max_epochs=1))
        out: list[Any] = [trainer.val_dataloaders, trainer.test_dataloaders, trainer.predict_dataloaders]
        trainer.fit(Model(), train_dataloaders=[_loader(2)], val_dataloaders=val())
        out += [_shape(trainer.train_dataloader), _shape(trainer.val_dataloaders), trainer.num_val_batches]
        trainer.test(Model(), dataloaders=val(), verbose=False)
        out += [_shape(trainer.test_dataloaders), trainer.num_test_batches, trainer.val_dataloaders]
        trainer.predict(Model(), dataloaders=val())
        out += [_shape(trainer.predict_dataloaders), trainer.num_predict_batches]
        return out

    assert program(lightning_lib, tmp_path / "ours") == program(reference_lightning(), tmp_path / "ref")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_few_workers_warnings_match_lightning_on_a_four_cpu_machine(tmp_path: Any, num_workers: int) -> None:
    """Each stage warns about a loader with fewer than 2 workers when the machine has CPUs to spare (4 here,
    simulated for both libraries, so the figure does not depend on the machine running the test)."""
    import warnings
    from unittest import mock

    fabric_data = pytest.importorskip("lightning_fabric.utilities.data")
    from lightning_lib.utilities import data as our_data

    def program(pl: ModuleType, root: Any) -> list[str]:
        class Model(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                return self.layer(torch.ones(1, 1)).sum()

            def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                pass

            def test_step(self, batch: Any, batch_idx: int) -> None:
                pass

            def predict_step(self, batch: Any, batch_idx: int) -> int:
                return 1

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        def loader(n: int) -> DataLoader:
            return DataLoader(TensorDataset(torch.arange(n).float()), batch_size=1, num_workers=num_workers)

        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            trainer = pl.Trainer(**quiet_trainer_kwargs(root, max_epochs=1))
            # the second val loader has no workers whatever the parameter: it warns in every case
            trainer.fit(Model(), loader(3), [loader(2), _loader(2)])
            trainer.validate(Model(), loader(2), verbose=False)
            trainer.test(Model(), loader(2), verbose=False)
            trainer.predict(Model(), loader(2))
        return [str(w.message) for w in record if "workers" in str(w.message)]

    with (
        mock.patch.object(fabric_data, "_num_cpus_available", return_value=4),
        mock.patch.object(our_data, "_cpus_available", return_value=4),
    ):
        ours = program(lightning_lib, tmp_path / "ours")
        assert ours == program(reference_lightning(), tmp_path / "ref")
    if num_workers == 0:
        assert len(ours) == 6 and ours[-1].startswith("The 'predict_dataloader' does not have many workers")
    else:
        assert len(ours) == 1 and ours[0].startswith("The 'val_dataloader' does not have many workers")


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, n: int, sized: bool = False) -> None:
        self.n = n
        self.sized = sized

    def __iter__(self) -> Any:
        return iter([torch.tensor([float(i)]) for i in range(self.n)])

    def __len__(self) -> int:
        if not self.sized:
            raise TypeError("no length")
        return self.n


def _shuffled(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n).float()), batch_size=1, shuffle=True)


_CASES: dict[str, tuple[dict[str, Any], Any, str]] = {
    "shuffled-val": ({}, lambda: {"train_dataloaders": _loader(4), "val_dataloaders": _shuffled(4)}, "fit"),
    "shuffled-test": ({}, lambda: {"dataloaders": _shuffled(4)}, "test"),
    "shuffled-predict": ({}, lambda: {"dataloaders": _shuffled(4)}, "predict"),
    "overfit-shuffled": (
        {"overfit_batches": 2},
        lambda: {"train_dataloaders": _shuffled(4), "val_dataloaders": [_loader(4), _shuffled(4)]},
        "fit",
    ),
    "iterable-with-len": (
        {},
        lambda: {"train_dataloaders": DataLoader(_Stream(4, sized=True)), "val_dataloaders": _loader(2)},
        "fit",
    ),
    "iterable-val": (
        {},
        lambda: {"train_dataloaders": _loader(3), "val_dataloaders": DataLoader(_Stream(4))},
        "fit",
    ),
    "empty-val": ({}, lambda: {"train_dataloaders": _loader(3), "val_dataloaders": _loader(0)}, "fit"),
    "empty-train": ({}, lambda: {"train_dataloaders": _loader(0), "val_dataloaders": _loader(2)}, "fit"),
    "limit-train-0": (
        {"limit_train_batches": 0},
        lambda: {"train_dataloaders": _loader(3), "val_dataloaders": _loader(2)},
        "fit",
    ),
    "iterable-and-sized-train": (
        {},
        lambda: {"train_dataloaders": [_loader(2), DataLoader(_Stream(3))], "val_dataloaders": _loader(2)},
        "fit",
    ),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_data_warnings_and_counts_match_lightning(tmp_path: Any, case: str) -> None:
    """Lightning's warnings about a stage's loaders (shuffled evaluation data, overfitting shuffled data, empty
    loaders, iterable datasets with a length) and the batch counts that follow."""
    import warnings

    trainer_kwargs, fit_kwargs, entry = _CASES[case]

    def program(pl: ModuleType, root: Any) -> tuple[Any, list[str]]:
        class Model(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                return self.layer(torch.ones(1, 1)).sum()

            def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                pass

            def test_step(self, batch: Any, batch_idx: int) -> None:
                pass

            def predict_step(self, batch: Any, batch_idx: int) -> int:
                return 1

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            trainer = pl.Trainer(**quiet_trainer_kwargs(root, max_epochs=1, **trainer_kwargs))
            getattr(trainer, entry)(Model(), **fit_kwargs())
        counts = {
            "fit": lambda: (trainer.num_training_batches, trainer.num_val_batches, trainer.global_step),
            "test": lambda: trainer.num_test_batches,
            "predict": lambda: trainer.num_predict_batches,
        }[entry]()
        # the few-workers hint depends on the machine's CPUs (pinned by the test above); deprecations are torch's
        messages = {str(w.message) for w in record}
        return counts, sorted(m for m in messages if "workers" not in m and "deprecated" not in m)

    ours = program(lightning_lib, tmp_path / "ours")
    assert ours == program(reference_lightning(), tmp_path / "ref")
    if case.startswith("shuffled"):
        assert any("strongly recommended that you turn shuffling off" in m for m in ours[1])


def test_sampler_set_epoch_calls_match_lightning(tmp_path: Any) -> None:
    """``set_epoch`` reaches each sampler once per epoch (a plain loader's sampler is also its batch sampler's),
    the validation samplers before each validation, and the loaders of validate/test/predict at setup."""

    def program(pl: ModuleType, root: Any) -> list[Any]:
        calls: list[Any] = []
        dataset = TensorDataset(torch.arange(4).float())

        class Sampler(torch.utils.data.SequentialSampler):
            def __init__(self, name: str) -> None:
                super().__init__(dataset)
                self.name = name

            def set_epoch(self, epoch: int) -> None:
                calls.append((self.name, epoch))

        def loader(name: str) -> DataLoader:
            return DataLoader(dataset, sampler=Sampler(name))

        def batched(name: str) -> DataLoader:
            return DataLoader(dataset, batch_sampler=torch.utils.data.BatchSampler(Sampler(name), 1, False))

        class Model(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                return self.layer(torch.ones(1, 1)).sum()

            def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                pass

            def test_step(self, batch: Any, batch_idx: int) -> None:
                pass

            def predict_step(self, batch: Any, batch_idx: int) -> int:
                return 1

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.1)

            def on_train_epoch_start(self) -> None:
                calls.append(("train_epoch_start", self.current_epoch))

            def on_validation_start(self) -> None:
                calls.append(("validation_start", self.current_epoch))

        trainer = pl.Trainer(
            **quiet_trainer_kwargs(root, max_epochs=3, limit_train_batches=2, limit_val_batches=1)
        )
        trainer.fit(Model(), batched("train"), [loader("val"), batched("val-batched")])
        trainer.validate(Model(), loader("validate"), verbose=False)
        trainer.test(Model(), batched("test"), verbose=False)
        trainer.predict(Model(), loader("predict"))
        return calls

    ours = program(lightning_lib, tmp_path / "ours")
    assert ours == program(reference_lightning(), tmp_path / "ref")
    assert ours.count(("val", 0)) == 2  # the sanity check's and the first epoch's, once each
    assert ours[-2:] == [("test", 3), ("predict", 3)]


def test_extract_batch_size_matches_lightning() -> None:
    """``utilities.data.extract_batch_size``: the sizes, the ambiguity warning and the error of Lightning's."""
    import dataclasses
    import importlib
    import warnings

    @dataclasses.dataclass
    class Batch:
        x: torch.Tensor
        y: list[int]

    batches = [
        torch.zeros(3, 2),
        torch.tensor(1.0),
        {"a": torch.zeros(4), "b": [torch.zeros(4, 1)]},
        [torch.zeros(2), torch.zeros(5)],
        ["s", torch.zeros(6)],
        Batch(torch.zeros(7), [1]),
        ["a", "b"],
        3,
    ]

    def program(package: str) -> list[Any]:
        data = importlib.import_module(f"{package}.utilities.data")
        # both libraries warn once per process about an ambiguity: start from a clean slate
        getattr(data, "_AMBIGUOUS_WARNED", getattr(data, "warning_cache", set())).clear()
        out: list[Any] = []
        for batch in batches:
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                try:
                    result: Any = data.extract_batch_size(batch)
                except Exception as err:
                    result = (type(err).__name__, str(err))
            out.append((result, [str(w.message) for w in record]))
        return out

    reference_lightning()
    ours = program("lightning_lib")
    assert ours == program("pytorch_lightning")
    assert ours[3][0] == 2 and "ambiguous collection" in ours[3][1][0]


@pytest.mark.parametrize("mode", ["min_size", "max_size_cycle", "max_size", "sequential", None])
def test_combined_loader_limits_and_protocol_match_lightning(mode: str | None) -> None:
    """``CombinedLoader``: Lightning's default mode (min_size), ``limits`` (per iterable or one for all) in the
    length and, sequentially, in the batches; ``iter`` returns the loader; an exhausted iterator ends a pass."""
    import importlib

    def program(package: str) -> list[Any]:
        combined_cls = importlib.import_module(f"{package}.utilities.combined_loader").CombinedLoader

        def make(iterables: Any) -> Any:
            return combined_cls(iterables) if mode is None else combined_cls(iterables, mode)

        out: list[Any] = []
        for limits in (None, [1, 2, 3], 2):
            combined = make({"a": range(3), "b": [range(5), range(2)]})
            combined.limits = limits
            iterator = iter(combined)
            out += [combined.limits, iterator is combined, len(combined), list(combined)]
        with pytest.raises(ValueError) as mismatch:
            make([range(3), range(5)]).limits = [1]
        out.append(str(mismatch.value))
        with pytest.raises(ValueError) as flattened:
            make([range(3)]).flattened = [range(1), range(2)]
        out.append(str(flattened.value))
        out.append(list(make([iter([1, 2]), range(3)])))
        return out

    reference_lightning()
    assert program("lightning_lib") == program("pytorch_lightning")


def test_combined_loader_refuses_an_unknown_mode_like_lightning() -> None:
    from lightning_lib.utilities import CombinedLoader

    with pytest.raises(ValueError, match=r"Unsupported mode 'foo', please select one of: \['min_size'"):
        CombinedLoader([range(2)], "foo")  # type: ignore[arg-type]
