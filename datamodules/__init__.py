"""Reusable LightningDataModules a project imports as its own (see each module's docstring)."""
