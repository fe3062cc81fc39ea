"""Exceptions users catch, at Lightning's import path (``lightning.pytorch.utilities.exceptions``)."""


class SIGTERMException(SystemExit):
    """Raised at the next batch boundary after SIGTERM, so callbacks can save before the process exits."""
