"""The MQTT outbox's rows in a real store: numbering that survives a restart with nothing
waiting, and a failing store (a full disk) that never raises and is logged once a failure,
not once a message."""

from __future__ import annotations

import pytest

from bms.store.nvm import NvmStore, PackIdentity
from bms.store.outbox import StoredOutbox
from tests.bms.store.test_nvm import Clock

TOPIC = "bms/p1/events"
PACK = PackIdentity("p1", "sim", "na-nfm", 4, 1.5)
BIG = b"x" * 20_000  # needs pages of its own: never fits in a page's free space


@pytest.fixture
def store(tmp_path):
    s = NvmStore(tmp_path / "p1.sqlite", PACK, Clock())
    yield s
    s.close()


def full_disk(store: NvmStore) -> None:
    """The database may grow no more: SQLite answers SQLITE_FULL, as on a full disk."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")


def test_numbering_goes_on_after_a_restart_with_nothing_waiting(tmp_path):
    path = tmp_path / "p1.sqlite"
    first = NvmStore(path, PACK, Clock())
    stored = StoredOutbox(first)
    assert stored.last_seq() == 0
    assert stored.add([(seq, TOPIC, b"e") for seq in (1, 2, 3)])
    assert stored.forget_through(3)
    first.close()
    second = NvmStore(path, PACK, Clock())
    try:
        stored = StoredOutbox(second)
        assert (stored.waiting(), stored.last_seq()) == (0, 3)
    finally:
        second.close()


def test_pending_gives_the_oldest_after_a_seq_in_order(store):
    stored = StoredOutbox(store)
    assert stored.add([(seq, TOPIC, f"e{seq}".encode()) for seq in (1, 2, 3, 4)])
    assert stored.pending(1, 2) == [(2, TOPIC, b"e2"), (3, TOPIC, b"e3")]


def test_a_full_disk_is_an_answer_not_an_exception_and_is_logged_once_a_failure(
        store, caplog):
    stored = StoredOutbox(store)
    full_disk(store)
    assert [stored.add([(seq, TOPIC, BIG)]) for seq in (1, 2, 3)] == [False, False, False]
    store.db.execute("PRAGMA max_page_count = 1073741823")  # space again
    assert stored.add([(4, TOPIC, BIG)])
    messages = [r.getMessage() for r in caplog.records if "outbox" in r.getMessage()]
    assert len(messages) == 2, messages
    assert "failed" in messages[0] and str(store.path) in messages[0]
    assert "works again" in messages[1]
    assert stored.pending(0, 10) == [(4, TOPIC, BIG)]  # the failed ones left nothing behind
    assert stored.last_seq() == 4


def test_a_closed_store_answers_none_and_false(store):
    stored = StoredOutbox(store)
    store.close()
    assert stored.pending(0, 10) is None and not stored.add([(1, TOPIC, b"e")])
    assert not stored.forget_through(1)
