"""The messages the broker must get (fault events): delivered in order, each held until the
broker has acknowledged it (QoS 1), over an outage of any length.

Why and how: docs/internals.md, bms/links/mqtt/outbox.py.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WINDOW = 1000  # messages held in memory; without a store, the most that outlive an outage
FORGET_EVERY_S = 0.5  # wall time between deletions of delivered messages from the store


class OutboxStore(Protocol):
    """Where an outbox keeps every message until the broker has it (bms.store.outbox). A
    failing store answers False or None; it never raises."""

    def last_seq(self) -> int: ...
    def waiting(self) -> int: ...
    def add(self, rows: list[tuple[int, str, bytes]]) -> bool: ...
    def pending(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]] | None: ...
    def forget_through(self, seq: int) -> bool: ...


@dataclass
class Gap:
    """Messages lost in a row for want of room, reported in their place in the stream."""

    first_seq: int
    last_seq: int
    count: int = 1
    reported: bool = False  # its report is on its way: a later loss opens a new gap


class Outbox:
    """`put` (the owner's thread) numbers nothing itself: the caller gives each message the
    seq after the one before, from `last_seq` on. The session's thread takes the oldest
    with `next` and calls `done` once the broker has acknowledged it. With a store every
    message is written there first: what does not fit in memory waits on disk (the owner's
    `sync` brings it in as room frees), and a restart delivers what the last run could not.
    Without one, a message that finds the memory full is lost (the older ones are kept: the
    first fault of an outage usually explains the rest); each run of losses becomes a
    report in its place."""

    def __init__(self, store: OutboxStore | None,
                 describe_gap: Callable[[Gap], tuple[str, bytes]], window: int = WINDOW):
        """`describe_gap(gap)`: the (topic, payload) that reports a run of losses."""
        self.window = window
        self._store = store
        self._describe_gap = describe_gap
        self._lock = threading.Lock()
        self._items: deque[tuple[int, str, bytes] | Gap] = deque()
        self.on_change: Callable[[], None] = lambda: None  # the session's wake-up
        self.last_seq = 0 if store is None else store.last_seq()
        self._queued = 0 if store is None else store.waiting()  # from earlier runs, then put
        self._behind = self._queued > 0  # the store holds messages the memory does not
        self._tail_seq = 0  # the newest message taken into memory
        self._acked_seq = 0  # the newest the broker has acknowledged
        self._forgotten_seq = 0  # the newest deleted from the store
        self._forgot_at_s = -math.inf
        self.delivered = 0
        self.lost = 0
        self._refill()  # what an earlier run left: first in line

    @property
    def waiting(self) -> int:
        """Messages not yet delivered: on disk with a store, else in memory."""
        return self._queued - self.delivered - self.lost

    # --- the owner's thread --------------------------------------------------------------

    def put(self, messages: list[tuple[int, str, bytes]]) -> None:
        """(seq, topic, payload) messages in seq order: one step's, saved together."""
        if not messages:
            return
        saved = self._store is not None and self._store.add(messages)
        self.last_seq = messages[-1][0]
        self._queued += len(messages)
        with self._lock:
            for message in messages:
                if not self._behind and len(self._items) < self.window:
                    self._items.append(message)
                    self._tail_seq = message[0]
                elif saved:
                    self._behind = True
                else:
                    self._lose(message[0])
        self.on_change()

    def sync(self, final: bool = False) -> None:
        """Deletes from the store what the broker has acknowledged (at most every
        FORGET_EVERY_S, at once when `final`) and brings in from it what memory has room
        for. A crash redelivers at most what was acknowledged since the last deletion."""
        if self._store is None:
            return
        with self._lock:
            acked = self._acked_seq
        now_s = time.monotonic()
        due = final or now_s - self._forgot_at_s >= FORGET_EVERY_S
        if acked > self._forgotten_seq and due and self._store.forget_through(acked):
            self._forgotten_seq = acked
            self._forgot_at_s = now_s
        if not final:
            self._refill()

    def _refill(self) -> None:
        if not self._behind:
            return
        with self._lock:
            room = self.window - len(self._items)
        if room <= 0:
            return
        rows = self._store.pending(self._tail_seq, room)
        if rows is None:
            return
        with self._lock:
            self._items.extend(rows)
        if rows:
            self._tail_seq = rows[-1][0]
        self._behind = len(rows) == room
        self.on_change()

    def _lose(self, seq: int) -> None:
        last = self._items[-1] if self._items else None
        if isinstance(last, Gap) and not last.reported:
            last.last_seq = seq
            last.count += 1
        else:
            self._items.append(Gap(seq, seq))
        self.lost += 1

    # --- the session's thread ------------------------------------------------------------

    def next(self) -> tuple[str, bytes] | None:
        """(topic, payload) of the oldest message, or None."""
        with self._lock:
            if not self._items:
                return None
            front = self._items[0]
            if not isinstance(front, Gap):
                return front[1], front[2]
            front.reported = True  # from now on it changes no more
        return self._describe_gap(front)

    def done(self) -> None:
        """The broker has acknowledged what `next` gave."""
        with self._lock:
            front = self._items.popleft()
            if not isinstance(front, Gap):
                self._acked_seq = front[0]
                self.delivered += 1
