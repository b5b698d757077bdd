"""The fault log: every raise and clear with a snapshot of the pack, bounded in memory.

The non-volatile store (`bms.store.nvm`) keeps it over restarts: it saves the entries recorded
since its last save (`recorded` counts every entry ever recorded) and hands them back at
start (`restore`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from bms.core.signals import FaultEvent


@dataclass(frozen=True)
class LogEntry:
    event: FaultEvent
    snapshot: dict  # state, pack voltage and current, SoC, cell and temperature extremes

    def as_dict(self) -> dict:
        return {**self.event.as_dict(), "snapshot": self.snapshot}


def newer_than(entries: Sequence[LogEntry], recorded: int, seen: int) -> Sequence[LogEntry]:
    """Of the newest `entries` of a log that has `recorded` entries in all, those after
    the first `seen` (what a store has not saved yet; only those still held)."""
    if seen >= recorded:
        return entries[:0]
    return entries[max(seen - recorded, -len(entries)):]


class FaultLog:
    def __init__(self, size: int):
        self.entries: deque[LogEntry] = deque(maxlen=size)
        self.dropped = 0  # entries pushed out by newer ones
        self.recorded = 0  # entries ever recorded, those dropped included

    def record(self, event: FaultEvent, snapshot: dict) -> None:
        if len(self.entries) == self.entries.maxlen:
            self.dropped += 1
        self.entries.append(LogEntry(event, snapshot))
        self.recorded += 1

    def restore(self, entries: list[LogEntry], recorded: int) -> None:
        """The log as a store kept it: the newest entries that fit, and the count of all
        ever recorded. Those not held (the store keeps more than memory, or pruned them) are
        the dropped ones."""
        self.entries.clear()
        self.entries.extend(entries)
        self.recorded = recorded
        self.dropped = max(recorded - len(self.entries), 0)

    def resize(self, size: int) -> None:
        """A new capacity (a configuration change): the newest entries stay, and those that
        no longer fit count as dropped."""
        self.dropped += max(len(self.entries) - size, 0)
        self.entries = deque(self.entries, maxlen=size)

    def __len__(self) -> int:
        return len(self.entries)
