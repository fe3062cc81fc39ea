"""Checkpoint commits under storage faults, end to end against the S3 test server through ``FaultProxy``.

- Point 2: an S3 outage (503 SlowDown past boto3's retries) during the fit's last background commit fails
  the attempt with an error the retry policy calls transient; healed before the retry, the ``training``
  flow completes, the retry resumes from the last commit and ends exactly where an undisturbed run ends.
- Point 12: with the store throttled to 64 KB per 0.1 s, training never waits for a commit: saves are
  coalesced (the writer's counters), no deletion ever leaves the run without a committed checkpoint, the
  newest checkpoint is committed when fit returns, and every path ModelCheckpoint names is committed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import flows.training as training_flow
import lightning_lib as pl
import tasks.training as training_tasks
from lightning_lib.checkpoint import list_committed
from lightning_lib.storage import StorageError, open_store
from tasks.config import TrainConfig
from tasks.retry import is_transient, retry_on_transient
from tests.faults import FaultProxy, http_response
from tests.support import CountingModel, loader, trainer_kwargs
from tests.test_checkpoint_commit_policy import RetentionWatch

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def s3_proxy(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Every S3 request of the test goes through a ``FaultProxy``; boto3 gives up after 2 attempts."""
    port = int(os.environ["AWS_ENDPOINT_URL"].rpartition(":")[2])
    with FaultProxy(port) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # an outage outlasts boto3's retries in seconds
        yield proxy


class OutageDuringTheLastCommit(pl.Callback):
    """Starts an S3 outage once the fit's last checkpoint is named and about to be committed: its
    background commit meets it, while nothing on the training thread does. Once per test."""

    def __init__(self, proxy: FaultProxy, fired: list[bool]) -> None:
        self.proxy, self.fired = proxy, fired

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if not self.fired and trainer.current_epoch == trainer.max_epochs - 1:
            self.fired.append(True)
            trainer._checkpoint_writer.wait()  # the previous epoch's checkpoint is committed: resumable
            self.proxy.set("respond", response=http_response(503, "Slow Down", b"SlowDown"))


def test_an_outage_during_a_background_commit_is_retried_and_resumes_exactly(
    make_config: Callable[..., TrainConfig],
    s3_endpoint: str,
    s3_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = f"{s3_endpoint}/{uuid.uuid4().hex}"
    settings = {"checkpoint_root": root, "checkpoint.save_top_k": 0}  # "last" only: one save per epoch
    undisturbed = training_flow.training(make_config(run_key="undisturbed", **settings), register_model=False)

    fired: list[bool] = []
    judged: list[BaseException] = []
    real_fit_model = training_tasks.fit_model

    def fit_model_with_outage(*args: Any, **kwargs: Any) -> Any:
        return real_fit_model(*args, extra_callbacks=[OutageDuringTheLastCommit(s3_proxy, fired)], **kwargs)

    def heal_then_judge(task: Any, task_run: Any, state: Any) -> bool:
        judged.append(state.data)
        s3_proxy.set("pass")  # healed before the retry
        return retry_on_transient(task, task_run, state)

    monkeypatch.setattr(training_tasks, "fit_model", fit_model_with_outage)
    monkeypatch.setattr(
        training_flow, "fit", training_tasks.fit.with_options(retry_condition_fn=heal_then_judge)
    )
    result = training_flow.training(make_config(run_key="outage", **settings), register_model=False)

    [error] = judged  # one failed attempt, judged transient by the real policy, then one retry
    assert isinstance(error, RuntimeError) and "background checkpoint commit failed" in str(error)
    assert isinstance(error.__cause__, StorageError) and is_transient(error)
    assert s3_proxy.faulted > 0
    fitted = result.fit
    assert fitted.resumed_from is not None and fitted.resumed_from.endswith("/last.ckpt")
    assert fitted.global_step == undisturbed.fit.global_step == 8 and fitted.steps_this_attempt == 4
    assert fitted.metrics == undisturbed.fit.metrics and result.test_metrics == undisturbed.test_metrics
    committed = list_committed(open_store(fitted.checkpoint_dir))
    assert [c.step for c in committed] == [8] and committed[0].uri == fitted.last_checkpoint_uri


def test_a_slow_store_never_holds_training_up(
    s3_endpoint: str, s3_proxy: FaultProxy, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirpath = f"{s3_endpoint}/{uuid.uuid4().hex}"
    watch = RetentionWatch(monkeypatch)  # lists the committed checkpoints right before every deletion

    def fit(epochs: int, ckpt_path: str | None) -> tuple[pl.Trainer, pl.callbacks.ModelCheckpoint]:
        pl.seed_everything(7)
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=dirpath, monitor="val_loss", save_last=True)
        kwargs = trainer_kwargs(
            tmp_path,
            max_epochs=epochs,
            limit_train_batches=8,
            enable_checkpointing=True,
            callbacks=[checkpoint],
        )
        trainer = pl.Trainer(**kwargs)
        trainer.fit(CountingModel(), loader(), loader(seed=1), ckpt_path=ckpt_path)
        return trainer, checkpoint

    fit(1, None)  # the folder exists: its listing (done once) is not what is measured
    s3_proxy.set("throttle", delay=0.1, chunk_bytes=64 * 1024)  # every request and reply crawls
    trainer, checkpoint = fit(4, "last")
    stats = trainer._checkpoint_writer.stats
    # three epochs, each saving "last" and (when val loss improved) a new best: none of these saves waited,
    # the ones a newer save replaced before their turn were never uploaded, the rest were committed
    assert stats.waited == 0 and stats.failed == 0
    assert stats.coalesced > 0 and stats.committed + stats.coalesced == stats.saves
    # a dropped save's deletions waited for the save that superseded it: no deletion ever left the run
    # without a committed checkpoint
    assert watch.deleted and watch.violations == []
    s3_proxy.set("pass")
    committed = {c.uri: c.step for c in list_committed(open_store(dirpath))}
    assert committed[checkpoint.last_model_path] == trainer.global_step == 32  # the newest is committed
    assert set(checkpoint.best_k_models) <= set(committed) and checkpoint.best_model_path in committed

    resumed, _ = fit(4, "last")  # and it is what a resumed run continues from
    assert resumed.ckpt_path == checkpoint.last_model_path and resumed.global_step == 32
