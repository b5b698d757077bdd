"""What a BMS must shrug off on a CAN bus: identifiers it does not take (counted, by id),
frames of its own identifiers of the wrong length or with a request it does not know
(counted as malformed, not taken), its own frames coming back, error frames, a flood, and
an adapter that vanishes (closed, reopened with backoff, logged once an episode) - none
of them stops the firmware."""

from __future__ import annotations

import logging

import can
import pytest

from bms.links.can.kept_bus import FRAMES_PER_POLL, REOPEN_MAX_S
from bms.links.can.node import MAX_IDS_COUNTED
from tests.bms.links.can.bench import CanBench


@pytest.fixture
def lv():
    bench = CanBench("pylon-lv")
    yield bench
    bench.close()


def send(bench: CanBench, *frames: can.Message) -> None:
    for frame in frames:
        bench.inverter.send(frame)


def std(arbitration_id: int, length: int = 8) -> can.Message:
    return can.Message(arbitration_id=arbitration_id, data=bytes(length), is_extended_id=False)


def test_unknown_identifiers_are_counted_by_id_and_change_nothing(lv):
    lv.run(2.0)
    before = dict(lv.link.node.received)
    send(lv, std(0x123), std(0x123, 2), std(0x7FF),
         can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=True))  # 29-bit
    lv.tick(inverter_alive=False)
    node = lv.link.node
    assert node.unknown == 4
    assert node.unknown_ids == {"0x123": 2, "0x7FF": 1, "0x00000305": 1}
    assert dict(node.received) == before and lv.events == []


def test_a_known_identifier_of_the_wrong_length_is_malformed_and_not_taken(lv):
    lv.run(1.0)
    keepalives = lv.link.node.keepalives
    send(lv, std(0x305, 7), std(0x305, 0))
    lv.tick(inverter_alive=False)
    assert lv.link.node.malformed == {"inverter_keepalive": 2}
    assert lv.link.node.keepalives == keepalives


def test_its_own_frames_coming_back_are_echoes_not_unknown(lv):
    lv.run(1.0)
    send(lv, std(0x351), std(0x35E))
    lv.tick()
    assert (lv.link.node.echoes, lv.link.node.unknown) == (2, 0)


def test_error_and_remote_frames_are_counted(lv):
    lv.run(1.0)
    send(lv, can.Message(is_error_frame=True),
         can.Message(arbitration_id=0x305, is_remote_frame=True, dlc=8, is_extended_id=False))
    lv.tick()
    assert lv.link.node.bus_errors == 1
    assert lv.link.node.unknown_ids == {"0x305": 1}


def test_pylon_hv_request_it_does_not_know_is_malformed_and_unanswered():
    bench = CanBench("pylon-hv")
    try:
        bench.run(1.0, inverter_alive=False)
        bench.received.clear()
        send(bench, can.Message(arbitration_id=0x4200, is_extended_id=True,
                                data=bytes([7]) + bytes(7)))
        bench.tick(inverter_alive=False)
        assert bench.received == []
        assert bench.link.node.malformed == {"inverter_request": 1}
        assert bench.link.node.keepalives == 0
    finally:
        bench.close()


def test_a_flood_is_taken_a_bounded_number_a_poll_and_its_ids_counted_a_bounded_number(lv):
    lv.run(1.0)
    send(lv, *(std(0x400 + k % 100) for k in range(5 * FRAMES_PER_POLL)))
    lv.tick()
    assert lv.link.node.unknown == FRAMES_PER_POLL
    lv.run(0.4)
    assert lv.link.node.unknown == 5 * FRAMES_PER_POLL
    assert len(lv.link.node.unknown_ids) == MAX_IDS_COUNTED


class Adapter:
    """A USB adapter that can be pulled out: while it is out, opening fails and an open
    bus fails on its next use."""

    def __init__(self):
        self.plugged = True
        self.attempts: list[float] = []  # when the link tried to open it
        self.clock = lambda: 0.0

    def open(self, spec, bitrate):
        self.attempts.append(round(self.clock(), 6))
        if not self.plugged:
            raise can.CanInitializationError(f"{spec.channel}: no such device")
        return Port(self, can.Bus(interface="virtual", channel=spec.channel))


class Port:
    def __init__(self, adapter: Adapter, bus: can.BusABC):
        self.adapter, self.bus = adapter, bus

    def _check(self) -> None:
        if not self.adapter.plugged:
            raise can.CanOperationError("the device has been removed")

    def recv(self, timeout=None):
        self._check()
        return self.bus.recv(timeout)

    def send(self, msg, timeout=None):
        self._check()
        self.bus.send(msg, timeout)

    def shutdown(self):
        self.bus.shutdown()


def test_a_vanished_adapter_is_reopened_with_backoff_logged_once_and_the_firmware_runs_on(
        caplog):
    adapter = Adapter()
    bench = CanBench("pylon-lv")
    bench.link.shutdown()
    bench.link.opener = adapter.open
    bench.link._reopen_at_s = 0.0
    adapter.clock = lambda: bench.now_s
    caplog.set_level(logging.INFO, logger="bms.links.can.link")
    try:
        bench.run(5.0)
        adapter.plugged = False
        bench.run(20.0)  # the keep-alives are lost with the adapter
        assert bench.link.bus is None and bench.link.failures == 1
        gaps = [round(b - a, 6) for a, b in zip(adapter.attempts[1:], adapter.attempts[2:],
                                                 strict=False)]
        assert gaps[:4] == [1.0, 2.0, 4.0, REOPEN_MAX_S]  # after the first at +0.5 s
        assert set(gaps[4:]) == {REOPEN_MAX_S}
        adapter.plugged = True
        bench.run(10.0)
        assert bench.link.bus is not None and bench.link.failures == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, warnings  # the episode's start and its end
        assert "failed: the device has been removed" in warnings[0]
        assert "open again" in warnings[1]
        timeouts = [(e.level, e.action) for e in bench.events if e.name == "INVERTER_TIMEOUT"]
        assert timeouts == [("WARNING", "raised"), ("WARNING", "cleared")]
        assert bench.act.state == "RUN" and bench.act.contactors.main_closed
        assert bench.link.stats()["last_error"] == ""
    finally:
        bench.close()


def test_a_bus_that_cannot_be_opened_never_raises_and_says_why():
    bench = CanBench("pylon-lv")
    try:
        bench.link.shutdown()
        bench.link.opener = lambda spec, bitrate: can.Bus(interface="slcan",
                                                          channel="/nonexistent/tty")
        bench.link._reopen_at_s = 0.0
        bench.run(3.0)
        stats = bench.link.stats()
        assert stats["connected"] is False and stats["failures"] == 1
        assert stats["last_error"].startswith("cannot open CAN bus virtual:")
        assert "/nonexistent/tty" in stats["last_error"]
        assert bench.act.state == "RUN"
    finally:
        bench.close()


class Noisy:
    """A bus on which stray datagrams arrive: each `raises` entry is raised by one recv, as
    python-can's udp_multicast raises for a datagram it cannot unpack."""

    def __init__(self, bus: can.BusABC):
        self.bus = bus
        self.raises: list[Exception] = []

    def recv(self, timeout=None):
        if self.raises:
            raise self.raises.pop(0)
        return self.bus.recv(timeout)

    def send(self, msg, timeout=None):
        self.bus.send(msg, timeout)

    def shutdown(self):
        self.bus.shutdown()


def unreadable() -> can.CanOperationError:
    try:
        try:
            raise ValueError("unpack(b) received extra data")  # what msgpack says
        except ValueError as cause:
            raise can.CanOperationError("could not unpack received message") from cause
    except can.CanOperationError as exc:
        return exc


def test_a_frame_that_cannot_be_read_is_skipped_not_a_failed_bus(caplog):
    """One stray datagram used to close and reopen the bus (a WARNING pair each time); a
    socket error is still the bus failing."""
    bench = CanBench("pylon-lv")
    noisy: list[Noisy] = []
    bench.link.shutdown()
    bench.link.opener = lambda spec, bitrate: noisy.append(
        Noisy(can.Bus(interface="virtual", channel=spec.channel))) or noisy[-1]
    bench.link._reopen_at_s = 0.0
    caplog.set_level(logging.INFO, logger="bms.links.can.link")
    try:
        bench.run(2.0)
        opens = bench.link.opens
        noisy[0].raises += [unreadable() for _ in range(FRAMES_PER_POLL + 5)]
        bench.run(20.0)  # keep-alives all along
        stats = bench.link.stats()
        assert (stats["opens"], stats["failures"], stats["unreadable_frames"]) == (
            opens, 0, FRAMES_PER_POLL + 5)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "cannot be read" in warnings[0], warnings
        assert "extra data" in warnings[0]
        assert [e for e in bench.events if e.name == "INVERTER_TIMEOUT"] == []
        socket_error = can.CanOperationError("recv failed")
        socket_error.__cause__ = OSError(100, "Network is down")
        noisy[0].raises.append(socket_error)
        bench.run(1.0)
        assert bench.link.stats()["failures"] == 1
    finally:
        bench.close()


def test_a_frame_no_bus_could_carry_is_skipped_and_the_poll_goes_on(lv, caplog):
    """udp_multicast takes any msgpack datagram as a frame, an identifier of 1.5 or 2**40
    included: such a frame once raised in the frame set's lookup and lost the whole poll,
    keep-alives and all (a flood of them put the inverter into "BMS lost")."""
    caplog.set_level(logging.INFO, logger="bms.links.can.link")
    for _ in range(30):
        send(lv, can.Message(arbitration_id=1.5, data=bytes(8), is_extended_id=False),
             can.Message(arbitration_id=1 << 40, data=bytes(8), is_extended_id=True),
             lv.keepalive)
        lv.run(1.0)
    stats = lv.link.stats()
    assert stats["unreadable_frames"] == 60 and stats["errors"] == 0
    assert [e for e in lv.events if e.name == "INVERTER_TIMEOUT"] == []
    assert lv.link.node.keepalives >= 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "identifier 1.5" in warnings[0], warnings
