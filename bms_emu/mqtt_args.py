"""The MQTT options of `run`, `serve`, `rig`, `query` and `monitor`: added and checked
without importing aiomqtt and paho; `bms_emu.mqtt_links` makes them a session, a protocol
link and the bridge when a command is given --mqtt (start-up time)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from bms.data.validation import InputError, Problems
from bms.host.policy import COMMANDS, parse_policy
from bms.links.mqtt.defaults import (
    COMMAND_RATE_PER_S,
    MAX_MESSAGE_BYTES,
    MIN_FRAME_RATE_PER_S,
    PASSWORD_ENV,
)
from bms.links.mqtt.inbound import DEFAULT_MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from bms.links.serial_link import LinkFactory

PACK_ID = re.compile(r"[A-Za-z0-9_.-]+")
# A pack id is a topic level, part of a client id and of file names (a fleet's per-pack
# files): 128 characters, as a file name of 255 bytes has room for it.
MAX_PACK_ID_CHARS = 128


def add_mqtt_arguments(p, device: bool, protocol: bool = False) -> None:
    """`device`: the emulator's side (telemetry, commands, discovery); else a client's.
    `protocol`: the emulator also serves the protocol on the broker (`serve`)."""
    p.add_argument("--mqtt", metavar="URL",
                   help="broker: mqtt://[user[:password]@]host[:port][/prefix] or mqtts://...; "
                   f"the password may come from ${PASSWORD_ENV} instead (prefix default: bms)")
    p.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate for mqtts://")
    p.add_argument("--mqtt-cert", metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--mqtt-key", metavar="FILE", help="client key for mqtts://")
    p.add_argument("--pack-id", metavar="ID",
                   help="the pack's name in topics (<prefix>/<pack-id>/...); default: the host "
                   "name, with the serial port's name when there is one")
    if not device:
        return
    p.add_argument("--mqtt-commands", metavar="POLICY", default="",
                   help="what MQTT may change, on <prefix>/<pack-id>/cmd/<name> and through "
                   "the protocol on proto/in, each optionally limited: e.g. "
                   "'state=run|standby,clear-faults,balancing,config=limits.*'; from: "
                   f"{', '.join(COMMANDS)} (default: none; reading is always allowed)")
    p.add_argument("--mqtt-max-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   metavar="N", help="the largest MQTT message taken; a bigger one is dropped "
                   "unread and counted (default: %(default)s; give the broker a matching "
                   "message_size_limit)")
    p.add_argument("--mqtt-command-rate", type=float, default=COMMAND_RATE_PER_S,
                   metavar="PER_S", help="messages a second taken on each cmd/<name> topic; "
                   "the rest are dropped unread and counted (default: %(default)s)")
    if protocol:
        p.add_argument("--mqtt-frame-rate", type=float, default=None, metavar="PER_S",
                       help="messages a second taken on proto/in (a rig sends one a tick, "
                       "plus requests); the rest are dropped unread and counted (default: "
                       f"twice the tick rate, {MIN_FRAME_RATE_PER_S:g} at least)")
    p.add_argument("--state-period", type=float, default=1.0, metavar="S",
                   help="seconds between retained state messages (also sent on every change)")
    p.add_argument("--arrays-period", type=float, default=1.0, metavar="S",
                   help="seconds between cells, temperatures and balancing messages")
    p.add_argument("--no-ha-discovery", dest="ha_discovery", action="store_false",
                   help="do not publish Home Assistant discovery")


def default_pack_id(serial: str | None) -> str:
    host = socket.gethostname().split(".")[0] or "bms"
    return f"{host}-{Path(serial).name}" if serial else host


def check_pack_id(problems: Problems, flag: str, pack_id: str,
                  max_chars: int = MAX_PACK_ID_CHARS) -> None:
    """A pack id (or a fleet's prefix of them) as topics, client ids and file names take it."""
    if not pack_id:
        problems.add(flag, pack_id, "must not be empty")
    elif not PACK_ID.fullmatch(pack_id):
        problems.add(flag, pack_id, "letters, digits, '_', '.' and '-' only")
    elif len(pack_id) > max_chars:
        problems.add(flag, f"{pack_id[:20]}...", f"{len(pack_id)} characters; at most "
                     f"{max_chars}")


def check_mqtt_arguments(args, problems: Problems, serial: str | None = None) -> None:
    """Fills in args.pack_id; adds a problem for each bad option."""
    if args.pack_id is None:
        args.pack_id = re.sub(r"[^A-Za-z0-9_.-]", "-", default_pack_id(serial))
    else:
        check_pack_id(problems, "--pack-id", args.pack_id)
    if args.mqtt is None:
        for flag in ("mqtt_ca", "mqtt_cert", "mqtt_key"):
            if getattr(args, flag):
                problems.add(f"--{flag.replace('_', '-')}", getattr(args, flag),
                             "needs --mqtt")
        return
    from bms.links.mqtt.session import parse_broker  # aiomqtt: only once --mqtt is given

    try:
        parse_broker(args.mqtt, args.mqtt_ca, args.mqtt_cert, args.mqtt_key)
    except InputError as exc:  # each problem names --mqtt (or the TLS options) itself
        problems.items += exc.problems
    for flag in ("state_period", "arrays_period"):
        if hasattr(args, flag):
            problems.check_range(f"--{flag.replace('_', '-')}", getattr(args, flag), 0.01, 3600)
    if hasattr(args, "mqtt_max_bytes"):  # the longest protocol frame must get through
        problems.check_range("--mqtt-max-bytes", args.mqtt_max_bytes, MAX_MESSAGE_BYTES)
    for flag in ("mqtt_command_rate", "mqtt_frame_rate"):
        if getattr(args, flag, None) is not None:
            problems.check_range(f"--{flag.replace('_', '-')}", getattr(args, flag), 0.1,
                                 100_000)
    if hasattr(args, "mqtt_commands"):  # told with the rest; its patterns with the pack
        problems.take(parse_policy, args.mqtt_commands)


def check_one_link(args, problems: Problems) -> None:
    """A client talks to one emulator: over a serial port or over MQTT, not both."""
    if (args.serial is None) == (args.mqtt is None):
        problems.add("--serial/--mqtt", args.serial or args.mqtt,
                     "give one: --serial PORT or --mqtt URL (with --pack-id)")
    check_mqtt_arguments(args, problems)


def link_name(args) -> str:
    """The link a client uses, as a person reads it: the serial port, or the pack on MQTT."""
    return args.serial if args.serial else f"{args.mqtt} pack {args.pack_id}"


def client_target(args) -> str | LinkFactory:
    """What a client's Endpoint opens: the serial port, or the pack's MQTT topics."""
    if args.serial is not None:
        return args.serial
    from bms_emu.mqtt_links import client_link  # aiomqtt only with --mqtt (start-up time)

    return client_link(args)


def short_lived_text(m: dict) -> str:
    """What `run`'s summary and `fleet`'s lines add for connections the broker ended soon
    after accepting them (`MqttBridge.counts`)."""
    n, others = m.get("short_lived", 0), m.get("availability_from_others", 0)
    return ((f"; {n} connection(s) ended by the broker within seconds (another client with "
             "this client id? two emulators with one pack id)") if n else "") + (
        (f"; {others} availability message(s) from another client (another emulator with "
         "this pack id?)") if others else "")
