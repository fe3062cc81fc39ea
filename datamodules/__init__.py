"""Reusable LightningDataModules a project imports as its own (see each module's docstring)."""

from datamodules.parquet import ShardedParquetDataModule

__all__ = ["ShardedParquetDataModule"]
