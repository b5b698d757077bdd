"""`bms-emu serve` as a child process, reached by the spec client over a real pty pair or a
real broker; and what the client learns of it through the protocol alone (DeviceInfo, the
parameter list), with the reads the tests share.

Every wait has a deadline; a process that ends early fails the test with its output.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol import messages as pm
from tests.client.links import MqttLink, PtyLink
from tests.client.spec_client import SpecClient, is_answer

SERIES = 8  # cells in series of every emulated pack here
TICK_S = 0.05  # `serve --tick`
SAFETY_S = 600  # `serve --duration`: a process a crashed run leaves behind ends by itself
START_S = 30.0  # the longest a start may take until GetInfo is answered
TRY_EVERY_S = 0.3
STATE = {"INIT": 0, "STANDBY": 1, "PRECHARGE": 2, "RUN": 3, "FAULT": 4, "STORAGE": 5,
         "SERVICE": 6, "RECOVERY": 7}  # docs/protocol.md, States
MEASUREMENT_TIMEOUT = 18  # docs/protocol.md, Faults
TEMP_SENSOR_FAULT = 15
LEVEL = {"WARNING": 1, "ALARM": 2, "FAULT": 3}  # docs/protocol.md, Faults: levels
# The commands started: `serve`, and `run` (headless, paced at real time); both stop by
# themselves after SAFETY_S, should a crashed test run leave one behind.
SERVE = ("serve", "--tick", str(TICK_S), "--duration", str(SAFETY_S), "-v")
HEADLESS_RUN = ("run", "--speed", "1", "--tick", str(TICK_S), "--duration", str(SAFETY_S))
# Every command a policy may enable (`serve --help`, --mqtt-commands).
ALL_COMMANDS = ("state,clear-faults,service-reset,balancing,config,inject,set-time,reset,"
                "factory-defaults")


class EmuProcess:
    """One `bms-emu` process (`command`: SERVE or HEADLESS_RUN, then `args`), its output in
    a file beside it."""

    def __init__(self, directory: Path, *args: str, command: tuple[str, ...] = SERVE,
                 preexec: Callable[[], None] | None = None):
        self.name = command[0]
        self.log_path = directory / f"{self.name}.log"
        argv = [sys.executable, "-m", "bms_emu.main", *command, *args]
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, preexec_fn=preexec)

    def output(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"\n--- {self.name}'s output (the end):\n" + "\n".join(text.splitlines()[-40:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Emulator:
    """A running serve and the client talking to it, with what GetInfo and the parameter
    list said at the start."""

    process: EmuProcess
    client: SpecClient
    info: pm.DeviceInfo
    params: list[dict]  # ParameterList entries, 1.1 layout

    def close(self) -> None:
        self.process.stop()
        self.client.close()

    @property
    def on_mqtt(self) -> bool:
        """Whether the client reaches it through a broker (its policy applies)."""
        return isinstance(self.client.link, MqttLink)

    def param(self, name: str) -> dict:
        return next(p for p in self.params if p["name"] == name)

    def value(self, name: str) -> object:
        answer = self.client.ask(pm.GetConfig((self.param(name)["param_id"],)))
        return answer.values[0]["value"]

    def status(self) -> pm.Status:
        return self.client.ask(pm.GetStatus())

    def until_status(self, holds: Callable[[pm.Status], bool], what: str,
                     timeout_s: float = 15.0) -> pm.Status:
        """Asks GetStatus until `holds`; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if holds(status):
                return status
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout_s:g} s; the last Status: {status}")
            time.sleep(TICK_S)

    def command(self, command: pm.Command, argument: int = 0) -> object:
        """The answer (Ack or Nack) to a CommandRequest."""
        return self.client.request(pm.CommandRequest(int(command), argument)).message


def parameter_catalog(client: SpecClient) -> list[dict]:
    """Every parameter, paged as the spec says: ask on from `start` + the entries received."""
    entries: list[dict] = []
    while True:
        page = client.ask(pm.GetParameterList(len(entries), 255))
        entries += page.entries
        if len(entries) >= page.total or not page.entries:
            return entries


def _first_answer(serve: EmuProcess, client: SpecClient) -> pm.DeviceInfo:
    """GetInfo, asked until the device answers it (it is opening its port meanwhile)."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if serve.popen.poll() is not None:
            pytest.fail(f"serve ended with {serve.popen.returncode} before answering"
                        f"{serve.output()}")
        after = client.mark()
        seq = client.send(pm.GetInfo())
        found = client.find(lambda item, seq=seq: is_answer(item, seq), after, TRY_EVERY_S)
        if found is not None:
            return found.message
    pytest.fail(f"no answer to GetInfo within {START_S:g} s{serve.output()}")


def connected(serve: EmuProcess, client: SpecClient) -> Emulator:
    try:
        info = _first_answer(serve, client)
        return Emulator(serve, client, info, parameter_catalog(client))
    except BaseException:
        serve.stop()
        client.close()
        raise


def over_pty(directory: Path, *serve_args: str,
             preexec: Callable[[], None] | None = None) -> Emulator:
    """serve on the slave of a fresh pty pair; the client on its master. The slave is put in
    raw mode at once, so that nothing sent before serve opens it is echoed back."""
    master, slave = os.openpty()
    tty.setraw(slave)
    serve = EmuProcess(directory, "--serial", os.ttyname(slave), *serve_args, preexec=preexec)
    client = SpecClient(PtyLink(master, slave), f"serve {' '.join(serve_args)} over a pty")
    return connected(serve, client)


def mqtt_client(host: str, port: int, pack_id: str, name: str) -> SpecClient:
    """A client on the proto topics of `pack_id` (prefix `bms`), subscribed to `proto/out`."""
    base = f"bms/{pack_id}"
    link = MqttLink(host, port, f"{base}/proto/in", f"{base}/proto/out", f"client-{pack_id}")
    return SpecClient(link, f"{name} over MQTT ({base})")


def mqtt_options(host: str, port: int, pack_id: str) -> tuple[str, ...]:
    return ("--mqtt", f"mqtt://{host}:{port}", "--pack-id", pack_id, "--no-ha-discovery")


def over_mqtt(directory: Path, host: str, port: int, pack_id: str,
              *serve_args: str) -> Emulator:
    """serve on a broker's proto topics (no --serial); the client subscribed before serve
    starts."""
    client = mqtt_client(host, port, pack_id, f"serve {' '.join(serve_args)}")
    serve = EmuProcess(directory, *mqtt_options(host, port, pack_id), *serve_args)
    return connected(serve, client)


def measurement(rig_seq: int, cell_v: float = 3.3, n_cells: int = SERIES,
                n_sensors: int = 2, contactors: int = 0,
                balancing: object = None) -> pm.MeasurementFrame:
    """A healthy reading of the pack: `contactors` is the feedback (what the last
    ActuationFrame commanded), and the bus shows the pack's voltage once a path is closed
    (the negative and the precharge or positive contactor)."""
    bits = pm.CONTACTOR_BITS
    pack_v = cell_v * n_cells
    closed = contactors & bits["negative"] and contactors & (bits["precharge"] | bits["positive"])
    return pm.MeasurementFrame(
        rig_seq=rig_seq, rig_time_s=rig_seq * TICK_S, current_a=0.0,
        bus_voltage_v=pack_v if closed else 0.0, contactors=contactors,
        cell_voltage_v=[cell_v] * n_cells, temperature_c=[25.0] * n_sensors,
        balancing=balancing, pack_voltage_v=math.nan)

