"""The MQTT outbox's rows in a pack's store: the messages the broker must get (fault
events) and has not yet acknowledged, so that neither an outage of any length nor a
restart loses them (bms.links.mqtt.outbox decides what goes where and when).

Why and how: docs/internals.md, bms/store/outbox.py.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from bms.store.nvm import NvmStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoredOutbox:
    """Rows (seq, topic, payload), added in seq order and forgotten once delivered; the last
    seq ever added is kept too, so numbering goes on after a restart with nothing waiting.
    A failing store (a full disk) never raises: the call says so, and the outbox keeps the
    message in memory instead. A failure is logged once, when it starts, and its end once."""

    def __init__(self, store: NvmStore):
        self.store = store
        self._failing = False

    def last_seq(self) -> int:
        row = self._run(lambda db: db.execute("SELECT last FROM outbox_seq").fetchone())
        return 0 if row is None else int(row[0])

    def waiting(self) -> int:
        row = self._run(lambda db: db.execute("SELECT COUNT(*) FROM outbox").fetchone())
        return 0 if row is None else int(row[0])

    def add(self, rows: list[tuple[int, str, bytes]]) -> bool:
        """(seq, topic, payload) rows in seq order, on disk in one transaction when this
        returns True."""
        def write(db: sqlite3.Connection) -> bool:
            with self.store._transaction():
                db.executemany("INSERT INTO outbox VALUES (?, ?, ?)", rows)
                db.execute("UPDATE outbox_seq SET last = MAX(last, ?)", (rows[-1][0],))
            return True

        return bool(self._run(write))

    def pending(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]] | None:
        """The oldest `limit` messages after `after_seq`, in order; None when unreadable."""
        return self._run(lambda db: [
            (int(seq), topic, bytes(payload)) for seq, topic, payload in db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit))])

    def forget_through(self, seq: int) -> bool:
        """Every message up to `seq` has been delivered."""
        def delete(db: sqlite3.Connection) -> bool:
            with self.store._transaction():
                db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
            return True

        return bool(self._run(delete))

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T | None:
        try:
            result = work(self.store.db)
        except sqlite3.Error as exc:
            if not self._failing:
                log.warning("the MQTT outbox in %s failed (%s): fault events wait in memory "
                            "only until it works again", self.store.path, exc)
            self._failing = True
            return None
        if self._failing:
            log.warning("the MQTT outbox in %s works again", self.store.path)
        self._failing = False
        return result
