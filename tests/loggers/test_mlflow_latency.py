"""Issue 13, "MLflow costs a second per run": the end of a fit overlaps what it can (the curve PNG is drawn
while the model is logged) and its imports are warmed while training runs, without losing anything."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lightning_lib.loggers.mlflow import _curves, _end
from lightning_lib.loggers.mlflow._checkpoints import CheckpointReferences
from lightning_lib.loggers.mlflow._worker import DeliveryReport


class _Client:
    def __init__(self) -> None:
        self.artifacts: list[tuple[str, str, str | None]] = []

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        assert Path(path).is_file()
        self.artifacts.append((run_id, Path(path).name, artifact_path))


def _artifacts_with(
    monkeypatch: pytest.MonkeyPatch, plot: Any, log_model: Any
) -> tuple[_Client, DeliveryReport]:
    monkeypatch.setattr(_curves, "plot_metric_curves", plot)
    client, report = _Client(), DeliveryReport(run_id="r1")
    _end.log_fit_artifacts(
        client,  # type: ignore[arg-type]
        "r1",
        report,
        references=CheckpointReferences(),
        copy_checkpoints=False,
        history={"train_loss": [(0, 1.0), (1, 0.5)]},
        log_model=log_model,
    )
    return client, report


def test_the_curves_are_drawn_on_their_own_thread_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    both = threading.Barrier(2, timeout=10)  # passes only while the caller goes on beside the drawing
    threads: list[str] = []

    def plot(history: Any, path: str) -> bool:
        threads.append(threading.current_thread().name)
        both.wait()
        Path(path).write_bytes(b"png")
        return True

    monkeypatch.setattr(_curves, "plot_metric_curves", plot)
    curves = _end.CurvePlot({"train_loss": [(0, 1.0)]})
    both.wait()  # the caller (finalize: delivering the queue meanwhile) is not blocked by the drawing
    path = curves.result()
    assert path is not None and Path(path).read_bytes() == b"png"
    assert threads and threads[0] != threading.current_thread().name
    curves.close()
    assert not Path(path).exists()


def test_the_curves_arrive_before_the_model_is_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def plot(history: Any, path: str) -> bool:
        time.sleep(0.05)  # still drawing when the artifacts start: they wait for it
        Path(path).write_bytes(b"png")
        order.append("drawn")
        return True

    client, report = _artifacts_with(monkeypatch, plot, lambda: order.append("model"))
    assert order == ["drawn", "model"]
    assert client.artifacts == [("r1", "metric_curves.png", "plots")] and report.failures == []


def test_a_failed_curve_is_reported_and_the_model_still_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[bool] = []

    def plot(history: Any, path: str) -> bool:
        raise OSError("disk full")

    client, report = _artifacts_with(monkeypatch, plot, lambda: logged.append(True))
    assert logged == [True] and client.artifacts == []
    assert report.failures == ["metric curves: OSError: disk full"]


def test_the_end_of_fit_is_warmed_once_per_process_and_part(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[set[str]] = []
    monkeypatch.setattr(_end, "_WARMED", set())
    monkeypatch.setattr(_end, "_warm", lambda parts: calls.append(set(parts)))
    first = _end.warm_end_of_fit(log_model=False, curves=True)
    assert first is not None
    first.join(10)
    assert _end.warm_end_of_fit(log_model=False, curves=True) is None  # done already in this process
    second = _end.warm_end_of_fit(log_model=True, curves=True)
    assert second is not None
    second.join(10)
    assert _end.warm_end_of_fit(log_model=False, curves=False) is None
    assert calls == [{"curves"}, {"model"}]


def test_warming_up_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pillow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("PIL"):
            raise ImportError("no Pillow here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pillow)
    _end._warm({"model", "curves"})  # logged at debug level, nothing raised


@pytest.mark.parametrize("healthy", [True, False])
def test_the_end_of_fit_uploads_beside_the_delivery_unless_the_server_was_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, healthy: bool
) -> None:
    import torch

    from lightning_lib.loggers import MLFlowLogger

    logger = MLFlowLogger(save_dir=str(tmp_path / "mlruns"))
    logger.log_graph(torch.nn.Linear(2, 2))  # what the Trainer calls at fit start: a fit's end follows
    logger.log_metrics({"loss": 1.0}, step=0)
    run_id = logger.run_id
    sender = logger._sender
    assert sender is not None
    events: list[str] = []
    real_log_batch = sender._transport.log_batch

    def slow_log_batch(*args: Any) -> None:
        time.sleep(0.3)  # the server storing the rest of the queue
        real_log_batch(*args)
        events.append("queue delivered")

    def artifacts(*args: Any, **kwargs: Any) -> None:
        events.append("artifacts")

    monkeypatch.setattr(sender._transport, "log_batch", slow_log_batch)
    monkeypatch.setattr(_end, "log_fit_artifacts", artifacts)
    sender._healthy = healthy  # False: the last request failed, MLflow's client would retry for minutes
    logger.finalize("success")
    assert events == (["artifacts", "queue delivered"] if healthy else ["queue delivered", "artifacts"])
    run = logger.experiment.get_run(str(run_id))
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 1.0}


def test_an_upload_past_the_deadline_keeps_its_png_and_holds_back_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from lightning_lib.loggers import MLFlowLogger

    logger = MLFlowLogger(save_dir=str(tmp_path / "mlruns"), log_model=True, finalize_timeout=1.0)
    logger.log_graph(torch.nn.Linear(2, 2))
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_metrics({"loss": 0.5}, step=1)
    _ = logger.run_id
    entered, release = threading.Event(), threading.Event()
    uploading: list[Path] = []
    uploaded: list[bytes] = []

    class _SlowServer:  # the curves' upload outlives finalize's deadline
        def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
            uploading.append(Path(path))
            entered.set()
            release.wait(60)
            uploaded.append(Path(path).read_bytes())  # the PNG must still be there when it is read

    exported: list[bool] = []
    monkeypatch.setattr(logger, "_user_client", _SlowServer())
    monkeypatch.setattr(_end, "_log_final_model", lambda _logger: exported.append(True))
    logger.finalize("success")
    try:
        assert entered.is_set() and not release.is_set()  # finalize returned while the upload hangs
        assert exported == []  # no torch.export beside the artifacts thread
        report = logger.delivery_report
        assert report is not None and not report.ok
        assert any(
            f.startswith("model: not logged: the checkpoint references and curves") for f in report.failures
        )
        assert uploading[0].is_file()  # its folder is left to the thread
    finally:
        release.set()
    threads = [t for t in threading.enumerate() if t.name == "mlflow-fit-artifacts"]
    for thread in threads:
        thread.join(30)
    assert uploaded and uploaded[0].startswith(b"\x89PNG")
    assert not uploading[0].parent.exists()  # removed by the thread once it was done with it
    # the upload took the deadline, not the final status: the run did not stay RUNNING
    from mlflow import MlflowClient

    assert MlflowClient(logger.tracking_uri).get_run(str(logger.run_id)).info.status == "FINISHED"
