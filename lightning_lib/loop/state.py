"""The run state: what the loops write as they go and the Trainer's public properties read.

One ``RunState`` belongs to one Trainer. ``progress`` lives as long as the Trainer (a second ``fit``
continues the counters, and checkpoints save and restore it); the rest describes the entry point that
is running and is reset when the next one starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypedDict

from lightning_lib.loop.progress import LoopCounters

# Where inside the fit loop a checkpoint was taken (``FitProgress.resume_point``).
BATCH_END = "batch_end"  # in on_train_batch_end, before this batch's validation and counters
VAL_END = "val_end"  # during validation after a batch, before the batch's counters
EPOCH_END = "epoch_end"  # in on_train_epoch_end, before the epoch's schedulers and counters


@dataclass
class FitProgress:
    """Counters of the fit loop; enough to resume exactly, down to the batch within the epoch.

    ``global_step`` counts optimizer steps (Lightning's meaning), ``batches_that_stepped`` is the step
    the loggers see, ``batch_idx`` is the index of the batch being processed in the current epoch and
    ``epoch_batches_done`` how many batches of the current epoch are finished.
    """

    current_epoch: int = 0
    global_step: int = 0
    batches_that_stepped: int = 0
    batch_idx: int = -1
    epoch_batches_done: int = 0
    total_batch_idx: int = -1
    epoch_started: bool = False
    resume_point: str = ""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in names:
                setattr(self, key, value)


class ResumeState(TypedDict):
    """What a restored checkpoint leaves for the fit loop: the RNG streams and the train loader's position."""

    rng: dict[str, Any] | None
    loader: dict[str, Any] | None


@dataclass
class RunState:
    """Flags and bookkeeping of the running entry point, written by the loops only."""

    progress: FitProgress = field(default_factory=FitProgress)
    # Lightning's loop progress counters (``trainer.fit_loop.epoch_progress`` ...), as long as progress
    loops: LoopCounters = field(default_factory=LoopCounters)
    # public through the Trainer (callbacks set ``trainer.should_stop``)
    should_stop: bool = False
    sanity_checking: bool = False
    is_last_batch: bool = False
    ckpt_path: str | None = None
    # the checkpoint being resumed, consumed by the fit loop when it starts
    resume: ResumeState | None = None
    # the states of the stateful members of a combined train loader, from Lightning's fit loop state
    train_loader_states: list[dict[str, Any]] = field(default_factory=list)
    # the latest evaluation iterators per loop ("val", "test"): kept, as Lightning keeps them, until the
    # loop runs again or the run ends
    eval_fetchers: dict[str, list[Any]] = field(default_factory=dict)
    # a checkpoint already loaded and verified while choosing ckpt_path="last": loaded once, used once
    verified_checkpoint: tuple[str, dict[str, Any]] | None = None
    received_sigterm: bool = False
    # inside an accumulation window (no optimizer step at this batch)
    accumulating: bool = False
    # set by StochasticWeightAveraging for its batch-norm pass: forward only, no zero_grad or backward
    skip_backward: bool = False
    # a validation batch has run in this fit (ModelCheckpoint's "monitor after validation" rule)
    val_has_run: bool = False
    # when validation last ended (or the train data was set up), for a time-based val_check_interval;
    # the clock is read only where Lightning reads it, so a patched clock sees the same calls
    last_val_time: float = 0.0
    # per Trainer: messages shown once, and step functions' signatures looked at once
    infos_seen: set[str] = field(default_factory=set)
    warnings_seen: set[str] = field(default_factory=set)
    takes_batch_idx: dict[int, bool] = field(default_factory=dict)

    def start(self) -> None:
        """A new entry point starts: forget the previous run's flags (the counters stay)."""
        self.should_stop = False
        self.received_sigterm = False
        self.resume = None
        self.train_loader_states = []
        self.verified_checkpoint = None
        self.reset_data_flags()

    def reset_data_flags(self) -> None:
        """What depends on the dataloaders of the run (they are requested again)."""
        self.accumulating = False
        self.skip_backward = False
        self.val_has_run = False
        self.takes_batch_idx.clear()
