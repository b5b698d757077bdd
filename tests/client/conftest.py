"""The emulators the spec client drives, one `serve` process per module-scoped fixture:

- `sim_pty`, `sim_mqtt` (and `sim`, either of them): a healthy simulated pack with a
  persistent store, over a pty and over MQTT with every command enabled;
- `read_only_mqtt`: the same over MQTT with no command enabled (the default policy);
- `hil_pty`: `serve --hil`, what it did while the rig was silent from boot, then a rig
  thread measuring every tick;
- `faulted_pty`: a simulated pack subscribed to FaultEvents, with a temperature sensor
  injected open: a FAULT latched whose cause stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol import messages as pm
from protocol.codec import Frame
from protocol.framing import Flags
from tests.client.emulators import (
    ALL_COMMANDS,
    MEASUREMENT_TIMEOUT,
    SERIES,
    STATE,
    TEMP_SENSOR_FAULT,
    TICK_S,
    Emulator,
    over_mqtt,
    over_pty,
)
from tests.client.rig import Rig
from tests.support.mqtt_broker import Broker, require_mosquitto

PACK = ("--series", str(SERIES))
SILENT_ACTUATIONS = 20  # watchdog ActuationFrames recorded while the rig is silent
OPEN_SENSOR = 2  # the temperature sensor `faulted_pty` injects open, numbered from 1


def _store(directory: Path) -> tuple[str, str]:
    return ("--nvm", str(directory / "nvm.sqlite"))


def _stepped(emulator: Emulator) -> Emulator:
    """A simulated pack once its firmware has stepped (INIT left): before that, Status
    rightly has no estimate. Requests sent while serve was still opening its port can be
    answered before its first tick."""
    try:
        emulator.until_status(lambda s: s.state != STATE["INIT"], "the first step")
    except BaseException:
        emulator.close()
        raise
    return emulator


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    require_mosquitto()
    started = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def sim_pty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    directory = tmp_path_factory.mktemp("sim-pty")
    emulator = _stepped(over_pty(directory, "--sim", *PACK, *_store(directory)))
    yield emulator
    emulator.close()


@pytest.fixture(scope="module")
def sim_mqtt(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Emulator]:
    directory = tmp_path_factory.mktemp("sim-mqtt")
    emulator = _stepped(over_mqtt(directory, broker.host, broker.port, directory.name, "--sim",
                                  *PACK, *_store(directory), "--mqtt-commands", ALL_COMMANDS,
                                  "--mqtt-frame-rate", "1000"))
    yield emulator
    emulator.close()


@pytest.fixture(scope="module", params=["pty", "mqtt"])
def sim(request: pytest.FixtureRequest) -> Emulator:
    """The healthy simulated pack, over each transport in turn."""
    return request.getfixturevalue(f"sim_{request.param}")


@pytest.fixture(scope="module")
def read_only_mqtt(tmp_path_factory: pytest.TempPathFactory,
                   broker: Broker) -> Iterator[Emulator]:
    directory = tmp_path_factory.mktemp("read-only")
    emulator = _stepped(over_mqtt(directory, broker.host, broker.port, directory.name, "--sim",
                                  *PACK, "--no-nvm", "--mqtt-frame-rate", "1000"))
    yield emulator
    emulator.close()


@dataclass
class Hil:
    emulator: Emulator
    silent_status: pm.Status  # asked before any measurement
    silent_actuations: list[Frame]  # the watchdog's, the rig silent from boot
    rig: Rig


@pytest.fixture(scope="module")
def hil_pty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hil]:
    directory = tmp_path_factory.mktemp("hil-pty")
    emulator = over_pty(directory, "--hil", *PACK, "--no-nvm")
    client = emulator.client
    try:
        silent_status = emulator.status()
        client.wait_for(lambda item: isinstance(item, Frame)
                        and isinstance(item.message, pm.ActuationFrame)
                        and item.message.fault_bitmap >> MEASUREMENT_TIMEOUT & 1,
                        "ActuationFrame with MEASUREMENT_TIMEOUT from a rig silent from boot",
                        timeout_s=5.0)
        deadline = time.monotonic() + 10.0
        while (len(client.events(pm.ActuationFrame, 0)) < SILENT_ACTUATIONS
               and time.monotonic() < deadline):
            time.sleep(TICK_S)
        silent = client.events(pm.ActuationFrame, 0)
        rig = Rig(client).start()
    except BaseException:
        emulator.close()
        raise
    yield Hil(emulator, silent_status, silent, rig)
    rig.stop()
    emulator.close()


@dataclass
class Faulted:
    emulator: Emulator
    utc_offset_s: float  # what SetTime made UTC minus device time, about
    fault_event: Frame  # the FaultEvent of the injected fault


@pytest.fixture(scope="module")
def faulted_pty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulted]:
    directory = tmp_path_factory.mktemp("faulted")
    emulator = _stepped(over_pty(directory, "--sim", *PACK, *_store(directory)))
    client = emulator.client
    try:
        event_type = pm.BY_CLASS[pm.FaultEvent].type_id
        client.ask(pm.Subscribe(({"msg_type": event_type, "period_ms": 0},)))
        utc_s = time.time()
        client.ask(pm.SetTime(utc_s))
        offset_s = utc_s - emulator.status().time_s
        after = client.mark()
        client.ask(pm.Inject(f"0:temp-sensor-open:sensor={OPEN_SENSOR}"))
        event = client.wait_for(
            lambda item: isinstance(item, Frame) and item.header.flags & Flags.EVENT
            and isinstance(item.message, pm.FaultEvent)
            and item.message.code == TEMP_SENSOR_FAULT and item.message.action == 1,
            "FaultEvent raising TEMP_SENSOR_FAULT", after)
        emulator.until_status(lambda s: s.fault_level_bitmap >> TEMP_SENSOR_FAULT & 1,
                              "TEMP_SENSOR_FAULT latched at FAULT level")
    except BaseException:
        emulator.close()
        raise
    yield Faulted(emulator, offset_s, event)
    emulator.close()
