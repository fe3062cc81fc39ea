"""Utilities users import from Lightning's paths: seeding, rank-zero helpers, moving tensors in collections."""
