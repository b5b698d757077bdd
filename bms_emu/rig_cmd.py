"""`bms-emu rig`: the simulated pack as a separate process, driving `serve --hil` over a
serial port as a hardware-in-the-loop rig would."""

from __future__ import annotations

import json
import logging
import sys

from bms.data.validation import Problems
from bms.links.client import Client
from bms_emu.lifetime import run_until_signalled
from bms_emu.mqtt_args import add_mqtt_arguments, check_one_link, client_target, link_name
from bms_emu.pack_args import add_pack_arguments, plant_inputs
from bms_emu.serve_cmd import add_duration_argument, add_serial_arguments, check_realtime_arguments
from hil.pack_options import build_pack
from hil.plant import Plant
from hil.rig import Rig
from protocol.framing import LATEST_REVISION


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rig",
        description="Run the simulated sodium-ion pack in real time as a hardware-in-the-loop "
        "rig: every tick it sends a measurement frame to an emulator in `serve --hil` and "
        "applies the actuation frames that come back (contactors, balancing, current "
        "limits; the load never exceeds the published limits). The pack options must match "
        "the emulator's. With no actuation frame for --actuation-timeout the rig opens its "
        "contactors itself. Prints the emulator's state changes and fault events.")
    add_serial_arguments(p)
    add_mqtt_arguments(p, device=False)
    add_pack_arguments(p)
    p.add_argument("--can", metavar="INTERFACE:CHANNEL[@BITRATE]",
                   help="with --profile inverter: the CAN bus `bms-emu inverter` drives this "
                   "pack's current on (README: Connect an inverter)")
    p.add_argument("--tick", type=float, default=0.1, metavar="S",
                   help="measurement period, seconds")
    p.add_argument("--actuation-timeout", type=float, default=1.0, metavar="S",
                   help="seconds without an actuation frame before the rig opens its "
                   "contactors")
    add_duration_argument(p)
    p.add_argument("--json", action="store_true",
                   help="print a final summary as one JSON object (event lines go to stderr)")
    p.add_argument("-v", "--verbose", action="store_true", help="log the link and every refusal")
    p.set_defaults(handler=handle)


def build(args) -> Plant:
    problems = Problems("bms-emu rig")
    check_realtime_arguments(args, problems)
    check_one_link(args, problems)
    problems.check_range("--actuation-timeout", args.actuation_timeout, 1e-3, 3600.0)
    problems.raise_if_any()
    pack = build_pack(args, args.tick)
    injections, profile = plant_inputs(args, pack, problems)
    problems.raise_if_any()
    return Plant(pack, profile, injections)


def handle(args) -> int:
    plant = build(args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    out = sys.stderr if args.json else sys.stdout
    print(f"bms-emu rig: {plant.pack.n_series} cells ({plant.pack.chem.name}), "
          f"{plant.pack.sensors.n_temp} temperature sensors, on {link_name(args)} at {args.baud} "
          f"baud, tick {args.tick:g} s", file=out, flush=True)
    try:
        rig = run_until_signalled(
            _run(args, plant, lambda line: print(line, file=out, flush=True)))
    except TimeoutError as exc:  # the port never opened
        print(f"bms-emu rig: error: {exc}", file=sys.stderr)
        return 1
    if rig is None:  # Ctrl-C or SIGTERM: the summary was printed on the way out
        return 0
    if rig.refused is not None:
        print(f"bms-emu rig: error: the emulator refuses this rig's measurements: "
              f"{rig.refused}. Give the rig the emulator's pack options (--series, "
              f"--cells-per-temp-sensor, ...) and run the emulator with --hil.",
              file=sys.stderr)
        return 1
    return 0


async def _run(args, plant: Plant, report) -> Rig:
    """Runs the rig on the port; the summary is printed however the run ends."""
    async with Client(client_target(args), args.baud, LATEST_REVISION) as client:
        rig = Rig(plant, client, args.tick, args.actuation_timeout, report)
        try:
            await rig.run(args.duration)
        finally:
            plant.close()
            _print_summary(rig.summary(), args.json)
    return rig


def _print_summary(d: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(d), flush=True)
        return
    f, final = d["frames"], d["final"]
    emulator = ("no actuation frame received" if final["state"] is None else
                f"emulator {final['state']}, {', '.join(final['faults']) or 'no faults'}, "
                f"SoC {final['soc_pct']} %")
    print(f"{d['rig_time_s']:.1f} s: sent {f['sent']}, answered {f['answered']}, lost "
          f"{f['lost']}, refused {sum(f['nacks'].values())}, decode errors "
          f"{sum(f['decode_errors'].values())}; {emulator}; rig contactors "
          f"{final['contactors']}, true SoC {final['soc_true_pct']} %", flush=True)
