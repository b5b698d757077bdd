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
from protocol.framing import Flags, FrameErrorKind
from protocol.messages import REGISTRY, ErrorCode, MessageType

# Which response answers which request; any request may instead be refused with a Nack.
# Not derivable from the names (GetBalancing -> BalancingState), so it is listed, and
# `render` refuses to run while a request type is missing here.
ANSWERS: dict[str, str] = {
    "GetInfo": "DeviceInfo", "GetStatus": "Status", "GetCellVoltages": "CellVoltages",
    "GetTemperatures": "Temperatures", "GetCellSoc": "CellSoc",
    "GetBalancing": "BalancingState", "GetFaultLog": "FaultLogPage",
    "GetParameterList": "ParameterList", "GetConfig": "ConfigValues",
    "SetConfig": "ConfigValues", "CommandRequest": "Ack", "Subscribe": "Ack",
    "TimeSync": "TimeInfo", "Inject": "Ack",
}
EVENT_ANSWERS: dict[str, str] = {
    "MeasurementFrame": "answered by ActuationFrame (EVENT, same `rig_seq`) in HIL mode",
    "ActuationFrame": "not answered",
}

UNITS = {"v": "V", "a": "A", "c": "°C", "s": "s", "ms": "ms", "pct": "%", "wh": "Wh",
         "ah": "Ah"}
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
    "FaultLogPage.value": "the reading of `index`, NaN none",
    "ParameterList.name": "dotted name, as in the TOML file",
    "ParameterList.unit": "unit, empty when none",
    "ParameterList.choices": "the allowed texts of a CHOICE parameter",
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
    "DeviceInfo.protocol_version": f"{framing.PROTOCOL_VERSION} for this document",
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
    if isinstance(con, c.Renamed):
        return layout(con.subcon, nested, field)
    if isinstance(con, fields.FloatArray):
        return (f"count x float32 LE (count from field `{con.count}`, "
                f"at most {con.limit})")
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
    if isinstance(con, c.FocusedSeq):  # PrefixedArray: a count, then that many items
        count = next(sc.subcon.subcon for sc in con.subcons if sc.name != con.parsebuildfrom)
        items = next(sc.subcon.subcon for sc in con.subcons if sc.name == con.parsebuildfrom)
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


def struct_table(owner: str, st: c.Struct, nested: list[tuple[str, c.Struct]]) -> str:
    """Offset (while every earlier field is fixed-size, else "+"), size, field, type, unit."""
    counts = {a.count: n for n, a in fields.array_fields(st).items()}
    rows, offset = [], 0
    for sc in st.subcons:
        size = fixed_size(sc.subcon)
        rows.append(("+" if offset is None else offset, "var" if size is None else size,
                     f"`{sc.name}`", layout(sc.subcon, nested, sc.name),
                     unit(owner, sc.name, sc.subcon, counts)))
        offset = None if offset is None or size is None else offset + size
    if not rows:
        return "No payload (length 0).\n"
    return table(("Offset", "Size", "Field", "Type", "Unit / meaning"), rows)


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


def message_section(mt: MessageType) -> str:
    nested: list[tuple[str, c.Struct]] = []
    body = struct_table(mt.name, mt.struct, nested)
    for name, st in nested:
        body += f"\n{name}:\n\n" + struct_table(mt.name, st, [])
    flags = kind_of(mt).upper() + (" + ERROR" if mt.cls is messages.Nack else "")
    return (f"### 0x{mt.type_id:02X} {mt.name} ({kind_of(mt)})\n\n{prose(mt.doc)}\n\n"
            f"Flags: {flags}; {answer_of(mt)}.\n\n{body}")


# --- examples: real frames ------------------------------------------------------------------

def examples() -> list[tuple[str, object, int]]:
    cells = np.round(3.300 + 0.001 * np.arange(16), 3).astype(np.float32)
    mask = np.zeros(16, bool)
    mask[[3, 12]] = True
    return [
        ("GetStatus, request, seq 1", messages.GetStatus(), 1),
        ("Status, its response (seq 1)", messages.Status(
            time_s=3600.0, state=3, contactors=0x05, fault_bitmap=0, charge_limit_a=1.5,
            discharge_limit_a=4.5, pack_voltage_v=52.875, current_a=-2.0, soc_pct=62.5,
            soh_pct=100.0, remaining_wh=38.25, runtime_s=1303.0, cell_v_min=3.3,
            cell_v_min_index=0, cell_v_max=3.315, cell_v_max_index=15, temp_c_min=24.5,
            temp_c_min_index=1, temp_c_max=26.0, temp_c_max_index=3, balancing_count=2,
            store=0x01, save_failures=0, charge_voltage_limit_v=57.6,
            discharge_voltage_limit_v=33.6), 1),
        ("MeasurementFrame, 16 cells and 4 sensors, event, seq 42", messages.MeasurementFrame(
            rig_seq=42, rig_time_s=12.5, current_a=-2.0, bus_voltage_v=52.875, contactors=0x05,
            cell_voltage_v=cells, temperature_c=np.array([24.5, 25.0, 25.5, 26.0], np.float32)),
         42),
        ("ActuationFrame answering it, event, seq 42", messages.ActuationFrame(
            rig_seq=42, time_s=12.5, state=3, contactors=0x05, fault_bitmap=0,
            charge_limit_a=1.5, discharge_limit_a=4.5, soc_pct=62.5, balance_mask=mask), 42),
        ("Nack of a SetConfig, seq 7", messages.Nack(
            request_type=0x13, error=int(ErrorCode.UNKNOWN_PARAM),
            detail="no parameter 999"), 7),
    ]


def example_section(title: str, msg: object, seq: int) -> str:
    wire = encode(msg, seq)
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
pseudo-terminal. Protocol version {framing.PROTOCOL_VERSION}. All integers and IEEE-754 floats
are little-endian; quantities are in the SI unit their field name carries (`_v` volt, `_a`
ampere, `_c` degree Celsius, `_s` second, `_ms` millisecond, `_pct` percent, `_wh`
watt-hour, `_ah` ampere-hour); current is positive when charging.

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
        (0, 1, "version", "u8", f"protocol version, {framing.PROTOCOL_VERSION}"),
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


def matching() -> str:
    return """\
## Sequence numbers and matching

- A host numbers its requests (REQUEST flag) with `seq`, incrementing and wrapping at
  65535. The answer carries the same `seq`, the RESPONSE flag and the response type listed
  for the request; a refusal is a Nack with the same `seq`, flags RESPONSE + ERROR,
  `request_type` set to the request's type id, an ErrorCode and a readable `detail`.
- A host may have several requests outstanding: it matches the answers by `seq`.
- A request is done or refused as a whole: a Nack means nothing was changed.
- A frame with the REQUEST flag whose type is a response or event type (a
  MeasurementFrame included) is answered with Nack NOT_A_REQUEST. A REQUEST frame whose
  header passed the CRC but which cannot be served is answered with a Nack: UNKNOWN_TYPE,
  UNSUPPORTED_VERSION, or BAD_PAYLOAD (for BAD_PAYLOAD and BAD_LENGTH). Frames with bad
  COBS, a bad CRC or too short are dropped without an answer: their `seq` cannot be
  trusted. Should the device fail to build an answer, it sends Nack INTERNAL.
- A link may be held to a command policy: the serial port is not, the MQTT `proto/in`
  topic is (the emulator's `--mqtt-commands`, off by default). Reads (the Get requests,
  Subscribe, TimeSync) are always answered; a request that would change the pack
  (SetConfig, CommandRequest, Inject) and that the policy does not enable is refused with
  Nack NOT_ENABLED, naming what would enable it.
- Other events (EVENT flag) get no answer. Telemetry set up by Subscribe arrives as EVENT
  frames of the subscribed response types. In HIL mode each MeasurementFrame from the rig
  is answered by an ActuationFrame event whose `rig_seq` repeats the measurement's: that
  field, not `seq`, ties the two together; the emulator also sends ActuationFrames of its
  own (with the last `rig_seq` answered) when the rig is silent. A MeasurementFrame the
  emulator cannot use (WRONG_SIZE, NOT_IN_THIS_MODE) is refused with a Nack carrying the
  measurement's `seq`, flags RESPONSE + ERROR: a rig should stop and report it.
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
the limit is BAD_PAYLOAD, and an encoder refuses to build such a frame.

{enum_table(FrameErrorKind)}"""


def summary() -> str:
    return table(("Type", "Name", "Kind", "Pairing"),
                 ((f"0x{t:02X}", mt.name, kind_of(mt), answer_of(mt))
                  for t, mt in sorted(REGISTRY.items())))


def codes() -> str:
    return (
        "## Error codes\n\nThe `error` of a Nack.\n\n" + enum_table(ErrorCode)
        + "\n## Commands\n\nThe `command` of a CommandRequest.\n\n" + enum_table(messages.Command)
        + "\n## Balancing modes\n\n" + enum_table(messages.BalancingMode)
        + "\n## Modes\n\nDeviceInfo `mode`.\n\n" + enum_table(messages.Mode)
        + "\n## Capabilities\n\n" + enum_table(messages.Capability, "Bit", hex_codes=True)
        + "\n## Value kinds\n\nThe layout of a configuration value (`kind`).\n\n"
        + enum_table(messages.ValueKind)
        + "\n## Contactor bits\n\nIn Status, MeasurementFrame (auxiliary-contact feedback) "
        "and ActuationFrame (commands); a set bit is a closed contactor.\n\n"
        + table(("Bit", "Contactor"),
                ((f"0x{bit:02X}", name) for name, bit in messages.CONTACTOR_BITS.items()))
        + "\n## Store bits\n\nIn Status: `kept`, the emulator keeps a persistent store; "
        "`failing`, its last save failed (the store does not hold the pack as it is now; "
        "each save point tries again). `store` and `save_failures`, then "
        "`charge_voltage_limit_v` and `discharge_voltage_limit_v`, were appended to the end "
        "of Status: every field before them is where it was.\n\n"
        + table(("Bit", "Meaning"),
                ((f"0x{bit:02X}", name) for name, bit in messages.STORE_BITS.items())))


def render(extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """docs/protocol.md: deterministic, so the committed file can be compared with it."""
    parts = [
        f"# Binary protocol, version {framing.PROTOCOL_VERSION}\n\n"
        "Generated by `bms-emu spec` from the definitions in `protocol/`; do not edit by "
        "hand (run `bms-emu spec > docs/protocol.md`).\n",
        overview(), matching(), decoder_rules(),
        "## Messages\n\n" + summary(),
        *(message_section(mt) for _, mt in sorted(REGISTRY.items())),
        codes(),
        "## Examples\n\nReal frames from `protocol.codec.encode`, as hex bytes.\n",
        *(example_section(*ex) for ex in examples()),
        *(f"## {title}\n\n{text.rstrip()}\n" for title, text in extra_sections),
    ]
    return "\n".join(parts)
