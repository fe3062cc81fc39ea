"""Bundled examples used by ``make demo`` and the tests: an MLP on scikit-learn's digits as a table
(``examples.digits``, ``examples.tabular``) and a CNN on the same digits as PNG files (``examples.images``).

Kept import-free so that ``python -m examples.demo`` only pays for what it uses.
"""
