"""`bms-emu inverter`: a simulated UPS inverter/charger on a CAN bus, in real time. It reads
the battery's frames (`serve --can`), sends the keep-alive, keeps to the limits and
requests it receives, and drives the simulated pack's current over the bus (a pack run
with `--profile inverter`); it prints what a real inverter shows, once a second, and a
summary at the end."""

from __future__ import annotations

import json
import logging
import sys
import time

from bms.data.validation import Problems
from bms.host.periodic import Periodic
from bms.links.can.bus_spec import parse_bus_spec
from bms.links.can.frame_sets import DEFAULT, NAMES, frame_set
from bms_emu.cli_errors import EXIT_NO_LINK
from bms_emu.lifetime import stop_requests
from bms_emu.serve_cmd import add_duration_argument
from hil.inverter_node import InverterLink, InverterNode
from hil.ups_duty import parse_duty

SHOW_EVERY_S = 1.0
WAIT_SLICE_S = 0.1  # a stop request is seen within this


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inverter",
        description="Run a simulated UPS inverter/charger on a CAN bus, in real time: it "
        "decodes the battery's frames with the frame set's DBC, sends the inverter's "
        "keep-alive, charges CC-CV to the CVL at up to the CCL while the mains is up, "
        "carries --load-w from the battery during each --outage (at most the DCL, down to "
        "the DVL; the load is dropped until the mains returns when the battery forbids "
        "discharge, asks for a force charge or stands at its DVL), and sends its DC "
        "setpoint on the bus for a simulated pack run with `--profile inverter` (`serve "
        "--sim`, `run`, `rig`). Prints what a real inverter shows once a second and a "
        "summary at the end (README: Connect an inverter).")
    p.add_argument("--can", metavar="INTERFACE:CHANNEL[@BITRATE]", required=True,
                   help="the bus: udp_multicast:239.74.163.2 (several processes on one "
                   "host), socketcan:can0, slcan:/dev/ttyACM0@500000, ...")
    p.add_argument("--can-protocol", choices=NAMES, default=DEFAULT,
                   help=f"the frame set (default {DEFAULT})")
    p.add_argument("--outage", action="append", default=[], metavar="AT:LEN",
                   help="the mains fails at AT for LEN (durations: 60:300, 1h:10m); "
                   "repeatable")
    p.add_argument("--load-w", type=float, metavar="W",
                   help="the load, W: the battery carries it during an outage")
    p.add_argument("--tick", type=float, default=0.1, metavar="S",
                   help="how often the inverter decides and polls the bus, seconds")
    add_duration_argument(p)
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object (the display lines go to "
                   "stderr)")
    p.add_argument("-v", "--verbose", action="store_true", help="log the bus")
    p.set_defaults(handler=handle)


def build(args) -> InverterLink:
    problems = Problems("bms-emu inverter")
    spec = problems.take(parse_bus_spec, args.can, "--can", problems.source)
    if spec is not None and spec.interface == "virtual":
        problems.add("--can", args.can, "a virtual bus reaches only buses of the same "
                     "process, and `bms-emu inverter` runs in its own: use "
                     "udp_multicast:239.74.163.2 (several processes on one host) or a real "
                     "interface (the one-process loop is hil.inverter_loop)")
    duty = parse_duty(args.outage, args.load_w, problems)
    problems.check_range("--tick", args.tick, 1e-3, 1.0)
    if args.duration is not None:
        problems.check_range("--duration", args.duration, 1e-3, None)
    problems.raise_if_any()
    return InverterLink(spec, InverterNode(frame_set(args.can_protocol), duty))


def handle(args) -> int:
    link = build(args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    out = sys.stderr if args.json else sys.stdout
    duty = link.node.duty
    outages = ", ".join(o.describe() for o in duty.outages) or "none"
    print(f"bms-emu inverter: {link.spec.describe()} ({link.node.frames.name}), outages "
          f"{outages}, load {duty.load_w:g} W, tick {args.tick:g} s", file=out, flush=True)
    try:
        with stop_requests() as stop:
            _run(link, args.tick, args.duration, stop,
                 lambda line: print(line, file=out, flush=True))
    finally:
        link.shutdown()
    summary = link.summary()
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        _print_summary(summary)
    if link.node.view.limits_s is None:
        print(f"bms-emu inverter: error: heard no battery on {link.spec.describe()}: is "
              f"`bms-emu serve --can` on the same bus with --can-protocol "
              f"{link.node.frames.name}?", file=sys.stderr)
        return EXIT_NO_LINK
    return stop.exit_code


def _run(link: InverterLink, tick_s: float, duration_s: float | None, stop, show) -> None:
    """Polls every tick on the monotonic clock until `duration_s` or a stop request; a tick
    missed (a stalled machine) is skipped, not caught up."""
    started = time.monotonic()
    display = Periodic(SHOW_EVERY_S)
    k = 0
    while not stop():
        now_s = time.monotonic() - started
        if duration_s is not None and now_s >= duration_s:
            return
        link.poll(now_s)
        if display.due(now_s):
            show(link.node.status_line(now_s))
        k = max(k + 1, int(now_s / tick_s) + 1)
        while not stop() and (left_s := started + k * tick_s - time.monotonic()) > 0:
            time.sleep(min(left_s, WAIT_SLICE_S))


def _print_summary(d: dict) -> None:
    b, f = d["battery"], d["frames"]
    battery = ", ".join(x for x in (b["manufacturer"], b["series_cells"] and
                                    f"{b['series_cells']} cells") if x) or "not identified"
    modes = ", ".join(f"{mode} {s:.0f} s" for mode, s in d["modes_s"].items())
    print(f"bms-emu inverter: {d['inverter_time_s']:.1f} s on {d['bus']['bus']} "
          f"({d['frame_set']}); battery {battery}; modes: {modes or '-'}")
    for o in d["outages"]:
        end = o["at_s"] + o["length_s"]
        how = ("not reached" if o["at_s"] >= d["inverter_time_s"] else
               f"load dropped at {o['cut_off_at_s']:g} s: {o['cut_off_why']}"
               if o["cut_off_at_s"] is not None else
               "the run ended during it" if end > d["inverter_time_s"] else "rode through")
        print(f"  outage {o['at_s']:g}-{end:g} s: the battery carried the load for "
              f"{o['served_s']:.1f} s; {how}")
    soc = d["soc_pct"]
    print(f"  energy as the battery reports it: charged {d['charged_wh']:.2f} Wh, "
          f"discharged {d['discharged_wh']:.2f} Wh; SoC {soc['min']}-{soc['max']} %, last "
          f"{soc['last']} %")
    print(f"  warnings seen: {', '.join(d['warnings_seen']) or '-'}; alarms seen: "
          f"{', '.join(d['protections_seen']) or '-'}")
    bus = d["bus"]
    why = f" ({bus['last_error']})" if bus["last_error"] else ""
    print(f"  frames sent {f['sent']}, received {f['received']}, echoes {f['echoes']}, "
          f"unknown {f['unknown']}, malformed {f['malformed']}; bus failures "
          f"{bus['failures']}{why}", flush=True)
