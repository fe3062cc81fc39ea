"""strategy="ddp_spawn": each entry point runs in two spawned gloo processes, and the main process sees
what pytorch_lightning's main process sees afterwards (weights, callback_metrics, state, global_step)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_lib as ours
from lightning_lib.distributed import DDPStrategy
from tests.distributed.spawn_models import OursFailingModel, OursModel, RefModel

pytestmark = pytest.mark.slow


def _fit(pl: Any, model_cls: type, root: Path) -> tuple[Any, Any, list[Any]]:
    torch.manual_seed(0)
    model = model_cls()
    trainer = pl.Trainer(
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[pl.callbacks.ModelCheckpoint(monitor="val_loss")],
    )
    trainer.fit(model)
    results = trainer.validate(model, verbose=False)
    return model, trainer, results


@pytest.mark.parity
def test_ddp_spawn_main_process_matches_lightning(tmp_path: Path) -> None:
    if RefModel is None:
        pytest.skip("pytorch_lightning is not importable")
    import pytorch_lightning as ref

    threads_before = {t.ident for t in threading.enumerate()}
    model, trainer, results = _fit(ours, OursModel, tmp_path / "ours")
    assert multiprocessing.active_children() == []
    assert {t.ident for t in threading.enumerate()} <= threads_before
    ref_model, ref_trainer, ref_results = _fit(ref, RefModel, tmp_path / "ref")

    for (name, value), (ref_name, ref_value) in zip(
        model.state_dict().items(), ref_model.state_dict().items(), strict=True
    ):
        assert name == ref_name
        torch.testing.assert_close(value, ref_value)
    assert sorted(trainer.callback_metrics) == sorted(ref_trainer.callback_metrics)
    for key, value in ref_trainer.callback_metrics.items():
        torch.testing.assert_close(trainer.callback_metrics[key], value)
    assert trainer.callback_metrics["rank_sum"] == 1.0  # both ranks took part: 0 + 1
    assert (trainer.global_step, trainer.current_epoch) == (
        ref_trainer.global_step,
        ref_trainer.current_epoch,
    )
    assert trainer.state.finished and ref_trainer.state.finished
    assert (
        Path(trainer.checkpoint_callback.best_model_path).name
        == Path(ref_trainer.checkpoint_callback.best_model_path).name
    )
    assert Path(trainer.checkpoint_callback.best_model_path).is_file()
    assert results[0].keys() == ref_results[0].keys()
    assert results[0]["val_loss"] == pytest.approx(ref_results[0]["val_loss"], rel=1e-5)


def test_ddp_spawn_error_in_a_child_is_raised_in_main(tmp_path: Path) -> None:
    trainer = ours.Trainer(
        strategy=DDPStrategy(start_method="spawn"),
        accelerator="cpu",
        devices=2,
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(Exception, match="training_step failed on rank 1"):
        trainer.fit(OursFailingModel())
    assert multiprocessing.active_children() == []


def test_ddp_spawn_refuses_unknown_start_method_and_second_fit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Expected start_method to be one of .* received 'fork'"):
        DDPStrategy(start_method="fork")
    trainer = ours.Trainer(strategy="ddp_spawn", accelerator="cpu", devices=2, logger=False)
    trainer.strategy.launcher._already_fit = True  # as after a first fit, without spawning one here
    with pytest.raises(NotImplementedError, match=r"Expected one trainer\.fit"):
        trainer.fit(OursModel())


def test_the_main_process_names_the_rank_that_failed_not_the_one_that_lost_its_peer() -> None:
    """torch reports whichever rank exited first: often the one that saw "Connection closed by peer"."""
    import queue

    import torch.multiprocessing as mp

    from lightning_lib.distributed._spawn import _is_collateral, _root_cause

    lost = RuntimeError("[gloo] pair.cc:553] Connection closed by peer [127.0.0.1]:2436")
    assert _is_collateral(lost) and not _is_collateral(RuntimeError("training_step failed on rank 1"))
    reports: queue.Queue[tuple[int, int, bool, str]] = queue.Queue()
    reports.put((1, 222, False, "Traceback ...\nRuntimeError: training_step failed on rank 1\n"))
    reports.put((0, 111, True, "Traceback ...\nRuntimeError: Connection closed by peer\n"))
    raised = mp.ProcessRaisedException("-- Process 0 terminated: Connection closed by peer", 0, 111)
    cause = _root_cause(raised, reports)
    assert (
        cause.error_index == 1 and cause.error_pid == 222 and "training_step failed on rank 1" in str(cause)
    )
    # the raised rank's own failure stands as it is
    reports.put((0, 111, False, "Traceback ...\nValueError: bad batch\n"))
    own = mp.ProcessRaisedException("-- Process 0 terminated: ValueError: bad batch", 0, 111)
    assert _root_cause(own, reports) is own
