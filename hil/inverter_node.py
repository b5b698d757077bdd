"""The simulated inverter on a CAN bus. `InverterNode` is sans-IO: it reads the battery's
frames (`hil.battery_view`), sends what its frame set has the inverter send each period
of the DBC - pylon-lv the 0x305 keep-alive, pylon-hv the 0x4200 request (system
information first, then ensemble information) - decides (`hil.inverter.decide`) and sends
its DC setpoint to the simulated pack every 100 ms (`hil.dc_bus`). It keeps what a real
inverter shows (`status_line`) and the run's summary. `InverterLink` moves its frames on
a bus kept open (`bms.links.can.kept_bus`). Times are the caller's: simulated in one
process (`hil.inverter_loop`), real in `bms-emu inverter`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import asdict

import can
from cantools.database.can import Message

from bms.host.periodic import Periodic
from bms.links.can.bus_spec import BusSpec, open_bus
from bms.links.can.frame_sets import FrameSet
from bms.links.can.kept_bus import KeptBus, Opener
from hil.battery_view import BatteryReader, BatteryView
from hil.dc_bus import OFF, SETPOINT, encode_setpoint, is_setpoint, period_s
from hil.inverter import Decision, Mode, decide
from hil.ups_duty import UpsDuty

log = logging.getLogger(__name__)

INVERTER_NODE = "INV"  # the DBC's name for the inverter
TRANSITIONS_KEPT = 200  # a summary of days stays small: later changes are only counted
# What the inverter's messages carry, in turn, one send after the other (a message not
# listed is sent as zeros, as the Pylontech keep-alive is).
ROUNDS: dict[str, tuple[dict[str, int], ...]] = {
    "inverter_request": ({"request": 2},) + ({"request": 0},) * 9,
}


class InverterNode:
    def __init__(self, frames: FrameSet, duty: UpsDuty):
        self.frames = frames
        self.duty = duty
        self.reader = BatteryReader(frames)
        self.schedules: list[tuple[Message, Periodic]] = [
            (m, Periodic(m.cycle_time / 1000.0)) for m in frames.db.messages
            if INVERTER_NODE in m.senders and m.cycle_time]
        self.setpoint_schedule = Periodic(period_s())
        self.own_ids = {(m.frame_id, m.is_extended_frame) for m, _ in self.schedules}
        self.decision = Decision(Mode.WAITING, OFF)
        self.sent: Counter[str] = Counter()
        self.echoes = 0  # its own frames back (udp_multicast loops them to every process)
        self.unknown = 0  # frames neither the battery's nor its own
        self.malformed = 0  # the battery's identifiers with the wrong length
        self.now_s: float | None = None
        self.modes_s: Counter[str] = Counter()  # seconds in each mode
        self.transitions: list[dict] = []  # the first TRANSITIONS_KEPT mode changes
        self.changes = 0  # mode changes, all of them
        self.charged_wh = 0.0  # as the battery reports its voltage and current
        self.discharged_wh = 0.0
        self.soc_range_pct = [math.inf, -math.inf]
        self.warnings_seen: set[str] = set()
        self.protections_seen: set[str] = set()
        self.outages = [{"at_s": o.at_s, "length_s": o.length_s, "served_s": 0.0,
                         "cut_off_at_s": None, "cut_off_why": None} for o in duty.outages]

    @property
    def view(self) -> BatteryView:
        return self.reader.view

    def receive(self, frame: can.Message, now_s: float) -> list[can.Message]:
        """Takes one frame; the inverter answers nothing."""
        if frame.is_error_frame or self.reader.take(frame, now_s):
            return []
        key = (frame.arbitration_id, frame.is_extended_id)
        if key in self.own_ids or is_setpoint(frame):
            self.echoes += 1
        elif key in self.reader.messages:
            self.malformed += 1
        else:
            self.unknown += 1
        return []

    def due(self, now_s: float) -> list[can.Message]:
        """Decides, then the frames due by `now_s`: its messages, its DC setpoint."""
        self.control(now_s)
        out = []
        for message, schedule in self.schedules:
            if schedule.due(now_s):
                rounds = ROUNDS.get(message.name, ({},))
                values = rounds[self.sent[message.name] % len(rounds)]
                out.append(can.Message(arbitration_id=message.frame_id,
                                       is_extended_id=message.is_extended_frame,
                                       data=message.encode(values)))
                self.sent[message.name] += 1
        if self.setpoint_schedule.due(now_s):
            out.append(encode_setpoint(self.decision.setpoint))
            self.sent[SETPOINT] += 1
        return out

    def control(self, now_s: float) -> None:
        """A new decision at `now_s`; the time since the last one counted to the last's mode."""
        view, duty = self.reader.view, self.duty
        if self.now_s is not None:
            self._count(now_s - self.now_s)
        self.now_s = now_s
        decision = decide(view, now_s, duty.mains_up(now_s), duty.load_w, self.decision)
        if decision.mode != self.decision.mode:
            why = decision.cut_off if decision.mode == Mode.CUT_OFF else None
            if len(self.transitions) < TRANSITIONS_KEPT:
                self.transitions.append({"t_s": round(now_s, 3), "mode": str(decision.mode),
                                         **({"why": why} if why else {})})
            self.changes += 1
            outage = duty.outage_at(now_s)
            if decision.mode == Mode.CUT_OFF and outage is not None:
                record = self.outages[duty.outages.index(outage)]
                if record["cut_off_at_s"] is None:
                    record["cut_off_at_s"], record["cut_off_why"] = round(now_s, 3), why
        self.decision = decision

    def _count(self, dt_s: float) -> None:
        view = self.reader.view
        self.modes_s[str(self.decision.mode)] += dt_s
        power_w = view.pack_v * view.current_a
        if math.isfinite(power_w):
            if power_w > 0.0:
                self.charged_wh += power_w * dt_s / 3600.0
            else:
                self.discharged_wh -= power_w * dt_s / 3600.0
        if math.isfinite(view.soc_pct):
            low, high = self.soc_range_pct
            self.soc_range_pct = [min(low, view.soc_pct), max(high, view.soc_pct)]
        self.warnings_seen.update(view.warnings)
        self.protections_seen.update(view.protections)
        outage = self.duty.outage_at(self.now_s)
        if outage is not None and self.decision.mode == Mode.DISCHARGE:
            self.outages[self.duty.outages.index(outage)]["served_s"] += dt_s

    def status_line(self, now_s: float) -> str:
        """What a real inverter shows of the battery, in one line."""
        v, d = self.reader.view, self.decision
        flags = " ".join(text if on else "--" for text, on in (
            ("CE", v.charge_enable), ("DE", v.discharge_enable), ("FC", v.force_charge)))
        mains = "on" if self.duty.mains_up(now_s) else "OFF"
        mode = f"{d.mode}{' (DCL)' if d.limited else ''}"
        return (f"{now_s:8.1f} s  {mode:<16} {v.pack_v:6.2f} V {v.current_a:+7.2f} A  "
                f"SoC {v.soc_pct:3.0f} %  CVL {v.cvl_v:5.1f} V  CCL {v.ccl_a:5.1f} A  "
                f"DCL {v.dcl_a:5.1f} A  DVL {v.dvl_v:5.1f} V  {flags}  mains {mains}, load "
                f"{self.duty.load_w:g} W  warn: {', '.join(v.warnings) or '-'}  "
                f"alarm: {', '.join(v.protections) or '-'}")

    def summary(self) -> dict:
        """The run as plain data: what `bms-emu inverter --json` prints."""
        v = self.reader.view
        low, high = self.soc_range_pct
        return {
            "inverter_time_s": round(self.now_s or 0.0, 3),
            "frame_set": self.frames.name,
            "duty": {"outages": [asdict(o) for o in self.duty.outages],
                     "load_w": self.duty.load_w},
            "battery": {"manufacturer": v.manufacturer, "series_cells": v.series_cells,
                        "capacity_ah": v.capacity_ah},
            "modes_s": {mode: round(s, 3) for mode, s in self.modes_s.items()},
            "transitions": self.transitions, "mode_changes": self.changes,
            "outages": [{k: round(x, 3) if isinstance(x, float) else x for k, x in o.items()}
                        for o in self.outages],
            "charged_wh": round(self.charged_wh, 4),
            "discharged_wh": round(self.discharged_wh, 4),
            "soc_pct": {"min": None if math.isinf(low) else low,
                        "max": None if math.isinf(high) else high,
                        "last": None if math.isnan(v.soc_pct) else v.soc_pct},
            "warnings_seen": sorted(self.warnings_seen),
            "protections_seen": sorted(self.protections_seen),
            "frames": {"sent": dict(self.sent), "received": dict(v.frames),
                       "echoes": self.echoes, "unknown": self.unknown,
                       "malformed": self.malformed},
        }


class InverterLink(KeptBus):
    """The node on a bus; `poll(now_s)` moves its frames and never raises for the bus."""

    def __init__(self, spec: BusSpec, node: InverterNode, opener: Opener = open_bus):
        super().__init__(spec, node.frames.bitrate, opener, f"inverter, {node.frames.name}",
                         log)
        self.node = node

    def poll(self, now_s: float) -> None:
        self.exchange(now_s, lambda frame: self.node.receive(frame, now_s),
                      lambda: self.node.due(now_s))
        if self.bus is None:  # the bus away: the decisions go on (the battery is lost)
            self.node.control(now_s)

    def summary(self) -> dict:
        return {**self.node.summary(), "bus": self.bus_stats()}
