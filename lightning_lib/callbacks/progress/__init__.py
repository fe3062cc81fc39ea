"""Progress bars (Lightning's ``callbacks.progress``): the ``ProgressBar`` base, ``TQDMProgressBar`` and
``RichProgressBar`` (rich is imported only when one is built)."""

from lightning_lib.callbacks.progress.progress_bar import ProgressBar, get_standard_metrics
from lightning_lib.callbacks.progress.rich_progress import RichProgressBar, RichProgressBarTheme
from lightning_lib.callbacks.progress.tqdm_progress import Tqdm, TQDMProgressBar, convert_inf

__all__ = [
    "ProgressBar",
    "RichProgressBar",
    "RichProgressBarTheme",
    "TQDMProgressBar",
    "Tqdm",
    "convert_inf",
    "get_standard_metrics",
]
