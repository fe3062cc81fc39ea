"""Plugins: precision (and, later, checkpoint IO and environments)."""
