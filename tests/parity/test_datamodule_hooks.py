"""A LightningDataModule's hooks go through the Trainer's dispatcher as in pytorch_lightning, so a profiler
times each one (``state_dict`` when a checkpoint is saved, ``load_state_dict`` when one is restored)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

import lightning_lib
from tests.helpers import make_classes, quiet_trainer_kwargs, reference_lightning

pytestmark = pytest.mark.parity


def _profiled_datamodule_hooks(pl: ModuleType, root: Any) -> list[tuple[str, int]]:
    classes = make_classes(pl)

    class DataModule(classes["ClassifierDataModule"]):  # type: ignore[misc, valid-type]
        def prepare_data(self) -> None:
            pass

        def state_dict(self) -> dict[str, Any]:
            return {"position": 1}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.restored = state_dict

    def trainer(max_steps: int) -> Any:
        return pl.Trainer(
            **quiet_trainer_kwargs(
                root,
                max_steps=max_steps,
                limit_val_batches=0,
                profiler="simple",
                enable_checkpointing=True,
            )
        )

    first = trainer(1)
    first.fit(classes["ClassifierModel"](), datamodule=DataModule())
    path = first.checkpoint_callback.best_model_path
    second = trainer(2)
    datamodule = DataModule()
    second.fit(classes["ClassifierModel"](), datamodule=datamodule, ckpt_path=path)
    assert datamodule.restored == {"position": 1}
    return [
        (prefix + key.split(".")[-1], len(durations))
        for prefix, run in (("", first), ("resumed:", second))
        for key, durations in sorted(run.profiler.recorded_durations.items())
        if key.startswith("[LightningDataModule]DataModule.")
    ]


def test_datamodule_state_hooks_are_profiled_like_lightning(tmp_path: Any) -> None:
    ours = _profiled_datamodule_hooks(lightning_lib, tmp_path / "ours")
    assert ours == _profiled_datamodule_hooks(reference_lightning(), tmp_path / "ref")
    assert ("state_dict", 1) in ours and ("resumed:load_state_dict", 1) in ours
