"""Bad checkpoint input at the Trainer level, and checkpoints on S3 through the Trainer's own API.

Every bad ``ckpt_path`` (a truncated file, a flipped byte, a committed file missing part of its body or
with an invalid marker, a missing file, a pickled object, a bucket that does not exist, no credentials)
must give an error that says what is wrong, raised before a single batch runs, and leave every committed
checkpoint as it was (the folders are hashed before and after). ``ckpt_path="last"`` with a corrupt newest
checkpoint warns and resumes from the one before. On S3, ModelCheckpoint keeps its ``save_top_k``
best, deleting a displaced checkpoint only after its replacement committed, and "best" / explicit
URIs load from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_lib as pl
from lightning_lib.checkpoint import (
    CheckpointFallbackWarning,
    CorruptCheckpointError,
    list_committed,
    read_manifest,
)
from lightning_lib.checkpoint._format import load_file
from lightning_lib.storage import BucketNotFound, LocalStore, MissingCredentialsError, open_store
from tests.helpers import ClassifierModel, classification_data
from tests.support import CountingModel, loader, trainer_kwargs, with_marker


# ---- helpers -------------------------------------------------------------------------------------------------
def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones included), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _s3_digest(uri: str) -> dict[str, tuple[int, str]]:
    """Size and ETag of every object under an ``s3://bucket/prefix``."""
    import boto3

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: (o["Size"], o["ETag"]) for page in pages for o in page.get("Contents", [])}


def _committed_source(root: Path, steps: int = 3) -> list[str]:
    """A folder of ``steps`` committed checkpoints (one per step) from a short fit; oldest first."""
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(
        **trainer_kwargs(
            root.parent / "source-run",
            limit_train_batches=steps,
            enable_checkpointing=True,
            callbacks=[checkpoint],
        )
    )
    trainer.fit(CountingModel(), loader(), loader(seed=1))
    committed = [c.uri for c in list_committed(LocalStore(root))]
    assert len(committed) == steps
    return committed


def _unseal(path: Path) -> None:
    """Turn a committed file back into what torch.save wrote: a plain file without a commit marker."""
    ckpt = read_manifest(LocalStore(path.parent), path.name)
    assert ckpt is not None
    path.write_bytes(path.read_bytes()[: ckpt.size] + b"\x00\x00")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


class Pickled:
    """A user class in a checkpoint: loading it would run pickle, which weights_only=True refuses."""

    loaded = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        Pickled.loaded = True  # would mean the checkpoint executed code on load
        self.__dict__.update(state)


def _run(fn: str, tmp_path: Path, ckpt_path: Any, **extra: Any) -> tuple[CountingModel, pl.Trainer]:
    """``fit`` or ``validate`` with ``ckpt_path``, expected to raise before any batch runs."""
    model = CountingModel()
    run_dir = tmp_path / "run"
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=run_dir / "ckpt", every_n_train_steps=1)
    trainer = pl.Trainer(
        **trainer_kwargs(run_dir, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint], **extra)
    )
    before = [p.detach().clone() for p in model.parameters()]
    try:
        if fn == "fit":
            trainer.fit(model, loader(), loader(seed=1), ckpt_path=ckpt_path)
        else:
            trainer.validate(model, loader(seed=1), ckpt_path=ckpt_path, verbose=False)
    finally:
        # whatever was raised, it was raised before the first batch
        assert model.train_steps == 0 and model.val_steps == 0
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
        assert not list_committed(LocalStore(run_dir / "ckpt"))
    return model, trainer


# ---- local bad input --------------------------------------------------------------------------------------
def _plain_file(tmp_path: Path) -> Path:
    model = CountingModel()
    trainer = pl.Trainer(**trainer_kwargs(tmp_path / "plain-run"))
    trainer.fit(model, loader())
    path = tmp_path / "plain" / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def _pickled_checkpoint(good: dict[str, Any]) -> dict[str, Any]:
    bad = dict(good)
    bad["hyper_parameters"] = {"payload": Pickled()}
    return bad


def case_truncated_file_head(tmp_path: Path) -> tuple[Path, Path]:
    path = _plain_file(tmp_path)
    path.write_bytes(path.read_bytes()[:100])  # only the start of the zip made it
    return path, path.parent


def case_truncated_file(tmp_path: Path) -> tuple[Path, Path]:
    path = _plain_file(tmp_path)
    _truncate(path)  # cut in the middle: the zip's central directory is gone
    return path, path.parent


def case_truncated_file_tail(tmp_path: Path) -> tuple[Path, Path]:
    path = _plain_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])  # a copy or download cut off just before its end
    return path, path.parent


def case_pickled_file(tmp_path: Path) -> tuple[Path, Path]:
    path = _plain_file(tmp_path)
    torch.save(_pickled_checkpoint(torch.load(path, weights_only=True)), path)
    return path, path.parent


def case_flipped_byte(tmp_path: Path) -> tuple[Path, Path]:
    uri = _committed_source(tmp_path / "src")[-1]
    _flip_byte(Path(uri))
    return Path(uri), tmp_path / "src"


def case_body_cut_committed(tmp_path: Path) -> tuple[Path, Path]:
    uri = _committed_source(tmp_path / "src")[-1]
    ckpt = read_manifest(LocalStore(tmp_path / "src"), Path(uri).name)
    assert ckpt is not None
    data = Path(uri).read_bytes()  # a copy that lost part of its body, its marker intact
    Path(uri).write_bytes(data[: ckpt.size // 2] + data[-ckpt.trailer_size :])
    return Path(uri), tmp_path / "src"


def case_invalid_manifest(tmp_path: Path) -> tuple[Path, Path]:
    uri = _committed_source(tmp_path / "src")[-1]
    path = Path(uri)
    path.write_bytes(with_marker(path.read_bytes(), b'{"format": "lightning_lib.checkpoint", "version"'))
    return path, tmp_path / "src"


def case_manifest_without_file(tmp_path: Path) -> tuple[Path, Path]:
    uri = _committed_source(tmp_path / "src")[-1]
    Path(uri).unlink()
    return Path(uri), tmp_path / "src"


def case_pickled_committed(tmp_path: Path) -> tuple[Path, Path]:
    from lightning_lib.checkpoint import write_checkpoint

    uri = _committed_source(tmp_path / "src")[-1]
    good = load_file(uri)
    staged = tmp_path / "staged.ckpt"
    torch.save(_pickled_checkpoint(good), staged)
    # committed properly, marker and all: the hashes match, the content is what is refused
    write_checkpoint(LocalStore(tmp_path / "src"), "pickled.ckpt", str(staged), step=99)
    return tmp_path / "src" / "pickled.ckpt", tmp_path / "src"


BAD_INPUT = [
    pytest.param(
        case_truncated_file_head,
        ValueError,
        r"Expected a readable torch checkpoint at '.*model\.ckpt'",
        id="truncated_file_head",
    ),
    pytest.param(
        case_truncated_file,
        ValueError,
        r"Expected a readable torch checkpoint at '.*model\.ckpt'",
        id="truncated_file_half",
    ),
    pytest.param(
        case_truncated_file_tail,
        ValueError,
        r"Expected a readable torch checkpoint at '.*model\.ckpt'",
        id="truncated_file_tail",
    ),
    pytest.param(
        case_pickled_file,
        ValueError,
        r"Refusing to load checkpoint '.*model\.ckpt'.*not plain data",
        id="pickled_file",
    ),
    pytest.param(
        case_flipped_byte,
        CorruptCheckpointError,
        r"epoch=0-step=3\.ckpt does not match its commit marker",
        id="flipped_byte",
    ),
    pytest.param(
        case_body_cut_committed,
        CorruptCheckpointError,
        r"does not match its commit marker: expected \d+ bytes",
        id="body_cut_committed",
    ),
    pytest.param(
        case_invalid_manifest,
        CorruptCheckpointError,
        r"commit marker of .*epoch=0-step=3\.ckpt is not valid",
        id="invalid_manifest",
    ),
    pytest.param(
        case_manifest_without_file,
        FileNotFoundError,
        r"Checkpoint file not found: .*epoch=0-step=3\.ckpt\. Expected ckpt_path to be .*an existing checkpoint file",
        id="manifest_without_file",
    ),
    pytest.param(
        case_pickled_committed,
        ValueError,
        r"Refusing to load checkpoint '.*pickled\.ckpt'.*not plain data",
        id="pickled_committed",
    ),
]


@pytest.mark.parametrize("fn", ["fit", "validate"])
@pytest.mark.parametrize(("make", "error", "message"), BAD_INPUT)
def test_bad_ckpt_path_fails_clearly_before_any_work(
    tmp_path: Path, fn: str, make: Callable[[Path], tuple[Path, Path]], error: type, message: str
) -> None:
    ckpt_path, folder = make(tmp_path)
    before = _digest(folder)
    Pickled.loaded = False
    with pytest.raises(error, match=message):
        _run(fn, tmp_path, ckpt_path)
    assert not Pickled.loaded
    assert _digest(folder) == before  # nothing was repaired, deleted or rewritten


def test_last_falls_back_past_a_corrupt_newest_checkpoint(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _, previous, newest = _committed_source(source)
    _flip_byte(Path(newest))
    before = _digest(source)

    started_at: list[int] = []

    class Probe(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            started_at.append(trainer.global_step)

    model = CountingModel()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=source, every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(
        **trainer_kwargs(
            tmp_path / "run",
            limit_train_batches=4,
            enable_checkpointing=True,
            callbacks=[checkpoint, Probe()],
        )
    )
    with pytest.warns(
        CheckpointFallbackWarning,
        match=r"epoch=0-step=3\.ckpt \(step 3\) cannot be used: .*does not match its commit marker.*Falling back",
    ):
        trainer.fit(model, loader(), loader(seed=1), ckpt_path="last")
    assert trainer.ckpt_path == previous
    assert started_at == [2]
    assert model.train_steps == 2  # batches 3 and 4: nothing before the fall-back point ran again
    after = _digest(source)
    assert {k: after.get(k) for k in before} == before  # the corrupt one and the others untouched
    # the step-3 checkpoint was written again, under a fresh name beside the corrupt one
    names = {c.name for c in list_committed(LocalStore(source))}
    assert {"epoch=0-step=3-v1.ckpt", "epoch=0-step=4.ckpt"} <= names


def test_last_ignores_an_uncommitted_newest_checkpoint(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _, previous, newest = _committed_source(source)
    _unseal(Path(newest))  # a plain file (a user's, pytorch_lightning's): not a committed checkpoint
    model = CountingModel()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=source, every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(
        **trainer_kwargs(
            tmp_path / "run", limit_train_batches=3, enable_checkpointing=True, callbacks=[checkpoint]
        )
    )
    trainer.fit(model, loader(), loader(seed=1), ckpt_path="last")
    assert trainer.ckpt_path == previous
    assert model.train_steps == 1


def test_an_explicit_path_without_a_marker_loads_as_a_plain_lightning_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    newest = _committed_source(source)[-1]
    expected = load_file(newest)
    _unseal(Path(newest))  # a file like pytorch_lightning's own: nothing to verify it against
    assert load_file(newest)["global_step"] == expected["global_step"] == 3


# ---- S3 bad input --------------------------------------------------------------------------------------------
@pytest.mark.services
@pytest.mark.parametrize("fn", ["fit", "validate"])
def test_s3_bucket_that_does_not_exist(tmp_path: Path, s3_endpoint: str, fn: str) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    with pytest.raises(BucketNotFound, match=rf"The S3 bucket '{bucket}' does not exist"):
        _run(fn, tmp_path, f"s3://{bucket}/run/ckpt/epoch=0-step=1.ckpt")


@pytest.mark.services
def test_s3_checkpoint_folder_in_a_bucket_that_does_not_exist(tmp_path: Path, s3_endpoint: str) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    model = CountingModel()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=f"s3://{bucket}/run/ckpt", every_n_train_steps=1)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, enable_checkpointing=True, callbacks=[checkpoint]))
    with pytest.raises(BucketNotFound, match=rf"The S3 bucket '{bucket}' does not exist"):
        trainer.fit(model, loader(), ckpt_path="last")
    assert model.train_steps == 0


@contextlib.contextmanager
def _without_credentials(tmp_path: Path) -> Iterator[None]:
    """The moto endpoint stays; every credential source boto3 could consult is empty or disabled."""
    import botocore.session

    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_CONFIG_FILE", str(empty))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        env.setenv("BOTO_CONFIG", str(empty))  # botocore's legacy boto2 config provider
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        assert os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:")
        # the test's precondition: nothing in this environment resolves to credentials
        assert botocore.session.get_session().get_credentials() is None
        yield


@pytest.mark.services
@pytest.mark.parametrize("fn", ["fit", "validate"])
def test_s3_without_credentials(tmp_path: Path, s3_endpoint: str, fn: str) -> None:
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    uri = f"{s3_endpoint}/{uuid.uuid4().hex}/manual.ckpt"
    trainer = pl.Trainer(**trainer_kwargs(tmp_path / "source"))
    trainer.fit(CountingModel(), loader())
    trainer.save_checkpoint(uri)
    before = _s3_digest(uri)
    assert before
    with _without_credentials(tmp_path):
        with pytest.raises(MissingCredentialsError, match=r"No usable AWS credentials to read s3://") as info:
            _run(fn, tmp_path, uri)
        assert secret not in str(info.value)
    assert _s3_digest(uri) == before


# ---- ModelCheckpoint and save_checkpoint on S3 -----------------------------------------------------------
class ScriptedScore(ClassifierModel):
    """Logs a validation score fixed per epoch, so which checkpoints are the top k is known."""

    SCORES = [0.5, 0.3, 0.4, 0.1, 0.2]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self.log("score", self.SCORES[self.current_epoch])


class CommittedWatcher(threading.Thread):
    """Lists the committed checkpoints under an S3 prefix as fast as it can, recording every view."""

    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        import boto3

        self.bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.prefix = prefix + "/"
        self.client = boto3.client("s3")
        self.views: list[frozenset[str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
            # a checkpoint file is published whole, sealed: listed means committed
            keys = [o["Key"] for o in listing.get("Contents", [])]
            self.views.append(frozenset(k[len(self.prefix) :] for k in keys if k.endswith(".ckpt")))
            time.sleep(0.005)


@pytest.mark.services
def test_s3_model_checkpoint_keeps_top_k_and_tests_best(tmp_path: Path, s3_endpoint: str) -> None:
    dirpath = f"{s3_endpoint}/{uuid.uuid4().hex}/ckpt"
    pl.seed_everything(1)
    # ~10 MB checkpoints: each upload takes long enough for the watcher to see the commit order
    model = ScriptedScore(hidden=20_000)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=dirpath, monitor="score", mode="min", save_top_k=2, filename="{epoch}-{score:.2f}"
    )
    trainer = pl.Trainer(
        **trainer_kwargs(
            tmp_path, max_epochs=5, limit_train_batches=2, enable_checkpointing=True, callbacks=[checkpoint]
        )
    )
    watcher = CommittedWatcher(dirpath)
    watcher.start()
    try:
        trainer.fit(
            model,
            DataLoader(classification_data(32), batch_size=8),
            DataLoader(classification_data(16, seed=1), batch_size=8),
        )
    finally:
        watcher.stop.set()
        watcher.join()

    committed = {c.name for c in list_committed(open_store(dirpath))}
    assert committed == {"epoch=3-score=0.10.ckpt", "epoch=4-score=0.20.ckpt"}
    assert set(checkpoint.best_k_models) == {f"{dirpath}/{name}" for name in committed}
    assert checkpoint.best_model_path == f"{dirpath}/epoch=3-score=0.10.ckpt"
    assert float(checkpoint.best_model_score) == pytest.approx(0.1)
    # retention: once two were committed, no moment ever showed fewer (the displaced one went after)
    views = watcher.views
    first_full = next(i for i, v in enumerate(views) if len(v) >= 2)
    assert min(len(v) for v in views[first_full:]) >= 2, [sorted(v) for v in views]
    # coalescing: a displaced checkpoint whose commit had not started was never uploaded; nothing else
    # ever appeared, and every save was either committed or superseded that way
    saved = {f"epoch={e}-score={s:.2f}.ckpt" for e, s in enumerate(ScriptedScore.SCORES)}
    assert set().union(*views) | committed <= saved
    stats = trainer._checkpoint_writer.stats
    assert stats.saves == 5 and stats.committed + stats.coalesced == 5 and stats.failed == 0

    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    trainer.test(
        model, DataLoader(classification_data(16, seed=2), batch_size=8), ckpt_path="best", verbose=False
    )
    assert trainer.ckpt_path == checkpoint.best_model_path
    best = load_file(checkpoint.best_model_path)["state_dict"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, best[name]), name


def _classifier_fit(root: Path, epochs: int, ckpt_path: Any = None) -> tuple[pl.Trainer, ClassifierModel]:
    model = ClassifierModel(dropout=0.3)
    trainer = pl.Trainer(**trainer_kwargs(root, max_epochs=epochs, limit_train_batches=6))
    train = DataLoader(classification_data(96, seed=0), batch_size=8, shuffle=True)
    trainer.fit(model, train, DataLoader(classification_data(16, seed=1), batch_size=8), ckpt_path=ckpt_path)
    return trainer, model


@pytest.mark.services
def test_s3_save_checkpoint_then_fit_resumes_exactly(tmp_path: Path, s3_endpoint: str) -> None:
    pl.seed_everything(11)
    _, reference = _classifier_fit(tmp_path / "ref", epochs=3)

    pl.seed_everything(11)
    first, _ = _classifier_fit(tmp_path / "first", epochs=1)
    uri = f"{s3_endpoint}/{uuid.uuid4().hex}/manual.ckpt"
    first.save_checkpoint(uri)
    assert [c.name for c in list_committed(open_store(uri.rpartition("/")[0]))] == ["manual.ckpt"]

    resumed, model = _classifier_fit(tmp_path / "second", epochs=3, ckpt_path=uri)
    assert resumed.ckpt_path == uri
    assert resumed.global_step == 18 and resumed.current_epoch == 3
    for ours, ref in zip(model.parameters(), reference.parameters()):
        assert torch.equal(ours, ref)


# ---- regressions found by these tests, fixed in lightning_lib ----------------------------------------
def test_restarts_from_last_do_not_accumulate_checkpoints(tmp_path: Path) -> None:
    dirpath = tmp_path / "ckpt"
    for epochs in (1, 2, 3, 4):  # a job preempted after every epoch, resumed each time
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=dirpath, save_top_k=0, save_last=True)
        trainer = pl.Trainer(
            **trainer_kwargs(tmp_path, max_epochs=epochs, enable_checkpointing=True, callbacks=[checkpoint])
        )
        trainer.fit(CountingModel(), loader(), ckpt_path="last" if epochs > 1 else None)
    committed = [c.name for c in list_committed(LocalStore(dirpath))]
    assert len(committed) == 1, committed


def test_cleanup_removes_what_aborted_local_writes_left_and_nothing_else(tmp_path: Path) -> None:
    dirpath = tmp_path / "ckpt"
    dirpath.mkdir()
    partial = dirpath / ".epoch=0-step=5.ckpt.lltmp-0123456789abcdef"  # a writer killed mid-copy
    partial.write_bytes(b"half a checkpoint")
    users = dirpath / "from-pytorch-lightning.ckpt"  # no marker: not ours to delete
    users.write_bytes(b"the user's own file")
    old = time.time() - 2 * 3600  # past ModelCheckpoint's default grace period
    for path in (partial, users):
        os.utime(path, (old, old))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=dirpath)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, enable_checkpointing=True, callbacks=[checkpoint]))
    trainer.fit(CountingModel(), loader())
    assert not partial.exists()
    assert users.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in dirpath.iterdir()) == [Path(checkpoint.best_model_path).name, users.name]
