"""`bms-emu query`: ask a running emulator (or a BMS speaking the protocol) one thing over a
serial port, set configuration parameters, or send a command.

Exit codes: 0 done, 2 bad input (a wrong option, an unknown parameter name, a value that
does not convert), 3 the device refused (its reason printed), 4 no link (the port cannot be
opened, or no answer in time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

from rich import box
from rich.console import Console, Group
from rich.table import Table

from bms.data.faults import subject_text
from bms.data.validation import Problems, close_names
from bms.host import views
from bms.links.client import Client, Refused
from bms.links.serial_link import DEFAULT_BAUD
from bms_emu.cli_errors import EXIT_NO_LINK
from bms_emu.mqtt_args import check_one_link, client_target, link_name
from protocol import messages as pm
from protocol.framing import LATEST_REVISION, REVISIONS

EXIT_REFUSED = 3
PAGE = 32  # entries asked for per paged request (the device's page)
CONFIG_CHUNK = 64  # parameter values per GetConfig: the answer stays well inside a frame
DEFAULT_TIMEOUT_S = 2.0

COMMANDS: dict[str, tuple[pm.Command, int]] = {
    "run": (pm.Command.RUN, 0),
    "standby": (pm.Command.STANDBY, 0),
    "storage": (pm.Command.STORAGE, 0),
    "clear-faults": (pm.Command.CLEAR_FAULTS, 0),
    "service-reset": (pm.Command.SERVICE_RESET, 0),
    "balancing-off": (pm.Command.BALANCING_MODE, pm.BalancingMode.OFF),
    "balancing-voltage": (pm.Command.BALANCING_MODE, pm.BalancingMode.VOLTAGE),
    "balancing-soc": (pm.Command.BALANCING_MODE, pm.BalancingMode.SOC),
    "reset": (pm.Command.RESET, 0),
    "factory-defaults": (pm.Command.FACTORY_DEFAULTS, 0),
}
BOOL_WORDS = {"true": True, "false": False}

WHATS = {
    "status": "state, contactors, faults, pack voltage and current, SoC, limits, extremes",
    "info": "firmware and protocol version, chemistry, mode, cell and sensor counts",
    "cells": "cell voltages",
    "temps": "temperature sensor readings",
    "soc": "the estimated SoC of each cell",
    "balancing": "balancing mode and the cells bleeding",
    "faults": "the whole fault log, oldest first",
    "config": "configuration parameter values (all, or the named ones / sections)",
    "set": "set parameters, all or none, and print the values now in effect",
    "command": "send a command",
    "inject": "inject a fault into the emulator's simulated pack (serve --sim)",
    "counters": "the lifetime counters: charge, energy, cycles, time in each state, extremes",
    "cell-health": "each cell's state of health, learnt capacity and resistance",
    "config-log": "the log of configuration writes: when, who, old and new value",
    "set-time": "set the device's wall clock (UTC) to this computer's, or to UTC_S",
    "reset": "restart the firmware as after a power cycle (contactors opened first)",
    "factory-defaults": "undo every configuration write: the defaults (not while in RUN)",
}


def add_link_arguments(p, nested: bool = False) -> None:
    """--serial, --baud, --timeout; `nested`: the copy a WHAT takes after its name, which
    leaves the value given before it alone unless given again."""
    keep = {"default": argparse.SUPPRESS} if nested else {}
    p.add_argument("--serial", metavar="PORT", **({"default": None} | keep),
                   help="serial port: /dev/ttyUSB0, a pty from `bms-emu pty`, ...")
    p.add_argument("--baud", type=int, **({"default": DEFAULT_BAUD} | keep),
                   help=f"baud rate, 8N1 (default: {DEFAULT_BAUD})")
    p.add_argument("--timeout", type=float, metavar="S",
                   **({"default": DEFAULT_TIMEOUT_S} | keep),
                   help="seconds to wait for the port to open and for each answer "
                   f"(default: {DEFAULT_TIMEOUT_S:g})")
    for flag, metavar, text in MQTT_LINK_OPTIONS:
        p.add_argument(flag, metavar=metavar, **({"default": None} | keep), help=text)


MQTT_LINK_OPTIONS = (
    ("--mqtt", "URL", "talk over MQTT instead: mqtt://[user[:password]@]host[:port][/prefix] "
     "or mqtts://; the pack is --pack-id"),
    ("--pack-id", "ID", "the pack on the broker (default: this host's name)"),
    ("--mqtt-ca", "FILE", "CA certificate for mqtts://"),
    ("--mqtt-cert", "FILE", "client certificate for mqtts://"),
    ("--mqtt-key", "FILE", "client key for mqtts://"),
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "query",
        description="Ask a device speaking the bms-emu protocol (e.g. `bms-emu serve`) over "
        "a serial port. Readings are in SI units with the unit shown; SoC in percent; "
        "current positive when charging; cells and sensors numbered from 1 (as on a pack "
        "label) in tables and in --json (`cell`, `sensor`; list position 0 is cell 1). "
        "Exit codes: 0 ok, 2 bad input, 3 refused by the device, 4 no link or no answer.")
    add_link_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, text in WHATS.items():
        q = what.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        add_link_arguments(q, nested=True)
        q.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON object")
        if name == "config":
            q.add_argument("params", nargs="*", metavar="PARAM",
                           help="dotted names (limits.max_charge_a), ids, or sections "
                           "(limits); default: all")
        elif name == "set":
            q.add_argument("pairs", nargs="+", metavar="PARAM VALUE",
                           help="a parameter (dotted name as in `bms-emu config --defaults`, "
                           "or numeric id) and its value: a number, true/false, or one of "
                           "a choice parameter's words; all pairs are applied together or "
                           "not at all")
        elif name == "command":
            q.add_argument("name", choices=list(COMMANDS), metavar="NAME",
                           help=", ".join(COMMANDS))
        elif name == "set-time":
            q.add_argument("utc_s", nargs="?", type=float, metavar="UTC_S",
                           help="seconds since 1970-01-01 UTC (default: this computer's "
                           "clock)")
        elif name == "inject":
            q.add_argument("spec", metavar="AT:KIND[:k=v,...]",
                           help="as `bms-emu run --inject` takes it, AT counted from now "
                           "(0 = at once); the emulator checks it and refuses a bad one")
    p.set_defaults(handler=handle)


def check_link_arguments(args, prog: str) -> None:
    problems = Problems(prog)
    check_one_link(args, problems)
    problems.check_range("--baud", args.baud, 50, 20_000_000)
    problems.check_range("--timeout", args.timeout, 0.01, 3600.0)
    problems.raise_if_any()


def run_reporting(prog: str, work: Callable[[], Awaitable[int]]) -> int:
    """Runs `work` on a fresh event loop; a refusal and a lost link become a message on
    stderr and exit codes 3 and 4 (InputError goes to `bms-emu`'s own handler: exit 2)."""
    try:
        return asyncio.run(work())
    except Refused as exc:
        print(f"{prog}: refused: {exc.code}: {exc.nack.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except NotInProtocol as exc:
        print(f"{prog}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (TimeoutError, UnexpectedAnswer) as exc:
        print(f"{prog}: {exc or 'timed out'}", file=sys.stderr)
        return EXIT_NO_LINK
    except BrokenPipeError:  # the reader (head, a pager) left early: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


class UnexpectedAnswer(Exception):
    """An answer of the wrong type to a request (a stale frame, or not this protocol)."""


class NotInProtocol(Exception):
    """A request the device's protocol does not have (a 1.1 one, and the device is 1.0)."""


async def ask(client: Client, msg: object, expected: type, timeout_s: float):
    try:
        reply = await client.request(msg, timeout_s)
    except ValueError:
        mt = pm.BY_CLASS[type(msg)]
        if pm.in_revision(mt.type_id, client.revision):
            raise
        raise NotInProtocol(f"{mt.name} is protocol {REVISIONS[mt.since]}; this device "
                            f"speaks {REVISIONS[client.revision]}") from None
    if not isinstance(reply, expected):
        raise UnexpectedAnswer(f"{type(msg).__name__} was answered with "
                               f"{type(reply).__name__}, not {expected.__name__}")
    return reply


async def open_client(args, timeout_s: float) -> Client:
    """A started client; TimeoutError (naming the port and why) when it does not open."""
    quiet_link_log()
    client = Client(client_target(args), args.baud, LATEST_REVISION)  # falls back to 1.0
    await client.start(connect_timeout_s=timeout_s)
    return client


def quiet_link_log() -> None:
    """The link logs "cannot open ..., retrying" as a server should; a client command says
    it once, itself."""
    logging.getLogger("bms.links.serial_link").setLevel(logging.ERROR)


async def fetch_parameters(client: Client, timeout_s: float) -> list[dict]:
    """The device's parameter list (id, kind, name, unit, choices), every page."""
    return await fetch_pages(client, pm.GetParameterList, pm.ParameterList, timeout_s)


async def fetch_pages(client: Client, request: type, expected: type,
                      timeout_s: float) -> list[dict]:
    """Every entry of a paged read (`request(start, count)` answered by a page with
    `total` and `entries`), asking on from where each page's entries end."""
    entries: list[dict] = []
    total = None
    while total is None or len(entries) < total:
        page = await ask(client, request(len(entries), PAGE), expected, timeout_s)
        total = page.total
        if not page.entries:
            break
        entries.extend(page.entries)
    return entries


async def fetch_values(client: Client, ids: list[int], timeout_s: float) -> dict[int, dict]:
    """Parameter id -> ConfigValues entry, asked for in chunks that fit a frame."""
    out: dict[int, dict] = {}
    for i in range(0, len(ids), CONFIG_CHUNK):
        reply = await ask(client, pm.GetConfig(tuple(ids[i:i + CONFIG_CHUNK])),
                          pm.ConfigValues, timeout_s)
        out.update({v["param_id"]: v for v in reply.values})
    return out


async def fetch_fault_log(client: Client, timeout_s: float) -> dict:
    """Every entry of the fault log, oldest first, page by page. Entries pushed out while
    paging shift the indices: the page is asked for again from where reading stopped."""
    entries: list[dict] = []
    start, dropped, total = 0, None, 0
    for _ in range(100_000):  # a bound, not a limit any log reaches
        page = await ask(client, pm.GetFaultLog(start, PAGE), pm.FaultLogPage, timeout_s)
        if dropped is not None and page.dropped != dropped:
            start = max(0, start - (page.dropped - dropped))
            dropped = page.dropped
            continue
        dropped, total = page.dropped, page.total
        entries.extend(page.entries)
        start += len(page.entries)
        if not page.entries or start >= page.total:
            break
    return {"total": total, "dropped": dropped or 0,
            "entries": [views.fault_entry_dict(e) for e in entries]}


# --- parameters by name -----------------------------------------------------------------

def _unknown(text: str, params: list[dict]) -> str:
    near = close_names(text, [p["name"] for p in params])
    hint = f"close names: {', '.join(near)}" if near else \
        "`bms-emu query config` lists the parameters"
    return f"no such parameter on this device; {hint}"


def resolve_param(text: str, params: list[dict]) -> dict | None:
    """The parameter named `text` (a dotted name or a numeric id), or None."""
    for p in params:
        if p["name"] == text:
            return p
    try:
        pid = int(text, 0)
    except ValueError:
        return None
    return next((p for p in params if p["param_id"] == pid), None)


def select_params(texts: list[str], params: list[dict]) -> list[dict]:
    """The parameters `query config` names: names, ids or sections; InputError naming
    every one that matches nothing."""
    if not texts:
        return params
    problems = Problems("bms-emu query config")
    chosen: list[dict] = []
    for text in texts:
        p = resolve_param(text, params)
        found = [p] if p is not None else [q for q in params
                                           if q["name"].startswith(text.rstrip(".") + ".")]
        if not found:
            problems.add("PARAM", text, _unknown(text, params))
        chosen += [q for q in found if q not in chosen]
    problems.raise_if_any()
    return chosen


def convert(p: dict, text: str) -> tuple[object, str]:
    """(the value as the parameter's kind, "") or (None, what is allowed)."""
    kind = p["kind"]
    unit = f", {p['unit']}" if p["unit"] else ""
    if kind == pm.ValueKind.FLOAT:
        try:
            return float(text), ""
        except ValueError:
            return None, f"must be a number (float{unit})"
    if kind == pm.ValueKind.INT:
        try:
            return int(text, 10), ""
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f), ""
            return None, f"must be a whole number (int{unit})"
    if kind == pm.ValueKind.BOOL:
        value = BOOL_WORDS.get(text.strip().lower())
        return (value, "") if value is not None else (None, "must be true or false")
    if kind == pm.ValueKind.CHOICE:
        if text in p["choices"]:
            return text, ""
        return None, f"must be one of {', '.join(p['choices'])}"
    return None, f"has a kind ({kind}) this client does not know"


def parse_pairs(pairs: list[str], params: list[dict]) -> list[dict]:
    """`PARAM VALUE ...` as SetConfig values; InputError naming every bad name and value."""
    problems = Problems("bms-emu query set")
    if len(pairs) % 2:
        problems.add("PARAM VALUE", " ".join(pairs),
                     f"{len(pairs)} words: give a value after each parameter")
        problems.raise_if_any()
    values = []
    for name, text in zip(pairs[::2], pairs[1::2], strict=True):
        p = resolve_param(name, params)
        if p is None:
            problems.add("PARAM", name, _unknown(name, params))
            continue
        value, allowed = convert(p, text)
        if allowed:
            problems.add(p["name"], text, allowed)
            continue
        values.append({"param_id": p["param_id"], "kind": p["kind"], "value": value})
    problems.raise_if_any()
    return values


# --- the command -------------------------------------------------------------------------

def handle(args) -> int:
    check_link_arguments(args, "bms-emu query")
    if args.what == "set" and len(args.pairs) % 2:
        parse_pairs(args.pairs, [])  # refuses the odd count before the port is opened
    return run_reporting("bms-emu query", lambda: query(args))


async def query(args) -> int:
    client = await open_client(args, args.timeout)
    try:
        result, table = await ANSWERS[args.what](client, args)
    finally:
        await client.close()
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        Console().print(table)
    return 0


def _table(title: str, *columns: str, **kw) -> Table:
    table = Table(title=title, **kw)
    for column in columns:
        table.add_column(column, justify="right" if column in ("cell", "sensor") else "left")
    return table


def _pairs_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for row in rows:
        table.add_row(*row)
    return table


async def _status(client, args):
    d = views.status_dict(await ask(client, pm.GetStatus(), pm.Status, args.timeout),
                          client.revision)
    return d, _pairs_table(f"status of {link_name(args)}", views.status_rows(d))


async def _info(client, args):
    d = views.info_dict(await ask(client, pm.GetInfo(), pm.DeviceInfo, args.timeout))
    rows = [("firmware", d["firmware_version"]), ("protocol version", str(d["protocol_version"])),
            ("chemistry", d["chemistry"]), ("mode", d["mode"]),
            ("pack", f"{d['n_series']}S{d['n_parallel']}P, "
                     f"{views.fmt(d['capacity_ah'], 'g', 'Ah')}"),
            ("temperature sensors", str(d["n_temp_sensors"])),
            ("capabilities", ", ".join(d["capabilities"]) or "none")]
    if d["pack_id"] is not None or d["protocol_revisions"]:  # a 1.1 device says who it is
        rows += [("pack id", d["pack_id"] or "-"), ("serial", d["serial"] or "-"),
                 ("build", d["firmware_build"] or "-"),
                 ("protocol revisions", ", ".join(map(str, d["protocol_revisions"]))),
                 ("config schema version", str(d["config_schema_version"])),
                 ("page entries", str(d["max_page_entries"]))]
    return d, _pairs_table(f"device on {link_name(args)}", rows)


def _per_item(title: str, label: str, column: str, values: list, spec: str,
              unit: str) -> Table:
    table = _table(title, label, column)
    for i, v in enumerate(values):
        table.add_row(str(i + 1), views.fmt(v, spec, unit))
    return table


async def _cells(client, args):
    d = views.cells_dict(await ask(client, pm.GetCellVoltages(), pm.CellVoltages, args.timeout))
    v = [x for x in d["cell_voltage_v"] if x is not None]
    table = _per_item("cell voltages", "cell", "voltage", d["cell_voltage_v"], ".3f", "V")
    if not v:
        return d, table
    lo, hi = min(v), max(v)
    return d, Group(table, f"min {lo:.3f} V (cell {d['cell_voltage_v'].index(lo) + 1}), "
                           f"max {hi:.3f} V (cell {d['cell_voltage_v'].index(hi) + 1}), "
                           f"spread {1e3 * (hi - lo):.0f} mV")


async def _temps(client, args):
    d = views.temps_dict(await ask(client, pm.GetTemperatures(), pm.Temperatures, args.timeout))
    return d, _per_item("temperatures", "sensor", "temperature", d["temperature_c"], ".1f", "°C")


async def _soc(client, args):
    d = views.cell_soc_dict(await ask(client, pm.GetCellSoc(), pm.CellSoc, args.timeout))
    return d, _per_item("cell SoC", "cell", "SoC", d["soc_pct"], ".1f", "%")


async def _balancing(client, args):
    d = views.balancing_dict(await ask(client, pm.GetBalancing(), pm.BalancingState,
                                       args.timeout))
    cells = ", ".join(str(n) for n in d["bleeding_cells"]) or "none"
    return d, _pairs_table("balancing", [("mode", d["mode"]), ("cells bleeding", cells)])


async def _faults(client, args):
    log = await fetch_fault_log(client, args.timeout)
    if args.json:
        return log, None
    if not log["entries"]:
        return log, f"fault log empty ({log['dropped']} entries dropped)"
    units = views.fault_units(await fetch_parameters(client, args.timeout))
    table = Table(title=f"fault log: {log['total']} entries kept, {log['dropped']} dropped",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
                  collapse_padding=True)
    # the boot only when the log spans several; the time in UTC where it is known
    boots = len({e["boot"] for e in log["entries"]}) > 1
    for column in ("boot",) * boots + ("time", "fault", "level", "action", "where", "value",
                                       "state, SoC"):
        table.add_column(column, no_wrap=True,
                         justify="right" if column in ("boot", "time", "value") else "left")
    for e in log["entries"]:
        unit = units.get(e["name"], "")
        when = (views.fmt(e["t_s"], ".1f", "s") if e["utc_s"] is None
                else views.fmt_utc(e["utc_s"]))
        table.add_row(*(str(e["boot"] or "-"),) * boots, when, e["name"], e["level"],
                      e["action"], subject_text(e), views.fmt(e["value"], ".4g", unit),
                      f"{e['state']}, {views.fmt(e['soc_pct'], '.0f', '%')}")
    return log, table


async def _counters(client, args):
    d = {"counters": views.counter_dicts(
        await fetch_pages(client, pm.GetCounters, pm.CounterPage, args.timeout))}
    table = _table(f"lifetime counters of {link_name(args)}", "counter", "value")
    for c in d["counters"]:
        table.add_row(c["name"], views.fmt(c["value"], ".6g", c["unit"]))
    return d, table


async def _cell_health(client, args):
    d = {"cells": views.cell_health_dicts(
        await fetch_pages(client, pm.GetCellHealth, pm.CellHealthPage, args.timeout))}
    table = _table("cell health", "cell", "SoH", "capacity", "resistance", "vs new")
    for c in d["cells"]:
        table.add_row(str(c["cell"]), views.fmt(c["soh_pct"], ".1f", "%"),
                      views.fmt(c["capacity_ah"], ".4g", "Ah"),
                      views.fmt(None if c["resistance_ohm"] is None
                                else c["resistance_ohm"] * 1e3, ".3g", "mΩ"),
                      views.fmt(c["resistance_pct"], ".0f", "%"))
    return d, table


async def _config_log(client, args):
    entries = [views.config_log_dict(e) for e in await fetch_pages(
        client, pm.GetConfigLog, pm.ConfigLogPage, args.timeout)]
    d = {"entries": entries}
    if not entries:
        return d, "configuration-write log empty (or the device keeps no store)"
    table = _table("configuration writes, oldest first", "boot", "time", "UTC", "who",
                   "parameter", "old", "new")
    for e in entries:
        table.add_row(str(e["boot"] or "-"), views.fmt(e["t_s"], ".1f", "s"),
                      views.fmt_utc(e["utc_s"]), e["who"], e["param"],
                      views.fmt_value(e["old"]), views.fmt_value(e["new"]))
    return d, table


async def _set_time(client, args):
    utc_s = time.time() if args.utc_s is None else args.utc_s
    await ask(client, pm.SetTime(utc_s), pm.Ack, args.timeout)
    return ({"utc_s": utc_s, "accepted": True},
            f"wall clock set to {views.fmt_utc(utc_s)}: fault log entries of this boot carry it")


def _command_named(name: str):
    """`query NAME` for a command that is also `query command NAME`."""
    return lambda client, args: _command(client, argparse.Namespace(**{**vars(args),
                                                                          "name": name}))


def _values_result(params: list[dict], values: dict[int, dict], title: str):
    result = {"values": {p["name"]: views.config_value(values[p["param_id"]])
                         for p in params if p["param_id"] in values},
              "parameters": {p["name"]: views.parameter_dict(p) for p in params}}
    table = _table(title, "id", "parameter", "value", "unit", "range", "default")
    for p in params:
        if p["param_id"] in values:
            d = result["parameters"][p["name"]]
            table.add_row(f"0x{p['param_id']:04X}", p["name"],
                          views.fmt_value(views.config_value(values[p["param_id"]])),
                          p["unit"] or (" | ".join(p["choices"])), range_text(d),
                          "-" if d["default"] is None else views.fmt_value(d["default"]))
    return result, table


def range_text(d: dict) -> str:
    """A parameter's range as an interval: "(0, 10]", ">= 1"; "-" when it has none."""
    lo, hi = d["min"], d["max"]
    if lo is None and hi is None:
        return "-"
    if hi is None:
        return f"{'>' if d['min_excluded'] else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if d['max_excluded'] else '<='} {hi:g}"
    return f"{'(' if d['min_excluded'] else '['}{lo:g}, {hi:g}{')' if d['max_excluded'] else ']'}"


async def _config(client, args):
    params = select_params(args.params, await fetch_parameters(client, args.timeout))
    values = await fetch_values(client, [p["param_id"] for p in params], args.timeout)
    return _values_result(params, values, f"configuration of {link_name(args)}")


async def _set(client, args):
    params = await fetch_parameters(client, args.timeout)
    changes = parse_pairs(args.pairs, params)
    reply = await ask(client, pm.SetConfig(tuple(changes)), pm.ConfigValues, args.timeout)
    values = {v["param_id"]: v for v in reply.values}
    changed = [p for p in params if p["param_id"] in values]
    return _values_result(changed, values, "now in effect")


async def _command(client, args):
    command, argument = COMMANDS[args.name]
    await ask(client, pm.CommandRequest(int(command), int(argument)), pm.Ack, args.timeout)
    return ({"command": args.name, "accepted": True},
            f"{args.name}: accepted (`bms-emu query status` shows when it takes effect)")


async def _inject(client, args):
    await ask(client, pm.Inject(args.spec), pm.Ack, args.timeout)
    return ({"inject": args.spec, "accepted": True}, f"{args.spec}: scheduled")


ANSWERS = {"status": _status, "info": _info, "cells": _cells, "temps": _temps, "soc": _soc,
           "balancing": _balancing, "faults": _faults, "config": _config, "set": _set,
           "command": _command, "inject": _inject, "counters": _counters,
           "cell-health": _cell_health, "config-log": _config_log, "set-time": _set_time,
           "reset": _command_named("reset"),
           "factory-defaults": _command_named("factory-defaults")}
