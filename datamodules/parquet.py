"""``ShardedParquetDataModule``: a dataset larger than memory, as many Parquet files, streamed row group
by row group into training, with exact mid-epoch resume.

Layout
    Each split (``train``, ``val``, ``test``, ``predict``) is a local folder, an ``s3://bucket/prefix``
    or a single file. Folders and prefixes are read recursively; every ``*.parquet`` file is a shard,
    except files and folders whose names start with ``.`` or ``_`` (``_SUCCESS``, temporary files).
    Hive partitions are plain folders: ``train/dt=2026-12-01/part-0.parquet``. All shards of a split
    must have one schema (column names and types).

Arguments (plain JSON values, so the hyper-parameters in a checkpoint load with ``weights_only=True``)
    ``train``, ``val``, ``test``, ``predict``: the splits' sources (``None``: the split is not used).
    ``features``: numeric (integer, float or boolean) columns, stacked in this order into float32
    inputs ``(batch, len(features))``. ``target``: the label column, an int64 tensor for integer or
    boolean columns and float32 for float columns; ``None`` for unlabelled data. Batches are tuples,
    ``(x, y)`` with a target and ``(x,)`` without (a ``predict`` split may lack the target column).
    ``batch_size``; ``drop_last`` (training only: leave out each epoch's last, short batch).
    ``num_workers``: DataLoader worker processes, each reading its own rows.
    ``shuffle`` (training only; evaluation and prediction read in file order) and ``shuffle_buffer``:
    rows are shuffled within windows of at least this many rows. ``seed``: the order of every epoch
    is a function of the seed and the epoch number alone.
    ``partition_key`` (``"dt"``), ``since`` and ``until``: keep only shards whose path has a
    ``partition_key=VALUE`` folder with ``since <= VALUE < until`` (compared as text, so ISO dates
    work; either bound may be left out). The retraining flow fills ``{window_start}`` /
    ``{window_end}`` placeholders in these from the scheduled dates.
    ``standardize``: inputs become ``(x - mean) / std`` with the training split's per-feature mean and
    sample std (a std below ``min_std`` counts as 1), computed in one streaming pass over the training
    shards when first needed and kept in ``state_dict``, so a checkpoint carries them.
    ``pin_memory``: passed to the DataLoaders.

Shuffling
    Each epoch permutes the order of the shards, and of the row groups inside each shard, with a
    generator seeded by ``(seed, epoch)``. A stream then reads consecutive row groups into a window of
    at least ``shuffle_buffer`` rows and hands them out in a random order seeded by ``(seed, epoch,
    window position)``; batches run on across window boundaries.

Several workers and processes
    Each epoch's rows (in the permuted order) are divided among DDP ranks (the Trainer's
    ``world_size`` and ``global_rank``), and each rank's rows among its DataLoader workers in blocks
    of whole batches: no row is read twice, and only the rank's last batch can be short. Evaluation
    and prediction serve every row (ranks get the same number of rows to within one). Training under
    DDP gives every rank ``rows // world_size`` rows, since each step's collectives need every rank to
    take the same number of steps: the fewer than ``world_size`` rows left over are the last ones of
    that epoch's shuffled order, so different rows each epoch (with one process, no row is left out).
    The batch order is the DataLoader's usual turn-taking between workers; it depends on
    ``num_workers``, ``batch_size`` and the world size, never on timing.

Resume guarantee
    The train loader has ``state_dict()`` / ``load_state_dict()``: the epoch and the number of batches
    handed out in it (plain ints), which the Trainer stores in each checkpoint. A fit resumed with
    ``ckpt_path="last"`` gets exactly the batches that were still to come in that epoch, with the same
    rows in the same order, so it ends bit-identical to an uninterrupted fit. Nothing served before the
    checkpoint is read again: the position of every worker is computed from the footers' row counts,
    whole row groups are skipped, and only the window in progress is re-read. Resuming refuses a
    checkpoint whose stream was cut differently (another ``num_workers``, ``batch_size``, ``seed``,
    ``shuffle_buffer``, world size or row count).

Memory bound
    Per worker: one window (``shuffle_buffer`` rows plus at most one row group, of the selected
    columns only) and the batches in flight (DataLoader's ``prefetch_factor``, 2 by default, per
    worker). Nothing grows with the number or size of the shards; only footers' row counts (a few
    integers per row group) are kept for the whole split. On S3 only footers and the needed column
    chunks are fetched, by ranged GETs through boto3's own configuration chain.

Checks before training
    ``prepare_data`` and ``setup`` list the sources and read every shard's footer (never its rows): a
    source that does not exist, one without Parquet files, a shard that is not Parquet, two shards with
    different schemas (both named, with the first differing column), missing or non-numeric
    feature/target columns and null values (from the footers' statistics) raise with a message naming
    the split, the shard and the column.

Pipeline hooks
    ``data_sources()`` (the sources read, or the selected partition folders when ``since``/``until``
    are set), ``preprocessor()`` (raw float32 rows to the model's inputs: :class:`Standardize` or
    float32 conversion) and ``serving_example()`` (up to 8 raw rows of the first training shard, also
    kept in ``state_dict``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import lightning_lib as pl
from datamodules._preprocess import Standardize, ToFloat32
from datamodules._shards import SplitIndex, index_split, list_shards, partition_folder
from datamodules._statistics import feature_statistics, first_rows
from datamodules._stream import ParquetStream, ParquetStreamLoader

SPLITS = ("train", "val", "test", "predict")
# what each Trainer stage reads; ``None`` (Lightning's "every stage") reads every configured split
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
_SERVING_ROWS = 8


class ShardedParquetDataModule(pl.LightningDataModule):
    """Sharded Parquet splits (local folders or S3 prefixes) streamed with bounded memory; see the module
    documentation for the arguments, the layout, the resume guarantee and the memory bound."""

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        *,
        features: list[str],
        target: str | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 16_384,
        seed: int = 0,
        drop_last: bool = False,
        partition_key: str = "dt",
        since: str | None = None,
        until: str | None = None,
        standardize: bool = False,
        min_std: float = 1e-6,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        sources = {"train": train, "val": val, "test": test, "predict": predict}
        for split, source in sources.items():
            if source is not None and (not isinstance(source, str) or not source):
                raise ValueError(f"Expected {split} to be a folder, file or s3:// URI, received {source!r}.")
        if all(source is None for source in sources.values()):
            raise ValueError("Expected at least one of train, val, test or predict, received none.")
        if (
            not isinstance(features, list | tuple)
            or not features
            or not all(isinstance(name, str) for name in features)
        ):
            raise ValueError(
                f"Expected features to be a non-empty list of column names, received {features!r}."
            )
        if len(set(features)) != len(features):
            raise ValueError(f"Expected distinct feature columns, received {list(features)}.")
        if target is not None and target in features:
            raise ValueError(
                f"Expected the target {target!r} not to be one of the features {list(features)}."
            )
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Expected {name} >= {least}, received {value!r}.")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
            raise ValueError(f"Expected shuffle_buffer >= 1 (rows), received {shuffle_buffer!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Expected seed to be an integer, received {seed!r}.")
        if not isinstance(partition_key, str) or not partition_key or "/" in partition_key:
            raise ValueError(
                f"Expected partition_key to be a folder-name key like 'dt', received {partition_key!r}."
            )
        for name, bound in (("since", since), ("until", until)):
            # an unfilled ``{window_start}`` placeholder would silently compare as text
            if bound is not None and (not isinstance(bound, str) or not bound or "{" in bound):
                raise ValueError(
                    f"Expected {name} to be a partition value like '2026-12-01', received {bound!r}."
                )
        if since is not None and until is not None and not since < until:
            raise ValueError(f"Expected since < until, received since={since!r} and until={until!r}.")
        if not min_std > 0:
            raise ValueError(f"Expected min_std > 0, received {min_std}.")
        self.save_hyperparameters()
        self.sources = sources
        self.features = list(features)
        self.target = target
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.drop_last = drop_last
        self.partition_key = partition_key
        self.since = since
        self.until = until
        self.standardize = standardize
        self.min_std = min_std
        self.pin_memory = pin_memory
        self._indexes: dict[str, SplitIndex] = {}
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        self._example: torch.Tensor | None = None

    # -- Lightning's data hooks ---------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Check every configured split from listings and footers, before anything is trained."""
        for split, source in self.sources.items():
            if source is not None:
                self._index(split)

    def setup(self, stage: str | None = None) -> None:
        """Index (list and check) the splits ``stage`` reads; fitting also notes the serving example."""
        if stage is not None and stage not in _STAGE_SPLITS:
            raise ValueError(
                f"Expected stage to be one of {sorted(_STAGE_SPLITS)} or None, received {stage!r}."
            )
        if stage is None:
            needed = [split for split in SPLITS if self.sources[split] is not None]
        else:
            needed = list(_STAGE_SPLITS[stage])
            if self.sources[needed[0]] is None:
                raise ValueError(
                    f"Expected the {needed[0]} source to be set for stage {stage!r}, received None."
                )
        for split in needed:
            if self.sources[split] is not None:
                self._index(split)
        if stage in ("fit", None) and self._example is None and self.sources["train"] is not None:
            self._example = torch.from_numpy(first_rows(self._index("train"), self.features, _SERVING_ROWS))

    def train_dataloader(self) -> ParquetStreamLoader:
        trainer = self.trainer
        start_epoch = int(getattr(trainer, "current_epoch", 0) or 0) if trainer is not None else 0
        return self._loader("train", training=True, start_epoch=start_epoch)

    def val_dataloader(self) -> ParquetStreamLoader:
        return self._loader("val")

    def test_dataloader(self) -> ParquetStreamLoader:
        return self._loader("test")

    def predict_dataloader(self) -> ParquetStreamLoader:
        return self._loader("predict")

    # -- checkpoint state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The standardisation statistics and the serving example, as tensors (``weights_only`` loads)."""
        state: dict[str, Any] = {"features": list(self.features)}
        if self._mean is not None and self._std is not None:
            state["mean"] = self._mean.clone()
            state["std"] = self._std.clone()
        if self._example is not None:
            state["serving_example"] = self._example.clone()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the features must be the same columns."""
        saved = state_dict.get("features")
        if saved is not None and list(saved) != self.features:
            raise ValueError(
                f"Expected the checkpoint's data module state for features {self.features}, received it for"
                f" {list(saved)}."
            )
        if "mean" in state_dict and "std" in state_dict:
            self._mean = torch.as_tensor(state_dict["mean"], dtype=torch.float32)
            self._std = torch.as_tensor(state_dict["std"], dtype=torch.float32)
        if "serving_example" in state_dict:
            self._example = torch.as_tensor(state_dict["serving_example"], dtype=torch.float32)

    # -- pipeline hooks -----------------------------------------------------------------------------

    def data_sources(self) -> list[str]:
        """Where the data lives: each configured source, or its selected partition folders under a window."""
        found: list[str] = []
        for split, source in self.sources.items():
            if source is None:
                continue
            if self.since is None and self.until is None:
                uris = [source]
            elif split in self._indexes:
                uris = [
                    partition_folder(shard.uri, self.partition_key) for shard in self._indexes[split].shards
                ]
            else:
                shards = list_shards(split, source, self.partition_key, self.since, self.until)
                uris = [partition_folder(shard.uri, self.partition_key) for shard in shards]
            found.extend(uri for uri in sorted(set(uris)) if uri not in found)
        return found

    def preprocessor(self) -> nn.Module:
        """Raw float32 feature rows ``(N, F)`` to the model's inputs, as the loaders prepare them."""
        if not self.standardize:
            return ToFloat32()
        mean, std = self._statistics()
        return Standardize(mean, std)

    def serving_example(self) -> torch.Tensor:
        """Up to 8 raw feature rows (float32 ``(N, F)``) of the training data, for a model's signature."""
        if self._example is None:
            split = (
                "train"
                if self.sources["train"] is not None
                else next(s for s in SPLITS if self.sources[s] is not None)
            )
            self._example = torch.from_numpy(first_rows(self._index(split), self.features, _SERVING_ROWS))
        return self._example.clone()

    # -- internals ----------------------------------------------------------------------------------

    def _index(self, split: str) -> SplitIndex:
        index = self._indexes.get(split)
        if index is None:
            source = self.sources[split]
            if source is None:
                raise ValueError(
                    f"Expected the {split} source to be set to read the {split} split, received None."
                )
            index = index_split(
                split,
                source,
                features=self.features,
                target=self.target,
                target_required=split != "predict",
                partition_key=self.partition_key,
                since=self.since,
                until=self.until,
            )
            self._indexes[split] = index
        return index

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split's mean and std, from the checkpoint's state or one streaming pass."""
        if self._mean is None or self._std is None:
            if self.sources["train"] is None:
                raise ValueError(
                    "Expected the train source, or a restored state_dict, for standardize=True; received neither."
                )
            count, mean, m2 = feature_statistics(self._index("train"), self.features)
            std = [math.sqrt(v / (count - 1)) if count > 1 else 1.0 for v in m2.tolist()]
            self._mean = torch.tensor(mean.tolist(), dtype=torch.float32)
            self._std = torch.tensor([s if s >= self.min_std else 1.0 for s in std], dtype=torch.float32)
        return self._mean, self._std

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _loader(self, split: str, *, training: bool = False, start_epoch: int = 0) -> ParquetStreamLoader:
        index = self._index(split)
        mean, std = self._statistics() if self.standardize else (None, None)
        world_size, rank = self._ranks()
        stream = ParquetStream(
            index,
            features=self.features,
            target=self.target,
            batch_size=self.batch_size,
            shuffle=self.shuffle and training,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            drop_last=self.drop_last and training,
            world_size=world_size,
            rank=rank,
            num_workers=self.num_workers,
            # every rank must take as many training steps as the others (a step's collectives wait for all)
            even_ranks=training,
            mean=mean,
            std=std,
        )
        return ParquetStreamLoader(stream, start_epoch=start_epoch, pin_memory=self.pin_memory)
