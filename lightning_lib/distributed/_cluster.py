"""Where a process sits in a distributed run: its ranks, the world size and the rendezvous address.

Two sources, as in Lightning: a launcher outside the process (torchrun, or a Kubernetes Job running
torchrun on each node) that sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
``GROUP_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; or the Trainer itself, which starts the other
local processes (``devices=N``) and gives them the same variables.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

# set by our local launcher in the processes it starts (and in its own), never by torchrun
LAUNCHED_BY_TRAINER = "LIGHTNING_LIB_LAUNCHED"


@dataclass(frozen=True)
class ClusterEnvironment:
    """The ranks of this process and the size of the run."""

    global_rank: int
    local_rank: int
    node_rank: int
    world_size: int
    local_world_size: int
    main_address: str
    main_port: int
    external: bool  # processes were started by torchrun (or similar), not by this Trainer


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(
            f"Expected the environment variable {name} to be an integer, received {value!r}."
        ) from err


def launched_externally() -> bool:
    """Whether torchrun (or a launcher like it) started this process as one rank of a group."""
    if os.environ.get(LAUNCHED_BY_TRAINER) == "1":
        return False
    return "TORCHELASTIC_RUN_ID" in os.environ or all(
        name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    )


def launched_by_trainer() -> bool:
    """Whether this process is one of the ranks our local launcher started (rank zero included)."""
    return os.environ.get(LAUNCHED_BY_TRAINER) == "1"


def from_environment(devices: int, num_nodes: int) -> ClusterEnvironment:
    """The environment torchrun or our launcher set; checked against what the Trainer was asked for."""
    rank = _int_env("RANK")
    world = _int_env("WORLD_SIZE")
    local_rank = _int_env("LOCAL_RANK")
    if rank is None or world is None or local_rank is None:
        raise ValueError(
            "Expected RANK, WORLD_SIZE and LOCAL_RANK in the environment of a process started by torchrun;"
            f" received RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r},"
            f" LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}."
        )
    local_world = _int_env("LOCAL_WORLD_SIZE") or devices
    node_rank = _int_env("GROUP_RANK")
    if node_rank is None:
        node_rank = _int_env("NODE_RANK") or 0
    if world != devices * num_nodes or local_world != devices:
        raise ValueError(
            f"Expected the launcher's world to match Trainer(devices={devices}, num_nodes={num_nodes}):"
            f" {devices * num_nodes} processes, {devices} per node; the environment says WORLD_SIZE={world},"
            f" LOCAL_WORLD_SIZE={local_world}. Pass devices=<processes per node> and num_nodes=<nodes>"
            " (torchrun's --nproc-per-node and --nnodes)."
        )
    return ClusterEnvironment(
        global_rank=rank,
        local_rank=local_rank,
        node_rank=node_rank,
        world_size=world,
        local_world_size=local_world,
        main_address=os.environ.get("MASTER_ADDR", "127.0.0.1"),
        main_port=_int_env("MASTER_PORT") or 0,
        external=not launched_by_trainer(),
    )


def free_port() -> int:
    """A TCP port nobody listens on right now, for the rendezvous of locally started processes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


__all__ = [
    "LAUNCHED_BY_TRAINER",
    "ClusterEnvironment",
    "free_port",
    "from_environment",
    "launched_by_trainer",
    "launched_externally",
]
