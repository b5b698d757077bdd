"""The asyncio runtime of `bms-emu serve`: the firmware in real time, serving the protocol.

SIM mode: the firmware steps every tick against a plant (the simulated pack, handed in by
the CLI: `bms` never imports the plant). HIL mode: the firmware steps on each measurement
frame from the rig and answers it with an actuation frame; a watchdog steps it without a
measurement once a tick when none has come, so a silent rig or a vanished port trips
MEASUREMENT_TIMEOUT and opens the contactors. Both modes answer requests and send
subscribed telemetry between steps, fault events in the step they happen, and carry out a
host's Reset between two steps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from bms.core.signals import OPEN, Actuation, Measurement, State
from bms.host.device import Device, nack
from bms.host.frames import actuation_frame, measurement_of
from bms.host.policy import TRUSTED, CommandPolicy
from bms.links.serial_link import Endpoint
from bms.runtime.after_step import AfterStep
from bms.runtime.pacing import ticks
from bms.runtime.restart import restarted
from bms.runtime.timing import TickStats
from bms.store.persistence import Keeper
from protocol import messages as pm
from protocol.codec import Frame
from protocol.framing import REVISION_1_0, REVISIONS, Flags, FrameError, FrameErrorKind, Header

if TYPE_CHECKING:  # a bridge is handed in: aiomqtt is imported only by runs with MQTT
    from bms.links.mqtt.bridge import MqttBridge

log = logging.getLogger(__name__)

# Decoding errors a request's sender is told of; a bad CRC or bad framing is not answered:
# its sequence number cannot be trusted.
ANSWERED_ERRORS = {
    FrameErrorKind.UNKNOWN_TYPE: pm.ErrorCode.UNKNOWN_TYPE,
    FrameErrorKind.BAD_PAYLOAD: pm.ErrorCode.BAD_PAYLOAD,
    FrameErrorKind.BAD_LENGTH: pm.ErrorCode.BAD_PAYLOAD,
    FrameErrorKind.UNSUPPORTED_VERSION: pm.ErrorCode.UNSUPPORTED_VERSION,
}


class PlantPort(Protocol):
    """What SIM mode runs the firmware against (the CLI hands in `hil.plant.Plant`)."""

    def measure(self) -> Measurement: ...
    def actuate(self, act: Actuation) -> None: ...
    def advance(self, now_s: float) -> None: ...  # one tick under its own load


class FieldLink(Protocol):
    """A field interface beside the protocol link (Modbus, CAN): started with the runtime's
    clock, closed when it ends; it reads the Device between steps on the same loop."""

    name: str  # its key in `stats()`

    async def start(self, now_s: Callable[[], float]) -> None: ...
    async def close(self) -> None: ...
    def stats(self) -> dict: ...
    def describe(self) -> str: ...  # what it serves on, for people


class Runtime:
    """Hosts one Device (and its firmware) on one Endpoint."""

    def __init__(self, device: Device, endpoint: Endpoint, tick_s: float,
                 plant: PlantPort | None = None, bridge: MqttBridge | None = None,
                 keeper: Keeper | None = None, who: str = "protocol",
                 policy: CommandPolicy = TRUSTED, field_links: Sequence[FieldLink] = ()):
        """`bridge`: MQTT telemetry and commands, fed after every step. `keeper`: the
        persistent store, saved after a step before anything of it is sent. `who`: the
        link's name in the log of configuration writes. `policy`: what requests on the link
        may change (TRUSTED: a serial port; over MQTT the emulator's command policy).
        `field_links`: Modbus, CAN, served for as long as the runtime runs."""
        self.device = device
        self.field_links = tuple(field_links)
        self.keeper = keeper
        self.who = who
        self.policy = policy
        self.fw = device.fw
        self.endpoint = endpoint
        self.tick_s = tick_s
        self.plant = plant
        self.bridge = bridge
        self.after_step = AfterStep(device, keeper, bridge)
        self.hil = plant is None
        endpoint.on_frame = self._frame
        endpoint.on_error = self._error
        endpoint.on_connection = self._connection
        device.on_reset = self._reset_asked
        self._reset_due = False  # a host's Reset, carried out before the next step
        self.resets = 0
        self._t0 = 0.0
        self._last_step_s = -1.0
        self._last_tick_s = -1.0  # HIL: a tick with no step since the one before steps
        self.last_rig_seq = 0
        self.rig_revision = REVISION_1_0  # of the rig's last measurement: its actuations' too
        self.steps = 0
        self.watchdog_steps = 0  # HIL: steps without a measurement
        self.refused_measurements = 0
        self.errors = 0  # ticks that raised (logged with their traceback)
        self.tick_stats = TickStats(tick_s)  # the tick loop's lateness and overruns

    def now_s(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def run(self, duration_s: float | None = None) -> None:
        """Serves until cancelled (or for `duration_s`); the contactors end open."""
        self._t0 = asyncio.get_running_loop().time()
        await self.endpoint.start()
        try:
            for link in self.field_links:
                await link.start(self.now_s)
            await asyncio.wait_for(self._ticks(), duration_s)
        except TimeoutError:
            pass
        finally:
            self._shut_down()
            for link in self.field_links:
                await link.close()
            await self.endpoint.close()

    async def _ticks(self) -> None:
        """SIM: step the firmware and the plant. HIL: step without a measurement when the
        rig has been silent for a tick. Both: telemetry."""
        async for now_s in ticks(self.tick_s, self.now_s, "runtime", self.tick_stats):
            try:
                self._tick(now_s)
            except Exception:  # noqa: BLE001 - one bad tick must not stop the watchdog
                self.errors += 1
                log.exception("runtime tick at %.1f s failed; carrying on", now_s)

    def _tick(self, now_s: float) -> None:
        if self._reset_due:
            self._reset(now_s)
        if not self.hil:
            self._sim_step(now_s)
        elif self._last_step_s <= self._last_tick_s:  # no measurement since the last tick
            self.watchdog_steps += 1
            self._step(None, now_s)
        self._last_tick_s = now_s
        for msg in self.device.telemetry_due(now_s):
            self.endpoint.send(msg, flags=Flags.EVENT, revision=self.device.telemetry_revision)
        self.after_step.poll(now_s)

    def _sim_step(self, now_s: float) -> None:
        m = self.plant.measure()
        act = self._step(m, now_s)
        self.plant.actuate(act)
        self.plant.advance(now_s)

    def _step(self, m: Measurement | None, now_s: float) -> Actuation:
        act = self.fw.step(m, now_s)
        self._last_step_s = now_s
        self.steps += 1
        self.after_step(now_s, m, act)
        for e in act.events:
            log.warning("%s", e.describe())
        if self.hil:
            self.endpoint.send(actuation_frame(act, self.last_rig_seq, now_s), flags=Flags.EVENT,
                               revision=self.rig_revision)
        for event in self.device.fault_events(act):
            self.endpoint.send(event, flags=Flags.EVENT, revision=self.device.telemetry_revision)
        return act

    def _reset_asked(self) -> None:
        """The device took a host's Reset (and acknowledges it): done before the next step."""
        self._reset_due = True

    def _reset(self, now_s: float) -> None:
        """The contactors open first (the plant, or the rig told so), the old firmware is
        saved, and a new one takes over from its last state (`bms.runtime.restart`) in a
        new boot: it starts in INIT, contactors open, and waits for RUN unless autostart."""
        self._reset_due = False
        opened = self._all_open()
        if opened is not None and self.plant is not None:
            self.plant.actuate(opened)
        elif opened is not None:
            self.endpoint.send(actuation_frame(opened, self.last_rig_seq, now_s),
                               flags=Flags.EVENT, revision=self.rig_revision)
        if self.keeper is not None:
            self.keeper.save(now_s, "reset")
        fw, lost = restarted(self.fw, self.device.identity.capacity_ah, self.device.boot)
        if self.keeper is not None:
            self.keeper.restarted(fw, now_s)
        self.device.restarted(fw)
        self.fw = fw
        self.resets += 1
        log.warning("reset by a host at %.1f s: the firmware restarts (boot %d)%s", now_s,
                    self.device.boot, "".join(f"; not kept: {item}" for item in lost))

    def stats(self) -> dict:
        """What `serve --stats` writes: the tick loop's timing, what went over the link and,
        with a store, its saves and failures."""
        ep = self.endpoint
        return {"mode": "hil" if self.hil else "sim", "tick": self.tick_stats.summary(),
                "steps": self.steps, "watchdog_steps": self.watchdog_steps,
                "resets": self.resets,
                "tick_errors": self.errors, "refused_measurements": self.refused_measurements,
                "frames_in": ep.frames_in, "bytes_in": ep.bytes_in, "bytes_out": ep.bytes_out,
                "frames_unsent": ep.frames_unsent,
                "decode_errors": dict(ep.errors),
                "not_enabled": dict(self.device.not_enabled),
                **({"nvm": self.keeper.figures()} if self.keeper is not None else {}),
                **{link.name: link.stats() for link in self.field_links}}

    # --- what arrives -------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        msg, header = frame.message, frame.header
        wrong_kind = _not_a_request(header) if header.flags & Flags.REQUEST else None
        if wrong_kind is not None:
            self._answer_error(header, pm.ErrorCode.NOT_A_REQUEST, wrong_kind)
        elif header.flags & Flags.REQUEST:
            reply = self.device.handle(msg, self.now_s(), self.who, self.policy,
                                       header.revision)
            try:
                self.endpoint.send(reply, seq=header.seq, flags=_reply_flags(reply),
                                   revision=header.revision)
            except ValueError:
                log.exception("cannot encode the answer to %s", type(msg).__name__)
                self.endpoint.send(nack(header.msg_type, pm.ErrorCode.INTERNAL,
                                        "the device could not encode its answer; see its log"),
                                   seq=header.seq, flags=Flags.RESPONSE | Flags.ERROR,
                                   revision=header.revision)
        elif isinstance(msg, pm.MeasurementFrame):
            self.rig_revision = header.revision
            self._measurement(msg, header.seq)
        # responses and events of other kinds are not for a BMS: ignored

    def _measurement(self, msg: pm.MeasurementFrame, seq: int) -> None:
        problem = self._refusal(msg)
        if problem is not None:
            self.refused_measurements += 1
            code, detail = problem
            self.endpoint.send(nack(pm.BY_CLASS[pm.MeasurementFrame].type_id, code, detail),
                               seq=seq, flags=Flags.RESPONSE | Flags.ERROR,
                               revision=self.rig_revision)
            return
        self.last_rig_seq = msg.rig_seq
        now_s = self.now_s()
        if self._reset_due:
            self._reset(now_s)
        self._step(measurement_of(msg), now_s)

    def _refusal(self, msg: pm.MeasurementFrame) -> tuple[pm.ErrorCode, str] | None:
        if not self.hil:
            return (pm.ErrorCode.NOT_IN_THIS_MODE,
                    "measurement frames drive `serve --hil`; this emulator runs its own pack")
        n_cells, n_temp = len(msg.cell_voltage_v), len(msg.temperature_c)
        if n_cells != self.fw.n_series:
            return (pm.ErrorCode.WRONG_SIZE,
                    f"n_cells = {n_cells}; this pack has {self.fw.n_series} series cells")
        expected = self.device.identity.n_temp_sensors
        if n_temp != expected:
            return (pm.ErrorCode.WRONG_SIZE,
                    f"n_sensors = {n_temp}; this pack has {expected} temperature sensors")
        if msg.balancing is not None and len(msg.balancing) != n_cells:
            return (pm.ErrorCode.WRONG_SIZE,
                    f"n_balancing = {len(msg.balancing)}; must be 0 or n_cells ({n_cells})")
        return None

    def _error(self, error: FrameError) -> None:
        """A request that cannot be served is told why (NOT_A_REQUEST decided from the
        header, before the payload is looked at); so is a rig whose measurement cannot be
        read, though a MeasurementFrame is an event: it must stop and report it."""
        code, header, detail = ANSWERED_ERRORS.get(error.kind), error.header, error.detail
        if code is None or header is None:
            return
        if header.flags & Flags.REQUEST:
            wrong_kind = _not_a_request(header)
            if wrong_kind is not None:
                code, detail = pm.ErrorCode.NOT_A_REQUEST, wrong_kind
        elif header.msg_type == pm.BY_CLASS[pm.MeasurementFrame].type_id:
            self.refused_measurements += 1
        else:
            return
        self._answer_error(header, code, detail)

    def _answer_error(self, header: Header, code: pm.ErrorCode, detail: str) -> None:
        # in the frame's revision; one this end does not speak is answered in 1.0's
        revision = header.revision if header.revision in REVISIONS else REVISION_1_0
        self.endpoint.send(nack(header.msg_type, code, detail), seq=header.seq,
                           flags=Flags.RESPONSE | Flags.ERROR, revision=revision)

    def _connection(self, up: bool) -> None:
        """A host that comes back subscribes afresh; until then nobody reads telemetry."""
        if not up:
            self.device.stop_telemetry()

    def _shut_down(self) -> None:
        """Leaving: in HIL mode the rig is told to open the contactors (a FAULT stays one),
        MQTT delivers what it can and says offline (the store then forgets what the broker
        has), then the store saves. Never raises: closing the port must still happen."""
        try:
            self._send_final_actuation()
        except Exception:  # noqa: BLE001
            log.exception("could not tell the rig to open its contactors")
        if self.bridge is not None:
            try:
                self.bridge.close()
            except Exception:  # noqa: BLE001
                log.exception("could not close the MQTT session")
        if self.keeper is not None:
            try:
                self.keeper.close(self.now_s())
            except Exception:  # noqa: BLE001
                log.exception("could not close the persistent store")

    def _send_final_actuation(self) -> None:
        final = self._all_open()
        if self.hil and final is not None:
            self.endpoint.send(actuation_frame(final, self.last_rig_seq, self.now_s()),
                               flags=Flags.EVENT, revision=self.rig_revision)

    def _all_open(self) -> Actuation | None:
        """The last actuation with every contactor open, no bleed and no current (a FAULT
        stays one, anything else is STANDBY); None before the first step."""
        act = self.device.act
        if act is None:
            return None
        state = State.FAULT if act.state == State.FAULT else State.STANDBY
        return Actuation(state, OPEN, np.zeros(self.fw.n_series, bool), 0.0, 0.0,
                         act.fault_bitmap, act.soc, estimate=act.estimate,
                         level_bitmaps=act.level_bitmaps)


def _not_a_request(header: Header) -> str | None:
    """Why a frame with the REQUEST flag is not one, from its header alone; None when its
    type is a request type, or not in the frame's revision (that is UNKNOWN_TYPE, as a
    device of that revision answers, and UNSUPPORTED_VERSION for a revision we lack)."""
    mt = pm.REGISTRY.get(header.msg_type)
    if mt is None or mt.flags is Flags.REQUEST or not pm.in_revision(header.msg_type,
                                                                       header.revision):
        return None
    kind = "an event" if mt.flags is Flags.EVENT else "a response"
    return (f"{mt.name} (0x{mt.type_id:02X}) is {kind}, not a request: only request types "
            "take the REQUEST flag")


def _reply_flags(reply: object) -> Flags:
    return Flags.RESPONSE | (Flags.ERROR if isinstance(reply, pm.Nack) else 0)
