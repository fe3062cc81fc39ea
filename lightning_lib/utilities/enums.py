"""String enums that compare equal to their value in any case (Lightning's ``LightningEnum``)."""

from __future__ import annotations

from enum import Enum


class LightningEnum(str, Enum):
    """A ``str`` enum: ``GradClipAlgorithmType.NORM == "NORM" == "norm"``; build one with ``from_str``."""

    @classmethod
    def from_str(cls, value: str, source: str = "key") -> LightningEnum:
        """The member whose name (``source="key"``), value (``"value"``) or either (``"any"``) is ``value``."""
        if source in ("key", "any"):
            for name, member in cls.__members__.items():
                if name.lower() == value.lower():
                    return member
        if source in ("value", "any"):
            for member in cls.__members__.values():
                if member == value:
                    return member
        choices = [*cls.__members__] if source == "key" else [m.value for m in cls.__members__.values()]
        raise ValueError(f"Expected one of {choices}, received {value!r}.")

    def __eq__(self, other: object) -> bool:
        other_value = other.value if isinstance(other, Enum) else other
        return str(self.value).lower() == str(other_value).lower()

    def __hash__(self) -> int:
        return hash(str(self.value).lower())


class GradClipAlgorithmType(LightningEnum):
    """The ``gradient_clip_algorithm`` values: clip the total norm, or each value."""

    VALUE = "value"
    NORM = "norm"

    @staticmethod
    def supported_type(val: str) -> bool:
        return any(x.value == val for x in GradClipAlgorithmType)

    @staticmethod
    def supported_types() -> list[str]:
        return [x.value for x in GradClipAlgorithmType]


__all__ = ["GradClipAlgorithmType", "LightningEnum"]
