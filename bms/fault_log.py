"""The fault log: every raise and clear with a snapshot of the pack, bounded in memory.

Persistence to non-volatile memory comes with the reliability issue; until then the log
lives as long as the firmware object.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bms.signals import FaultEvent


@dataclass(frozen=True)
class LogEntry:
    event: FaultEvent
    snapshot: dict  # state, pack voltage and current, SoC, cell and temperature extremes

    def as_dict(self) -> dict:
        return {**self.event.as_dict(), "snapshot": self.snapshot}


class FaultLog:
    def __init__(self, size: int):
        self.entries: deque[LogEntry] = deque(maxlen=size)
        self.dropped = 0  # entries pushed out by newer ones

    def record(self, event: FaultEvent, snapshot: dict) -> None:
        if len(self.entries) == self.entries.maxlen:
            self.dropped += 1
        self.entries.append(LogEntry(event, snapshot))

    def resize(self, size: int) -> None:
        """A new capacity (a configuration change): the newest entries stay, and those that
        no longer fit count as dropped."""
        self.dropped += max(len(self.entries) - size, 0)
        self.entries = deque(self.entries, maxlen=size)

    def __len__(self) -> int:
        return len(self.entries)
