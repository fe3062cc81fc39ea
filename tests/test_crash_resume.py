"""The crash test: SIGKILL a training job at random moments, restart it with ``ckpt_path="last"``.

A job (``tests/scripts/train_job.py``) runs in a subprocess and is killed at least five times, at
seeded random moments: some a few milliseconds after it announced that a checkpoint save started (so
the commit is still being serialised or uploaded), some at a random time into training. Each time it
is restarted with ``ckpt_path="last"``; when it finally completes, its weights must equal those of an
uninterrupted run bit for bit. After every kill the checkpoint folder is inspected while nothing runs:
every checkpoint file is committed (sealed with its marker) and verifies against it and loads with
``weights_only=True`` (the rotating "last.ckpt" is overwritten in place, so kills land in the middle of
overwrites too), and what the kill left half-written (temporary files, incomplete multipart uploads) is
gone once the next run has started, while a file the run did not write is never touched. Once on a
local folder, once on S3 (moto over HTTP).
"""

from __future__ import annotations

import io
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from lightning_lib.checkpoint import list_committed, read_verified
from lightning_lib.storage import open_store
from lightning_lib.storage._base import TEMP_MARKER

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# ~1.7M parameters: with Adam a checkpoint is ~20 MB, so a local commit takes ~0.1 s (more on S3)
# and a kill a few milliseconds after "save step N" lands while it is being written.
HIDDEN = 40_000
EPOCHS = 2  # 12 batches an epoch: 24 steps
EVERY = 2  # a save (best + last) every 2 steps: 12 save points, so 5 kills never run out of work
MIN_KILLS = 5
MIN_IN_FLIGHT = 2
# S3 parts of 5 MiB (S3's minimum) so a ~20 MB checkpoint goes up as a multipart upload.
S3_PART_MIB = 5
RUN_TIMEOUT = 240.0
# a file in the checkpoint folder that no writer of the run wrote (the user's): never deleted
FOREIGN = "from-pytorch-lightning.ckpt"


def _job_args(root: Path, dirpath: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "tests.scripts.train_job", str(root),
        "--dirpath", dirpath, "--max-epochs", str(EPOCHS), "--every", str(EVERY),
        "--hidden", str(HIDDEN), "--top-k", "1", "--orphan-grace", "0", *extra,
    ]  # fmt: skip


class Job:
    """A running train_job whose output lines are read on a thread, so waits can time out."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.started = time.time()
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        """The next line, or None once the job's output ended; fails the test past ``deadline``."""
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.kill()
            pytest.fail("the training job stopped making progress:\n" + "\n".join(self.output[-40:]))
        if line is not None:
            self.output.append(line)
        return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._reader.join(timeout=60)

    def finish(self) -> int:
        code = self.proc.wait(timeout=RUN_TIMEOUT)
        self._reader.join(timeout=60)
        while (line := self.lines.get()) is not None:
            self.output.append(line)
        return code


@dataclass
class Leftovers:
    """What a kill can leave half-written, each item identified so that a rewrite is a new item."""

    orphan_objects: set[tuple[str, int, float]] = field(default_factory=set)
    temp_files: set[str] = field(default_factory=set)
    uploads: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.orphan_objects or self.temp_files or self.uploads)

    def still_in(self, now: Leftovers) -> Leftovers:
        return Leftovers(
            self.orphan_objects & now.orphan_objects,
            self.temp_files & now.temp_files,
            self.uploads & now.uploads,
        )


class Folder:
    """Read-only inspection of the job's checkpoint folder, local or on S3."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath
        self.store = open_store(dirpath)

    def verify_committed(self) -> list[tuple[str, int]]:
        """Every committed checkpoint's bytes match its marker and load as plain data."""
        found = []
        for ckpt in list_committed(self.store):
            data = read_verified(self.store, ckpt)  # raises CorruptCheckpointError
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            assert checkpoint["global_step"] == ckpt.step, ckpt.uri
            found.append((ckpt.name, ckpt.step))
        return found

    def leftovers(self) -> Leftovers:
        objects = self.store.list()
        # a file under a name is published whole and sealed: one that is not committed is a bug
        kept = {c.name for c in list_committed(self.store)} | {FOREIGN}
        orphans = {(o.key, o.size, o.mtime) for o in objects if o.key not in kept}
        if self.dirpath.startswith("s3://"):
            import boto3

            bucket, _, prefix = self.dirpath[len("s3://") :].partition("/")
            listing = boto3.client("s3").list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/")
            return Leftovers(orphans, uploads={u["UploadId"] for u in listing.get("Uploads", [])})
        temp = set()
        for parent, _dirs, files in os.walk(self.dirpath):
            temp.update(os.path.join(parent, f) for f in files if TEMP_MARKER in f)
        return Leftovers(orphans, temp_files=temp)

    def plant(self) -> Leftovers:
        """What an earlier crashed run could have left (a partial upload), and a file of the user's."""
        self.store.put_bytes(FOREIGN, b"the user's own checkpoint, without a marker")
        if self.dirpath.startswith("s3://"):
            import boto3

            bucket, _, prefix = self.dirpath[len("s3://") :].partition("/")
            client = boto3.client("s3")
            key = f"{prefix}/epoch=9-step=98.ckpt"
            upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024)
        else:
            partial = Path(self.dirpath, f".epoch=9-step=98.ckpt{TEMP_MARKER}crashed")
            partial.write_bytes(b"half a checkpoint")
        time.sleep(0.05)  # older than the grace period of 0 s by the time the job looks
        planted = self.leftovers()
        assert planted.temp_files or planted.uploads, planted
        return planted


def _spill_dirs(tmpdir: Path) -> set[str]:
    """The checkpoint writer's local staging folders (it serialises there before uploading)."""
    return {p.name for p in tmpdir.iterdir() if p.name.startswith("lightning_lib-ckpt-")}


class Reference:
    """The same job run once without interruption (local checkpoints), alongside the crash runs."""

    def __init__(self, root: Path) -> None:
        self.out = root / "weights.pt"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.job = Job(_job_args(root, str(root / "ckpt"), "--out", str(self.out)), env)
        self._weights: list[torch.Tensor] | None = None

    def weights(self) -> list[torch.Tensor]:
        if self._weights is None:
            assert self.job.finish() == 0, "\n".join(self.job.output[-40:])
            self._weights = torch.load(self.out, weights_only=True)
        return self._weights


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    ref = Reference(tmp_path_factory.mktemp("reference"))
    yield ref
    ref.job.kill()


def _first_step(job: Job, deadline: float) -> int | None:
    while (line := job.next_line(deadline)) is not None:
        if match := re.fullmatch(r"step (\d+)", line):
            return int(match.group(1))
    return None


def _run_until_kill(
    job: Job, mode: str, rng: random.Random, window: tuple[float, float]
) -> tuple[bool, int | None]:
    """Kill ``job`` at a moment drawn for ``mode``; returns (killed, first step it trained)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    first = _first_step(job, deadline)
    if first is None:
        return False, None
    if mode == "save":
        # Each save point writes two checkpoints (best, then last); the second's "save step N" is
        # printed right after the first's commit started (on object storage, where commits run in the
        # background) or just before its own (a local folder, committed before the save returns), so a
        # kill shortly after it lands mid-commit.
        # At the second save point of this run the first one is committed (one commit in flight at a
        # time), so every such kill still leaves the restart further on than the last one.
        saves: list[int] = []
        while (line := job.next_line(deadline)) is not None:
            if match := re.fullmatch(r"save step (\d+)", line):
                saves.append(int(match.group(1)))
                if len(set(saves)) == 2 and saves[-1] == saves[-2]:
                    break
        if line is None:
            return False, first
        time.sleep(rng.uniform(*window))
    else:
        time.sleep(rng.uniform(0.1, 1.5))
    finished = job.proc.poll() is not None
    job.kill()
    return not finished, first


def _crash_and_resume(
    tmp_path: Path, dirpath: str, seed: int, window: tuple[float, float], reference: Reference
) -> None:
    rng = random.Random(seed)
    spill = tmp_path / "spill"
    spill.mkdir()
    # the writer stages checkpoints in the temp folder; pointing it here lets us see kills mid-commit
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(spill)}
    if dirpath.startswith("s3://"):
        extra = ["--s3-part-mib", str(S3_PART_MIB)]
    else:
        # a local commit of a test-sized model is too quick to hit reliably: hold each one open a while
        extra = ["--commit-delay", "0.5"]
    folder = Folder(dirpath)
    modes = ["save", "save", "save", "time", "time"]
    rng.shuffle(modes)
    kills = in_flight = cleaned = 0
    resumed_at: list[int] = []
    pending = folder.plant()  # left by the previous run: the next run must remove them
    spilled: set[str] = set()
    history: list[str] = []
    for attempt, mode in enumerate(modes):
        job = Job(_job_args(tmp_path, dirpath, *extra, *(["--resume"] if attempt else [])), env)
        killed, first = _run_until_kill(job, mode, rng, window)
        assert killed, f"the job completed before kill {kills + 1}:\n" + "\n".join(job.output[-40:])
        kills += 1
        assert first is not None
        resumed_at.append(first - 1)
        # nothing runs now: everything a reader can see must be whole
        committed = folder.verify_committed()
        # the killed run got past setup, where what earlier runs left half-written is removed
        now = folder.leftovers()
        stale = pending.still_in(now)
        assert not stale, f"leftovers of an earlier kill were not cleaned up: {stale}"
        cleaned += bool(pending)
        pending = now
        new_spill = _spill_dirs(spill) - spilled
        spilled |= new_spill
        in_flight += bool(new_spill or now)
        history.append(
            f"kill {kills} ({mode}) after resuming at step {resumed_at[-1]}: committed {committed};"
            f" half-written: {len(now.orphan_objects)} objects, {len(now.temp_files)} temp files,"
            f" {len(now.uploads)} multipart uploads; mid-commit: {bool(new_spill or now)}"
        )
    out = tmp_path / "weights.pt"
    job = Job(_job_args(tmp_path, dirpath, *extra, "--resume", "--out", str(out)), env)
    assert job.finish() == 0, "\n".join(job.output[-40:])
    resumed_at.append(int(next(line for line in job.output if line.startswith("step ")).split()[1]) - 1)
    summary = "\n".join(history)
    print(summary)

    assert kills >= MIN_KILLS
    assert cleaned >= 1  # at least what was planted before the first run
    assert in_flight >= MIN_IN_FLIGHT, f"too few kills landed during a commit:\n{summary}"
    # "last" is the newest committed checkpoint: a restart never goes back behind an earlier one
    assert resumed_at == sorted(resumed_at), resumed_at
    assert resumed_at[-1] > 0
    folder.verify_committed()
    final = folder.leftovers()
    assert not pending.still_in(final), f"leftovers of the last kill were not cleaned up: {final}"
    assert not final, f"the completed run left half-written checkpoint data behind: {final}"
    assert folder.store.get_bytes(FOREIGN) == b"the user's own checkpoint, without a marker"
    weights = torch.load(out, weights_only=True)
    expected = reference.weights()
    assert len(weights) == len(expected)
    for ours, ref in zip(weights, expected):
        assert torch.equal(ours, ref), "resumed weights differ from the uninterrupted run"


def test_sigkill_and_resume_local(tmp_path: Path, reference: Reference) -> None:
    # A local commit runs before its save returns (as Lightning's file is there when the save returns), so
    # the kill must land in the commit announced by "save step N" itself: held open 0.5 s after serialising
    # (--commit-delay), a kill 0.05-0.3 s after the announcement lands mid-commit even on a loaded machine.
    _crash_and_resume(tmp_path, str(tmp_path / "ckpt"), 20261126, (0.05, 0.3), reference)


@pytest.mark.services
def test_sigkill_and_resume_s3(tmp_path: Path, s3_endpoint: str, reference: Reference) -> None:
    dirpath = f"{s3_endpoint}/crash-{uuid.uuid4().hex}/ckpt"
    # serialising takes ~50 ms, the multipart upload to moto ~0.4 s: kills land during the upload
    _crash_and_resume(tmp_path, dirpath, 7, (0.08, 0.3), reference)


_KILLED_WRITER = """
import sys, time
import torch
import lightning_lib.checkpoint._writer as writer

def upload_forever(*args, **kwargs):
    print("uploading", flush=True)
    time.sleep(600)

writer.write_checkpoint = upload_forever  # serialised and staged; the kill lands during the upload
writer.CheckpointWriter(background=False).save({"state_dict": {"w": torch.zeros(250_000)}}, sys.argv[1], 1)
"""


def test_a_killed_commit_leaves_no_staging_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_lib as pl
    from tests.support import CountingModel, loader, trainer_kwargs

    spill = tmp_path / "spill"
    spill.mkdir()
    dirpath = tmp_path / "ckpt"
    script = tmp_path / "killed_writer.py"
    script.write_text(_KILLED_WRITER)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(spill), "PYTHONPATH": str(REPO)}
    job = Job([sys.executable, str(script), str(dirpath / "epoch=0-step=1.ckpt")], env)
    deadline = time.monotonic() + RUN_TIMEOUT
    while (line := job.next_line(deadline)) is not None and line != "uploading":
        pass
    job.kill()
    if line != "uploading":
        pytest.fail("the writer never reached its upload:\n" + "\n".join(job.output))
    left = _spill_dirs(spill)

    # the next run of the job, in the same temp folder, with no grace period for leftovers
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=dirpath)
    checkpoint.orphan_grace_seconds = 0
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path / "run", enable_checkpointing=True, callbacks=[checkpoint])
    )
    trainer.fit(CountingModel(), loader())
    stale = left & _spill_dirs(spill)
    assert not stale, f"the killed commit's staging copy is still in the temp folder: {sorted(stale)}"
