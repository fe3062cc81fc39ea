"""MLFlowLogger's parts without a server: redaction, limits, checkpoint references, datasets, run context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_lib.checkpoint import write_checkpoint
from lightning_lib.loggers import MLFlowLogger
from lightning_lib.loggers.mlflow._artifacts import best_weights, dataset_spec, detached_copy, make_spec
from lightning_lib.loggers.mlflow._checkpoints import CheckpointReferences, checkpoint_reference, sha256_file
from lightning_lib.loggers.mlflow._context import environment_tags, git_tags
from lightning_lib.loggers.mlflow._end import final_status
from lightning_lib.loggers.mlflow._params import (
    MAX_PARAM_VALUE_LENGTH,
    clean_name,
    prepare_params,
    prepare_tags,
)
from lightning_lib.loggers.redact import (
    REDACTED,
    is_secret_name,
    redact_mapping,
    redact_text,
    secret_env_values,
)
from lightning_lib.storage import LocalStore
from tests.support import archive, with_marker

mlflow = pytest.importorskip("mlflow")


# ---- redaction and limits ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["password", "db_password", "AWS_SECRET_ACCESS_KEY", "apiKey", "api_key", "auth_token",
             "Authorization", "private_key", "client_secret", "GITHUB_TOKEN", "aws_access_key_id"],
)  # fmt: skip
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["lr", "max_tokens", "tokenizer", "run_key", "hidden_size", "monitor"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_text_patterns() -> None:
    text = (
        "s3 AKIAIOSFODNN7EXAMPLE url postgresql://bob:hunter2@db:5432/x "
        "hdr Bearer abcdef0123456789abcdef jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_part "
        "conn AccountKey=c2VjcmV0a2V5;EndpointSuffix=core gh ghp_abcdefghijklmnopqrstuvwxyz0123456789"
    )
    clean = redact_text(text)
    for secret in (
        "AKIAIOSFODNN7EXAMPLE",
        "hunter2",
        "abcdef0123456789abcdef",
        "eyJhbGci",
        "c2VjcmV0a2V5",
        "ghp_",
    ):
        assert secret not in clean
    assert "postgresql://bob:***@db:5432/x" in clean and "EndpointSuffix=core" in clean
    assert (
        redact_text("basic augmentation with token embeddings") == "basic augmentation with token embeddings"
    )
    assert REDACTED in redact_text("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----")


def test_environment_secrets_are_scrubbed_wherever_they_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-9f8e7d6c5b4a")
    assert "tok-9f8e7d6c5b4a" in secret_env_values()
    assert os.getcwd() not in secret_env_values()  # PWD is a path, not a secret
    clean, changed = redact_mapping({"note": "uses tok-9f8e7d6c5b4a", "password": 12345, "lr": 0.1})
    assert clean == {"note": f"uses {REDACTED}", "password": REDACTED, "lr": 0.1}
    assert sorted(changed) == ["note", "password"]


def test_clean_name_follows_mlflow_rules() -> None:
    assert clean_name("val/acc@top1") == "val/acctop1"
    assert clean_name("a//b/./c/") == "a/b/c"
    assert clean_name("loss(x)", replacement="_") == "loss_x_"
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(clean_name(long_a)) == 250 and clean_name(long_a) != clean_name(long_b)
    assert clean_name("???") == "_"


def test_prepare_params_sanitises_with_warnings() -> None:
    with pytest.warns(RuntimeWarning) as record:
        pairs = dict(
            prepare_params(
                {"ok": 1, "bad key!": "v", "bad key?": "w", "long": "y" * 7000, "secret": "s3cr3t"}
            )
        )
    messages = " ".join(str(w.message) for w in record)
    assert "renamed" in messages and "truncated" in messages and "credentials" in messages
    assert pairs["ok"] == "1" and pairs["bad key_"] == "v" and pairs["bad key__2"] == "w"
    assert len(pairs["long"]) == MAX_PARAM_VALUE_LENGTH and pairs["secret"] == REDACTED
    with pytest.warns(RuntimeWarning, match="credentials"):
        tags = dict(prepare_tags({"repo": "https://user:pa55word@git.example.com/x.git"}))
    assert tags["repo"] == "https://user:***@git.example.com/x.git"


# ---- checkpoints and datasets ------------------------------------------------------------------------------
def test_checkpoint_reference_of_plain_committed_and_uncommitted_files(tmp_path: Any) -> None:
    file = tmp_path / "epoch=0.ckpt"
    file.write_bytes(b"weights")
    ref = checkpoint_reference(str(file))
    assert ref["sha256"] == sha256_file(str(file)) and ref["size"] == 7
    assert ref["hash_of"] == "file"
    store = LocalStore(tmp_path / "ckpt")
    ckpt = write_checkpoint(store, "step-10.ckpt", archive("committed weights"), step=10)
    committed = str(tmp_path / "ckpt" / "step-10.ckpt")
    ref = checkpoint_reference(committed)  # read from its commit marker, not by hashing the file again
    assert (ref["sha256"], ref["hash_of"], ref["size"], ref["step"]) == (
        ckpt.sha256,
        "commit marker",
        ckpt.file_size,
        10,
    )
    store.put_bytes("step-10.ckpt", with_marker(store.get_bytes("step-10.ckpt"), b"{garbage"))
    assert "commit marker is not valid" in checkpoint_reference(committed)["error"]
    assert checkpoint_reference(str(tmp_path / "missing"))["sha256"] is None


def test_checkpoint_references_track_roles(tmp_path: Any) -> None:
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    best.write_bytes(b"b")
    last.write_bytes(b"l")

    class Callback:
        best_model_path, last_model_path, best_model_score, monitor = (
            str(best),
            str(last),
            torch.tensor(0.5),
            "loss",
        )

    refs = CheckpointReferences()
    roles = refs.record(Callback())
    tags = refs.tags(roles)
    assert tags["checkpoint.best.uri"] == str(best) and tags["checkpoint.best.score"] == "0.5"
    assert tags["checkpoint.latest.sha256"] == sha256_file(str(last))
    refs.record(Callback())  # same files, same hashes: not recorded twice
    assert len(refs.records) == 2 and json.loads(refs.to_json())["checkpoints"][0]["roles"]


def test_dataset_specs() -> None:
    x = torch.arange(12.0).reshape(6, 2)
    spec = dataset_spec(TensorDataset(x, torch.zeros(6)))
    assert spec is not None and len(spec.digest) == 36 and json.loads(spec.profile or "{}") == {"num_rows": 6}
    assert spec.digest != dataset_spec(TensorDataset(x + 1, torch.zeros(6))).digest  # type: ignore[union-attr]

    class Described:
        digest, name, source = "d1g3st", "features", "s3://bucket/features.parquet"

    spec = dataset_spec(Described())
    assert spec is not None and (spec.name, spec.source_type) == ("features", "s3")
    assert dataset_spec(object()) is None
    assert make_spec("n", "x" * 64, "https://u:pw12345@h/x").source == '{"uri": "https://u:***@h/x"}'


def test_import_does_not_import_mlflow() -> None:
    code = "import sys, lightning_lib; from lightning_lib.loggers import MLFlowLogger; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- run context, status, the model copy -------------------------------------------------------------------
def test_git_tags_of_a_project_folder(tmp_path: Any) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "train.py").write_text("print(1)\n")
    git("add", "train.py")
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "init")
    git("remote", "add", "origin", "https://ci:ghp_abcdefghijklmnopqrstuvwxyz012345@git.example.com/p.git")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout
    tags = git_tags(tmp_path)
    assert tags["mlflow.source.git.commit"] == head.strip() and tags["git.dirty"] == "false"
    (tmp_path / "notes.txt").write_text("untracked files do not make it dirty")
    assert git_tags(tmp_path)["git.dirty"] == "false"
    (tmp_path / "train.py").write_text("print(2)\n")
    assert git_tags(tmp_path)["git.dirty"] == "true"
    with pytest.warns(RuntimeWarning):
        scrubbed = dict(prepare_tags(tags))
    assert "ghp_" not in scrubbed["mlflow.source.git.repoURL"]
    assert git_tags(tmp_path / "missing") == {}


def test_environment_tags_end_with_the_registered_orchestrators(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_lib.utilities.orchestration import (
        Orchestrator,
        register_orchestrator,
        unregister_orchestrator,
    )

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    register_orchestrator(
        Orchestrator("test-scheduler", run_tags=lambda: {"scheduler.job": "42", "seed": "from-scheduler"})
    )
    try:
        tags = environment_tags(tmp_path)
    finally:
        unregister_orchestrator("test-scheduler")
    assert tags["scheduler.job"] == "42" and "lightning_lib.version" in tags
    assert tags["seed"] == "from-scheduler"  # the orchestrator's tags come last, as the run's context
    assert "scheduler.job" not in environment_tags(tmp_path)


def test_final_status_comes_from_the_exception(tmp_path: Any) -> None:
    logger = MLFlowLogger(save_dir=str(tmp_path))
    assert final_status(logger, "success") == "FINISHED"
    assert final_status(logger, "failed") == "FAILED"
    from lightning_lib.utilities.exceptions import SIGTERMException

    for exc, status in (
        (KeyboardInterrupt(), "KILLED"),
        (SIGTERMException(143), "KILLED"),
        (ValueError(), "FAILED"),
    ):
        logger._exception_status = None
        try:
            raise exc
        except BaseException:  # finalize("failed") runs inside the Trainer's except block
            assert final_status(logger, "failed") == status
    logger._exception_status = None
    logger.log_exception(KeyboardInterrupt())  # said explicitly, outside any except block
    assert final_status(logger, "failed") == "KILLED"
    with pytest.raises(ValueError, match="run_key"):
        MLFlowLogger(run_key="has space")
    with pytest.raises(ValueError, match="log_model"):
        MLFlowLogger(log_model="best")  # type: ignore[arg-type]


def test_detached_copy_has_no_trainer_and_no_secret(tmp_path: Any) -> None:
    from tests.helpers import ClassifierModel

    model = ClassifierModel()
    model._hparams["api_key"] = "sk-abcdefghijklmnopqrstuvwx"
    model.trainer = object()  # type: ignore[assignment]
    path = tmp_path / "best.ckpt"
    weights = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save({"state_dict": weights}, path)
    assert set(best_weights(str(path)) or {}) == set(weights)
    assert best_weights(str(tmp_path / "missing.ckpt")) is None
    copy = detached_copy(model, best_weights(str(path)))
    assert copy._trainer is None and model._trainer is not None
    assert copy.hparams["api_key"] == "***" and model.hparams["api_key"].startswith("sk-")
    assert all(float(p.detach().abs().sum()) == 0 for p in copy.parameters())
    assert not copy.training


def test_an_absent_server_fails_fast_and_clearly() -> None:
    from tests.services import free_port

    logger = MLFlowLogger(tracking_uri=f"http://user:pw-123456@127.0.0.1:{free_port()}", startup_timeout=1)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="none answered within 1s") as info:
        _ = logger.run_id
    assert time.monotonic() - start < 10 and "pw-123456" not in str(info.value)
    assert MLFlowLogger(tracking_uri="file:/tmp/mlruns").save_dir == "/tmp/mlruns"


# ---- a new run is created by the sender thread (issue 13) --------------------------------------------------
def test_a_new_run_is_created_beside_training_and_the_client_waits_for_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextvars
    import threading

    from mlflow import MlflowClient

    from lightning_lib.utilities.orchestration import (
        Orchestrator,
        register_orchestrator,
        unregister_orchestrator,
    )

    gate = threading.Event()
    created_on: list[str] = []
    real_create = MlflowClient.create_run

    def slow_create(self: Any, *args: Any, **kwargs: Any) -> Any:
        created_on.append(threading.current_thread().name)
        gate.wait(10)
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_run", slow_create)
    flow_run: contextvars.ContextVar[str] = contextvars.ContextVar("flow_run", default="none")
    flow_run.set("run-7")  # an orchestrator's run context: read on the sender thread as on the caller's
    register_orchestrator(Orchestrator("test-scheduler", run_tags=lambda: {"scheduler.run": flow_run.get()}))
    try:
        logger = MLFlowLogger(save_dir=str(tmp_path / "mlruns"), log_metric_curves=False)
        client = logger.experiment  # what the Trainer touches before the first step: it does not wait
        logger.log_hyperparams({"lr": 0.1})
        logger.log_metrics({"loss": 1.5}, step=0)
        assert logger._run_id is None and isinstance(client, MlflowClient)
        threading.Timer(0.2, gate.set).start()
        assert client.get_experiment_by_name("lightning_logs") is not None  # waited for the run
        assert logger._run_id is not None and logger.version == logger.run_id == logger._run_id
        logger.finalize("success")
    finally:
        unregister_orchestrator("test-scheduler")
    assert created_on and created_on[0].startswith("mlflow-sender")
    run = client.get_run(str(logger.run_id))
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"loss": 1.5} and run.data.tags["scheduler.run"] == "run-7"
    assert logger.delivery_report is not None and logger.delivery_report.ok


def test_a_run_that_could_not_be_created_fails_the_next_log_call_and_finalize() -> None:
    from tests.services import free_port

    # the reachability check retries after 0.5 s and 1 s: with 2 s it gives up after about 1.5 s
    logger = MLFlowLogger(tracking_uri=f"http://127.0.0.1:{free_port()}", startup_timeout=2)
    logger.log_metrics({"loss": 1.0}, step=0)  # queued: the run is being created
    sender = logger._sender
    assert sender is not None
    with pytest.raises(ConnectionError, match="none answered within 2s"):
        sender.wait_open(30)
    with pytest.raises(ConnectionError, match="none answered within 2s"):
        logger.log_metrics({"loss": 0.5}, step=1)
    assert logger._sender is None and not logger._initialized  # the next use starts over
    logger.log_metrics({"loss": 0.2}, step=2)
    assert logger._sender is not None and logger._sender is not sender
    with pytest.raises(ConnectionError, match="none answered within 2s"):
        logger.finalize("success")  # waits for the new attempt, which fails the same way


def test_params_queued_for_a_run_that_could_not_be_created_reach_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(tracking_uri=uri, experiment_name="retry")
    real_open, attempts = logger._open_run, []

    def away_once() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("the server is away")
        return real_open()

    monkeypatch.setattr(logger, "_open_run", away_once)
    logger.log_hyperparams({"lr": 0.1})  # queued for the run being created, which fails
    sender = logger._sender
    assert sender is not None
    with pytest.raises(ConnectionError, match="away"):
        sender.wait_open(30)
    with pytest.raises(ConnectionError, match="away"):
        logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})  # the same values again: not "already logged"
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.finalize("success")
    run = MlflowClient(uri).get_run(str(logger.run_id))
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"loss": 0.5}
