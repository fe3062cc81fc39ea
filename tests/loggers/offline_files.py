"""Read back what W&B and Comet wrote offline: the tests check the files, not mocks of the clients.

W&B keeps a run in ``<dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb``: a 7-byte header, then LevelDB's
log format (32 KiB blocks of chunks, each with a 7-byte header: crc32c, length, type) holding W&B's
``Record`` protobufs. Comet's offline experiment is a zip with ``messages.json``, one JSON message a line.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_FULL, _LAST = 1, 4


def wandb_run_files(save_dir: str | Path) -> list[Path]:
    """The ``.wandb`` files under ``save_dir``, oldest run first."""
    return sorted(Path(save_dir).glob("wandb/offline-run-*/run-*.wandb"))


def wandb_records(path: str | Path) -> list[Any]:
    """The ``Record`` protobufs of one ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # the tail of a block too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(path: str | Path) -> list[dict[str, Any]]:
    """Each ``run.log`` row, without W&B's own ``_step`` / ``_runtime`` / ``_timestamp``."""
    rows = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                    if not (item.key or "/".join(item.nested_key)).startswith("_")
                }
            )
    return rows


def wandb_config(path: str | Path) -> dict[str, Any]:
    """The run's config as updated by ``config.update`` (W&B's own ``_wandb`` entry left out)."""
    config: dict[str, Any] = {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        updates = (
            record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        )
        for item in updates:
            if item.key != "_wandb":
                config[item.key] = json.loads(item.value_json)
    return config


def wandb_artifacts(path: str | Path) -> list[dict[str, Any]]:
    """Each logged artifact: name, type, aliases, metadata and the file names it holds."""
    found = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "artifact":
            artifact = record.artifact
            found.append(
                {
                    "name": artifact.name,
                    "type": artifact.type,
                    "aliases": list(artifact.aliases),
                    "metadata": json.loads(artifact.metadata or "{}"),
                    "files": [entry.path for entry in artifact.manifest.contents],
                }
            )
    return found


def wandb_run_ids(path: str | Path) -> list[str]:
    return [r.run.run_id for r in wandb_records(path) if r.WhichOneof("record_type") == "run"]


def comet_archives(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("*.zip"), key=lambda p: p.stat().st_mtime)


def comet_messages(archive: str | Path) -> list[dict[str, Any]]:
    with zipfile.ZipFile(archive) as zipped:
        text = zipped.read("messages.json").decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def comet_metrics(archive: str | Path) -> list[tuple[str, Any, Any, Any]]:
    """``(name, value, step, epoch)`` of each metric the user's code logged (Comet's ``sys.*`` left out)."""
    found = []
    for message in comet_messages(archive):
        if message["type"] == "metric_msg":
            metric = message["payload"]["metric"]
            if not metric["metricName"].startswith("sys.") and metric["metricName"] != "process duration":
                found.append((metric["metricName"], metric["metricValue"], metric["step"], metric["epoch"]))
    return found


def comet_parameters(archive: str | Path) -> dict[str, Any]:
    """The parameters logged by hand (``source == "manual"``): name -> value."""
    found = {}
    for message in comet_messages(archive):
        if message["type"] == "parameter_msg":
            param = message["payload"]["param"]
            if param.get("source") == "manual":
                found[param["paramName"]] = param["paramValue"]
    return found


def comet_graph(archive: str | Path) -> str | None:
    for message in comet_messages(archive):
        if message["type"] == "graph":
            graph: str = message["payload"]["graph"]
            return graph
    return None
