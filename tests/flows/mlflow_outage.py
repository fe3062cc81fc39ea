"""An MLflow outage over the last epoch of a fit, for tests/flows/test_mlflow_faults.py.

``OutageClassifier`` (imported by path from a config, as users' models are) switches ``OUTAGE.proxy``
to answering 503 when its last epoch starts; ``ShortWaitLogger`` (put in place of ``MLFlowLogger`` by the
test) waits only a few seconds for MLflow at the end of the fit, and ends the outage once the fit's
logger has given up, so the next tasks find the server back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from examples.digits import DigitsClassifier
from lightning_lib.loggers import MLFlowLogger
from lightning_lib.loggers.mlflow._worker import DeliveryReport, RetryPolicy
from tests.faults import FaultProxy, http_response


@dataclass
class Outage:
    proxy: FaultProxy | None = None
    active: bool = False
    reports: list[DeliveryReport] = field(default_factory=list)  # of the loggers ended during the outage

    def start(self) -> None:
        assert self.proxy is not None
        self.active = True
        self.proxy.set("respond", response=http_response(503, "Service Unavailable"))

    def end(self) -> None:
        assert self.proxy is not None
        self.active = False
        self.proxy.set("pass")


OUTAGE = Outage()


class OutageClassifier(DigitsClassifier):
    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.trainer.max_epochs - 1 and OUTAGE.proxy is not None:
            OUTAGE.start()


class ShortWaitLogger(MLFlowLogger):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(finalize_timeout=3.0, retry=RetryPolicy(initial=0.2, factor=2.0, maximum=0.5))
        super().__init__(*args, **kwargs)

    def finalize(self, status: str = "success") -> None:
        super().finalize(status)
        if OUTAGE.active and self.delivery_report is not None:
            OUTAGE.reports.append(self.delivery_report)
            OUTAGE.end()
