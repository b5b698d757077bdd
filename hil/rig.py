"""The rig: the simulated pack in its own process, driving an emulator in `serve --hil`.

Why and how: docs/internals.md, hil/rig.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from bms.core.signals import OPEN, Actuation, State
from bms.data.faults import names_in
from bms.host.frames import actuation_of, contactors_of, measurement_frame, state_name
from bms.links.client import Client, Refused
from bms.runtime.pacing import ticks
from bms.runtime.timing import Histogram, TickStats
from hil.plant import Plant
from protocol import messages as pm
from protocol.framing import REVISIONS

log = logging.getLogger(__name__)

# Refusals that no later measurement can overcome: the rig does not fit this emulator.
FATAL_ERRORS = {pm.ErrorCode.WRONG_SIZE, pm.ErrorCode.NOT_IN_THIS_MODE}
SENT_KEPT = 64  # send times kept, to time an answer up to this many measurements late


@dataclass
class RigCounts:
    sent: int = 0  # measurement frames written to the port
    not_sent: int = 0  # measurements dropped while the port was away
    actuations: int = 0  # actuation frames received (watchdog steps included)
    answered: int = 0  # measurements answered by an actuation frame carrying their rig_seq
    lost: int = 0  # measurements skipped over by a later answer: never answered
    unusable: int = 0  # actuation frames whose balance mask does not fit this pack
    interlock_trips: int = 0  # times the rig opened its contactors on its own
    interlock_held: int = 0  # actuation frames not applied: they came while interlocked


class Rig:
    """Runs `plant` against the emulator at the other end of `client` (the caller opens and
    closes the client; `run` may be cancelled and the client kept, e.g. to query the
    emulator after the rig went silent). `report` gets one line per state change, fault
    event and interlock action."""

    def __init__(self, plant: Plant, client: Client, tick_s: float,
                 actuation_timeout_s: float = 1.0,
                 report: Callable[[str], None] = log.info):
        self.plant = plant
        self.client = client
        self.tick_s = tick_s
        self.actuation_timeout_s = actuation_timeout_s
        self.report = report
        self.n_series = plant.pack.n_series
        self.counts = RigCounts()
        self.nacks: Counter[str] = Counter()  # by error code
        self.refused: Refused | None = None  # a fatal refusal: the rig stopped on it
        self.events: list[dict] = []  # what `report` was told, as data
        self.last: pm.ActuationFrame | None = None
        self.rig_seq = 0  # the last measurement sent
        self.answered_seq = 0  # the last measurement answered
        self.interlocked = False
        self._t0: float | None = None
        self._last_actuation_s = 0.0
        # Timing (bounded): the tick loop; each send's lateness against its tick's due
        # time (the tick's lateness plus the plant's advance); send -> actuation arrival.
        self.tick_stats = TickStats(tick_s)
        self.send_lateness = Histogram()
        self.answer_latency = Histogram()
        self._sent_at_s = [0.0] * SENT_KEPT  # by rig_seq % SENT_KEPT
        client.on(pm.ActuationFrame, self._actuation)
        client.on(pm.Nack, self._nack)

    def now_s(self) -> float:
        """The rig's clock: seconds since `run` started (0 before)."""
        return 0.0 if self._t0 is None else asyncio.get_running_loop().time() - self._t0

    async def run(self, duration_s: float | None = None) -> None:
        """Ticks until `duration_s`, cancellation, or a refusal no measurement can fix."""
        self._t0 = asyncio.get_running_loop().time()
        self._last_actuation_s = 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ticks(), duration_s)

    async def _ticks(self) -> None:
        """Measure and send at each tick; advance the plant over the interval just gone,
        under the actuation that arrived during it (as the headless runner does: measure,
        step, actuate, advance)."""
        started_s = self.now_s()
        self._measure_and_send()
        async for now_s in ticks(self.tick_s, self.now_s, "rig", self.tick_stats):
            self._interlock(now_s)
            self.plant.advance(started_s)
            started_s = now_s
            if self.refused is not None:
                return
            self._measure_and_send()

    def _measure_and_send(self) -> None:
        if not self.client.connected:
            self.counts.not_sent += 1
            return
        m = self.plant.measure()
        self.rig_seq += 1
        self.client.send_event(measurement_frame(m, self.rig_seq, self.now_s(),
                                                 self.plant.pack.balancing))
        self.counts.sent += 1
        sent_s = self.now_s()
        self.send_lateness.add(sent_s - self.tick_stats.due_s)
        self._sent_at_s[self.rig_seq % SENT_KEPT] = sent_s

    def _interlock(self, now_s: float) -> None:
        silent_s = now_s - self._last_actuation_s
        if self.interlocked or silent_s < self.actuation_timeout_s:
            return
        self.interlocked = True
        self.counts.interlock_trips += 1
        self.plant.actuate(Actuation(State.FAULT, OPEN, np.zeros(self.n_series, bool), 0.0, 0.0,
                                     0 if self.last is None else self.last.fault_bitmap, 0.0))
        self._note(now_s, "interlock", f"no actuation frame for {silent_s:.1f} s: "
                   "rig interlock opens the contactors")

    # --- what arrives -------------------------------------------------------------------

    def _actuation(self, frame: pm.ActuationFrame) -> None:
        now_s = self.now_s()
        self.counts.actuations += 1
        if len(frame.balance_mask) != self.n_series:
            self.counts.unusable += 1
            return
        self._count_answer(frame.rig_seq, now_s)
        self._last_actuation_s = now_s
        if self.interlocked and frame.contactors == 0:
            self.interlocked = False
            self._note(now_s, "interlock", "the emulator commands all contactors open: "
                       "the rig follows it again")
        self._changes(now_s, frame)
        self.last = frame
        if self.interlocked:  # latched: the emulator has not seen the contactors open yet
            self.counts.interlock_held += 1
        else:
            self.plant.actuate(actuation_of(frame))

    def _count_answer(self, rig_seq: int, now_s: float) -> None:
        """A rig_seq beyond the last answered one answers it and loses those between; the
        same one again (a watchdog step) or one we never sent answers nothing."""
        if self.answered_seq < rig_seq <= self.rig_seq:
            self.counts.lost += rig_seq - self.answered_seq - 1
            self.counts.answered += 1
            self.answered_seq = rig_seq
            if self.rig_seq - rig_seq < SENT_KEPT:
                self.answer_latency.add(now_s - self._sent_at_s[rig_seq % SENT_KEPT])

    def _changes(self, now_s: float, frame: pm.ActuationFrame) -> None:
        before = self.last
        if before is None or before.state != frame.state:
            self._note(now_s, "state", state_name(frame.state))
        old = 0 if before is None else before.fault_bitmap
        for action, bits in (("raised", frame.fault_bitmap & ~old),
                             ("cleared", old & ~frame.fault_bitmap)):
            for name in names_in(bits):
                self._note(now_s, action, name)

    def _nack(self, nack: pm.Nack) -> None:
        refusal = Refused(nack)
        self.nacks[refusal.code] += 1
        older = self.client.revision - 1
        if nack.error == pm.ErrorCode.UNSUPPORTED_VERSION and older in REVISIONS:
            self.client.revision = older  # an older emulator: its protocol from the next frame
            self._note(self.now_s(), "protocol", f"the emulator speaks revision {older} "
                       f"(protocol {REVISIONS[older]}): measurements go out in it")
        elif nack.error in FATAL_ERRORS and self.refused is None:
            self.refused = refusal
            self._note(self.now_s(), "refused", str(refusal))
        else:
            log.warning("emulator refused a frame: %s", refusal)

    def _note(self, now_s: float, kind: str, text: str) -> None:
        self.events.append({"rig_time_s": round(now_s, 3), "kind": kind, "text": text})
        self.report(f"{now_s:8.2f} s  {kind:<9} {text}")

    # --- the end ------------------------------------------------------------------------

    def summary(self) -> dict:
        """The run as plain data: what `rig --json` prints."""
        pack, last = self.plant.pack, self.last
        return {
            "rig_time_s": round(self.now_s(), 3),
            "frames": {**asdict(self.counts), "nacks": dict(self.nacks),
                       "decode_errors": dict(self.client.endpoint.errors)},
            "refused": None if self.refused is None else str(self.refused),
            "timing": {"tick": self.tick_stats.summary(),
                       "send_lateness": self.send_lateness.summary_ms(),
                       "answer_latency": self.answer_latency.summary_ms()},
            "final": {
                "state": None if last is None else state_name(last.state),
                "faults": [] if last is None else names_in(last.fault_bitmap),
                "contactors_commanded": None if last is None
                else contactors_of(last.contactors).describe(),
                "contactors": pack.power_path.actual.describe(),
                "interlocked": self.interlocked,
                "soc_pct": None if last is None or not np.isfinite(last.soc_pct)
                else round(float(last.soc_pct), 2),  # NaN: no estimate yet
                "soc_true_pct": round(pack.true_pack_soc * 100.0, 2),
                "charge_limit_a": None if last is None else round(last.charge_limit_a, 3),
                "discharge_limit_a": None if last is None
                else round(last.discharge_limit_a, 3),
                "current_a": round(pack.current_a, 3),
                "pack_v": round(pack.pack_voltage_v, 3),
                "bus_v": round(pack.power_path.bus_v, 3),
            },
            "events": self.events,
        }
