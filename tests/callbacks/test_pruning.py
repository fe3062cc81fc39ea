"""ModelPruning: masks, lottery ticket, checkpoints and argument checks, as in Lightning."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn
from torch.utils.data import DataLoader

import lightning_lib
from lightning_lib.callbacks import ModelPruning
from lightning_lib.utilities.exceptions import MisconfigurationException
from tests.helpers import classification_data, quiet_trainer_kwargs, reference_lightning


def _model(pl: ModuleType) -> Any:
    class PrunedNet(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.layer(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self.layer(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return PrunedNet()


def _fit(pl: ModuleType, root: Any, make_callback: Any, **trainer_args: Any) -> tuple[Any, Any, Any]:
    pl.seed_everything(11)
    model = _model(pl)
    callback = make_callback(pl, model)
    kwargs = quiet_trainer_kwargs(root, max_epochs=3, limit_train_batches=3, limit_val_batches=1)
    kwargs.update(trainer_args)
    trainer = pl.Trainer(callbacks=[callback], **kwargs)
    data = DataLoader(classification_data(48), batch_size=8)
    trainer.fit(model, data, data)
    return model, trainer, callback


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buf for name, buf in model.named_buffers() if name.endswith("_mask")}


CASES: dict[str, Any] = {
    "global_l1_lottery": lambda pl, m: pl.callbacks.ModelPruning(
        "l1_unstructured", amount=0.3, make_pruning_permanent=False
    ),
    "global_random_resample": lambda pl, m: pl.callbacks.ModelPruning(
        "random_unstructured", amount=lambda epoch: 0.1 * (epoch + 1), resample_parameters=True,
        make_pruning_permanent=False,
    ),
    "local_ln_structured": lambda pl, m: pl.callbacks.ModelPruning(
        "ln_structured", parameters_to_prune=[(m.layer[0], "weight"), (m.layer[2], "weight")],
        use_global_unstructured=False, pruning_dim=0, pruning_norm=2, amount=2,
        use_lottery_ticket_hypothesis=lambda epoch: epoch == 1, make_pruning_permanent=False,
    ),
    "on_validation_permanent": lambda pl, m: pl.callbacks.ModelPruning(
        "l1_unstructured", parameter_names=["weight"], amount=0.25, use_lottery_ticket_hypothesis=False,
        prune_on_train_epoch_end=False, apply_pruning=lambda epoch: epoch != 1,
    ),
    "custom_method": lambda pl, m: pl.callbacks.ModelPruning(
        torch_prune.L1Unstructured, amount=0.2, use_lottery_ticket_hypothesis=False
    ),
}  # fmt: skip


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CASES))
def test_masks_and_weights_like_lightning(tmp_path: Any, case: str) -> None:
    pl = reference_lightning()
    ours, _, _ = _fit(lightning_lib, tmp_path / "ours", CASES[case])
    theirs, _, _ = _fit(pl, tmp_path / "theirs", CASES[case])
    our_masks, their_masks = _masks(ours), _masks(theirs)
    assert our_masks.keys() == their_masks.keys()
    for name in our_masks:
        torch.testing.assert_close(our_masks[name], their_masks[name], msg=name)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    permanent = case in ("on_validation_permanent", "custom_method")
    assert (not our_masks) == permanent
    if permanent:  # the masks are folded in: zeros where they pruned
        assert (ours.layer[0].weight == 0).sum() > 0


@pytest.mark.parity
def test_checkpoint_has_plain_weights_like_lightning(tmp_path: Any) -> None:
    pl = reference_lightning()

    def callback(lib: ModuleType, model: Any) -> Any:
        return lib.callbacks.ModelPruning("l1_unstructured", amount=0.5)

    states = []
    for lib, name in ((lightning_lib, "ours"), (pl, "theirs")):
        # the checkpoint is saved at the epoch's end, after the pruning, while the masks are still separate
        _, trainer, _ = _fit(lib, tmp_path / name, callback, max_epochs=1, enable_checkpointing=True)
        states.append(
            torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)["state_dict"]
        )
    ours, theirs = states
    assert (
        ours.keys() == theirs.keys() == {"layer.0.weight", "layer.0.bias", "layer.2.weight", "layer.2.bias"}
    )
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, msg=key)
    fresh = _model(lightning_lib)
    fresh.load_state_dict(ours)
    assert (fresh.layer[0].weight == 0).float().mean() > 0.2


def test_verbose_logs_sparsity(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    def callback(lib: ModuleType, model: Any) -> Any:
        return lib.callbacks.ModelPruning(
            "l1_unstructured", amount=0.5, verbose=2, parameter_names=["weight"]
        )

    with caplog.at_level(logging.INFO, logger="lightning_lib.callbacks.pruning"):
        _fit(lightning_lib, tmp_path, callback, max_epochs=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "lightning_lib.callbacks.pruning"]
    assert messages[0] == "Applied `L1Unstructured`. Pruned: 0/672 (0.00%) -> 336/672 (50.00%)"
    assert len(messages) == 3 and "with amount=0.5" in messages[1]


def test_filter_parameters_to_prune_override(tmp_path: Any) -> None:
    class OnlyFirst(ModelPruning):
        def filter_parameters_to_prune(self, parameters_to_prune: Any = ()) -> Any:
            return [(m, n) for m, n in parameters_to_prune if m.out_features == 16 and n == "weight"]

    model, _, _ = _fit(
        lightning_lib, tmp_path, lambda lib, m: OnlyFirst("l1_unstructured", make_pruning_permanent=False)
    )
    assert set(_masks(model)) == {"layer.0.weight_mask"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pruning_fn": "l1_unstructured", "parameter_names": ["gamma"]}, "`parameter_names` name: gamma"),
        ({"pruning_fn": "magic"}, "`pruning_fn` magic isn't available"),
        (
            {"pruning_fn": "ln_structured", "use_global_unstructured": False},
            "`pruning_dim` should be provided",
        ),
        (
            {"pruning_fn": "ln_structured", "use_global_unstructured": False, "pruning_dim": 0},
            "`pruning_norm` should be provided",
        ),
        ({"pruning_fn": "random_structured", "pruning_dim": 0}, 'Only the "unstructured" PRUNING_TYPE'),
        ({"pruning_fn": torch_prune.L1Unstructured, "use_global_unstructured": False}, "only supported with"),
        ({"pruning_fn": torch_prune.L1Unstructured(0.5)}, "pass the class, not an instance"),
        ({"pruning_fn": "l1_unstructured", "amount": "half"}, "`amount` should be provided"),
        ({"pruning_fn": "l1_unstructured", "verbose": 3}, r"`verbose` must be any of \(0, 1, 2\)"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        ModelPruning(**kwargs)


def test_parameters_not_in_the_model_are_refused(tmp_path: Any) -> None:
    stranger = nn.Linear(2, 2)
    with pytest.raises(MisconfigurationException, match="don't exist in the model"):
        _fit(lightning_lib, tmp_path, lambda lib, m: ModelPruning("l1_unstructured", [(stranger, "weight")]))
    with pytest.raises(MisconfigurationException, match="should either be list of tuple"):
        _fit(lightning_lib, tmp_path, lambda lib, m: ModelPruning("l1_unstructured", [(m.layer[0],)]))
