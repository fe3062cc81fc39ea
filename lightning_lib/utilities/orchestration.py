"""How an application that runs training under an orchestrator tells the library about it.

The library names no orchestrator. An application that runs the Trainer inside one (a workflow engine,
a job scheduler) registers an :class:`Orchestrator` once, when its own package is imported; this
project's ``tasks`` package registers Prefect that way. An orchestrator contributes two things:

``run_tags``
    A function called whenever a tracking run starts (:class:`~lightning_lib.loggers.MLFlowLogger`); the
    tags it returns say which orchestrator run the training belongs to (a flow run's id, name and URL,
    say). It runs at every run start, so it must be cheap, return ``{}`` outside the orchestrator's runs,
    and not import the orchestrator in a process that has not imported it already. A provider that raises
    costs its tags (with a warning), never the training.
``entry_modules``
    Names of the orchestrator's own programs. A process started as ``python -m <module>`` with a module
    name starting with one of these strings is never started again as a DDP rank by the local launcher
    (that would run a second copy of the orchestrator's run): ``Trainer(strategy="ddp", devices=N)``
    there raises and asks for ``torchrun`` instead.

Example::

    from lightning_lib.utilities.orchestration import Orchestrator, register_orchestrator

    def scheduler_tags() -> dict[str, str]:
        job = os.environ.get("MY_SCHEDULER_JOB_ID")
        return {"my_scheduler.job_id": job} if job else {}

    register_orchestrator(
        Orchestrator("my-scheduler", run_tags=scheduler_tags, entry_modules=("my_scheduler",))
    )

Registering again under the same name replaces the earlier registration, so a module imported twice (a
reload, a test) does not register twice. Registration and lookups take a lock, so registering from an
import running in another thread is safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("lightning_lib")

RunTagsProvider = Callable[[], Mapping[str, str]]
"""Returns the tags that identify the orchestrator run this process runs in, ``{}`` outside one."""


@dataclass(frozen=True)
class Orchestrator:
    """What the library needs to know about an orchestrator it runs under (see the module docstring).

    Args:
        name: Identifies the registration; registering another one with the same name replaces it.
        run_tags: Tags for a tracking run started in this process, or ``None`` for none.
        entry_modules: Module-name prefixes of the orchestrator's programs, never relaunched as DDP ranks.
    """

    name: str
    run_tags: RunTagsProvider | None = None
    entry_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Expected name to be a non-empty string, received {self.name!r}.")
        if self.run_tags is not None and not callable(self.run_tags):
            raise TypeError(
                f"Expected run_tags to be a function returning tags, or None, received {self.run_tags!r}."
            )
        # a bare string would pass as a sequence of one-letter prefixes and refuse nearly every module
        if not isinstance(self.entry_modules, tuple) or not all(
            isinstance(module, str) and module for module in self.entry_modules
        ):
            raise TypeError(
                "Expected entry_modules to be a tuple of non-empty module names, received"
                f" {self.entry_modules!r}."
            )


_lock = threading.Lock()
_registry: dict[str, Orchestrator] = {}


def register_orchestrator(orchestrator: Orchestrator) -> None:
    """Make ``orchestrator`` known to the library, replacing one registered under the same name."""
    if not isinstance(orchestrator, Orchestrator):
        raise TypeError(f"Expected orchestrator to be an Orchestrator, received {orchestrator!r}.")
    with _lock:
        _registry[orchestrator.name] = orchestrator


def unregister_orchestrator(name: str) -> Orchestrator | None:
    """Forget the orchestrator registered as ``name``; return it, or ``None`` if there was none."""
    with _lock:
        return _registry.pop(name, None)


def registered_orchestrators() -> tuple[Orchestrator, ...]:
    """The registered orchestrators, in the order they were first registered."""
    with _lock:
        return tuple(_registry.values())


def orchestrator_run_tags() -> dict[str, str]:
    """The tags of every registered orchestrator for a tracking run starting now, merged in order."""
    tags: dict[str, str] = {}
    for orchestrator in registered_orchestrators():
        if orchestrator.run_tags is None:
            continue
        try:
            tags.update(orchestrator.run_tags())
        except Exception as exc:  # tags are context for a person; losing them must not stop training
            log.warning(
                "The run tags of orchestrator %r failed (%s: %s); the run starts without them.",
                orchestrator.name,
                type(exc).__name__,
                exc,
            )
    return tags


def orchestrator_of_module(module: str) -> Orchestrator | None:
    """The registered orchestrator whose ``entry_modules`` ``module`` (a dotted name) starts with, if any."""
    for orchestrator in registered_orchestrators():
        if orchestrator.entry_modules and module.startswith(orchestrator.entry_modules):
            return orchestrator
    return None


__all__ = [
    "Orchestrator",
    "RunTagsProvider",
    "orchestrator_of_module",
    "orchestrator_run_tags",
    "register_orchestrator",
    "registered_orchestrators",
    "unregister_orchestrator",
]
