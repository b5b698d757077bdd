"""The protocol reference (docs/protocol.md), generated from the definitions themselves, so
that the document cannot drift from the code.

Why and how: docs/internals.md, protocol/spec.py.
"""

from __future__ import annotations

import inspect
import re
import struct
from collections.abc import Iterable, Sequence
from enum import Enum

import construct as c
import numpy as np
from cobs import cobs

from protocol import fields, framing, messages
from protocol.codec import encode
from protocol.framing import LATEST_REVISION, REVISION_1_0, REVISIONS, Flags, FrameErrorKind
from protocol.messages import REGISTRY, ErrorCode, MessageType
from protocol.revisions import (
    Since,
    at_revision,
    element_defaults,
    prefixed_parts,
    revision_of,
)

# Which response answers which request; any request may instead be refused with a Nack.
# Not derivable from the names (GetBalancing -> BalancingState), so it is listed, and
# `render` refuses to run while a request type is missing here.
ANSWERS: dict[str, str] = {
    "GetInfo": "DeviceInfo", "GetStatus": "Status", "GetCellVoltages": "CellVoltages",
    "GetTemperatures": "Temperatures", "GetCellSoc": "CellSoc",
    "GetBalancing": "BalancingState", "GetFaultLog": "FaultLogPage",
    "GetParameterList": "ParameterList", "GetConfig": "ConfigValues",
    "SetConfig": "ConfigValues", "CommandRequest": "Ack", "Subscribe": "Ack",
    "TimeSync": "TimeInfo", "Inject": "Ack", "SetTime": "Ack", "GetCounters": "CounterPage",
    "GetCellHealth": "CellHealthPage", "GetConfigLog": "ConfigLogPage",
}
EVENT_ANSWERS: dict[str, str] = {
    "MeasurementFrame": "answered by ActuationFrame (EVENT, same `rig_seq`) in HIL mode",
    "ActuationFrame": "not answered",
    "FaultEvent": "not answered; sent to a link that subscribed to it (Subscribe)",
}

UNITS = {"v": "V", "a": "A", "c": "°C", "s": "s", "ms": "ms", "pct": "%", "wh": "Wh",
         "ah": "Ah", "ohm": "Ω"}
# What a field means when its name carries no unit; "Type.field" wins over "field".
MEANINGS = {
    "contactors": "contactor bits (see Contactor bits)",
    "fault_bitmap": "bit n set: fault code n active (see Faults)",
    "state": "state code (see States)",
    "error": "ErrorCode",
    "command": "Command",
    "argument": "BalancingMode for BALANCING_MODE, else 0",
    "kind": "ValueKind",
    "mask": "bit per cell: bleed resistor on",
    "balance_mask": "bit per cell: bleed resistor on",
    "balancing": "bit per cell: bleed switch was on",
    "balancing_count": "cells bleeding",
    "store": "store bits (see Store bits)",
    "save_failures": "saves to the persistent store that failed since start",
    "charge_voltage_limit_v": "pack voltage a charger must not exceed (CVL), NaN none yet",
    "discharge_voltage_limit_v": "pack voltage a load must not take the pack below (DVL), "
                                 "NaN none yet",
    "warning_bitmap": "bit n set: fault code n has a WARNING row active",
    "alarm_bitmap": "bit n set: fault code n has an ALARM row active",
    "fault_level_bitmap": "bit n set: fault code n has a FAULT row active (latched until "
                          "cleared)",
    "Status.soc_pct": "%, NaN before the first estimate (the first measurement)",
    "ActuationFrame.soc_pct": "%, NaN before the first estimate (as Status)",
    "Status.bus_voltage_v": "V, the bus (load side of the contactors) as last measured; NaN "
                            "before the first measurement",
    "contactor_feedback": "contactor bits as the auxiliary contacts last reported them (0 "
                          "before the first measurement)",
    "FaultLogPage.value": "the reading of `index`, NaN none",
    "ParameterList.name": "dotted name, as in the TOML file",
    "ParameterList.unit": "unit, empty when none",
    "ParameterList.choices": "the allowed texts of a CHOICE parameter",
    "ParameterList.min": "the lowest value allowed, in `unit`; NaN none (BOOL, CHOICE, or "
                         "no lower bound)",
    "ParameterList.max": "the highest value allowed, in `unit`; NaN none",
    "open_ends": "open-end bits (see Parameter bits): a set bit excludes that bound itself",
    "ParameterList.default": "the value the device starts with without a configuration: a "
                             "number (BOOL: 0 or 1), for a CHOICE the 0-based position of "
                             "its word in `choices`",
    "access": "access bits (see Parameter bits)",
    "persisted": "a written value is kept in the persistent store across restarts",
    "pack_id": "the pack's name (as in MQTT topics and the store's name); empty: unknown",
    "serial": "the device's serial number; empty: unknown",
    "firmware_build": "the firmware build (a VCS description); `unknown` when not known",
    "config_schema_version": "version of the configuration parameters' ids, names and "
                             "kinds: a client may keep a parameter list while it is the "
                             "same",
    "max_page_entries": "entries a FaultLogPage or ParameterList page holds at most",
    "protocol_revisions": "the header revisions the device speaks",
    "message_types": "type ids of the messages the device knows in this answer's revision",
    "capabilities": "Capability bits",
    "request_type": "type id of the request answered",
    "msg_type": "type id of a response type",
    "param_id": "parameter id (see Configuration parameters)",
    "code": "fault code (see Faults)",
    "level": "fault level (see Faults)",
    "action": "1 raised, 0 cleared",
    "index": "0-based cell or sensor, -1 none",
    "current_a": "A, positive = charging",
    "DeviceInfo.mode": "Mode",
    "BalancingState.mode": "BalancingMode",
    "DeviceInfo.protocol_version": "the header revision of this answer (the request's)",
    "start": "0-based position of the first entry wanted (of the page: its first entry)",
    "count": "entries wanted; the page holds at most `max_page_entries` and what fits",
    "total": "entries there are",
    "boot": "the boot it happened in (the store's count of starts, from 1); 0 unknown (no "
            "store)",
    "utc_s": "UTC, s since 1970-01-01 (the device time mapped through the SetTime offset "
             "of that boot); NaN until a SetTime in that boot",
    "SetTime.utc_s": "s since 1970-01-01 UTC, 946684800 (2000-01-01) to below 4102444800 "
                     "(2100-01-01)",
    "log_index": "the entry's number in the fault log since it began (`dropped` + position)",
    "FaultEvent.time_s": "s, device time of the step it happened in",
    "FaultEvent.value": "the reading of `index`, NaN none",
    "CounterPage.name": "dotted name, fixed for a firmware version",
    "CounterPage.unit": "its unit, empty for a count",
    "CounterPage.value": "in `unit`; NaN none yet (an extreme before the first reading)",
    "soh_pct": "%, learnt capacity over the nominal one",
    "CellHealthPage.capacity_ah": "Ah, the learnt capacity of the cell (its parallel group)",
    "resistance_ohm": "Ω, resistance to a steady current (R0 + R1 + R2 of the model, learnt "
                      "factor included) at the last estimate; NaN before the first",
    "resistance_pct": "%, learnt resistance over the chemistry's table (100: as new)",
    "ConfigLogPage.t_s": "s, device time in that boot (0: a `--config FILE` given at start)",
    "who": "who wrote it: `protocol on PORT`, `protocol on MQTT`, `MQTT command`, "
           "`--config FILE`; `, factory defaults` added for FACTORY_DEFAULTS (cut to 255 "
           "bytes)",
    "param": "the parameter's dotted name",
    "old": "its value before, as JSON text (a number, true / false, a quoted word)",
    "new": "its value after, as JSON text",
    "MeasurementFrame.pack_voltage_v": "V, the pack's own voltage sensor (inside the "
                                       "contactors); NaN none",
    "open_wire_test_v": "V, each cell channel under the open-wire test current, taken in "
                        "the interval this measurement closes",
    "rig_requests": "rig request bits (see Rig request bits)",
}
FORMATS = {"B": "u8", "H": "u16", "I": "u32", "L": "u32", "Q": "u64", "b": "i8", "h": "i16",
           "i": "i32", "l": "i32", "q": "i64", "f": "float32", "d": "float64"}


# --- Markdown helpers (the CLI uses them for its sections too) ------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; `|` in cells is escaped."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def member_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each `NAME = value` line of a class: the enums explain
    their codes there, and the spec should too."""
    pattern = r"^\s*(\w+)\s*=[^#\n]*#\s*(.+)$"
    return {m[1]: m[2].strip()
            for m in re.finditer(pattern, inspect.getsource(cls), re.MULTILINE)}


def enum_table(enum: type[Enum], code: str = "Code", hex_codes: bool = False) -> str:
    """Code, name and the member's comment, in definition order."""
    notes = member_comments(enum)
    return table((code, "Name", "Meaning"),
                 ((f"0x{m.value:02X}" if hex_codes else m.value, m.name, notes.get(m.name, ""))
                  for m in enum))


def prose(text: str) -> str:
    return " ".join(text.split())


def hex_bytes(data: bytes, per_line: int = 16) -> str:
    return "\n".join(data[i:i + per_line].hex(" ") for i in range(0, len(data), per_line))


# --- layouts from the construct definitions -------------------------------------------------

def layout(con: c.Construct, nested: list[tuple[str, c.Struct]], field: str = "") -> str:
    """The wire layout of one field; element structs go to `nested` for their own table."""
    if isinstance(con, c.Renamed | Since):
        return layout(con.subcon, nested, field)
    if isinstance(con, fields.FloatArray):
        unsent = "; 0: not sent" if isinstance(con, fields.OptionalFloatArray) else ""
        return (f"count x float32 LE (count from field `{con.count}`, "
                f"at most {con.limit}{unsent})")
    if isinstance(con, fields.BitArray):
        return (f"ceil(count/8) bytes, LSB first (count from field `{con.count}`, at most "
                f"{con.limit}; 0: not sent)")
    if isinstance(con, c.FormatField):
        kind = FORMATS[con.fmtstr[-1]]
        return kind if struct.calcsize(con.fmtstr) == 1 else f"{kind} LE"
    if isinstance(con, type(c.Flag)):
        return "u8 (0 false, 1 true)"
    if isinstance(con, c.StringEncoded):
        return f"{layout(con.subcon.lengthfield, nested)} length + UTF-8"
    if prefixed_parts(con) is not None:  # a count, then that many items
        count, items = prefixed_parts(con)
        return f"{layout(count, nested)} count, then count x {layout(items, nested, field)}"
    if isinstance(con, c.Switch):
        key = con.keyfunc(_FieldNames())  # this.kind -> "kind"
        cases = "; ".join(f"{k}: {layout(case, nested)}" for k, case in con.cases.items())
        return f"by `{key}`: {cases}"
    if isinstance(con, c.Struct):
        name = f"`{field}` element"
        if all(n != name for n, _ in nested):
            nested.append((name, con))
        return f"{name} (table below)"
    raise TypeError(f"protocol.spec cannot describe {con!r}: add it to spec.layout")


class _FieldNames(dict):
    """A context in which every field's value is its own name."""

    def __missing__(self, key: str) -> str:
        return key


def unit(owner: str, name: str, con: c.Construct, counts: dict[str, str]) -> str:
    if name in counts:
        return f"number of `{counts[name]}` elements (filled in by the encoder)"
    for key in (f"{owner}.{name}", name):
        if key in MEANINGS:
            return MEANINGS[key]
    if isinstance(con, c.Switch):
        return f"in the layout its `{con.keyfunc(_FieldNames())}` names"
    if name.endswith("_index"):
        return "0-based index"
    tokens = name.split("_")[1:]
    found = [UNITS[t] for t in tokens if t in UNITS]
    return found[-1] if found else ""


def fixed_size(con: c.Construct) -> int | None:
    try:
        return con.sizeof()
    except (c.SizeofError, KeyError, AttributeError):
        return None


def struct_table(owner: str, st: c.Struct, nested: list[tuple[str, c.Struct]],
                 added: int = REVISION_1_0) -> str:
    """Offset (while every earlier field is fixed-size, else "+"), size, field, type, unit,
    and the protocol version that added the field. `st` is a definition: the fields added
    later come last, so an older revision's layout is the rows up to its own."""
    plain = at_revision(st, LATEST_REVISION)
    counts = {a.count: n for n, a in fields.array_fields(plain).items()}
    rows, offset = [], 0
    for sc in st.subcons:
        con = sc.subcon.subcon if isinstance(sc, Since) else sc.subcon
        size = fixed_size(con)
        rows.append(("+" if offset is None else offset, "var" if size is None else size,
                     f"`{sc.name}`", layout(con, nested, sc.name),
                     unit(owner, sc.name, con, counts),
                     REVISIONS[max(added, revision_of(sc))]))
        offset = None if offset is None or size is None else offset + size
    if not rows:
        return "No payload (length 0).\n"
    return table(("Offset", "Size", "Field", "Type", "Unit / meaning", "Since"), rows)


def kind_of(mt: MessageType) -> str:
    return {Flags.REQUEST: "request", Flags.RESPONSE: "response", Flags.EVENT: "event"}[mt.flags]


def answer_of(mt: MessageType) -> str:
    if mt.flags is Flags.REQUEST:
        if mt.name not in ANSWERS:
            raise ValueError(f"request {mt.name} has no entry in protocol.spec.ANSWERS")
        return f"answered by {ANSWERS[mt.name]} or Nack"
    if mt.flags is Flags.EVENT:
        return EVENT_ANSWERS.get(mt.name, "not answered")
    asked_by = sorted(n for n, r in ANSWERS.items() if r == mt.name)
    return "answers " + ", ".join(asked_by) if asked_by else "answers any request"


def sizes(mt: MessageType) -> str:
    """The payload size in each revision that has the type, when it has one."""
    found = {r: fixed_size(st) for r, st in mt.structs.items()}
    if None in found.values() or not any(found.values()):
        return ""
    if len(set(found.values())) == 1:
        return f" Payload: {next(iter(found.values()))} bytes."
    return " Payload: " + ", ".join(f"{n} bytes in {REVISIONS[r]}"
                                    for r, n in found.items()) + "."


def message_section(mt: MessageType) -> str:
    nested: list[tuple[str, c.Struct]] = []
    body = struct_table(mt.name, mt.definition, nested, mt.since)
    for name, st in nested:
        body += f"\n{name}:\n\n" + struct_table(mt.name, st, [], mt.since)
    flags = kind_of(mt).upper() + (" + ERROR" if mt.cls is messages.Nack else "")
    return (f"### 0x{mt.type_id:02X} {mt.name} ({kind_of(mt)}, since "
            f"{REVISIONS[mt.since]})\n\n{prose(mt.doc)}\n\n"
            f"Flags: {flags}; {answer_of(mt)}.{sizes(mt)}\n\n{body}")


# --- examples: real frames ------------------------------------------------------------------

def examples() -> list[tuple[str, object, int, int]]:
    """(title, message, seq, revision) of each example frame."""
    cells = np.round(3.300 + 0.001 * np.arange(16), 3).astype(np.float32)
    no_bleed = np.zeros(16, bool)  # the test is asked for only in an interval without one
    status = messages.Status(
        time_s=3600.0, state=3, contactors=0x05, fault_bitmap=0x0202, charge_limit_a=1.5,
        discharge_limit_a=4.5, pack_voltage_v=52.875, current_a=-2.0, soc_pct=62.5,
        soh_pct=100.0, remaining_wh=38.25, runtime_s=1303.0, cell_v_min=3.3,
        cell_v_min_index=0, cell_v_max=3.315, cell_v_max_index=15, temp_c_min=24.5,
        temp_c_min_index=1, temp_c_max=26.0, temp_c_max_index=3, balancing_count=2,
        store=0x01, save_failures=0, charge_voltage_limit_v=57.6,
        discharge_voltage_limit_v=33.6, warning_bitmap=0x0202, alarm_bitmap=0x0002,
        fault_level_bitmap=0, bus_voltage_v=52.75, contactor_feedback=0x05)
    latest, first = LATEST_REVISION, REVISION_1_0
    return [
        (f"GetStatus, request, seq 1, revision {latest}", messages.GetStatus(), 1, latest),
        (f"Status, its response (seq 1, revision {latest})", status, 1, latest),
        (f"The same Status to a 1.0 client (a revision {first} GetStatus, seq 1)", status, 1,
         first),
        ("MeasurementFrame, 16 cells and 4 sensors, event, seq 42", messages.MeasurementFrame(
            rig_seq=42, rig_time_s=12.5, current_a=-2.0, bus_voltage_v=52.875, contactors=0x05,
            cell_voltage_v=cells, temperature_c=np.array([24.5, 25.0, 25.5, 26.0], np.float32),
            pack_voltage_v=52.875), 42, latest),
        ("ActuationFrame answering it (asking for the open-wire test), event, seq 42",
         messages.ActuationFrame(
             rig_seq=42, time_s=12.5, state=3, contactors=0x05, fault_bitmap=0,
             charge_limit_a=1.5, discharge_limit_a=4.5, soc_pct=62.5, balance_mask=no_bleed,
             charge_voltage_limit_v=64.0, discharge_voltage_limit_v=33.5,
             rig_requests=messages.RIG_REQUEST_BITS["open_wire_test"]), 42, latest),
        ("FaultEvent, pushed to a subscribed link, event, seq 43", messages.FaultEvent(
            log_index=17, boot=3, time_s=12.5, utc_s=1767225612.5, code=0, level=1,
            action=1, index=2, value=4.04), 43, latest),
        ("Nack of a SetConfig, seq 7", messages.Nack(
            request_type=0x13, error=int(ErrorCode.UNKNOWN_PARAM),
            detail="no parameter 999"), 7, latest),
    ]


def example_section(title: str, msg: object, seq: int, revision: int) -> str:
    wire = encode(msg, seq, revision=revision)
    data = cobs.decode(wire[1:-1])
    header, payload = data[:framing.HEADER_BYTES], data[framing.HEADER_BYTES:-framing.CRC_BYTES]
    parts = [f"header  {header.hex(' ')}",
             "payload " + (hex_bytes(payload).replace("\n", "\n        ") if payload else "-"),
             f"crc     {data[-framing.CRC_BYTES:].hex(' ')}"]
    return (f"### {title}\n\nFrame before COBS ({len(data)} bytes):\n\n```\n"
            + "\n".join(parts)
            + f"\n```\n\nOn the wire ({len(wire)} bytes, 0x00 + COBS + 0x00):\n\n"
            f"```\n{hex_bytes(wire)}\n```\n")


# --- the document ---------------------------------------------------------------------------

def overview() -> str:
    h, crc = framing.HEADER_BYTES, framing.CRC_BYTES
    return f"""\
## Overview

One binary protocol carries everything between the emulator and a host (HIL rig, pack
simulator, monitoring software) over a byte stream such as a serial port or a
pseudo-terminal, or over MQTT (see MQTT transport). Protocol version
{REVISIONS[LATEST_REVISION]} (header revision {LATEST_REVISION}); a 1.0 peer keeps working (see
Versions and negotiation). All integers and IEEE-754 floats are little-endian; quantities
are in the SI unit their field name carries (`_v` volt, `_a` ampere, `_c` degree Celsius,
`_s` second, `_ms` millisecond, `_pct` percent, `_wh` watt-hour, `_ah` ampere-hour);
current is positive when charging. Cells and temperature sensors are numbered from 0
inside payloads (`index` fields, array positions) and from 1 wherever the emulator shows
them to a person (tables, logs, JSON `cell` / `sensor` fields): `index` 2 is cell 3.

A frame on the wire is `0x00`, then `COBS(header + payload + CRC)`, then `0x00`.
Consistent Overhead Byte Stuffing removes every zero byte from the frame, so a zero always
and only delimits a frame: a receiver that starts mid-stream, or meets line noise, drops
bytes up to the next zero and is back in step, without timeouts or escape sequences. The
leading zero ends any noise in front of the frame, so the frame itself is never lost to
it. The cost is at most one byte in 254, plus the two zeros. Empty runs (two zeros in a
row, as between two frames sent back to back) are padding and ignored. A receiver must
accept frames with or without the leading zero.

## Frame layout

Before COBS encoding:

{table(("Offset", "Size", "Field", "Type", "Meaning"), [
        (0, 1, "revision", "u8", "protocol revision the payload is laid out in: "
         + ", ".join(f"{r} = {v}" for r, v in REVISIONS.items())),
        (1, 1, "type", "u8", "message type id (see Messages)"),
        (2, 1, "flags", "u8", "Flags bits; the upper four are reserved: send 0, ignored"),
        (3, 2, "seq", "u16 LE", "sequence number, 0..65535, wrapping"),
        (5, 2, "length", "u16 LE", f"payload bytes, 0..{framing.MAX_PAYLOAD_BYTES}"),
        (h, "length", "payload", "bytes", "the message fields (see Messages)"),
        (f"{h} + length", crc, "crc", "u32 LE", "CRC-32 of header and payload")])}
## CRC

{framing.CRC_NAME}. It covers the {h}-byte header and the payload, is computed before COBS
encoding and is sent little-endian after them. A frame whose CRC does not match is dropped
as BAD_CRC, header included: a header that failed the CRC is not trusted.

## Flags

{prose(Flags.__doc__ or "")}

{enum_table(Flags, "Bit", hex_codes=True)}
Each message type has one of REQUEST, RESPONSE or EVENT (see Messages); a Nack carries
RESPONSE and ERROR.
"""


def versions() -> str:
    latest, first = LATEST_REVISION, REVISION_1_0
    new_types = [mt.name for _, mt in sorted(REGISTRY.items()) if mt.since > first]
    grown = [mt.name for _, mt in sorted(REGISTRY.items()) if mt.since == first and (
        any(revision_of(f) > first for f in mt.definition.subcons)
        or element_defaults(mt.definition, first))]
    added = "; ".join(
        ([f"the message types {', '.join(new_types)}"] if new_types else [])
        + ([f"fields at the end of {', '.join(grown)}"] if grown else []))
    return f"""\
## Versions and negotiation

The header's first byte is the protocol revision the frame's payload is laid out in:
{", ".join(f"{r} for protocol {v}" for r, v in REVISIONS.items())}. A later revision only
appends: fields added to a message come after all its older fields (inside list elements
too), and new message types take new type ids. Each field table below says in its Since
column which version added the field; the revision-{first} layout of a message is its rows
up to the last one of 1.0. A peer reads a frame in the frame's own revision and gives the
fields that revision lacks their "unknown" value: NaN for a quantity, 0 for bits and
counters, empty for a text or a list.

- The device answers every request in the revision the request came in: a 1.0 client sends
  revision {first} and sees exactly protocol 1.0. Telemetry goes out in the revision of the
  Subscribe that set it up; an ActuationFrame in the revision of the MeasurementFrame it
  answers, and the ones the device sends while the rig is silent in the revision the rig
  last used (revision {first} before it has sent anything).
- A frame whose revision the receiver does not speak is refused whole: a REQUEST with Nack
  UNSUPPORTED_VERSION (the Nack in revision {first}, which every peer reads), anything else
  dropped. A message type that the frame's revision does not have is UNKNOWN_TYPE, as a
  device of that revision would answer; a payload longer or shorter than its type's layout
  in the frame's revision is BAD_PAYLOAD (a newer layout is not cut to fit).
- Negotiation: a client sends its first request (GetInfo is the natural one) in the newest
  revision it speaks. A Nack UNSUPPORTED_VERSION means an older device: the client goes
  down one revision and asks again. A 1.{latest - 1} device answers in revision {latest};
  its DeviceInfo lists every revision it speaks (`protocol_revisions`) and `protocol_version`
  says the revision of that very answer. `bms-emu query` and `monitor` do exactly this.
- Added in {REVISIONS[latest]}: {added}.
"""


def matching() -> str:
    return """\
## Sequence numbers and matching

- A host numbers its requests (REQUEST flag) with `seq`, incrementing and wrapping at
  65535. The answer carries the same `seq`, the RESPONSE flag and the response type listed
  for the request; a refusal is a Nack with the same `seq`, flags RESPONSE + ERROR,
  `request_type` set to the request's type id, an ErrorCode and a readable `detail`.
- A host may have several requests outstanding: it matches the answers by `seq`.
- A request is done or refused as a whole: a Nack means nothing was changed.
- A frame with the REQUEST flag whose type is a response or event type of the frame's
  revision (a MeasurementFrame included) is answered with Nack NOT_A_REQUEST, decided from
  the header alone: the payload is not looked at, so it is NOT_A_REQUEST whether or not
  the payload would parse. A type the frame's revision lacks (CounterPage in a revision-1
  frame) is UNKNOWN_TYPE, whatever its flags. A REQUEST frame whose header passed the
  CRC but which cannot be served is answered with a Nack: UNKNOWN_TYPE,
  UNSUPPORTED_VERSION, or BAD_PAYLOAD (for BAD_PAYLOAD and BAD_LENGTH; see Refusals for
  its detail). Frames with bad COBS, a bad CRC or too
  short are dropped without an answer: their `seq` cannot be trusted. Should the device
  fail to build an answer, it sends Nack INTERNAL.
- An Ack means done: the device acts on the request from its next step. A request it
  cannot act on in its present state is refused with NOT_NOW, never acknowledged for
  nothing (see Refusals).
- A link may be held to a command policy: the serial port is not, the MQTT `proto/in`
  topic is (the emulator's `--mqtt-commands`, off by default). Reads (the Get requests,
  Subscribe, TimeSync) are always answered; a request that would change the device
  (SetConfig, CommandRequest, Inject, SetTime) and that the policy does not enable is
  refused with Nack NOT_ENABLED, naming what would enable it.
- Frames the device sends unasked - telemetry, FaultEvents, ActuationFrames (those
  answering a MeasurementFrame and the watchdog's alike) - carry the device's own `seq`
  on its link (the serial port, or `proto/out` over MQTT): a counter that starts at a
  random value when the device starts, goes up by 1 for each such frame and wraps at 65535
  (answers carry their request's `seq` and do not count; a reconnected link goes on where
  it was). It says nothing about a host's requests: a host never matches an EVENT frame by
  `seq`; a gap in it shows unasked frames lost on the way.
- Other events (EVENT flag) get no answer. Telemetry set up by Subscribe arrives as EVENT
  frames of the subscribed response types, and FaultEvents as they happen (see Events,
  time and restarts). In HIL mode each MeasurementFrame from the rig
  is answered by an ActuationFrame event whose `rig_seq` repeats the measurement's: that
  field, not `seq`, ties the two together. While the rig is silent the device sends
  ActuationFrames of its own (with the last `rig_seq` answered), one a tick (`serve
  --tick`, 0.1 s unless set): at each tick with no MeasurementFrame since the tick before,
  the firmware steps without one and says what it decided. After `measurement_timeout_s`
  (1 s unless configured) without a measurement - counted from start when none has come
  yet - that is MEASUREMENT_TIMEOUT (see States).
- A MeasurementFrame is an event, but a rig must know when one was not used: one the
  emulator cannot read (BAD_PAYLOAD: a count above its limit, a payload cut short or with
  bytes left over; BAD_LENGTH is answered as BAD_PAYLOAD; UNSUPPORTED_VERSION) or cannot
  use (WRONG_SIZE, NOT_IN_THIS_MODE) is refused with a Nack carrying the measurement's
  `seq`, flags RESPONSE + ERROR, and the firmware does not step on it: a rig should stop
  and report it. No other event is ever answered.
"""


def refusals() -> str:
    return f"""\
## Refusals

A Nack's `detail` is for a person: it names what was refused and why - the field, the
value, what is allowed and, where the device's state is the reason, what to do. The
`error` is for a program; this table gives the code of every cause.

{table(("Request", "Cause", "Error"), [
        ("any", "the payload does not parse as its type in the frame's revision; the detail "
         "says `Type: problem`, naming the field (``GetFaultLog: payload is 1 byte, expected "
         "3``; ``SetConfig: `values[].value`: flag byte 0x02; 0 (false) or 1 (true)``)",
         "BAD_PAYLOAD"),
        ("SetConfig, GetConfig", "an id no parameter has", "UNKNOWN_PARAM"),
        ("SetConfig, GetConfig", "an id given twice", "BAD_VALUE"),
        ("SetConfig", "a value sent as another `kind` than its parameter's ValueKind (INT 1 "
         "for a FLOAT parameter, FLOAT 500.0 for an INT one): nothing is converted",
         "BAD_TYPE"),
        ("SetConfig", "a CHOICE text that is not one of the parameter's `choices`",
         "BAD_VALUE"),
        ("SetConfig", "a FLOAT that is NaN or infinite", "OUT_OF_RANGE"),
        ("SetConfig", "a value outside the parameter's range, or refused for how it stands to "
         "another parameter (a release against its threshold)", "OUT_OF_RANGE"),
        ("SetConfig", "a BOOL byte other than 0 or 1, a `kind` that is no ValueKind, a text "
         "that is not UTF-8: the value cannot be read", "BAD_PAYLOAD"),
        ("SetConfig", "the persistent store could not keep the write", "SAVE_FAILED"),
        ("SetConfig, CommandRequest, Inject, SetTime", "the link's command policy does not "
         "enable it", "NOT_ENABLED"),
        ("CommandRequest", "a command or balancing mode that does not exist, or a command "
         "newer than the frame's revision (RESET, FACTORY_DEFAULTS in a 1.0 frame)",
         "BAD_VALUE"),
        ("CommandRequest", "FACTORY_DEFAULTS in PRECHARGE, RUN or RECOVERY (the pack may be "
         "on the bus): send STANDBY first", "NOT_NOW"),
        ("CommandRequest", "FACTORY_DEFAULTS the persistent store could not keep",
         "SAVE_FAILED"),
        ("Subscribe", "a `msg_type` that cannot be subscribed, or one the frame's revision "
         "does not have (FaultEvent in a 1.0 frame)", "BAD_VALUE"),
        ("Subscribe", "a `period_ms` below 10 (FaultEvent's is not used)", "OUT_OF_RANGE"),
        ("Inject", "a `spec` that does not follow the grammar, a KIND or key that does not "
         "exist, a required key missing, a value outside its range (see Injections)",
         "BAD_VALUE"),
        ("Inject", "to a device without its own simulated pack (`serve --hil`)",
         "NOT_IN_THIS_MODE"),
        ("MeasurementFrame", "to a device running its own simulated pack (`serve --sim`)",
         "NOT_IN_THIS_MODE"),
        ("MeasurementFrame", "`n_cells` or `n_sensors` not the pack's, `n_balancing` neither "
         "0 nor `n_cells`", "WRONG_SIZE"),
        ("SetTime", "`utc_s` NaN, infinite or outside 2000-01-01 .. 2100-01-01",
         "OUT_OF_RANGE"),
        ("GetConfigLog", "the persistent store could not be read (the device logs why)",
         "INTERNAL"),
        ("CommandRequest", "RUN or STORAGE while a FAULT is latched and no CLEAR_FAULTS is "
         "on its way (but see RUN below)", "NOT_NOW"),
        ("CommandRequest", "CLEAR_FAULTS or SERVICE_RESET that would leave the pack in FAULT",
         "NOT_NOW"),
    ])}
A SetConfig with several bad values lists every one in the detail and carries the code
of the first of UNKNOWN_PARAM, BAD_VALUE, BAD_TYPE, OUT_OF_RANGE that applies; ranges are
checked only once every id and kind has passed.

Commands, as the firmware decides them on the readings of its last step (a host that has
just removed a cause waits one tick for the next measurement before it clears):

- STANDBY is always done: opening is always safe.
- RUN and STORAGE wait while a FAULT is latched: NOT_NOW, naming the latched faults and,
  for each one a clear would leave, what to do. They are done when the FAULT is ending
  anyway: a CLEAR_FAULTS was taken, or the only fault is a MEASUREMENT_TIMEOUT from start
  (it clears itself with the first measurement). RUN is also done in FAULT when only
  under-voltage stands (with the imbalance and open-wire rows that low cells make
  meaningless) and a recovery charge is configured: it is what lets a CLEAR_FAULTS start
  the recovery charge.
- CLEAR_FAULTS is done when it ends the FAULT (every latched fault's cause gone) or starts
  a recovery charge (only under-voltage stands and RUN is requested). Otherwise NOT_NOW,
  and nothing is cleared; the detail names each fault that would stand: a reading not yet
  back past its release, a hardware fault (CONTACTOR_WELDED, PRECHARGE_FAILED,
  INTERNAL_ERROR: only SERVICE_RESET clears them), a lockout (likewise), MEASUREMENT_TIMEOUT
  while no measurement comes. With nothing latched it is done (there is nothing to clear).
- SERVICE_RESET likewise, but it also clears hardware faults and lockouts.
- BALANCING_MODE is a configuration write (`balancing.mode`), refused as SetConfig is.
"""


def events_and_time() -> str:
    return """\
## Events, time and restarts

- **Fault events.** A link that lists FaultEvent in its Subscribe (1.1) gets one FaultEvent
  per fault log entry, raised or cleared, in log order, in the step it happens (its
  `period_ms` is not used): none is lost between ticks, however many a step raises. On
  MQTT they go on `proto/out` like any frame. The fault log is the record: a link that is
  down, or a Subscribe that replaced the list without FaultEvent, misses the events of
  that time and they are not sent again. `log_index` numbers the entries since the log
  began, so a gap says how many were missed; GetFaultLog from `start` = `log_index` -
  `dropped` (of the page) reads them, as long as the log still holds them
  (`fault_log_size`).
- **Stable indices in paged reads.** A page holds at most `max_page_entries` of DeviceInfo
  (bms-emu: 32) and fewer when more would not fit one frame: ask on from `start` +
  the entries received, never from `start` + `count`. Fault log entry `start + i` is entry
  `dropped + start + i` since the log began; a configuration-write log entry keeps its
  position (the store keeps every write); counters are a fixed list for a firmware
  version; cell health entry `start + i` is cell `start + i` (0-based).
- **Boots and time.** `time_s` is seconds since the emulator started. With a persistent
  store every start (and every RESET) is a new boot, numbered from 1; without one the
  boot is 0 (unknown). SetTime gives the device the wall clock of the present boot: every
  fault log entry and FaultEvent of that boot, those before the SetTime included, then
  carries `utc_s` = its `time_s` plus the offset SetTime set (a later SetTime replaces
  it); entries of an earlier boot carry the offset that boot was given (kept in the
  store), or NaN. A restart starts without one: send SetTime after each boot. So entries
  of two boots order by (`boot`, `time_s`), and by `utc_s` where known.
- **RESET** (CommandRequest, 1.1) restarts the firmware as after a power cycle: at the
  device's next step the contactors are opened (the rig told so in HIL mode) and checked
  for a weld as after any opening, the state is saved, and a new firmware starts from it
  in INIT (then STANDBY; RUN only when requested again, unless the device autostarts). It
  keeps what a persistent store keeps - latched faults and lockouts, SoC, state of health,
  counters, the fault log, STORAGE - with or without a store, and the configuration in
  effect; it forgets subscriptions (FaultEvents too) and the wall clock. The Ack comes
  before the restart.
- **FACTORY_DEFAULTS** (CommandRequest, 1.1) undoes every configuration write: each
  parameter takes its default for this pack and chemistry (ParameterList `default`). It
  is a configuration write like SetConfig: saved before it takes effect, logged (each
  parameter it changes; `who` ends in `factory defaults`), and refused while the pack
  may be on the bus.
- **Service actions** are the Commands (see Commands): CLEAR_FAULTS, SERVICE_RESET (also
  clears hardware faults and lockouts), RESET, FACTORY_DEFAULTS. The open-wire test is not
  one: the firmware asks for it itself every `open_wire.test_every_s` (see Rig request
  bits).
"""


def mqtt_transport() -> str:
    return """\
## MQTT transport

Over MQTT the same frames travel as message payloads, byte for byte as on a serial line
(delimiters included), at QoS 0 and not retained: `<prefix>/<pack-id>/proto/in` to the
device and `<prefix>/<pack-id>/proto/out` from it (prefix `bms` unless the device's
`--mqtt` URL names another). A message to the device holds exactly one frame: a leading
`0x00` is optional, one `0x00` must end it and none may be inside; anything else is
dropped unanswered. The device sends one frame per message too. Requests, answers,
telemetry and Nacks are as on a serial link; the `proto/in` topic is held to the device's
command policy (see Sequence numbers and matching) and takes at most
`serve --mqtt-frame-rate` messages a second (by default twice the tick rate, 50 at least);
the rest, and any that arrive while the device is behind with what it sends, are dropped
rather than answered late.
"""


def decoder_rules() -> str:
    return f"""\
## Decoder behaviour

A decoder is fed bytes as they arrive and returns the frames and typed errors they
complete; it never raises. It buffers at most {framing.MAX_ENCODED_BYTES} bytes (the COBS
encoding of the longest frame: {framing.HEADER_BYTES} header + {framing.MAX_PAYLOAD_BYTES}
payload + {framing.CRC_BYTES} CRC bytes, plus COBS overhead); a longer run without a
delimiter is reported once as OVERSIZE and dropped up to the next delimiter. After any
error the next delimiter starts afresh (resynchronisation). Arrays are limited to
{fields.MAX_CELLS} cells and {fields.MAX_TEMP_SENSORS} temperature sensors; a count above
the limit is BAD_PAYLOAD, and an encoder refuses to build such a frame. The errors a
decoder reports are in the table of Error codes: the ones marked "decoder" there.
"""


def summary() -> str:
    return table(("Type", "Name", "Kind", "Pairing"),
                 ((f"0x{t:02X}", mt.name, kind_of(mt), answer_of(mt))
                  for t, mt in sorted(REGISTRY.items())))


def error_codes() -> str:
    """One code space: the Nack's ErrorCode and the decoder's FrameErrorKind, a shared name
    with one number (refuses to render two meanings for a number or two numbers for a
    name)."""
    nack, decoder = ErrorCode.__members__, FrameErrorKind.__members__
    numbers: dict[int, str] = {}
    for name, code in [*nack.items(), *decoder.items()]:
        if numbers.setdefault(int(code), name) != name:
            raise ValueError(f"code {int(code)} is both {numbers[int(code)]} and {name}")
    notes = {**member_comments(FrameErrorKind), **member_comments(ErrorCode)}
    where = {name: ("Nack `error` and decoder" if name in nack and name in decoder else
                    "Nack `error`" if name in nack else "decoder only")
             for name in numbers.values()}
    return ("## Error codes\n\nOne table for the `error` of a Nack and the errors a decoder "
            "reports: a name has one number wherever it appears. Codes 1..31 are Nack "
            "codes; decoder-only codes start at 32 and never travel in a frame (a receiver "
            "answers a REQUEST frame that fails to decode with the Nack code of the same "
            "name, BAD_LENGTH as BAD_PAYLOAD, and drops the others unanswered).\n\n"
            + table(("Code", "Name", "Where", "Meaning"),
                    ((code, name, where[name], notes.get(name, ""))
                     for code, name in sorted(numbers.items()))))


def commands() -> str:
    """The Command codes with the version that added each (an older frame may not name it)."""
    notes = member_comments(messages.Command)
    return table(("Code", "Name", "Meaning", "Since"), (
        (cmd.value, cmd.name, notes.get(cmd.name, ""),
         REVISIONS[messages.COMMAND_SINCE.get(cmd, REVISION_1_0)])
        for cmd in messages.Command))


def codes() -> str:
    return (
        error_codes()
        + "\n## Commands\n\nThe `command` of a CommandRequest.\n\n" + commands()
        + "\n## Balancing modes\n\n" + enum_table(messages.BalancingMode)
        + "\n## Modes\n\nDeviceInfo `mode`.\n\n" + enum_table(messages.Mode)
        + "\n## Capabilities\n\n" + enum_table(messages.Capability, "Bit", hex_codes=True)
        + "\n## Value kinds\n\nThe layout of a configuration value (`kind`).\n\n"
        + enum_table(messages.ValueKind)
        + "\n## Contactor bits\n\nIn Status, MeasurementFrame (auxiliary-contact feedback) "
        "and ActuationFrame (commands); a set bit is a closed contactor.\n\n"
        + table(("Bit", "Contactor"),
                ((f"0x{bit:02X}", name) for name, bit in messages.CONTACTOR_BITS.items()))
        + "\n## Store bits\n\nIn Status (1.1): `kept`, the emulator keeps a persistent store; "
        "`failing`, its last save failed (the store does not hold the pack as it is now; "
        "each save point tries again).\n\n"
        + table(("Bit", "Meaning"),
                ((f"0x{bit:02X}", name) for name, bit in messages.STORE_BITS.items()))
        + "\n## Parameter bits\n\nIn a ParameterList entry (1.1): `access` says whether "
        "the parameter may be read (GetConfig) and written (SetConfig; a link's command "
        "policy may still refuse a write with NOT_ENABLED); `open_ends` marks a bound that "
        "is itself excluded (`min` 0 with the `min` bit: above 0). A value within `min` .. "
        "`max` may still be refused as OUT_OF_RANGE for how it stands to another parameter "
        "(a release against its threshold, a WARNING against its ALARM); the Nack says "
        "which.\n\n"
        + table(("Field", "Bit", "Meaning"),
                [*(("`access`", f"0x{bit:02X}", name)
                   for name, bit in messages.ACCESS_BITS.items()),
                 *(("`open_ends`", f"0x{bit:02X}", f"`{name}` excluded")
                   for name, bit in messages.OPEN_END_BITS.items())])
        + "\n## Rig request bits\n\nIn ActuationFrame `rig_requests` (1.1): what the rig's "
        "measurement front end is to do during the interval to its next MeasurementFrame. "
        "`open_wire_test`: run the open-wire test (a test current on every sense line) and "
        "send each cell channel's reading under it as `open_wire_test_v` in that frame; a "
        "rig that cannot sends `n_open_wire` 0 and the device falls back to watching the "
        "readings. The device asks every `open_wire.test_every_s`, only for an interval "
        "without a bleed.\n\n"
        + table(("Bit", "Meaning"),
                ((f"0x{bit:02X}", name) for name, bit in messages.RIG_REQUEST_BITS.items())))


def render(extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """docs/protocol.md: deterministic, so the committed file can be compared with it."""
    parts = [
        f"# Binary protocol, version {REVISIONS[LATEST_REVISION]}\n\n"
        "Generated by `bms-emu spec` from the definitions in `protocol/`; do not edit by "
        "hand (run `bms-emu spec > docs/protocol.md`).\n",
        overview(), versions(), matching(), refusals(), events_and_time(), mqtt_transport(),
        decoder_rules(),
        "## Messages\n\n" + summary(),
        *(message_section(mt) for _, mt in sorted(REGISTRY.items())),
        codes(),
        "## Examples\n\nReal frames from `protocol.codec.encode`, as hex bytes.\n",
        *(example_section(*ex) for ex in examples()),
        *(f"## {title}\n\n{text.rstrip()}\n" for title, text in extra_sections),
    ]
    return "\n".join(parts)
