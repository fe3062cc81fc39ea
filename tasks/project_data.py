"""A project's own LightningDataModule in the pipeline: its data identity, found before training.

When the config names a data module of the project's own (no ``data`` table section), the pipeline does not
touch the data: the data module reads it, as it does under Lightning. The ``identify_data`` task runs first:

1. It builds the data module from ``datamodule_kwargs`` (plain values, plus the run's ``seed`` when its
   ``__init__`` takes one and the config does not set it) and calls its ``prepare_data()`` once, in this
   process, as Lightning calls it once per node before ``setup``; so a data module that downloads or
   generates its data has done so before it is fingerprinted. ``Trainer.fit`` calls ``prepare_data`` again
   at its start, as Lightning does: it must be idempotent (a download that skips what is there), which is
   Lightning's own rule.
2. When the data module declares where its data lives (the optional ``data_sources()`` method returning
   local files or folders and ``s3://bucket/prefix`` URIs), the sources are fingerprinted from their
   listings (:mod:`tasks.sources`: key, size and ETag, or size and modification time locally), in time that
   grows with the number of objects, never their bytes. A source that does not exist fails here, before the
   run key is taken or anything is trained.

The result, :class:`ProjectData`, is small plain data passed on to ``fit`` / ``validate`` / ``test``: the
fingerprint's digest becomes the run's data identity (the ``data.fingerprint`` tag, the MLflow dataset
input, the checkpoint's ``data_identity`` entry and the run key's ``run.json``), and the full listing is
logged to the MLflow run so that ``reproduce`` can name the first object that differs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from lightning_lib.storage import join_uri, open_store, split_uri
from tasks.config import TrainConfig
from tasks.factory import build_project_datamodule, checkpoint_dir
from tasks.retry import retrying
from tasks.sources import LISTING_ARTIFACT, DataFingerprint, SourceListing, fingerprint_sources

SOURCES_METHOD = "data_sources"
LISTINGS_FOLDER = "_data_sources"


class ProjectData(BaseModel):
    """The data identity of a run whose data module reads its own data (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["datamodule"] = "datamodule"
    datamodule: str
    dataset_id: str
    fingerprint: DataFingerprint | None  # None: the data module declares no data_sources()
    sources: list[str] = []  # as declared (canonical names)
    listing_uri: str | None = None  # the full listing (tasks.sources.SourceListing.to_bytes)

    @property
    def digest(self) -> str | None:
        """The data's identity: the fingerprint's sha256, None when the data module declares no sources."""
        return None if self.fingerprint is None else self.fingerprint.digest

    def describe(self) -> str:
        """One line for logs and summaries."""
        if self.fingerprint is None:
            return f"{self.datamodule} (declares no data_sources(): not fingerprinted)"
        fp = self.fingerprint
        shown = ", ".join(self.sources[:3]) + (
            f" and {len(self.sources) - 3} more" if len(self.sources) > 3 else ""
        )
        return f"{shown} ({fp.objects} objects, {fp.total_bytes} bytes, sha256 {fp.digest})"

    def listing(self) -> SourceListing | None:
        """The full listing the fingerprint was made of, read back from ``listing_uri``."""
        if self.listing_uri is None:
            return None
        root, name = split_uri(self.listing_uri)
        return SourceListing.from_bytes(open_store(root).get_bytes(name))

    def datamodule_kwargs(self) -> dict[str, Any]:
        """Nothing: the project's data module takes only the config's own arguments."""
        return {}


def declared_sources(datamodule: Any) -> list[str] | None:
    """The data module's ``data_sources()``, checked to be a list of non-empty strings; None without it."""
    method = getattr(datamodule, SOURCES_METHOD, None)
    if method is None:
        return None
    if not callable(method):
        raise TypeError(
            f"Expected {type(datamodule).__name__}.{SOURCES_METHOD} to be a method returning a list of "
            f"paths or s3:// URIs, received {type(method).__name__}."
        )
    sources = method()
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list | tuple) or not all(isinstance(s, str) and s for s in sources):
        raise TypeError(
            f"Expected {type(datamodule).__name__}.{SOURCES_METHOD}() to return a list of non-empty paths or "
            f"s3:// URIs, received {sources!r}."
        )
    return list(sources)


def identify(config: TrainConfig) -> ProjectData:
    """Build the data module, run its ``prepare_data`` and fingerprint its declared sources."""
    if config.data is not None:
        raise ValueError("Expected a config without a data table: a table is prepared by tasks.data.prepare.")
    datamodule = build_project_datamodule(config)
    datamodule.prepare_data()
    sources = declared_sources(datamodule)
    if not sources:
        # without sources the arguments are all that names the data: the same ones, the same id
        spec = json.dumps([config.datamodule, config.datamodule_kwargs], sort_keys=True, default=str)
        dataset_id = "args-" + hashlib.sha256(spec.encode()).hexdigest()[:19]
        return ProjectData(datamodule=config.datamodule, dataset_id=dataset_id, fingerprint=None)
    listing = fingerprint_sources(sources)
    digest = listing.fingerprint.digest
    # Kept by digest in the pipeline's own space, never among the data (a default data root beside the
    # checkpoints may be the project's data folder): fit logs it to the MLflow run. The folder's leading
    # underscore can never be a run key's.
    folder = checkpoint_dir(config, LISTINGS_FOLDER)
    store = open_store(folder)
    name = f"{digest}-{LISTING_ARTIFACT}"
    if not store.exists(name):
        store.put_bytes(name, listing.to_bytes())
    return ProjectData(
        datamodule=config.datamodule,
        dataset_id=digest[:24],
        fingerprint=listing.fingerprint,
        sources=list(listing.sources),
        listing_uri=join_uri(folder, name),
    )


@task(name="identify_data", **retrying(cache_policy=NO_CACHE, result_serializer="json"))
def identify_data(config: TrainConfig) -> ProjectData:
    """Prefect task around :func:`identify`: never cached (a listing is cheap and must be current)."""
    return identify(config)


__all__ = [
    "LISTINGS_FOLDER",
    "SOURCES_METHOD",
    "ProjectData",
    "declared_sources",
    "identify",
    "identify_data",
]
