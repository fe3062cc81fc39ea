"""A minimal valid TrainConfig and the one-error view of a refused one, for the config and bounds tests."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tasks.config import TrainConfig

MODEL = "examples.digits:DigitsClassifier"


def make(**overrides: Any) -> TrainConfig:
    """The bundled example's model on a small table, with ``overrides`` as top-level fields."""
    fields: dict[str, Any] = {"model": MODEL, "data": {"source": "data/table.csv", "target": "label"}}
    fields.update(overrides)
    return TrainConfig(**fields)


def only_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    """The single validation error of a refused config (fails when there are several)."""
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])
