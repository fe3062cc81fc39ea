"""What the pipeline hands its tasks about a run's data: a prepared table, or a project's own data module.

Both are small plain data (URIs, digests, counts) with the same few members the tasks use: ``kind``,
``dataset_id``, ``digest`` (the data's identity: the table's sha256, or the fingerprint of the data
module's sources), ``describe()`` and ``datamodule_kwargs()``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tasks.config import TrainConfig
from tasks.data import PreparedData, run_prepare_data
from tasks.project_data import ProjectData, identify_data

RunData = Annotated[PreparedData | ProjectData, Field(discriminator="kind")]


def run_data_task(config: TrainConfig) -> RunData:
    """In a flow: the table's ``prepare_data`` task (cached by content), or ``identify_data`` for a project's
    own data module (its ``prepare_data`` and the fingerprint of its sources)."""
    if config.data is None:
        return identify_data(config)
    return run_prepare_data(config)


__all__ = ["PreparedData", "ProjectData", "RunData", "run_data_task"]
