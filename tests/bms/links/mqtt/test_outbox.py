"""The outbox that fault events wait in for the broker: in order, each until acknowledged,
bounded in memory without a store and unbounded (up to the disk) with one, over a restart
too. The session's side (`next`, `done`) is called here as the session's thread calls it;
stores are real SQLite files."""

from __future__ import annotations

import json

import pytest

from bms.links.mqtt import outbox as outbox_module
from bms.links.mqtt.outbox import Gap, Outbox
from bms.store.nvm import NvmStore, PackIdentity
from bms.store.outbox import StoredOutbox
from tests.bms.store.test_nvm import Clock

TOPIC = "bms/p1/events"
PACK = PackIdentity("p1", "sim", "na-nfm", 4, 1.5)


def describe(gap: Gap) -> tuple[str, bytes]:
    return f"{TOPIC}/lost", json.dumps([gap.first_seq, gap.last_seq, gap.count]).encode()


def put(outbox: Outbox, *seqs: int) -> None:
    """One step's events."""
    outbox.put([(seq, TOPIC, f"e{seq}".encode()) for seq in seqs])


def drain(outbox: Outbox) -> list[str]:
    """What a connected session sends, in order, each acknowledged; the owner's `sync`
    runs between messages, as the control loop's tick would."""
    sent = []
    while (item := outbox.next()) is not None:
        topic, payload = item
        sent.append(payload.decode() if topic == TOPIC else f"lost {payload.decode()}")
        outbox.done()
        outbox.sync()
    return sent


def events(*seqs: int) -> list[str]:
    return [f"e{seq}" for seq in seqs]


@pytest.fixture
def store(tmp_path):
    s = NvmStore(tmp_path / "p1.sqlite", PACK, Clock())
    yield s
    s.close()


# --- without a store ----------------------------------------------------------------------

def test_without_a_store_the_oldest_wait_and_the_rest_are_counted_and_reported_in_place():
    ob = Outbox(None, describe, window=3)
    put(ob, 1, 2, 3, 4, 5)
    assert (ob.waiting, ob.lost) == (3, 2)
    assert drain(ob) == [*events(1, 2, 3), "lost [4, 5, 2]"]
    put(ob, 6)  # the broker keeps up again: nothing more is lost
    assert drain(ob) == events(6)
    assert (ob.waiting, ob.delivered, ob.lost) == (0, 4, 2)


def test_a_message_leaves_only_once_the_broker_has_acknowledged_it():
    ob = Outbox(None, describe)
    put(ob, 1, 2)
    assert ob.next() == (TOPIC, b"e1")
    assert ob.next() == (TOPIC, b"e1")  # the publish failed (no done): the same again
    ob.done()
    assert ob.next() == (TOPIC, b"e2") and ob.waiting == 1


def test_losses_after_a_report_has_gone_out_are_reported_apart():
    ob = Outbox(None, describe, window=1)
    put(ob, 1, 2)  # 2 finds no room
    assert ob.next() == (TOPIC, b"e1")
    ob.done()
    assert ob.next() == (f"{TOPIC}/lost", b"[2, 2, 1]")  # its report is on its way...
    put(ob, 3)  # ...so 3, lost too, is not folded into it
    ob.done()
    assert drain(ob) == ["lost [3, 3, 1]"]
    assert ob.lost == 2


# --- with a store -------------------------------------------------------------------------

def test_with_a_store_nothing_is_lost_and_what_memory_cannot_hold_comes_in_order(store):
    ob = Outbox(StoredOutbox(store), describe, window=3)
    put(ob, *range(1, 11))
    assert (ob.waiting, ob.lost) == (10, 0)
    assert drain(ob) == events(*range(1, 11))  # each once, in order, no report
    ob.sync(final=True)
    assert StoredOutbox(store).waiting() == 0 and ob.waiting == 0


def test_a_restart_delivers_what_the_last_run_could_not_first_and_numbers_on(tmp_path):
    path = tmp_path / "p1.sqlite"
    first = NvmStore(path, PACK, Clock())
    ob = Outbox(StoredOutbox(first), describe, window=3)
    put(ob, 1, 2, 3, 4, 5)
    for _ in range(2):  # the broker acknowledged two before the power went
        ob.next()
        ob.done()
    ob.sync(final=True)
    first.close()
    second = NvmStore(path, PACK, Clock())
    try:
        ob = Outbox(StoredOutbox(second), describe, window=3)
        assert (ob.last_seq, ob.waiting) == (5, 3)
        put(ob, 6)
        assert drain(ob) == events(3, 4, 5, 6)
    finally:
        second.close()


def test_delivered_messages_leave_the_store_at_most_every_half_second_and_at_once_at_the_end(
        store, monkeypatch):
    now_s = [100.0]
    monkeypatch.setattr(outbox_module.time, "monotonic", lambda: now_s[0])
    stored = StoredOutbox(store)
    ob = Outbox(stored, describe)
    put(ob, 1, 2)
    ob.next()
    ob.done()
    ob.sync()
    assert stored.waiting() == 1  # the first deletion at once
    ob.next()
    ob.done()
    ob.sync()
    assert stored.waiting() == 1  # the next one waits for FORGET_EVERY_S...
    now_s[0] += outbox_module.FORGET_EVERY_S
    ob.sync()
    assert stored.waiting() == 0  # ...and comes then
    put(ob, 3)
    ob.next()
    ob.done()
    ob.sync(final=True)
    assert stored.waiting() == 0  # the last: at once


def full_disk(store: NvmStore) -> None:
    """The database may grow no more: SQLite answers SQLITE_FULL, as on a full disk."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")


def test_on_a_full_disk_events_wait_in_memory_and_only_those_with_no_room_are_lost(
        store, caplog):
    ob = Outbox(StoredOutbox(store), describe, window=2)
    full_disk(store)
    big = "x" * 20_000  # needs pages of its own: cannot fit in free space
    for seq in (1, 2, 3):
        ob.put([(seq, TOPIC, f"{big}{seq}".encode())])
    assert (ob.waiting, ob.lost) == (2, 1)
    failures = [r for r in caplog.records if "outbox" in r.getMessage()]
    assert len(failures) == 1 and "failed" in failures[0].getMessage()  # once, not thrice
    sent = []
    while (item := ob.next()) is not None:
        sent.append(item)
        ob.done()
    assert [payload[-1:] for _topic, payload in sent[:2]] == [b"1", b"2"]
    assert sent[2:] == [(f"{TOPIC}/lost", b"[3, 3, 1]")]
