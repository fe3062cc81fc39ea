"""GPU-side DDP decisions checked on CPU with a mocked CUDA and a mocked torch.distributed: which device a
rank takes, which backend and control group it sets up, and where input casts happen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_lib as pl
from lightning_lib.distributed import _ddp as ddp
from lightning_lib.plugins.precision import MixedPrecision
from lightning_lib.utilities.rank_zero import rank_zero_only


@pytest.fixture
def torchrun_rank_one_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "t"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_each_rank_takes_its_local_gpu_and_joins_nccl_with_a_host_control_group(
    torchrun_rank_one_of_two: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("set_device", device))
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        ddp.dist, "init_process_group", lambda backend, **kw: calls.update(init=(backend, kw))
    )
    monkeypatch.setattr(ddp.dist, "new_group", lambda backend: calls.setdefault("control", backend))
    monkeypatch.setattr(ddp, "_control_group", [None])
    monkeypatch.setattr(rank_zero_only, "rank", 0)  # setup_environment sets it to 1: restored afterwards

    trainer = pl.Trainer(accelerator="gpu", devices=2, precision="16-mixed", logger=False)
    strategy = trainer.strategy
    assert isinstance(strategy, ddp.DDPStrategy)
    assert strategy.root_device == torch.device("cuda", 1) and trainer.device_ids == [0, 1]
    assert (trainer.global_rank, trainer.local_rank, trainer.world_size) == (1, 1, 2)
    # fp16 with a scaler on the GPU (not the CPU's bf16 fallback)
    assert (
        isinstance(trainer.precision_plugin, MixedPrecision) and trainer.precision_plugin.scaler is not None
    )

    strategy.setup_environment()
    backend, kwargs = calls["init"]
    assert backend == "nccl" and kwargs["rank"] == 1 and kwargs["world_size"] == 2
    assert kwargs["device_id"] == torch.device("cuda", 1)
    assert calls["set_device"] == torch.device("cuda", 1)
    assert calls["control"] == "gloo"  # decisions and small objects never need a device sync
    assert rank_zero_only.rank == 1  # loggers of this process now stay silent


def test_true_precision_casts_after_the_transfer_hooks(tmp_path: Path) -> None:
    seen: dict[str, torch.dtype] = {}

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            seen["before"] = batch[0].dtype
            return batch

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen["step"] = batch[0].dtype
            return self.layer(batch[0]).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = DataLoader(TensorDataset(torch.randn(4, 4)), batch_size=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        precision="bf16-true",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Probe(), loader)
    # Lightning's order: the hooks see the loader's batch, the step sees it cast (on the device)
    assert seen == {"before": torch.float32, "step": torch.bfloat16}
