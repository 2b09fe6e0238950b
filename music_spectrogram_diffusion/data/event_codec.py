"""The event codec: named integer ranges laid end to end (spec §1.1).

A ``Codec`` maps an ``Event`` (a type name and an integer value) to a "codec id", an index
into the concatenation of its ranges. ``shift`` always comes first with values
0..max_shift_steps, so a shift's codec id equals its number of steps. Token ids, which the
model sees, are codec ids + 3; that shift lives in ``vocabularies.py``.

The layout is the one of MT3/MSD, so token ids match the released checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class EventRange:
    """All values ``min_value..max_value`` (inclusive) of one event type."""

    type: str
    min_value: int
    max_value: int

    def __post_init__(self):
        if self.max_value < self.min_value:
            raise ValueError(
                f"EventRange {self.type!r}: max_value {self.max_value} < min_value {self.min_value}"
            )

    @property
    def size(self) -> int:
        return self.max_value - self.min_value + 1


@dataclasses.dataclass(frozen=True)
class Event:
    """One symbolic event, e.g. ``Event("pitch", 60)`` or ``Event("shift", 1)``."""

    type: str
    value: int


class Codec:
    """Encodes and decodes events as codec ids (spec §1.1).

    Args:
      max_shift_steps: largest single shift; the shift range is 0..max_shift_steps.
      steps_per_second: time resolution of shifts (100 = 10 ms steps).
      event_ranges: the other ranges, in layout order after ``shift``.
    """

    def __init__(self, max_shift_steps: int, steps_per_second: float,
                 event_ranges: Sequence[EventRange]):
        self.steps_per_second = steps_per_second
        self._shift_range = EventRange("shift", 0, max_shift_steps)
        self._event_ranges = (self._shift_range,) + tuple(event_ranges)
        names = [r.type for r in self._event_ranges]
        if len(names) != len(set(names)):
            raise ValueError(f"Codec: event types must be unique, got {names}")
        # offset of each type's first id, in layout order
        self._offsets: dict[str, int] = {}
        offset = 0
        for event_range in self._event_ranges:
            self._offsets[event_range.type] = offset
            offset += event_range.size
        self._num_classes = offset
        self._ranges_by_type = {r.type: r for r in self._event_ranges}

    @property
    def num_classes(self) -> int:
        """Number of codec ids: the sum of all range sizes."""
        return self._num_classes

    @property
    def max_shift_steps(self) -> int:
        return self._shift_range.max_value

    @property
    def event_ranges(self) -> tuple[EventRange, ...]:
        """All ranges in layout order, ``shift`` first."""
        return self._event_ranges

    def is_shift_event_index(self, index: int) -> bool:
        """True for codec ids of shift events (including the never-emitted shift 0)."""
        return self._shift_range.min_value <= index <= self._shift_range.max_value

    def encode_event(self, event: Event) -> int:
        """Codec id of ``event``; ValueError for an unknown type or an out-of-range value."""
        event_range = self._ranges_by_type.get(event.type)
        if event_range is None:
            raise ValueError(
                f"unknown event type {event.type!r}; valid types: {list(self._ranges_by_type)}"
            )
        if not event_range.min_value <= event.value <= event_range.max_value:
            raise ValueError(
                f"event value {event.value} for type {event.type!r} is outside "
                f"[{event_range.min_value}, {event_range.max_value}]"
            )
        return self._offsets[event.type] + event.value - event_range.min_value

    def event_type_range(self, event_type: str) -> tuple[int, int]:
        """(first, last) codec id of ``event_type``, both inclusive."""
        event_range = self._ranges_by_type.get(event_type)
        if event_range is None:
            raise ValueError(
                f"unknown event type {event_type!r}; valid types: {list(self._ranges_by_type)}"
            )
        first = self._offsets[event_type]
        return first, first + event_range.size - 1

    def has_event_type(self, event_type: str) -> bool:
        return event_type in self._ranges_by_type

    def decode_event_index(self, index: int) -> Event:
        """The event of codec id ``index``; ValueError outside [0, num_classes)."""
        index = int(index)
        for event_range in self._event_ranges:
            offset = self._offsets[event_range.type]
            if offset <= index < offset + event_range.size:
                return Event(event_range.type, event_range.min_value + index - offset)
        raise ValueError(f"codec id {index} is outside [0, {self._num_classes})")

    def __repr__(self) -> str:
        ranges = ", ".join(f"{r.type}={r.min_value}..{r.max_value}" for r in self._event_ranges)
        return f"Codec(steps_per_second={self.steps_per_second}, {ranges})"
