"""Bundled example: an MLP on scikit-learn's digits, used by ``make demo`` and the tests.

Kept import-free so that ``python -m examples.demo`` only pays for what it uses.
"""
