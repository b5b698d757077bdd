"""The HIL loop over real pseudo-terminals: `serve --hil` in its own process, the rig as a
`bms-emu rig` process or in-process (where a test must silence it or query the emulator
through the rig's own client), and `bms-emu pty` as the cable a test can pull out.

Every wait has a deadline, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bms.core.signals import OPEN, Contactors, State
from bms.data.faults import FAULT_CODES, names_in
from bms.host.frames import state_name
from bms.links.client import Client
from bms_emu import rig_cmd
from bms_emu.main import build_parser
from hil.rig import Rig
from protocol import messages as pm
from tests.support.processes import CLI, Proc

PACK = ["--series", "8"]  # the emulator and the rig must agree on the pack
TICK_S = 0.1
MEASUREMENT_TIMEOUT_S = 1.0  # the firmware default
VOLTAGE_FAULTS = {"CELL_OVERVOLTAGE", "VOLTAGE_SENSOR_FAULT"}


class Relay:
    """`bms-emu pty` with stable link names: `stop` pulls the cable (both ends hang up),
    `start` plugs it back in under the same names."""

    def __init__(self, directory: Path):
        self.links = (directory / "emulator", directory / "rig")
        self.emulator_end, self.rig_end = map(str, self.links)
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc("pty", "--link", self.emulator_end, "--link", self.rig_end)

    def wait_up(self) -> None:
        self.proc.wait_for(self.rig_end)  # printed once both links are in place

    def stop(self) -> None:
        self.proc.stop()
        for link in self.links:  # a killed relay leaves them pointing at freed pty numbers
            link.unlink(missing_ok=True)


@pytest.fixture
def relay(tmp_path):
    r = Relay(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def emulator(relay):
    """`serve --hil` on the relay's first end, ready when it has opened its port (both
    processes start at once: the emulator retries the port until the relay is up)."""
    proc = Proc("serve", "--serial", relay.emulator_end, "--hil", "--tick", str(TICK_S),
                "--duration", "60", "--autostart", "-v", *PACK)
    try:
        proc.wait_for(f"serial port {relay.emulator_end} open")
        yield proc
    finally:
        proc.stop()


def run_rig(relay: Relay, *args: str, timeout_s: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "rig", "--serial", relay.rig_end, "--tick", str(TICK_S),
                           *PACK, *args], capture_output=True, text=True, timeout=timeout_s)


def in_process_rig(client: Client, **options) -> Rig:
    """A rig built by the same code as `bms-emu rig`, for the same pack options."""
    args = build_parser().parse_args(["rig", "--serial", "unused", *PACK])
    return Rig(rig_cmd.build(args), client, TICK_S, **options)


async def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"{what} (waited {timeout_s:g} s)")


async def answer(client: Client, request: object, timeout_s: float = 10.0) -> object:
    """The answer to `request`, asked again until the emulator is there to give it."""
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(TimeoutError):
                return await client.request(request, timeout_s=0.5)
            await asyncio.sleep(0.1)


def in_state(rig: Rig, state: str) -> Callable[[], bool]:
    return lambda: rig.last is not None and state_name(rig.last.state) == state


@contextlib.asynccontextmanager
async def running(rig: Rig):
    task = asyncio.create_task(rig.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_hil_loop_closes_and_the_load_keeps_to_the_published_limit(relay, emulator):
    done = run_rig(relay, "--duration", "3", "--json", "--profile", "current:-1000")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    f, final = d["frames"], d["final"]
    states = [e["text"] for e in d["events"] if e["kind"] == "state"]
    # A frame sent before the firmware's first step (a loaded machine) shows it still in INIT.
    assert states in (["STANDBY", "PRECHARGE", "RUN"], ["INIT", "STANDBY", "PRECHARGE", "RUN"])
    assert (final["state"], final["faults"]) == ("RUN", [])
    assert final["contactors_commanded"] == final["contactors"] == "closed"
    assert abs(final["bus_v"] - final["pack_v"]) < 0.5  # the bus was charged, then connected
    # Every measurement answered by an actuation frame carrying its rig_seq (but the last,
    # perhaps still on its way), and nothing garbled.
    assert f["sent"] >= 25 and f["answered"] >= f["sent"] - 1
    assert (f["lost"], f["nacks"], f["decode_errors"], f["unusable"]) == (0, {}, {}, 0)
    assert f["interlock_trips"] == 0
    # The load asks for 1000 A; the pack gives what the emulator publishes, no more.
    assert 0.0 < -final["current_a"] <= final["discharge_limit_a"] + 1e-3 < 1000.0


async def test_a_silent_rig_trips_measurement_timeout(relay, emulator):
    async with asyncio.timeout(30), Client(relay.rig_end) as client:
        await answer(client, pm.GetInfo())
        rig = in_process_rig(client)
        frames: list[pm.ActuationFrame] = []
        client.on(pm.ActuationFrame, frames.append)
        async with running(rig):
            await eventually(in_state(rig, "RUN"), 10, "the loop never reached RUN")
        # The rig is silent now; its client still listens and asks.
        await eventually(lambda: rig.last.fault_bitmap, 2 * MEASUREMENT_TIMEOUT_S,
                         "no fault after the rig went silent")
        status = await client.request(pm.GetStatus())
        assert State.from_code(status.state) == "FAULT" and status.contactors == 0
        assert names_in(status.fault_bitmap) == ["MEASUREMENT_TIMEOUT"]
        log = await client.request(pm.GetFaultLog(0, 32))
        tripped_s = next(e["t_s"] for e in log.entries
                         if e["code"] == FAULT_CODES["MEASUREMENT_TIMEOUT"])
        # On the emulator's clock: from the answer to the last measurement to the trip.
        last_answer_s = min(a.time_s for a in frames if a.rig_seq == rig.rig_seq)
        # A tick or two after the timeout, with room for a watchdog tick late on a loaded
        # machine.
        assert MEASUREMENT_TIMEOUT_S < tripped_s - last_answer_s <= (
            MEASUREMENT_TIMEOUT_S + 5 * TICK_S)
        # The emulator's own watchdog frames open the pack; the rig's interlock was not needed.
        await eventually(lambda: rig.plant.pack.power_path.actual == OPEN, 1,
                         "the rig's contactors stayed closed")
        assert rig.counts.interlock_trips == 0


async def test_a_vanished_port_trips_the_emulator_and_it_recovers_when_the_port_returns(
        relay, emulator):
    async with asyncio.timeout(40), Client(relay.rig_end) as client:
        await answer(client, pm.GetInfo())
        rig = in_process_rig(client)
        async with running(rig):
            await eventually(in_state(rig, "RUN"), 10, "the loop never reached RUN")
            relay.stop()  # both ends hang up
            await eventually(lambda: rig.interlocked, 2 * rig.actuation_timeout_s,
                             "the rig kept its contactors closed with the emulator gone")
            assert rig.plant.pack.power_path.actual == OPEN
            await asyncio.to_thread(emulator.wait_for, "MEASUREMENT_TIMEOUT raised", 5)
            assert emulator.popen.poll() is None
            relay.start()  # the same names: both sides reopen them
            await asyncio.to_thread(relay.wait_up)
            status = await answer(client, pm.GetStatus())
            assert State.from_code(status.state) == "FAULT" and status.contactors == 0
            assert "MEASUREMENT_TIMEOUT" in names_in(status.fault_bitmap)
            # Measurements flow again; the fault is latched until a host clears it.
            await eventually(lambda: not rig.interlocked, 2, "no actuation frames came back")
            assert in_state(rig, "FAULT")()
            await client.request(pm.CommandRequest(pm.Command.CLEAR_FAULTS, 0))
            await eventually(in_state(rig, "RUN"), 10, "no RUN after clearing the fault")
            status = await client.request(pm.GetStatus())
        assert status.fault_bitmap == 0 and rig.plant.pack.power_path.actual.main_closed
        assert rig.counts.not_sent > 0 and rig.counts.interlock_trips == 1
        assert client.endpoint.link.connects == 2 and not client.endpoint.errors


def test_a_fault_injected_into_the_rigs_pack_opens_its_contactors(relay, emulator):
    # The cell rests near 3.77 V (90 %): 0.7 V more reads past the 4.4 V no working sensor
    # gives, and the sensor FAULT (0.5 s) trips well inside the run.
    done = run_rig(relay, "--duration", "3.5", "--json", "--profile", "rest",
                   "--inject", "2:sensor-offset:cell=1,offset_v=0.7")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    raised = [e for e in d["events"] if e["kind"] == "raised"]
    assert raised and {e["text"] for e in raised} <= VOLTAGE_FAULTS
    assert raised[0]["rig_time_s"] >= 2.0  # on the rig's clock, not before
    state_lines = [e["text"] for e in d["events"] if e["kind"] == "state"]
    assert state_lines[-2:] == ["RUN", "FAULT"]
    final = d["final"]
    assert final["state"] == "FAULT" and set(final["faults"]) <= VOLTAGE_FAULTS
    assert final["contactors_commanded"] == final["contactors"] == "open"
    assert f"raised    {raised[0]['text']}" in done.stderr  # the line a user reads


async def test_unreadable_readings_from_a_rig_are_one_sensor_fault_each_at_their_own_index(
        relay, emulator):
    """Issue 16: a NaN on cell index 2 was logged at index 0 with +inf, and a NaN
    temperature twice (+inf and -inf). Each is one entry naming its own cell or sensor,
    with no value (NaN on the wire, as the protocol gives none)."""
    async with asyncio.timeout(30), Client(relay.rig_end) as client:
        info = await answer(client, pm.GetInfo())
        n_cells, n_sensors = info.n_series, info.n_temp_sensors
        for seq in range(1, 26):  # 2 s of NaN: past the temperature row's 1 s debounce
            cells = np.full(n_cells, 3.4 + 1e-3 * (seq % 2), np.float32)  # not stuck
            temps = np.full(n_sensors, 25.0, np.float32)
            if seq > 5:
                cells[2] = temps[1] = np.nan
            client.send_event(pm.MeasurementFrame(seq, seq * TICK_S, 0.0, 0.0, 0, cells, temps))
            await asyncio.sleep(TICK_S)
        log = await client.request(pm.GetFaultLog(0, 32))
    raised = [(e["code"], e["index"]) for e in log.entries if e["action"] == 1]
    assert raised == [(FAULT_CODES["VOLTAGE_SENSOR_FAULT"], 2),
                      (FAULT_CODES["TEMP_SENSOR_FAULT"], 1)]
    assert all(np.isnan(e["value"]) for e in log.entries)


def test_sigterm_on_the_emulator_opens_the_rigs_contactors_and_ends_both_cleanly(
        relay, emulator):
    """`kill` (SIGTERM) on serve is a shutdown like Ctrl-C: its last frame tells the rig to
    open everything (so the rig's own interlock is not what saves the pack), and SIGTERM
    on the rig prints its summary and exits 0."""
    rig = Proc("rig", "--serial", relay.rig_end, "--tick", str(TICK_S),
               "--actuation-timeout", "30", *PACK)
    try:
        rig.wait_for("state     RUN")
        emulator.popen.terminate()
        assert emulator.popen.wait(5) == 0
        rig.wait_for("state     STANDBY", timeout_s=5)
        assert not rig.said("interlock")  # told to open, not timed out into it
        rig.popen.terminate()
        assert rig.popen.wait(5) == 0
        rig.wait_for("rig contactors open", timeout_s=2)  # the summary line
    finally:
        rig.stop()


def test_a_rig_that_does_not_fit_the_emulator_stops_with_its_reason(relay, emulator):
    done = run_rig(relay, "--series", "4", "--duration", "60", timeout_s=15)
    assert done.returncode == 1
    assert "WRONG_SIZE: n_cells = 4; this pack has 8 series cells" in done.stderr
    assert "--series" in done.stderr  # and what to do about it


# --- the rig's interlock, against frames a test makes up ----------------------------------

class Wire:
    """What a Rig uses of its Client, without a port: it keeps the measurements sent and
    hands the rig the actuation frames a test makes up."""

    connected = True

    def __init__(self):
        self.sent: list[pm.MeasurementFrame] = []
        self.callbacks: dict[type, list[Callable]] = defaultdict(list)

    def on(self, msg_class: type, callback: Callable) -> None:
        self.callbacks[msg_class].append(callback)

    def send_event(self, msg: pm.MeasurementFrame) -> int:
        self.sent.append(msg)
        return len(self.sent)

    def deliver(self, rig: Rig, state: str, *closed: str, limit_a: float = 50.0) -> None:
        """An actuation frame answering the rig's last measurement: `state`, the contactors
        named closed, both current limits `limit_a`."""
        frame = pm.ActuationFrame(rig.rig_seq, 0.0, State(state).code,
                                  sum(pm.CONTACTOR_BITS[c] for c in closed), 0, limit_a,
                                  limit_a, 50.0, np.zeros(rig.n_series, bool))
        for callback in self.callbacks[pm.ActuationFrame]:
            callback(frame)


async def test_the_rig_interlock_stays_latched_until_the_emulator_opens_the_contactors():
    wire = Wire()
    rig = in_process_rig(wire, actuation_timeout_s=0.3)
    pack = rig.plant.pack
    async with asyncio.timeout(10), running(rig):
        await eventually(lambda: wire.sent, 1, "no measurement sent")
        wire.deliver(rig, "RUN", "negative", "positive")
        assert pack.power_path.actual.main_closed  # the rig follows the emulator
        await eventually(lambda: rig.interlocked, 2, "no interlock with the emulator silent")
        assert pack.power_path.actual == OPEN
        # The emulator is back and, not having noticed, still commands RUN, mains closed:
        # closing them onto the bus now would skip the precharge. The rig stays open.
        wire.deliver(rig, "RUN", "negative", "positive")
        await asyncio.sleep(2 * TICK_S)
        assert rig.interlocked and pack.power_path.actual == OPEN
        assert (pack.charge_limit_a, pack.discharge_limit_a) == (0.0, 0.0)
        assert state_name(rig.last.state) == "RUN"  # what it commands is still seen
        # It opens everything (it saw the contactors open): the rig follows again, through
        # a fresh precharge.
        wire.deliver(rig, "FAULT")
        assert not rig.interlocked
        wire.deliver(rig, "PRECHARGE", "negative", "precharge")
        assert pack.power_path.actual == Contactors(negative=True, precharge=True)
        wire.deliver(rig, "RUN", "negative", "positive")
        assert pack.power_path.actual.main_closed and pack.discharge_limit_a == 50.0
    assert (rig.counts.interlock_trips, rig.counts.interlock_held) == (1, 1)
    tripped, released = (e["text"] for e in rig.events if e["kind"] == "interlock")
    assert tripped.endswith("rig interlock opens the contactors")
    assert released == "the emulator commands all contactors open: the rig follows it again"
