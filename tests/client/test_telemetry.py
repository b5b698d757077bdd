"""Subscribe (docs/protocol.md, Subscribe; Events, time and restarts): telemetry at its
period as EVENT frames in the Subscribe's revision, a later Subscribe replacing it, an
empty one stopping it; FaultEvents as faults are raised and cleared, each one the fault
log's entry. Periods are checked on the device's own `time_s`, never on the test's clock.
"""

from __future__ import annotations

import math
import time

import pytest

from protocol import messages as pm
from protocol.codec import Frame
from protocol.framing import LATEST_REVISION, REVISION_1_0, REVISIONS, Flags
from protocol.messages import encode_payload
from tests.client.conftest import OPEN_SENSOR, Faulted
from tests.client.emulators import LEVEL, TEMP_SENSOR_FAULT, TICK_S, Emulator
from tests.client.spec_client import type_id

# The types the Subscribe section lists as subscribable at a period.
PERIODIC = (pm.Status, pm.CellVoltages, pm.Temperatures, pm.CellSoc, pm.BalancingState)
CELL_UNDERVOLTAGE = 1  # docs/protocol.md, Faults
RAISED, CLEARED = 1, 0
EVENTS = 8  # telemetry messages a period is judged on
PERIOD_SLACK = 0.25  # the mean spacing may be this fraction off the period


def subscribe(emulator: Emulator, entries: dict[type, int], revision: int = LATEST_REVISION
              ) -> int:
    """Subscribes {message class: period_ms}; returns the mark after its Ack."""
    request = pm.Subscribe(tuple({"msg_type": type_id(cls), "period_ms": period_ms}
                                 for cls, period_ms in entries.items()))
    frame = emulator.client.request(request, revision)
    assert isinstance(frame.message, pm.Ack), frame.message
    return emulator.client.mark()


def collect(emulator: Emulator, cls: type, after: int, n: int) -> list[Frame]:
    """The first `n` EVENT frames of `cls` after `after`."""
    emulator.client.wait_for(lambda _item: len(emulator.client.events(cls, after)) >= n,
                             f"{n} {cls.__name__} events", after)
    return emulator.client.events(cls, after)[:n]


def mean_spacing_s(frames: list[Frame]) -> float:
    times = [f.message.time_s for f in frames]
    assert all(b > a for a, b in zip(times, times[1:], strict=False)), times
    return (times[-1] - times[0]) / (len(times) - 1)


@pytest.fixture
def quiet(sim: Emulator):
    """Telemetry stopped after the test, whatever it subscribed."""
    yield sim
    sim.client.ask(pm.Subscribe(()))


@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_status_comes_at_its_period_in_the_subscribes_revision(quiet: Emulator,
                                                               revision: int) -> None:
    period_s = 0.2
    after = subscribe(quiet, {pm.Status: int(period_s * 1000)}, revision)
    frames = collect(quiet, pm.Status, after, EVENTS)
    for frame in frames:
        assert frame.header.flags == Flags.EVENT and frame.header.revision == revision
        assert frame.header.length == len(encode_payload(frame.message, revision)[1])
    assert mean_spacing_s(frames) == pytest.approx(period_s, rel=PERIOD_SLACK)


def test_a_period_below_the_tick_is_served_at_the_tick(quiet: Emulator) -> None:
    after = subscribe(quiet, {pm.Status: 10})
    assert mean_spacing_s(collect(quiet, pm.Status, after, EVENTS)) == pytest.approx(
        TICK_S, rel=PERIOD_SLACK)


def test_every_subscribable_type_arrives(quiet: Emulator) -> None:
    after = subscribe(quiet, dict.fromkeys(PERIODIC, 100))
    for cls in PERIODIC:
        assert collect(quiet, cls, after, 2)


def test_a_later_subscribe_replaces_the_earlier(quiet: Emulator) -> None:
    subscribe(quiet, {pm.Status: 50})
    after = subscribe(quiet, {pm.CellSoc: 50})
    collect(quiet, pm.CellSoc, after, 3)
    assert quiet.client.events(pm.Status, after) == []


def test_an_empty_subscribe_stops_telemetry(quiet: Emulator) -> None:
    """Nothing comes in five periods of device time after the empty Subscribe's Ack."""
    period_ms = 50
    subscribe(quiet, {pm.Status: period_ms})
    after = subscribe(quiet, {})
    stopped_s = quiet.status().time_s
    while quiet.client.ask(pm.TimeSync(0.0)).device_time_s < stopped_s + 5 * period_ms / 1000:
        time.sleep(TICK_S)
    assert quiet.client.events(pm.Status, after) == []


# --- fault events --------------------------------------------------------------------------------

def undervoltage_warning(emulator: Emulator, cell_v: float | None) -> pm.SetConfig:
    """CELL_UNDERVOLTAGE's WARNING row with its threshold just above `cell_v` (raised at
    once) or, for None, its defaults (released after their `release_s`)."""
    row = "protection.CELL_UNDERVOLTAGE.WARNING"
    names = ("threshold", "release", "debounce_s", "release_s")
    params = {n: emulator.param(f"{row}.{n}") for n in names}
    if cell_v is None:
        values = {n: p["default"] for n, p in params.items()}
    else:
        values = {"threshold": cell_v + 0.05, "release": cell_v + 0.1, "debounce_s": 0.0,
                  "release_s": 0.0}
    return pm.SetConfig(tuple({"param_id": params[n]["param_id"],
                               "kind": int(pm.ValueKind.FLOAT), "value": v}
                              for n, v in values.items()))


def fault_event(emulator: Emulator, after: int, code: int, action: int) -> Frame:
    return emulator.client.wait_for(
        lambda item: isinstance(item, Frame) and isinstance(item.message, pm.FaultEvent)
        and item.message.code == code and item.message.action == action,
        f"FaultEvent code {code} action {action}", after)


def log_entry_of(emulator: Emulator, event: pm.FaultEvent) -> dict:
    """The fault log entry a FaultEvent is, read where its `log_index` says."""
    dropped = emulator.client.ask(pm.GetFaultLog(0, 0)).dropped
    page = emulator.client.ask(pm.GetFaultLog(event.log_index - dropped, 1))
    assert page.dropped + page.start == event.log_index and len(page.entries) == 1
    return page.entries[0]


def test_a_warning_raised_and_cleared_is_pushed_as_two_fault_events(quiet: Emulator) -> None:
    event_type = type_id(pm.FaultEvent)
    emulator = quiet
    frame = emulator.client.request(pm.Subscribe(({"msg_type": event_type,
                                                   "period_ms": 123456},)))
    assert isinstance(frame.message, pm.Ack), frame.message  # its period is ignored
    after = emulator.client.mark()
    cell_v = emulator.status().cell_v_max
    try:
        emulator.client.ask(undervoltage_warning(emulator, cell_v))
        raised = fault_event(emulator, after, CELL_UNDERVOLTAGE, RAISED)
        status = emulator.until_status(lambda s: s.warning_bitmap >> CELL_UNDERVOLTAGE & 1,
                                       "the WARNING in Status")
        assert not status.fault_level_bitmap >> CELL_UNDERVOLTAGE & 1
    finally:
        emulator.client.ask(undervoltage_warning(emulator, None))
    cleared = fault_event(emulator, after, CELL_UNDERVOLTAGE, CLEARED)
    for frame in (raised, cleared):
        event = frame.message
        assert frame.header.flags == Flags.EVENT and frame.header.revision == LATEST_REVISION
        assert event.level == LEVEL["WARNING"] and 0 <= event.index < emulator.info.n_series
        entry = log_entry_of(emulator, event)
        assert (entry["code"], entry["level"], entry["action"], entry["index"]) == (
            event.code, event.level, event.action, event.index)
        assert entry["t_s"] == event.time_s and entry["boot"] == event.boot
    assert cleared.message.log_index > raised.message.log_index
    assert raised.message.value < cell_v + 0.05  # the reading under the threshold, not NaN


def test_a_fault_event_is_refused_to_a_1_0_subscriber_and_not_sent(sim: Emulator) -> None:
    request = pm.Subscribe(({"msg_type": type_id(pm.FaultEvent), "period_ms": 100},))
    frame = sim.client.request(request, REVISION_1_0)
    assert isinstance(frame.message, pm.Nack) and frame.message.error == pm.ErrorCode.BAD_VALUE


def test_an_injected_fault_is_pushed_and_logged_with_its_sensor(faulted_pty: Faulted) -> None:
    """The injection named sensor 2 (from 1); payloads number from 0: `index` 1. The event
    came after SetTime: it carries UTC, and so does its log entry."""
    frame = faulted_pty.fault_event
    event = frame.message
    assert frame.header.flags == Flags.EVENT and frame.header.revision == LATEST_REVISION
    assert (event.code, event.level, event.action, event.index) == (
        TEMP_SENSOR_FAULT, LEVEL["FAULT"], RAISED, OPEN_SENSOR - 1)
    assert event.value == -60.0  # the injection's default reading of an open sensor
    assert event.boot >= 1  # this emulator keeps a store
    assert event.utc_s == pytest.approx(event.time_s + faulted_pty.utc_offset_s, abs=1.0)
    entry = log_entry_of(faulted_pty.emulator, event)
    assert entry["utc_s"] == pytest.approx(event.utc_s) and entry["value"] == event.value


@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_the_fault_log_pages_in_each_revision(faulted_pty: Faulted, revision: int) -> None:
    client = faulted_pty.emulator.client
    page = client.ask(pm.GetFaultLog(0, 255), revision)
    assert 1 <= len(page.entries) <= faulted_pty.emulator.info.max_page_entries
    assert len(page.entries) == min(page.total, faulted_pty.emulator.info.max_page_entries)
    entry = next(e for e in page.entries if e["code"] == TEMP_SENSOR_FAULT)
    assert entry["index"] == OPEN_SENSOR - 1
    if revision == REVISION_1_0:  # fields 1.0 lacks take their unknown values
        assert entry["boot"] == 0 and math.isnan(entry["utc_s"])
    else:
        assert entry["boot"] >= 1 and math.isfinite(entry["utc_s"])
