"""What the checkpoint benchmark's parts share: the local S3 endpoint (moto's server) and the model."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning_lib as pl
from lightning_lib.checkpoint._format import dump_checkpoint

BUCKET = "bench-checkpoints"
MiB = 1024 * 1024
WIDTH = 4096
BATCH = 8


# ---- the local S3 endpoint -------------------------------------------------------------------------------
@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, this process (and its children) pointed at it with dummy keys."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    empty = workdir / "empty-aws-file"
    empty.write_text("")
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto server did not start; see {workdir / 'moto.log'}") from None
                time.sleep(0.2)
        s3().create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def s3() -> Any:
    import boto3

    return boto3.client("s3")


def transfer_config(ours: bool) -> Any:
    from boto3.s3.transfer import TransferConfig

    if ours:  # what S3Store uses
        return TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=16 * MiB, max_concurrency=8)
    return TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads


def empty_prefix(root: str) -> None:
    """Delete everything under an ``s3://bucket/prefix`` so moto's memory stays bounded."""
    bucket, _, prefix = root[len("s3://") :].partition("/")
    client = s3()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


# ---- the model -------------------------------------------------------------------------------------------
class BigModel(pl.LightningModule):
    """``layers`` Linear(width, width) layers: 100M parameters at width 4096 and 6 layers."""

    def __init__(self, width: int = WIDTH, layers: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-5)


def shape_for(params: float) -> tuple[int, int]:
    """(width, layers) of a BigModel with about ``params`` parameters."""
    width = WIDTH if params >= 40e6 else 2048 if params >= 8e6 else 1024
    return width, max(1, round(params / (width * width + width)))


def train_loader(width: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(64, width)), batch_size=BATCH)


def state_bytes(checkpoint: dict[str, Any]) -> int:
    from lightning_lib.utilities.apply_func import apply_to_tensors

    total = 0

    def add(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    apply_to_tensors(checkpoint, add)
    return total


def quiet(**kwargs: Any) -> dict[str, Any]:
    return {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
        **kwargs,
    }


def fitted_state(params: float, root: Path) -> tuple[pl.Trainer, dict[str, Any]]:
    """A trainer after one Adam step on a model of ``params`` parameters, and its full checkpoint."""
    width, layers = shape_for(params)
    trainer = pl.Trainer(**quiet(max_steps=1, default_root_dir=str(root), enable_checkpointing=False))
    trainer.fit(BigModel(width, layers), train_loader(width))
    return trainer, dump_checkpoint(trainer)
