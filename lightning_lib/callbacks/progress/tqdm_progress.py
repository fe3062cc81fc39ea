"""The default progress bar, ``TQDMProgressBar``, and its ``Tqdm`` (Lightning's ``callbacks.progress.tqdm_progress``).

Like Lightning, the bars go to ``sys.stdout``: a train bar ("Epoch N") reused across epochs, a
validation bar under it, and test / predict bars. Two deliberate differences keep them cheap and
keep logs readable:

* A bar redraws at most every ``refresh_rate`` batches *and* at most ~10 times a second (the last
  batch of a loop always redraws). ``trainer.progress_bar_metrics`` converts tensors to floats, a host
  sync on accelerators, so it is read only when a bar actually redraws; a skipped step costs a
  modulo and, every ``refresh_rate`` batches, one clock read.
* Bars are drawn only when ``sys.stdout`` is a terminal. Otherwise (CI logs, a pipeline worker, a
  redirected file) nothing is written per step and one short line is printed at the end of each
  training epoch: ``Epoch 3: 100/100 batches, 1.2s, loss=0.123, v_num=0``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm as _tqdm

from lightning_lib.callbacks.progress.progress_bar import ProgressBar

if TYPE_CHECKING:
    from lightning_lib.core.module import LightningModule
    from lightning_lib.trainer import Trainer

_PAD_SIZE = 5
# Seconds between two redraws of the same bar: the eye does not need more and terminals are slow.
_MIN_REDRAW_INTERVAL = 0.1


class Tqdm(_tqdm):
    """tqdm whose postfix numbers are zero-padded to a fixed width so the bar does not jitter."""

    @staticmethod
    def format_num(n: int | float | str) -> str:
        padded = isinstance(n, (float, str))
        text = n if isinstance(n, str) else _tqdm.format_num(n)
        if padded and "e" not in text:
            if "." not in text and len(text) < _PAD_SIZE:
                try:
                    float(text)
                except ValueError:
                    return text
                text += "."
            text += "0" * (_PAD_SIZE - len(text))
        return text


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def convert_inf(x: int | float | None) -> int | float | None:
    """tqdm wants ``None`` for an unknown total."""
    if x is None or math.isinf(x) or math.isnan(x):
        return None
    return x


class _BarSlot:
    """``train_progress_bar`` & co: a settable attribute that raises while unset, like Lightning's."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = f"_{name}"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        bar = getattr(obj, self._attr)
        if bar is None:
            raise TypeError(f"The `{type(obj).__name__}.{self._attr}` reference has not been set yet.")
        return bar

    def __set__(self, obj: Any, bar: _tqdm) -> None:
        setattr(obj, self._attr, bar)


class TQDMProgressBar(ProgressBar):
    """The default progress bar, drawn with tqdm (see the module docstring for when it draws).

    Args:
        refresh_rate: redraw at most every this many batches; 0 disables the bars.
        process_position: offset the bars by this many lines (to stack them under other bars).
        leave: keep each finished epoch's bar on screen instead of reusing one bar.
    """

    train_progress_bar = _BarSlot()
    val_progress_bar = _BarSlot()
    test_progress_bar = _BarSlot()
    predict_progress_bar = _BarSlot()

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__()
        self._refresh_rate = self._resolve_refresh_rate(refresh_rate)
        self._process_position = process_position
        self._enabled = True
        self._leave = leave
        self._train_progress_bar: _tqdm | None = None
        self._val_progress_bar: _tqdm | None = None
        self._test_progress_bar: _tqdm | None = None
        self._predict_progress_bar: _tqdm | None = None
        # Batches done in the current training epoch: throttled redraws may lag behind it.
        self._train_n = 0
        self._epoch_started_at = 0.0
        self._drawn_at = {"train": 0.0, "eval": 0.0}

    def __getstate__(self) -> dict[str, Any]:
        # tqdm objects hold locks and file handles: a pickled or deep-copied callback drops them.
        return {k: None if isinstance(v, _tqdm) else v for k, v in vars(self).items()}

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _hidden(self) -> bool:
        return self.is_disabled or not _is_terminal(sys.stdout)

    def _make(self, desc: str, position: int, leave: bool, **kwargs: Any) -> Tqdm:
        return Tqdm(
            desc=desc,
            position=position,
            disable=self._hidden(),
            leave=leave,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
            **kwargs,
        )

    def init_sanity_tqdm(self) -> Tqdm:
        """Override to customize the bar of the validation sanity check."""
        return self._make(self.sanity_check_description, 2 * self.process_position, leave=False)

    def init_train_tqdm(self) -> Tqdm:
        """Override to customize the training bar."""
        return self._make(self.train_description, 2 * self.process_position, leave=True, smoothing=0)

    def init_predict_tqdm(self) -> Tqdm:
        """Override to customize the prediction bar."""
        return self._make(self.predict_description, 2 * self.process_position, leave=True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        """Override to customize the validation bar (under the train bar during fit)."""
        has_main_bar = self.trainer.state.fn != "validate"
        return self._make(
            self.validation_description, 2 * self.process_position + has_main_bar, leave=not has_main_bar
        )

    def init_test_tqdm(self) -> Tqdm:
        """Override to customize the test bar."""
        return self._make(self.test_description, 2 * self.process_position, leave=True)

    def _due(self, bar: _tqdm | None, n: int, role: str) -> bool:
        """Whether to redraw now: every ``refresh_rate`` batches, ~10 Hz at most, always at the end."""
        if bar is None or bar.disable or not self._enabled or self._refresh_rate <= 0:
            return False
        last = n == bar.total
        if n % self._refresh_rate and not last:
            return False
        now = time.perf_counter()
        if not last and now - self._drawn_at[role] < _MIN_REDRAW_INTERVAL:
            return False
        self._drawn_at[role] = now
        return True

    @staticmethod
    def _redraw(bar: _tqdm, n: int, postfix: dict[str, Any] | None = None) -> None:
        bar.n = n
        if postfix is not None:
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()  # one redraw for both the count and the postfix

    def _reset(self, bar: _tqdm, total: int | float | None, desc: str) -> None:
        bar.set_description(desc, refresh=False)
        bar.reset(total=convert_inf(total))
        bar.initial = 0

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.val_progress_bar = self.init_sanity_tqdm()
        self.train_progress_bar = Tqdm(disable=True)  # placeholder until training starts

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.val_progress_bar.close()
        self.train_progress_bar.close()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.train_progress_bar = self.init_train_tqdm()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self._train_n = 0
        self._epoch_started_at = time.perf_counter()
        self._reset(self.train_progress_bar, self.total_train_batches, f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = self._train_n = batch_idx + 1
        bar = self._train_progress_bar
        # The common case (hidden bar, or not yet time to redraw) returns after a few attribute reads.
        if bar is not None and not bar.disable and self._due(bar, n, "train"):
            self._redraw(bar, n, self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        bar = self.train_progress_bar
        if not bar.disable:
            self._redraw(bar, self._train_n, self.get_metrics(trainer, pl_module))
        elif self.is_enabled and trainer.is_global_zero:
            self._print_epoch_line(trainer, pl_module, bar.total)
        if self._leave:
            bar.close()

    def _print_epoch_line(self, trainer: Trainer, pl_module: LightningModule, total: Any) -> None:
        """The non-terminal replacement for the train bar: one line per epoch."""
        items = [f"{self._train_n}/{total if total is not None else '?'} batches"]
        items.append(f"{time.perf_counter() - self._epoch_started_at:.1f}s")
        for key, value in self.get_metrics(trainer, pl_module).items():
            items.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
        print(f"Epoch {trainer.current_epoch}: {', '.join(items)}", flush=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.train_progress_bar.close()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_progress_bar = self.init_validation_tqdm()

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
            total = self.total_val_batches_current_dataloader
            self._reset(self.val_progress_bar, total, f"{desc} DataLoader {dataloader_idx}")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(self._val_progress_bar, batch_idx + 1, "eval"):
            self._redraw(self.val_progress_bar, batch_idx + 1)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        bar = self._train_progress_bar
        # Show the fresh validation metrics on the train bar right away.
        if bar is not None and not bar.disable and trainer.state.fn == "fit":
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.test_progress_bar = self.init_test_tqdm()

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            total = self.total_test_batches_current_dataloader
            self._reset(self.test_progress_bar, total, f"{self.test_description} DataLoader {dataloader_idx}")

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(self._test_progress_bar, batch_idx + 1, "eval"):
            self._redraw(self.test_progress_bar, batch_idx + 1)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.test_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.predict_progress_bar = self.init_predict_tqdm()

    def on_predict_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            total = self.total_predict_batches_current_dataloader
            desc = f"{self.predict_description} DataLoader {dataloader_idx}"
            self._reset(self.predict_progress_bar, total, desc)

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(self._predict_progress_bar, batch_idx + 1, "eval"):
            self._redraw(self.predict_progress_bar, batch_idx + 1)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.predict_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Print above the active bar; a plain print when no bar is drawn (so nothing is lost)."""
        for bar in (
            self._train_progress_bar,
            self._val_progress_bar,
            self._test_progress_bar,
            self._predict_progress_bar,
        ):
            if bar is not None and not bar.disable:
                kwargs.setdefault("file", sys.stdout)  # the bars' stream, read now (it may be swapped)
                bar.write(sep.join(map(str, args)), **kwargs)
                return
        print(*args, sep=sep, **kwargs)

    @staticmethod
    def _resolve_refresh_rate(refresh_rate: int) -> int:
        # Same environment overrides as Lightning: Colab chokes on fast redraws, TQDM_MINITERS is tqdm's own.
        if os.getenv("COLAB_GPU") and refresh_rate == 1:
            return 20
        if "TQDM_MINITERS" in os.environ:
            return max(int(os.environ["TQDM_MINITERS"]), refresh_rate)
        return refresh_rate
