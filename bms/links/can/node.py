"""The BMS end of a frame set, sans-IO: which frames are due at a time, and what a received
frame means (a keep-alive, a request to answer, or a frame to count and drop). It reads
the published state through a callable and tells the firmware of keep-alives; the bus
is `bms.links.can.link`'s. Times are the emulator's, handed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import can

from bms.host.periodic import TIME_EPS_S, Periodic
from bms.links.can.frame_sets import FrameSet
from bms.links.can.values import Published, encode, signal_values

MAX_IDS_COUNTED = 32  # unknown identifiers counted one by one; beyond them only in the total


class CanNode:
    """`view(now_s)` is the published state (None before the firmware's first step: nothing
    goes out); `on_keepalive(now_s)` is told of each keep-alive."""

    def __init__(self, frames: FrameSet, view: Callable[[float], Published | None],
                 on_keepalive: Callable[[float], None]):
        self.frames = frames
        self.view = view
        self.on_keepalive = on_keepalive
        self.schedules = [(message, Periodic(period_s)) for message, period_s in frames.periodic]
        self.sent: Counter[str] = Counter()  # by message name
        self.received: Counter[str] = Counter()  # good frames, by message name
        self.keepalives = 0
        self.unknown = 0  # frames of an identifier the set does not take
        # Frames of an identifier this end sends: its own, back (udp_multicast loops them
        # to every process on the host), or another battery on the bus.
        self.echoes = 0
        self._sent_ids = {(m.frame_id, m.is_extended_frame) for m, _ in frames.periodic}
        self._sent_ids |= {(frames.message(name).frame_id, frames.message(name).is_extended_frame)
                           for answer in frames.spec.answers.values()
                           for names in answer.frames.values() for name in names}
        self.unknown_ids: Counter[str] = Counter()  # the first MAX_IDS_COUNTED, by "0x..."
        self.malformed: Counter[str] = Counter()  # by message name: wrong length or value
        self.bus_errors = 0  # error frames the adapter reported

    def start(self, now_s: float) -> None:
        """Every periodic frame falls due now, then each period."""
        for _, schedule in self.schedules:
            schedule.next_due_s = now_s

    def due(self, now_s: float) -> list[can.Message]:
        """The periodic frames due by `now_s`, each from the state published now; none
        before the firmware's first step (they wait for it). The published state is read
        only when a frame is due: most polls (every 20 ms) send nothing."""
        if all(schedule.next_due_s > now_s + TIME_EPS_S for _, schedule in self.schedules):
            return []
        p = self.view(now_s)
        if p is None:
            return []
        return self._frames([m.name for m, schedule in self.schedules if schedule.due(now_s)],
                            p)

    def receive(self, frame: can.Message, now_s: float) -> list[can.Message]:
        """Takes one received frame; returns the frames that answer it (none mostly)."""
        if frame.is_error_frame:
            self.bus_errors += 1
            return []
        message = None if frame.is_remote_frame else self.frames.received.get(
            (frame.arbitration_id, frame.is_extended_id))
        if message is None:
            key = (frame.arbitration_id, frame.is_extended_id)
            if key in self._sent_ids:
                self.echoes += 1
            else:
                self._count_unknown(frame)
            return []
        if frame.dlc != message.length or len(frame.data) != message.length:
            self.malformed[message.name] += 1
            return []
        answer = self.frames.spec.answers.get(message.name)
        names: tuple[str, ...] = ()
        if answer is not None:
            selector = message.decode(bytes(frame.data), decode_choices=False)[answer.selector]
            names = answer.frames.get(int(selector), None)
            if names is None:
                self.malformed[message.name] += 1
                return []
        self.received[message.name] += 1
        if message.name in self.frames.spec.keepalive:
            self.keepalives += 1
            self.on_keepalive(now_s)
        p = self.view(now_s) if names else None
        return self._frames(list(names), p) if p is not None else []

    def _frames(self, names: list[str], p: Published) -> list[can.Message]:
        if not names:
            return []
        values = signal_values(self.frames.name, p)
        out = []
        for name in names:
            message = self.frames.message(name)
            out.append(can.Message(arbitration_id=message.frame_id,
                                   is_extended_id=message.is_extended_frame,
                                   data=encode(message, values)))
            self.sent[name] += 1
        return out

    def _count_unknown(self, frame: can.Message) -> None:
        self.unknown += 1
        key = f"0x{frame.arbitration_id:0{8 if frame.is_extended_id else 3}X}"
        if key in self.unknown_ids or len(self.unknown_ids) < MAX_IDS_COUNTED:
            self.unknown_ids[key] += 1

    def stats(self) -> dict:
        return {"frame_set": self.frames.name, "sent": dict(self.sent),
                "received": dict(self.received), "keepalives": self.keepalives,
                "unknown": self.unknown, "unknown_ids": dict(self.unknown_ids),
                "echoes": self.echoes,
                "malformed": dict(self.malformed), "bus_errors": self.bus_errors}
