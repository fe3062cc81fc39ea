"""ShardedParquetDataModule: every row once per epoch (with and without workers, across ranks), seeded
order, partition windows, bad input refused before training, S3 over HTTP, and exact mid-epoch resume,
in-process and after a SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import lightning_lib as pl
from datamodules import ShardedParquetDataModule, _stream
from tests.datamodules.parquet_data import DAYS, FEATURES, shard_table, write_dataset
from tests.helpers import ClassifierModel, Crash, CrashAfter, quiet_trainer_kwargs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("parquet") / "train"
    return root, write_dataset(root)


def module(source: Any, **overrides: Any) -> ShardedParquetDataModule:
    kwargs: dict[str, Any] = {
        "features": ["id", "f0"],
        "target": "label",
        "batch_size": 10,
        "shuffle_buffer": 30,
        "seed": 3,
    }
    kwargs.update(overrides)
    return ShardedParquetDataModule(str(source), **kwargs)


def train_loader(source: Any, **overrides: Any) -> _stream.ParquetStreamLoader:
    dm = module(source, **overrides)
    dm.setup("fit")
    return dm.train_dataloader()


def ids(batches: list[tuple[torch.Tensor, ...]]) -> list[int]:
    return [int(i) for batch in batches for i in batch[0][:, 0].tolist()]


def same_batches(ours: list[tuple[torch.Tensor, ...]], theirs: list[tuple[torch.Tensor, ...]]) -> bool:
    return len(ours) == len(theirs) and all(
        len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b)) for a, b in zip(ours, theirs)
    )


# -- every row, once ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_every_row_exactly_once_per_epoch(data: tuple[Path, int], workers: int) -> None:
    root, rows = data
    loader = train_loader(root, num_workers=workers)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-rows // 10)
        assert sorted(ids(batches)) == list(range(rows))
        assert sum(len(batch[0]) < 10 for batch in batches) == (rows % 10 != 0)
        assert all(batch[1].dtype == torch.int64 and batch[0].dtype == torch.float32 for batch in batches)


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_share_the_rows_without_overlap(data: tuple[Path, int], workers: int) -> None:
    root, rows = data
    world = 4  # 702 rows: 175 a rank and 2 left over in training, 175 or 176 in evaluation
    trained, evaluated = [], []
    for rank in range(world):
        dm = ShardedParquetDataModule(
            str(root), val=str(root), features=["id"], target="label", batch_size=10, num_workers=workers
        )
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=0)
        dm.setup("fit")
        trained.append(ids(list(dm.train_dataloader())))
        evaluated.append(ids(list(dm.val_dataloader())))
    # every rank takes the same number of training steps, and no row is served twice
    assert {len(share) for share in trained} == {rows // world}
    assert len({i for share in trained for i in share}) == rows // world * world
    # evaluation serves every row once
    assert sorted(i for share in evaluated for i in share) == list(range(rows))
    assert max(map(len, evaluated)) - min(map(len, evaluated)) <= 1


def test_drop_last_serves_only_full_batches(data: tuple[Path, int]) -> None:
    root, rows = data
    batches = list(train_loader(root, drop_last=True, num_workers=0))
    assert len(batches) == rows // 10
    assert all(len(batch[0]) == 10 for batch in batches)
    assert len(set(ids(batches))) == rows // 10 * 10


def test_evaluation_reads_in_file_order(data: tuple[Path, int]) -> None:
    root, rows = data
    dm = ShardedParquetDataModule(val=str(root), features=["id"], target="label", batch_size=64)
    dm.setup("validate")
    assert ids(list(dm.val_dataloader())) == list(range(rows))


# -- order ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_order_is_seeded_and_changes_every_epoch(data: tuple[Path, int], workers: int) -> None:
    root, _ = data
    first, again = train_loader(root, num_workers=workers), train_loader(root, num_workers=workers)
    epochs = [ids(list(first)) for _ in range(3)]
    assert [ids(list(again)) for _ in range(3)] == epochs
    assert len({tuple(order) for order in epochs}) == 3
    other_seed = train_loader(root, num_workers=workers, seed=4)
    assert ids(list(other_seed)) != epochs[0]
    # shuffled across shards: the first batch draws on more than one file
    assert len({i // 37 for i in epochs[0][:10]}) > 1


def test_set_epoch_restarts_an_epoch(data: tuple[Path, int]) -> None:
    root, _ = data
    loader = train_loader(root)
    epochs = [ids(list(loader)) for _ in range(2)]
    loader.set_epoch(0)
    assert ids(list(loader)) == epochs[0]
    assert ids(list(loader)) == epochs[1]


def test_unshuffled_training_keeps_file_order(data: tuple[Path, int]) -> None:
    root, rows = data
    assert ids(list(train_loader(root, shuffle=False))) == list(range(rows))


# -- partitions -----------------------------------------------------------------------------------


def test_partition_window_selects_shards_and_sources(data: tuple[Path, int]) -> None:
    root, _ = data
    dm = module(root, since=DAYS[1], until=DAYS[2])
    dm.setup("fit")
    days = {int(i) for i in ids(list(dm.train_dataloader()))}
    whole = pq.read_table(root / f"dt={DAYS[1]}").column("id").to_pylist()
    assert days == set(whole)
    assert dm.data_sources() == [f"{root}/dt={DAYS[1]}"]
    assert module(root, since=DAYS[1]).data_sources() == [f"{root}/dt={DAYS[1]}", f"{root}/dt={DAYS[2]}"]
    assert module(root).data_sources() == [str(root)]


def test_an_empty_window_and_a_path_without_partition_are_refused(
    data: tuple[Path, int], tmp_path: Path
) -> None:
    root, _ = data
    with pytest.raises(ValueError, match=r"2027-01-01 <= dt < 2027-02-01 under .*found none"):
        module(root, since="2027-01-01", until="2027-02-01").prepare_data()
    flat = tmp_path / "flat"
    flat.mkdir()
    pq.write_table(shard_table(0, 5, seed=0), flat / "part-0.parquet")
    with pytest.raises(ValueError, match=r"dt=VALUE folder .*part-0.parquet"):
        module(flat, since="2026-12-01").prepare_data()


# -- bad input ------------------------------------------------------------------------------------


def _copy_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_dataset(root, days=DAYS[:1], parts=2)
    return root


def test_missing_source_and_source_without_parquet(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train source .*nowhere does not exist"):
        module(tmp_path / "nowhere").prepare_data()
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "rows.csv").write_text("a,b\n1,2\n")
    (tmp_path / "csv" / "_hidden.parquet").write_text("not data")
    with pytest.raises(
        ValueError, match=r"Expected Parquet files .* under the train source .*csv, found none"
    ):
        module(tmp_path / "csv").setup("fit")


def test_unreadable_shard_is_named(tmp_path: Path) -> None:
    root = _copy_dataset(tmp_path)
    bad = root / f"dt={DAYS[0]}" / "part-9.parquet"
    bad.write_bytes(b"this is not a parquet file")
    with pytest.raises(
        ValueError, match=rf"train shard {re.escape(str(bad))} is not a readable Parquet file"
    ):
        module(root).prepare_data()


def test_schema_change_names_both_shards_and_the_column(tmp_path: Path) -> None:
    root = _copy_dataset(tmp_path)
    changed = root / f"dt={DAYS[0]}" / "part-1.parquet"
    table = pq.read_table(changed)
    table = table.set_column(table.schema.get_field_index("f3"), "f3", table.column("f3").cast(pa.float64()))
    pq.write_table(table, changed)
    with pytest.raises(ValueError) as info:
        module(root).prepare_data()
    message = str(info.value)
    assert "part-0.parquet" in message and str(changed) in message
    assert "'f3' is float in the first and double in the second" in message


def test_missing_and_wrong_columns_are_named(tmp_path: Path) -> None:
    root = _copy_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"feature columns \['nope'\]"):
        module(root, features=["f0", "nope"]).setup("fit")
    with pytest.raises(ValueError, match=r"target column 'class'"):
        module(root, target="class").setup("fit")
    # prediction may lack the target
    dm = ShardedParquetDataModule(predict=str(root), features=["f0"], target="class", batch_size=4)
    dm.setup("predict")
    assert all(len(batch) == 1 for batch in dm.predict_dataloader())
    text = tmp_path / "text"
    text.mkdir()
    pq.write_table(pa.table({"f0": [1.0, 2.0], "name": ["a", "b"], "label": [0, 1]}), text / "a.parquet")
    with pytest.raises(ValueError, match=r"numeric feature columns, received 'name' of type string"):
        module(text, features=["f0", "name"]).setup("fit")
    pq.write_table(pa.table({"f0": [1.0, None], "label": [0, 1]}), text / "a.parquet")
    with pytest.raises(ValueError, match=r"1 null\(s\) in column 'f0' of the train shard .*a.parquet"):
        module(text, features=["f0"]).setup("fit")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "Expected batch_size >= 1, received 0."),
        ({"num_workers": -1}, "Expected num_workers >= 0, received -1."),
        ({"shuffle_buffer": 0}, "Expected shuffle_buffer >= 1 (rows), received 0."),
        ({"features": []}, "Expected features to be a non-empty list"),
        ({"features": ["label"]}, "Expected the target 'label' not to be one of the features"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "Expected since < until"),
        ({"since": "{window_start}"}, "Expected since to be a partition value like '2026-12-01'"),
    ],
)
def test_arguments_are_checked_up_front(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        module("/nowhere", **overrides)


def test_bad_input_fails_before_training(tmp_path: Path) -> None:
    root = _copy_dataset(tmp_path)
    (root / f"dt={DAYS[0]}" / "part-5.parquet").write_bytes(b"PAR1 broken")
    model = ClassifierModel()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = pl.Trainer(**quiet_trainer_kwargs(tmp_path, max_epochs=1))
    with pytest.raises(ValueError, match=r"part-5\.parquet is not a readable Parquet file"):
        trainer.fit(model, datamodule=module(root, features=FEATURES))
    assert trainer.global_step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# -- standardisation, serving and state -----------------------------------------------------------


def test_standardisation_matches_the_data_and_the_preprocessor(data: tuple[Path, int]) -> None:
    root, _ = data
    whole = pq.read_table(root, columns=FEATURES)  # reading it whole is fine for the test's check
    values = np.stack([whole.column(c).to_numpy().astype(np.float64) for c in FEATURES], axis=1)
    dm = ShardedParquetDataModule(
        str(root), val=str(root), features=FEATURES, target="label", standardize=True, batch_size=16
    )
    dm.setup("fit")
    first_val = next(iter(dm.val_dataloader()))[0]
    state = dm.state_dict()
    assert torch.allclose(state["mean"].double(), torch.from_numpy(values.mean(0)), rtol=1e-6)
    assert torch.allclose(state["std"].double(), torch.from_numpy(values.std(0, ddof=1)), rtol=1e-5)
    raw = torch.from_numpy(values[:16].astype(np.float32))
    preprocessor = dm.preprocessor()
    assert torch.equal(preprocessor(raw), first_val)
    exported = torch.export.export(preprocessor, (raw,))
    assert torch.equal(exported.module()(raw), first_val)
    example = dm.serving_example()
    assert example.dtype == torch.float32 and example.shape == (8, len(FEATURES))
    assert torch.equal(example, raw[:8])

    # a fresh module restored from a weights_only checkpoint needs no pass over the data
    path = root.parent / "dm-state.pt"
    torch.save(state, path)
    restored = ShardedParquetDataModule("/not/read", features=FEATURES, target="label", standardize=True)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(restored.preprocessor()(raw), first_val)
    assert torch.equal(restored.serving_example(), example)
    with pytest.raises(ValueError, match="features"):
        ShardedParquetDataModule("/x", features=["f0"]).load_state_dict(state)


def test_without_standardisation_the_preprocessor_converts_to_float32(data: tuple[Path, int]) -> None:
    root, _ = data
    dm = module(root)
    rows = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    assert torch.equal(dm.preprocessor()(rows), rows.float())
    assert dm.state_dict() == {"features": ["id", "f0"]}


# -- exact resume, loader level -------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_state_resumes_the_epoch_exactly(data: tuple[Path, int], workers: int) -> None:
    root, _ = data
    loader = train_loader(root, num_workers=workers)
    epochs = [list(loader) for _ in range(3)]
    count = len(epochs[1])
    for cut in (0, 1, 5, count - 1, count):
        original = train_loader(root, num_workers=workers)
        original.set_epoch(1)
        iterator = iter(original)
        for _ in range(cut):
            next(iterator)
        state = original.state_dict()
        assert state["epoch"] == 1 and state["batches"] == cut
        resumed = train_loader(root, num_workers=workers)
        resumed.load_state_dict(state)
        assert same_batches(list(resumed), epochs[1][cut:]), f"cut {cut}"
        assert same_batches(list(resumed), epochs[2]), f"cut {cut}, next epoch"


def test_resume_reads_only_the_window_in_progress(
    data: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = data
    loader = train_loader(root)
    count = len(list(loader))
    iterator = iter(loader)
    for _ in range(count - 1):
        next(iterator)
    read: list[int] = []
    original = _stream._Reader.read

    def counting(self: Any, pieces: Any) -> Any:
        read.append(sum(piece.rows for piece in pieces))
        return original(self, pieces)

    monkeypatch.setattr(_stream._Reader, "read", counting)
    resumed = train_loader(root)
    resumed.load_state_dict(loader.state_dict())
    assert len(list(resumed)) == 1
    largest_row_group = 8 + 5 * 3
    assert len(read) == 1 and read[0] < 30 + largest_row_group


def test_a_differently_cut_stream_is_refused(data: tuple[Path, int]) -> None:
    root, _ = data
    state = train_loader(root, num_workers=0).state_dict()
    with pytest.raises(ValueError, match="num_workers was 0, now 2"):
        train_loader(root, num_workers=2).load_state_dict(state)


def test_loader_state_is_plain_data(data: tuple[Path, int], tmp_path: Path) -> None:
    root, _ = data
    loader = train_loader(root)
    next(iter(loader))
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True) == loader.state_dict()


# -- exact resume, Trainer ------------------------------------------------------------------------

EPOCH_BATCHES = -(-702 // 16)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("splits")
    write_dataset(root / "train")
    write_dataset(root / "val", days=DAYS[:1], parts=1)
    return str(root / "train"), str(root / "val")


def trained_module(splits: tuple[str, str], workers: int) -> ShardedParquetDataModule:
    train, val = splits
    return ShardedParquetDataModule(
        train,
        val,
        features=FEATURES,
        target="label",
        batch_size=16,
        num_workers=workers,
        shuffle_buffer=50,
        seed=4,
        standardize=True,
    )


def _fit(root: Path, splits: tuple[str, str], workers: int, crash_at: int | None, ckpt_path: Any) -> Any:
    pl.seed_everything(21)
    model = ClassifierModel(dropout=0.3)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=root / "ckpt", every_n_train_steps=5, save_top_k=-1, save_last=True
    )
    callbacks: list[Any] = [checkpoint] + ([CrashAfter(crash_at)] if crash_at is not None else [])
    trainer = pl.Trainer(
        callbacks=callbacks,
        **quiet_trainer_kwargs(root, max_epochs=2, enable_checkpointing=True, limit_val_batches=2),
    )
    if crash_at is None:
        trainer.fit(model, datamodule=trained_module(splits, workers), ckpt_path=ckpt_path)
    else:
        with pytest.raises(Crash):
            trainer.fit(model, datamodule=trained_module(splits, workers), ckpt_path=ckpt_path)
    return [p.detach().clone() for p in model.parameters()], trainer


@pytest.mark.parametrize("workers", [0, 2])
def test_trainer_resumes_mid_epoch_bit_identical(
    tmp_path: Path, splits: tuple[str, str], workers: int
) -> None:
    reference, ref_trainer = _fit(tmp_path / "ref", splits, workers, None, None)
    assert ref_trainer.global_step == 2 * EPOCH_BATCHES
    # the last checkpoint is at step 15: an odd number of batches, so with two workers the resumed
    # loader must also hand worker 0 the stream whose turn was next
    _fit(tmp_path / "run", splits, workers, 18, None)
    weights, trainer = _fit(tmp_path / "run", splits, workers, None, "last")
    assert trainer.global_step == ref_trainer.global_step
    for ours, ref in zip(weights, reference):
        assert torch.equal(ours, ref)


# -- SIGKILL and resume ---------------------------------------------------------------------------


def _job(splits: tuple[str, str], root: Path, workers: int, *extra: str) -> subprocess.Popen[str]:
    args = [
        sys.executable, "-m", "tests.scripts.parquet_train_job", splits[0], splits[1], str(root),
        "--workers", str(workers), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _run_until(job: subprocess.Popen[str], kill_at: int | None) -> tuple[int | None, list[str]]:
    """Read ``step N`` lines; SIGKILL the job once it reports ``kill_at``. Returns its first step."""
    assert job.stdout is not None
    first: int | None = None
    lines = []
    for line in job.stdout:
        lines.append(line.rstrip())
        match = re.fullmatch(r"step (\d+)", line.strip())
        if match:
            step = int(match.group(1))
            first = step if first is None else first
            if kill_at is not None and step >= kill_at:
                job.send_signal(signal.SIGKILL)
                break
    job.wait(timeout=300)
    return first, lines


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(
    tmp_path: Path, splits: tuple[str, str], workers: int
) -> None:
    reference = _job(splits, tmp_path / "ref", workers, "--out", str(tmp_path / "ref.pt"))
    _, ref_lines = _run_until(reference, None)
    assert reference.returncode == 0, "\n".join(ref_lines[-30:])
    run = tmp_path / "run"
    resumed_at = []
    for kill_at, resume in ((23, False), (EPOCH_BATCHES + 19, True)):
        job = _job(splits, run, workers, *(["--resume"] if resume else []))
        first, lines = _run_until(job, kill_at)
        assert job.returncode == -signal.SIGKILL, "\n".join(lines[-30:])
        resumed_at.append((first or 1) - 1)
        time.sleep(0.1)
    job = _job(splits, run, workers, "--resume", "--out", str(tmp_path / "run.pt"))
    first, lines = _run_until(job, None)
    assert job.returncode == 0, "\n".join(lines[-30:])
    resumed_at.append((first or 1) - 1)
    # each restart went on from a checkpoint inside an epoch, not from an epoch's start
    assert resumed_at[0] == 0
    assert 0 < resumed_at[1] < EPOCH_BATCHES < resumed_at[2] < 2 * EPOCH_BATCHES, resumed_at
    assert all(step % EPOCH_BATCHES for step in resumed_at[1:]), resumed_at
    ours = torch.load(tmp_path / "run.pt", weights_only=True)
    expected = torch.load(tmp_path / "ref.pt", weights_only=True)
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        assert torch.equal(a, b), "resumed weights differ from the uninterrupted run"


# -- S3 -------------------------------------------------------------------------------------------


@pytest.fixture
def s3_data(s3_endpoint: str, data: tuple[Path, int]) -> str:
    from lightning_lib.storage import S3Store

    root, _ = data
    uri = f"{s3_endpoint}/{uuid.uuid4().hex}/train"
    store = S3Store(uri)
    for path in sorted(root.rglob("*.parquet")):
        store.put_file(path.relative_to(root).as_posix(), str(path))
    store.put_bytes("_SUCCESS", b"")
    return uri


@pytest.mark.services
@pytest.mark.parametrize("workers", [0, 2])
def test_s3_prefix_streams_like_the_local_folder(s3_data: str, data: tuple[Path, int], workers: int) -> None:
    root, rows = data
    local = train_loader(root, num_workers=workers)
    remote = train_loader(s3_data, num_workers=workers)
    for _ in range(2):
        batches = list(remote)
        assert sorted(ids(batches)) == list(range(rows))
        assert same_batches(batches, list(local))
    window = module(s3_data, since=DAYS[2])
    assert window.data_sources() == [f"{s3_data}/dt={DAYS[2]}"]
    state = remote.state_dict()
    state["epoch"], state["batches"] = 1, 7
    again = train_loader(s3_data, num_workers=workers)
    again.load_state_dict(state)
    local.set_epoch(1)
    assert same_batches(list(again), list(local)[7:])


@pytest.mark.services
def test_s3_bad_input_is_named(s3_endpoint: str, s3_data: str) -> None:
    from lightning_lib.storage import S3Store

    missing = f"{s3_endpoint}/{uuid.uuid4().hex}/train"
    with pytest.raises(FileNotFoundError, match=rf"train source {re.escape(missing)} does not exist"):
        module(missing).prepare_data()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        module(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/train").prepare_data()
    S3Store(s3_data).put_bytes(f"dt={DAYS[0]}/part-9.parquet", b"not parquet at all")
    with pytest.raises(
        ValueError, match=rf"{re.escape(s3_data)}/dt={DAYS[0]}/part-9.parquet is not a readable"
    ):
        module(s3_data).prepare_data()
