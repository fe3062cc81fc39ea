"""BaseFinetuning / BackboneFinetuning: freezing, param groups, learning rates and checkpoint state, as in Lightning."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import BackboneFinetuning, BaseFinetuning, OnExceptionCheckpoint
from lightning_lib.callbacks.finetuning import multiplicative
from tests.helpers import Crash, CrashAfter, classification_data, quiet_trainer_kwargs, reference_lightning


def _backbone_model(pl: ModuleType) -> Any:
    class BackboneModel(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU())
            self.head = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(
                filter(lambda p: p.requires_grad, self.parameters()), lr=0.1, momentum=0.9
            )
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)]

    return BackboneModel()


def _fit(
    pl: ModuleType,
    root: Any,
    callback: Any,
    epochs: int = 6,
    crash_at: int | None = None,
    ckpt_path: str | None = None,
) -> tuple[Any, Any, list[list[float]]]:
    pl.seed_everything(5)
    model = _backbone_model(pl)
    lrs: list[list[float]] = []

    class LrRecorder(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    callbacks: list[Any] = [callback, LrRecorder()]
    if crash_at is not None:
        callbacks += [OnExceptionCheckpoint(root), CrashAfter(crash_at)]
    kwargs = quiet_trainer_kwargs(
        root,
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=0,
        enable_checkpointing=crash_at is not None,
    )
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    data = DataLoader(classification_data(48), batch_size=8)
    if crash_at is not None:
        with pytest.raises(Crash):
            trainer.fit(model, data)
    else:
        trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer, lrs


def _backbone_args(pl: ModuleType) -> dict[str, Any]:
    return {
        "unfreeze_backbone_at_epoch": 2,
        "lambda_func": lambda epoch: 1.5,
        "backbone_initial_ratio_lr": 0.1,
    }


@pytest.mark.parity
def test_backbone_finetuning_like_lightning(tmp_path: Any) -> None:
    pl = reference_lightning()
    ours_cb = BackboneFinetuning(**_backbone_args(lightning_lib))
    theirs_cb = pl.callbacks.BackboneFinetuning(**_backbone_args(pl))
    ours, _, our_lrs = _fit(lightning_lib, tmp_path / "ours", ours_cb)
    theirs, _, their_lrs = _fit(pl, tmp_path / "theirs", theirs_cb)
    torch.testing.assert_close(our_lrs, their_lrs)
    assert len(our_lrs[-1]) == 2  # the backbone joined as a second param group
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)
    assert ours_cb.state_dict() == theirs_cb.state_dict()


@pytest.mark.parity
def test_checkpoint_state_like_lightning(tmp_path: Any) -> None:
    pl = reference_lightning()
    _fit(lightning_lib, tmp_path / "ours", BackboneFinetuning(**_backbone_args(lightning_lib)), crash_at=12)
    their_cb = pl.callbacks.BackboneFinetuning(**_backbone_args(pl))
    pl.seed_everything(5)
    model = _backbone_model(pl)
    trainer = pl.Trainer(
        callbacks=[their_cb], **quiet_trainer_kwargs(tmp_path / "theirs", max_epochs=4, limit_train_batches=3)
    )
    trainer.fit(model, DataLoader(classification_data(48), batch_size=8))
    trainer.save_checkpoint(tmp_path / "theirs.ckpt")
    ours = torch.load(tmp_path / "ours" / "on_exception.ckpt", weights_only=True)["callbacks"]
    theirs = torch.load(tmp_path / "theirs.ckpt", weights_only=True)["callbacks"]
    assert ours.keys() == theirs.keys() == {"BackboneFinetuning"}
    ours_state, theirs_state = ours["BackboneFinetuning"], theirs["BackboneFinetuning"]
    # Lightning's keys, plus what was frozen (so a resumed fit trains what the interrupted one trained)
    assert {k: v for k, v in ours_state.items() if k in theirs_state} == theirs_state
    assert ours_state.keys() - theirs_state.keys() == {"frozen_parameters", "untracked_batchnorms"}
    assert ours_state["frozen_parameters"] == [] and ours_state["untracked_batchnorms"] == []


def test_a_resumed_fit_gets_its_param_groups_back(tmp_path: Any) -> None:
    reference, _, ref_lrs = _fit(
        lightning_lib, tmp_path / "ref", BackboneFinetuning(**_backbone_args(lightning_lib))
    )
    # step 12 ends epoch 3, after the backbone joined the optimizer (epoch 2)
    _fit(lightning_lib, tmp_path / "run", BackboneFinetuning(**_backbone_args(lightning_lib)), crash_at=13)
    path = str(tmp_path / "run" / "on_exception.ckpt")
    resumed_cb = BackboneFinetuning(**_backbone_args(lightning_lib))
    model, trainer, lrs = _fit(lightning_lib, tmp_path / "run", resumed_cb, ckpt_path=path)
    torch.testing.assert_close(lrs, ref_lrs[-len(lrs) :])
    assert len(trainer.optimizers[0].param_groups) == 2
    assert all(p.requires_grad for p in model.backbone.parameters())  # Lightning leaves them frozen
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


def test_missing_backbone_is_refused(tmp_path: Any) -> None:
    class NoBackbone(lightning_lib.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(32, 2)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.layer(batch).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Freezing(BackboneFinetuning):
        def freeze_before_training(self, pl_module: Any) -> None:
            pass

    trainer = lightning_lib.Trainer(callbacks=[Freezing()], **quiet_trainer_kwargs(tmp_path, max_epochs=1))
    with pytest.raises(ValueError, match=r"should have a nn\.Module `backbone` attribute"):
        trainer.fit(NoBackbone(), DataLoader(torch.randn(4, 32), batch_size=2))


@pytest.mark.parity
def test_static_helpers_like_lightning() -> None:
    pl = reference_lightning()
    theirs = pl.callbacks.BaseFinetuning

    def model() -> nn.Module:
        torch.manual_seed(0)
        inner = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        inner.extra = nn.Parameter(torch.zeros(1))  # a parent with its own parameter
        last = nn.BatchNorm1d(4)
        # values unlike the other BatchNorm's: Lightning tells parameters apart by value (see the test below)
        nn.init.uniform_(last.weight)
        nn.init.uniform_(last.bias)
        return nn.Sequential(inner, nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.ReLU()}), last)

    def state(m: nn.Module) -> list[Any]:
        grads = [p.requires_grad for p in m.parameters()]
        stats = [bn.track_running_stats for bn in m.modules() if isinstance(bn, nn.BatchNorm1d)]
        return [grads, stats]

    for train_bn in (True, False):
        a, b = model(), model()
        BaseFinetuning.freeze(a, train_bn=train_bn)
        theirs.freeze(b, train_bn=train_bn)
        assert state(a) == state(b)
        assert [type(m) for m in BaseFinetuning.flatten_modules(a)] == [
            type(m) for m in theirs.flatten_modules(b)
        ]
        assert len(list(BaseFinetuning.filter_params(a, train_bn, False))) == len(
            list(theirs.filter_params(b, train_bn, False))
        )
        BaseFinetuning.make_trainable(a[0])
        theirs.make_trainable(b[0])
        assert state(a) == state(b)

    a, b = model(), model()
    opt_a = torch.optim.SGD(a[2].parameters(), lr=0.5)
    opt_b = torch.optim.SGD(b[2].parameters(), lr=0.5)
    BaseFinetuning.freeze(a[0])
    theirs.freeze(b[0])
    BaseFinetuning.unfreeze_and_add_param_group(a[0], opt_a)
    theirs.unfreeze_and_add_param_group(b[0], opt_b)
    with pytest.warns(UserWarning, match="The provided params to be frozen already exist"):
        BaseFinetuning.unfreeze_and_add_param_group(a, opt_a, lr=3)
    with pytest.warns(UserWarning, match="The provided params to be frozen already exist"):
        theirs.unfreeze_and_add_param_group(b, opt_b, lr=3)
    assert [(g["lr"], len(g["params"])) for g in opt_a.param_groups] == [
        (g["lr"], len(g["params"])) for g in opt_b.param_groups
    ]
    assert multiplicative(3) == 2.0


def test_identical_values_are_not_taken_for_the_same_parameter() -> None:
    first, second = nn.BatchNorm1d(4), nn.BatchNorm1d(4)  # equal weights (ones) and biases (zeros)
    optimizer = torch.optim.SGD(first.parameters(), lr=0.1)
    BaseFinetuning.unfreeze_and_add_param_group(second, optimizer, lr=0.01)
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["params"] == [second.weight, second.bias]


def test_base_class_asks_for_its_two_methods() -> None:
    callback = BaseFinetuning()
    with pytest.raises(NotImplementedError):
        callback.freeze_before_training(nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        callback.finetune_function(nn.Linear(1, 1), 0, torch.optim.SGD([nn.Parameter(torch.ones(1))]))  # type: ignore[arg-type]
    # checkpoints written before Lightning 1.6 hold the metadata as the whole state
    callback.load_state_dict({0: [{"lr": 0.1, "params": ["w"]}]})  # type: ignore[dict-item]
    assert callback._internal_optimizer_metadata == {0: [{"lr": 0.1, "params": ["w"]}]}
