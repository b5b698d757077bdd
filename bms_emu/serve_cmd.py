"""`bms-emu serve`: the firmware in real time, serving the binary protocol on a serial port,
against its own simulated pack (--sim) or a rig's measurements (--hil)."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path

from bms.data.validation import Problems
from bms.host.device import Device, Identity
from bms.host.policy import TRUSTED, CommandPolicy
from bms.links.no_link import no_link
from bms.links.serial_link import DEFAULT_BAUD, Endpoint
from bms.runtime.realtime import Runtime
from bms_emu.build_info import firmware_build
from bms_emu.can_args import add_can_arguments, can_links, check_can_arguments
from bms_emu.lifetime import run_until_signalled
from bms_emu.modbus_args import add_modbus_arguments, check_modbus_arguments, modbus_links
from bms_emu.mqtt_args import add_mqtt_arguments, check_mqtt_arguments
from bms_emu.nvm_args import (
    add_nvm_arguments,
    check_nvm_arguments,
    describe_start,
    instance_name,
    start_firmware,
)
from bms_emu.output_paths import check_output_path
from bms_emu.pack_args import (
    add_config_argument,
    add_pack_arguments,
    check_pack_arguments,
    plant_inputs,
)
from hil.pack_options import build_pack, firmware_config
from hil.plant import Plant
from protocol.fields import MAX_CELLS, MAX_TEMP_SENSORS
from protocol.messages import Mode

# How long another thread (the MQTT session's, reading a flood say) may keep the interpreter
# once the control loop wakes wanting it: Python's default, 5 ms, is half a 10 ms tick.
GIL_SWITCH_S = 0.0005


def add_serial_arguments(p) -> None:
    p.add_argument("--serial", metavar="PORT",
                   help="serial port: /dev/ttyUSB0, a pty from `bms-emu pty`, ...")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help="baud rate (8N1)")



def add_duration_argument(p) -> None:
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after this many seconds (default: run until interrupted)")


def check_realtime_arguments(args, problems: Problems) -> None:
    """The pack, --tick, --baud and --duration of a command that runs in real time; the pack
    within what one protocol frame carries."""
    check_pack_arguments(args, problems)
    problems.check_range("--series", args.series, 1, MAX_CELLS)
    if args.cells_per_temp_sensor >= 1:
        n_temp = math.ceil(args.series / args.cells_per_temp_sensor)
        if n_temp > MAX_TEMP_SENSORS:
            problems.add("--cells-per-temp-sensor", args.cells_per_temp_sensor,
                         f"gives {n_temp} temperature sensors for {args.series} cells; the "
                         f"protocol carries at most {MAX_TEMP_SENSORS}: at least "
                         f"{math.ceil(args.series / MAX_TEMP_SENSORS)} cells per sensor")
    problems.check_range("--tick", args.tick, 1e-3, 10.0)
    problems.check_range("--baud", args.baud, 50, 20_000_000)
    if args.duration is not None:
        problems.check_range("--duration", args.duration, 1e-3, math.inf)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        description="Run the BMS firmware in real time and serve the binary protocol "
        "(docs/protocol.md) on a serial port. --sim: against the emulator's own simulated "
        "pack. --hil: against measurement frames from a rig; the firmware steps on each one "
        "and answers with an actuation frame, and steps without one every tick when the rig "
        "is silent, so a lost rig trips MEASUREMENT_TIMEOUT. A vanished port is reopened "
        "when it returns. With --mqtt it also publishes telemetry, events and Home Assistant "
        "discovery and takes commands on the broker (README: MQTT); without --serial it "
        "serves the protocol on the broker's proto topics. With --can it also speaks to an "
        "inverter on a CAN bus (README: Connect an inverter). With --modbus it also serves "
        "the pack as a SunSpec battery on Modbus TCP or RTU (docs/modbus.md).")
    add_serial_arguments(p)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sim", action="store_true", help="run the emulator's own simulated pack")
    mode.add_argument("--hil", action="store_true", help="take measurements from a rig")
    add_pack_arguments(p)
    add_config_argument(p)
    add_mqtt_arguments(p, device=True, protocol=True)
    add_can_arguments(p)
    add_modbus_arguments(p)
    add_nvm_arguments(p, by_default=True)
    p.add_argument("--tick", type=float, default=0.1, metavar="S",
                   help="firmware step period (SIM), watchdog period (HIL), seconds")
    p.add_argument("--autostart", action="store_true",
                   help="request run at boot, as a pack that closes on power-up (default: "
                   "wait in STANDBY for a host's run: `query ... command run`)")
    add_duration_argument(p)
    p.add_argument("--stats", metavar="PATH", type=Path,
                   help="on leaving (SIGTERM, Ctrl-C, --duration) write run statistics as "
                   "JSON to PATH: the tick loop's lateness (wake time minus due time) p50 / "
                   "p99 / max, work time, overruns (ticks whose work ended after the next "
                   "was due) and skipped ticks; steps, frames and decoding errors; MQTT "
                   "connections, messages published and dropped, fault events still kept "
                   "for the broker and lost; the store's saves and failed saves; with --can, "
                   "the CAN frames sent and received, unknown and malformed ones, and the "
                   "bus's failures; with --modbus, its reads, writes and exceptions")
    p.add_argument("-v", "--verbose", action="store_true", help="log every fault event")
    p.set_defaults(handler=handle)


def build(args) -> tuple[Runtime, str | None]:
    """The runtime, and a line on what its store resumed (None without a store)."""
    problems = Problems("bms-emu serve")
    check_realtime_arguments(args, problems)
    check_mqtt_arguments(args, problems, args.serial)
    check_nvm_arguments(args, problems)
    check_can_arguments(args, problems)
    check_modbus_arguments(args, problems)
    field_only = args.serial is None and args.mqtt is None
    if field_only and not (args.sim and (args.can or args.modbus)):
        problems.add("--serial/--mqtt", None,
                     "give --serial PORT, --mqtt URL or both (--can and --modbus run beside "
                     "them; --sim may run on --can or --modbus alone)")
    check_output_path(problems, "--stats", args.stats)
    problems.raise_if_any()
    pack = build_pack(args, args.tick)
    pc = problems.take(firmware_config, args.config, pack)
    # The plant's inputs only where there is a plant: a rig's pack is the rig's.
    injections, profile = plant_inputs(args, pack, problems) if args.sim else (None, None)
    problems.raise_if_any()  # every problem at once, before the store is opened
    mode = Mode.SIM if args.sim else Mode.HIL
    started = start_firmware(args, pc, mode, args.autostart)
    keeper = started.keeper
    plant = Plant(pack, profile, injections) if args.sim else None
    identity = Identity(pc.chem.name, mode, args.parallel, pc.capacity_ah,
                        pack.sensors.n_temp, args.pack_id, instance_name(args.pack_id, mode),
                        firmware_build())
    device = Device(started.firmware, pc.chem, identity, started.overrides,
                    inject=plant.inject if plant is not None else None,
                    on_config_change=keeper.config_written if keeper is not None else None,
                    store=keeper)
    bridge = on_mqtt = None
    if args.mqtt is not None:
        # here, not at the top: aiomqtt and paho only with --mqtt (start-up time)
        from bms_emu.mqtt_links import device_bridge, device_link, device_session

        session = device_session(args)
        bridge = device_bridge(args, session, device,
                               keeper.store if keeper is not None else None)
        on_mqtt = device_link(args, session)
    # The protocol goes on the serial port when there is one (trusted: a cable), else on the
    # MQTT proto topics, held to the same command policy as cmd/*; else nowhere (--sim with
    # only field links).
    link = args.serial if args.serial else no_link if field_only else on_mqtt
    who = (f"protocol on {args.serial}" if args.serial else "no protocol link" if field_only
           else "protocol on MQTT")
    policy = (TRUSTED if args.serial else CommandPolicy() if field_only
              else bridge.options.commands or CommandPolicy())
    runtime = Runtime(device, Endpoint(link, args.baud), args.tick, plant, bridge, keeper, who,
                      policy, [*modbus_links(args, device, pack.sensors.spec.cells_per_temp_sensor),
                               *can_links(args, device)])
    return runtime, describe_start(started)


def handle(args) -> int:
    runtime, resumed = build(args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    mode = "sim" if args.sim else "hil"
    where = [f"{args.serial} at {args.baud} baud"] if args.serial else []
    if args.mqtt is not None:
        where.append(f"{runtime.bridge.session.broker.describe()}/{args.pack_id}")
    where += [link.describe() for link in runtime.field_links]
    print(f"bms-emu serve: {mode}, {runtime.fw.n_series} cells "
          f"({runtime.device.identity.chemistry}) on {' and '.join(where)}", flush=True)
    if resumed:
        print(f"bms-emu serve: {resumed}", flush=True)
    started_s = time.monotonic()
    sys.setswitchinterval(GIL_SWITCH_S)
    try:
        run_until_signalled(_serve(runtime, args.duration))
    finally:
        if runtime.bridge is not None:
            runtime.bridge.session.stop()
        if runtime.plant is not None:
            runtime.plant.close()
        if args.stats is not None:
            write_stats(args.stats, runtime, time.monotonic() - started_s)
    return 0


def write_stats(path: Path, runtime: Runtime, wall_s: float) -> None:
    """The run's figures as one JSON object, replacing PATH at once (a reader never sees
    half a file)."""
    stats = {"wall_s": round(wall_s, 3), "pid": os.getpid(),
             "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # Linux: KiB
             **runtime.stats()}
    if runtime.bridge is not None:
        stats["mqtt"] = runtime.bridge.counts()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats) + "\n")
    tmp.replace(path)


async def _serve(runtime: Runtime, duration_s: float | None) -> None:
    """The broker session starts once the signal handlers are in place, so a SIGTERM from
    then on is a clean stop (`offline` said, the rig told) rather than a kill."""
    if runtime.bridge is not None:
        runtime.bridge.session.start()
    await runtime.run(duration_s)
