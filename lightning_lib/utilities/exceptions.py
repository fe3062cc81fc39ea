"""Exceptions users catch, at Lightning's import path (``lightning.pytorch.utilities.exceptions``)."""


class MisconfigurationException(ValueError):
    """A Trainer, callback, module or loop was configured in a way that cannot work.

    Lightning raises it for bad arguments and unsupported combinations; it is a ``ValueError`` too, so
    code written against this library's earlier releases (``except ValueError``) still catches it.
    """


class SIGTERMException(SystemExit):
    """Raised at the next batch boundary after SIGTERM, so callbacks can save before the process exits."""


class _TunerExitException(Exception):
    """Ends a run once a tuner (``Tuner.lr_find``, ``Tuner.scale_batch_size``) has its answer; the Trainer
    tears the run down as finished rather than failed."""


__all__ = ["MisconfigurationException", "SIGTERMException"]
