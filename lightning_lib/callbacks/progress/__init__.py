"""Progress bars (Lightning's ``callbacks.progress``): the ``ProgressBar`` base and ``TQDMProgressBar``."""

from lightning_lib.callbacks.progress.progress_bar import ProgressBar, get_standard_metrics
from lightning_lib.callbacks.progress.tqdm_progress import Tqdm, TQDMProgressBar, convert_inf

__all__ = ["ProgressBar", "TQDMProgressBar", "Tqdm", "convert_inf", "get_standard_metrics"]
