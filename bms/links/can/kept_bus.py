"""A python-can bus held open for whoever polls it: the BMS's CAN link, and on the other
end of the wire the simulated inverter and the simulated pack's DC side (`hil`). Opened
when due; any error of the bus (opening it, receiving, sending: an adapter unplugged, an
interface gone down, frames nobody acknowledges) closes it, and it is opened again 0.5 s
later, then after 1, 2, 4 and every 5 s, logged once as the episode starts and once as it
ends. A frame that arrived and cannot be read (a stray datagram on a udp_multicast group)
is not an error of the bus: it is skipped and counted. Nothing here ever waits: a poll
with no bus returns at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bms.links.can.bus_spec import BusSpec, open_bus, python_can

if TYPE_CHECKING:
    import can

FRAMES_PER_POLL = 200  # a flood waits for the next poll rather than hold up the caller
REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 5.0

Opener = Callable[[BusSpec, int], "can.BusABC"]


class KeptBus:
    """One bus. `opener` is injected for the tests; `label` says in the log what the bus
    carries; `log` is the caller's logger, so that the lines name who holds the bus."""

    def __init__(self, spec: BusSpec, bitrate: int, opener: Opener = open_bus,
                 label: str = "", log: logging.Logger | None = None):
        self.spec = spec
        self.bitrate = bitrate
        self.opener = opener
        self.label = label
        self.log = log or logging.getLogger(__name__)
        self.bus: can.BusABC | None = None
        self.opens = 0  # times the bus was opened
        self.failures = 0  # episodes of a bus that failed or would not open
        self.send_failures = 0  # frames that could not be handed to the bus
        self.unreadable_frames = 0  # arrived but could not be read: skipped (`_skip`)
        self.last_error = ""
        self._reopen_at_s = 0.0
        self._backoff_s = REOPEN_FIRST_S

    def exchange(self, now_s: float, take: Callable[[can.Message], list[can.Message]],
                 due: Callable[[], list[can.Message]]) -> None:
        """Opens the bus when due, hands each frame that has arrived to `take` (sending
        what it answers), then sends `due()`. An error of the bus closes it for a later
        reopen; an error of `take` or `due` (a bug of the caller's) passes through."""
        if self.bus is None and (now_s < self._reopen_at_s or not self._open(now_s)):
            return
        try:
            for _ in range(FRAMES_PER_POLL):
                try:
                    frame = self.bus.recv(timeout=0.0)
                except python_can().CanOperationError as exc:
                    if not _unreadable_frame(exc):
                        raise
                    self._skip(f"{exc}: {exc.__cause__}")
                    continue
                if frame is None:
                    break
                if (why := _malformed(frame)) is not None:
                    self._skip(why)
                    continue
                self._send(take(frame))
            self._send(due())
        except (python_can().CanError, OSError) as exc:
            self._fail(now_s, f"CAN bus {self.spec.describe()} failed: {exc}")

    def shutdown(self) -> None:
        """Closes the bus (a poll after it opens it again)."""
        if self.bus is not None:
            bus, self.bus = self.bus, None
            try:
                bus.shutdown()
            except Exception:  # noqa: BLE001 - a bus gone bad may refuse to close cleanly
                self.log.debug("closing %s", self.spec.describe(), exc_info=True)

    def bus_stats(self) -> dict:
        return {"bus": self.spec.describe(), "connected": self.bus is not None,
                "opens": self.opens, "failures": self.failures,
                "send_failures": self.send_failures,
                "unreadable_frames": self.unreadable_frames, "last_error": self.last_error}

    def _skip(self, why: str) -> None:
        """A frame that arrived and cannot be read: noise on the wire, not a failed bus.
        Said once, then counted."""
        self.unreadable_frames += 1
        if self.unreadable_frames == 1:
            self.log.warning("CAN bus %s: a frame that cannot be read (%s), skipped; more "
                             "are only counted", self.spec.describe(), why)

    def _send(self, frames: list[can.Message]) -> None:
        for frame in frames:
            try:
                self.bus.send(frame, timeout=0.0)
            except python_can().CanError:
                self.send_failures += 1
                raise

    def _open(self, now_s: float) -> bool:
        try:
            self.bus = self.opener(self.spec, self.bitrate)
        # python-can raises its own errors, OSError, or ImportError / ValueError for an
        # interface whose driver or arguments are missing
        except (python_can().CanError, OSError, ImportError, ValueError) as exc:
            self._fail(now_s, f"cannot open CAN bus {self.spec.describe()}: {exc}")
            return False
        self.opens += 1
        if self.last_error:
            self.log.warning("CAN bus %s open again", self.spec.describe())
        else:
            self.log.info("CAN bus %s open (%s)", self.spec.describe(), self.label)
        self.last_error = ""
        self._backoff_s = REOPEN_FIRST_S
        return True

    def _fail(self, now_s: float, why: str) -> None:
        """Closes the bus and sets the next attempt, backing off; logged once an episode."""
        self.shutdown()
        if not self.last_error:
            self.failures += 1
            self.log.warning("%s; retrying every %g s at most", why, REOPEN_MAX_S)
        self.last_error = why
        self._reopen_at_s = now_s + self._backoff_s
        self._backoff_s = min(2.0 * self._backoff_s, REOPEN_MAX_S)


def _unreadable_frame(exc: Exception) -> bool:
    """python-can's word for a frame it received but could not decode (udp_multicast: a
    datagram that is not a packed message): an operation error caused by the decoder,
    not by the socket (an OSError there is the bus failing)."""
    return exc.__cause__ is not None and not isinstance(exc.__cause__, OSError)


def _malformed(frame: can.Message) -> str | None:
    """Why a frame python-can handed over is no CAN frame, or None: its udp_multicast
    interface takes any msgpack datagram, an identifier of 1.5 included, which no frame
    set can look up (the whole poll was lost to it, keep-alives and all)."""
    frame_id = frame.arbitration_id
    if type(frame_id) is not int or not 0 <= frame_id < (
            1 << (29 if frame.is_extended_id else 11)):
        return f"identifier {frame_id!r}"
    if len(frame.data) > 64:
        return f"{len(frame.data)} data bytes"
    return None
