"""The utilities users import from Lightning's paths: exceptions, is_overridden, rank-zero helpers, types,
enums, parameter tying, dataloader checks."""

from __future__ import annotations

import functools
import pickle
import warnings
from typing import Any, get_args
from unittest import mock

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from lightning_lib.demos.boring_classes import BoringModel, RandomDataset, RandomIterableDatasetWithLen
from lightning_lib.utilities import (
    AttributeDict,
    GradClipAlgorithmType,
    LightningEnum,
    find_shared_parameters,
    is_picklable,
    move_data_to_device,
    set_shared_parameters,
    suggested_max_num_workers,
)
from lightning_lib.utilities.data import has_iterable_dataset, has_len_all_ranks
from lightning_lib.utilities.exceptions import MisconfigurationException
from lightning_lib.utilities.model_helpers import is_overridden
from lightning_lib.utilities.rank_zero import (
    LightningDeprecationWarning,
    WarningCache,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from lightning_lib.utilities.types import STEP_OUTPUT, LRSchedulerConfig, OptimizerLRScheduler


def test_misconfiguration_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="limit_val_batches"):
        pl.Trainer(limit_val_batches=-1)
    with pytest.raises(MisconfigurationException):
        pl.Trainer(limit_val_batches=-1)
    assert issubclass(MisconfigurationException, ValueError)


def test_is_overridden_sees_through_wrappers_and_treats_none_as_absent() -> None:
    model = BoringModel()
    assert is_overridden("training_step", model)
    assert not is_overridden("on_train_start", model)
    model.training_step = None
    assert not is_overridden("training_step", model)

    wrapped = BoringModel()
    wrapped.on_fit_start = functools.partial(pl.LightningModule.on_fit_start, wrapped)
    assert not is_overridden("on_fit_start", wrapped)  # the partial wraps the base hook
    spied = BoringModel()
    spied.validation_step = mock.Mock(wraps=spied.validation_step)
    assert is_overridden("validation_step", spied)
    assert not is_overridden("training_step", None)
    # a wrapper made around a hook switched off (``update_wrapper(partial(f, None), None)``) wraps nothing
    off = BoringModel()
    recorder = functools.partial(lambda fn, *a: fn(*a), None)
    functools.update_wrapper(recorder, None)  # type: ignore[arg-type]
    off.configure_model = recorder  # type: ignore[method-assign]
    assert not is_overridden("configure_model", off)

    class Hooked(pl.Callback):
        def on_train_end(self, *args: Any) -> None: ...

    assert is_overridden("on_train_end", Hooked()) and not is_overridden("on_fit_end", Hooked())
    with pytest.raises(ValueError, match="LightningModule, LightningDataModule or Callback"):
        is_overridden("forward", torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="to define 'not_a_hook'"):
        is_overridden("not_a_hook", model)


def test_rank_zero_helpers_point_at_the_caller_and_stay_quiet_elsewhere(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rank_zero_warn("careful")
        rank_zero_deprecation("old")
    assert [str(w.message) for w in seen] == ["careful", "old"]
    assert all(w.filename == __file__ for w in seen)  # the warning points at this test, not the helper
    assert seen[1].category is LightningDeprecationWarning
    with caplog.at_level("INFO", logger="lightning_lib"):
        rank_zero_info("hello %s", "there")
    assert "hello there" in caplog.text

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings(record=True) as elsewhere:
        warnings.simplefilter("always")
        rank_zero_warn("not on rank 1")
    assert elsewhere == []
    assert rank_zero_only(lambda: "ran", default="skipped")() == "skipped"


def test_warning_cache_warns_each_message_once() -> None:
    cache = WarningCache()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cache.warn("a")
        cache.warn("a")
        cache.warn("b")
    assert [str(w.message) for w in seen] == ["a", "b"]


def test_lightning_enum_compares_and_hashes_without_case() -> None:
    assert GradClipAlgorithmType.NORM == "NORM" == GradClipAlgorithmType.from_str("norm")
    assert {"value": 1}[GradClipAlgorithmType.VALUE] == 1
    assert GradClipAlgorithmType.supported_types() == ["value", "norm"]
    with pytest.raises(ValueError, match="received 'median'"):
        GradClipAlgorithmType.from_str("median")
    assert issubclass(pl.trainer.states.TrainerFn, LightningEnum)


def test_shared_parameters_are_found_and_tied_again() -> None:
    shared = torch.nn.Linear(2, 2)
    module = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    groups = find_shared_parameters(module)
    assert groups == [["0.weight", "2.weight"], ["0.bias", "2.bias"]]
    module[2] = torch.nn.Linear(2, 2)  # untied
    set_shared_parameters(module, groups)
    assert module[2].weight is module[0].weight and module[2].bias is module[0].bias


def test_small_helpers() -> None:
    assert AttributeDict(lr=0.1).lr == 0.1
    assert is_picklable(1) and not is_picklable(lambda: None)
    assert suggested_max_num_workers(1) >= 1
    with pytest.raises(ValueError, match="local_world_size >= 1"):
        suggested_max_num_workers(0)
    moved = move_data_to_device({"x": torch.ones(1)}, "cpu")
    assert moved["x"].device.type == "cpu"
    assert pickle.loads(pickle.dumps(MisconfigurationException("x"))).args == ("x",)


def test_has_len_all_ranks_warns_like_lightning() -> None:
    trainer = pl.Trainer(logger=False)
    assert has_len_all_ranks(DataLoader(RandomDataset(4, 8)), trainer.strategy)
    iterable = DataLoader(RandomIterableDatasetWithLen(4, 8))
    assert has_iterable_dataset(iterable)
    with pytest.warns(UserWarning, match="Your `IterableDataset` has `__len__` defined"):
        assert has_len_all_ranks(iterable, trainer.strategy)
    with pytest.warns(UserWarning, match="Total length of `DataLoader` across ranks is zero"):
        has_len_all_ranks(DataLoader(RandomDataset(4, 0)), trainer.strategy)
    assert not has_len_all_ranks(iter([1]), trainer.strategy)


def test_type_aliases_describe_what_the_hooks_take() -> None:
    assert torch.Tensor in get_args(STEP_OUTPUT) and type(None) in get_args(STEP_OUTPUT)
    assert torch.optim.Optimizer in get_args(OptimizerLRScheduler)
    config = LRSchedulerConfig(scheduler=None)
    assert (config.interval, config.frequency, config.strict) == ("epoch", 1, True)
    # the Trainer keeps its schedulers in this very class
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(BoringModel())
    assert isinstance(trainer.lr_scheduler_configs[0], LRSchedulerConfig)
