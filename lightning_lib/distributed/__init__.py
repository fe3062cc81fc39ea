"""Process-level strategies (one device, or DDP over torch.distributed), the launcher and the cluster environment.

``Strategy`` is the protocol the Trainer runs against; ``SingleDeviceStrategy`` and ``DDPStrategy``
implement it. The cluster-environment functions tell whether torchrun (or the Trainer's own launcher)
started this process as one rank of a run, and read its ranks.
"""

from lightning_lib.distributed._cluster import (
    ClusterEnvironment,
    from_environment,
    launched_by_trainer,
    launched_externally,
)
from lightning_lib.distributed._ddp import DDPStrategy
from lightning_lib.distributed._launcher import RankFailedError
from lightning_lib.distributed.strategy import SingleDeviceStrategy, Strategy

__all__ = [
    "ClusterEnvironment",
    "DDPStrategy",
    "RankFailedError",
    "SingleDeviceStrategy",
    "Strategy",
    "from_environment",
    "launched_by_trainer",
    "launched_externally",
]
