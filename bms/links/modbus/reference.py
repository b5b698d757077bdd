"""docs/modbus.md: the Modbus map's reference, rendered from the map itself (the SunSpec
definitions, the fills, the tables), so that the document cannot drift from what a client
reads. Only what the definitions cannot say is prose here. Deterministic: a test compares
the committed file with a fresh render."""

from __future__ import annotations

from pymodbus.constants import ExcCodes

from bms.host.policy import REQUEST_NEEDS
from bms.links.modbus.address import FORMS
from bms.links.modbus.register_map import FINEST_EXPONENT, HEADROOM, SunSpecMap
from bms.links.modbus.server import READ_HOLDING, WRITE_MANY, WRITE_ONE
from bms.links.modbus.sunspec_events import table_rows
from bms.links.modbus.sunspec_layout import (
    BASE_ADDRESS,
    NOT_IMPLEMENTED,
    SUNS_MARKER,
    ModelBlock,
    Slot,
    definition,
)
from bms.links.modbus.sunspec_points import (
    BANK_STATE,
    CONNECTION_FAILURE,
    FILLS,
    UNIMPLEMENTED,
    WRITABLE_COMMANDS,
    WRITES,
    point,
)
from protocol.spec import table

WHAT = {key: fill.what for fill in FILLS for key in fill.points}


def _unimplemented_text() -> str:
    shown = {"uint16": "uint16, enum16", "int16": "int16, sunssf, pad",
             "uint32": "uint32, bitfield32"}
    return "; ".join(f"0x{NOT_IMPLEMENTED[t]:X} ({label})" for t, label in shown.items()) \
        + "; NULs (string)"


OPTIONS = (
    ("`--modbus ADDRESS`", FORMS),
    ("`--modbus-unit ID`", "the unit id RTU answers to, 1..247 (default 1); TCP answers any"),
    ("`--modbus-commands POLICY`",
     f"what writes may change: {', '.join(WRITABLE_COMMANDS)}, each optionally limited as "
     "`--mqtt-commands` takes them (`state=run|standby,clear-faults`); default none: "
     "read-only"),
)
INTRO = f"""\
`bms-emu serve ... --modbus ADDRESS` serves the pack as a SunSpec battery beside its other
links, on the same firmware: a storage inverter, an EMS or a SCADA reads its limits, state
and alarms as it reads any SunSpec battery, and may be let write its connect request.

```sh
bms-emu serve --sim --serial PORT --modbus tcp://0.0.0.0:1502
bms-emu serve --hil --serial /dev/ttyACM0 --modbus rtu:/dev/ttyUSB0@19200,8E1 --modbus-unit 3
```

{table(("Option", "Meaning"), OPTIONS)}
A serial port that cannot be opened or goes away (a USB adapter pulled) is reopened once a
second, and said once per episode; so is a TCP address that cannot be listened on. The
firmware runs on regardless. `serve --stats` shows the link's reads, writes and exceptions
under `modbus`, and the writes a policy refused under `not_enabled`.
"""

ADDRESSING = f"""\
## Addressing and values

- The map starts with `SunS` (0x5375 0x6E53) at holding register {BASE_ADDRESS}, a protocol
  (0-based) address, as pysunspec2 and most SunSpec clients scan for it; a document that
  numbers registers from 1 calls it {BASE_ADDRESS + 1}. SunSpec lets a device use 0, 40000
  or 50000; this one uses {BASE_ADDRESS} only, and a read at the other two gets
  ILLEGAL_DATA_ADDRESS so that a scanner moves on.
- Then the models, each an ID and a length L (the registers after L), and the end model
  (ID 0xFFFF, L 0). The layout is SunSpec's own model definitions (pysunspec2's JSON,
  shipped in `bms/links/modbus/sunspec_models/`), point after point; only model 805's
  cell group repeats with the pack's cells, and it comes last.
- Function codes: {READ_HOLDING:02d} read holding registers; {WRITE_ONE:02d} and {WRITE_MANY}
  write. Up to 125 registers a read, as Modbus allows.
- A value with a scale factor is the register times 10^SF (SF the named `*_SF` point). The
  emulator picks each exponent once at start, for the pack: the finest power of ten (not
  below 10^{FINEST_EXPONENT}) whose steps hold {HEADROOM:g} times the largest value the
  points are rated for. A value past the range is held at the range's end.
- A point with no value now (no measurement yet, no SoC estimate yet) or not implemented
  holds SunSpec's "not implemented" value: {_unimplemented_text()}.
- A read gives the firmware's state as of its latest step: at most one tick old.
- Current and power are positive when charging, as everywhere in the emulator. SunSpec's
  definition of model 802 does not give a sign; check your client's.
- The pack is one string of one module, so models 803, 804 and 805 each describe all of it.
  Their points are not particular to lithium: a sodium-ion pack fills them as they are.
  Cells are numbered from 1.
"""


def exceptions() -> str:
    rows = [
        (f"{ExcCodes.ILLEGAL_FUNCTION:02d} ILLEGAL_FUNCTION",
         "a write the policy does not enable (the default: every write), or one the firmware "
         "will not act on in its present state (`run` while a FAULT is latched; a clear that "
         "would leave the FAULT); any function but 03, 06 and 16, under its own code "
         "(coils, input registers, diagnostics and device identification included; on RTU "
         "the codes whose frame has a fixed size or a byte count - a frame of another code "
         "has no length to tell where it ends: 2B is pymodbus's, others go unanswered)"),
        (f"{ExcCodes.ILLEGAL_ADDRESS:02d} ILLEGAL_DATA_ADDRESS",
         "a register outside the map; a write to a register that is not part of a point a "
         "client may write (read-only, not implemented, a marker), or to part of one"),
        (f"{ExcCodes.ILLEGAL_VALUE:02d} ILLEGAL_DATA_VALUE",
         "a value the point does not take (the writes table); a read (03) of 0 or more "
         "than 125 registers, a write (16) of 0 or more than 123"),
        (f"{ExcCodes.DEVICE_FAILURE:02d} SERVER_DEVICE_FAILURE",
         "anything else that went wrong serving the request; logged with its traceback"),
    ]
    return ("## Exceptions\n\nA refused write changes nothing; the log (INFO) says why.\n\n"
            + table(("Exception", "When"), rows)
            + "\nRequests may be pipelined on a connection (the next sent before the answer): "
            "they are answered in order, one at a time between the firmware's steps. Up to "
            "64 wait; past that, or while the client does not read its answers, the server "
            "stops reading its requests and TCP holds it back. Requests sent before a "
            "half-close are answered, then the connection is closed. A frame whose MBAP "
            "protocol id is not 0 is skipped by its length, unanswered; a length under 2 or "
            "over 254 closes the connection once the requests before it are answered (where "
            "the next frame starts is unknown). A function code of 0x80 or above is "
            "ILLEGAL_FUNCTION; a request of 03, 06 or 16 whose data cannot be read, or is "
            "longer than the function's, is ILLEGAL_DATA_VALUE. Connections are not timed "
            "out or capped.\n")


def writes(sunspec_map: SunSpecMap) -> str:
    rows = []
    for key, values in WRITES.items():
        slot = next(s for s in sunspec_map.layout.slots() if s.point.key == key)
        names = {v: k for k, v in point(key).symbols.items()}
        for value, command in values.items():
            number = value if isinstance(value, int) else point(key).symbols[value]
            rows.append((f"`{key}`", slot.address, f"{number} {names.get(number, '')}".strip(),
                         command.name, _policy_word(command)))
    return ("## Writes\n\nEach write asks the firmware what the protocol's CommandRequest "
            "asks (docs/protocol.md), held to `--modbus-commands` as MQTT's commands are "
            "held to `--mqtt-commands`. The firmware acts on it at its next step; the "
            "point reads back what the firmware does, not what was written.\n\n"
            + table(("Point", "Address", "Value", "Asks for", "Policy needs"), rows))


def _policy_word(command) -> str:
    name, word = REQUEST_NEEDS[command]
    return f"`{name}`" if word is None else f"`{name}` (`{word}`)"


def models(sunspec_map: SunSpecMap) -> str:
    parts = ["## Models\n\nAddresses for the pack the header names (model 805's cell group "
             "and the end model move with the number of cells; nothing before them does). "
             "SF: the scale factor's exponent for that pack. Access: R, or RW where SunSpec "
             "lets a client write; W marks the points this emulator takes writes to.\n"]
    parts.append(f"`SunS` at {sunspec_map.base}..{sunspec_map.base + len(SUNS_MARKER) - 1}.\n")
    for block in sunspec_map.layout.models:
        parts.append(_model(sunspec_map, block))
    end = sunspec_map.layout.end_address
    parts.append(f"End model: ID 0xFFFF at {end - 2}, L 0 at {end - 1}.\n")
    return "\n".join(parts)


def _model(sunspec_map: SunSpecMap, block: ModelBlock) -> str:
    group = definition(block.model_id)["group"]
    rows = [_row(sunspec_map, slot) for slot in block.slots if slot.index == 0]
    return (f"### Model {block.model_id}: {group.get('label', group['name'])}\n\n"
            f"At {block.address}, L = {block.length}.\n\n"
            + table(("Address", "Point", "Type", "Units", "SF", "Access", "Value"), rows))


def _row(sunspec_map: SunSpecMap, slot: Slot) -> tuple:
    p = slot.point
    repeat = _repeat_note(sunspec_map, slot)
    sf = sunspec_map.exponents.get(p.sf, "") if p.sf else ""
    access = "RW" if p.writable else "R"
    if p.key in WRITES:
        access += " W"
    return (slot.address if p.size == 1 else f"{slot.address}..{slot.address + p.size - 1}",
            f"`{p.name}`{repeat}", p.type, p.units, sf, access, _value_text(sunspec_map, slot))


def _repeat_note(sunspec_map: SunSpecMap, slot: Slot) -> str:
    """For a point of the cell group: where cell k's is."""
    again = [s for s in sunspec_map.layout.slots()
             if s.point.key == slot.point.key and s.index == 1]
    return "" if not again else f" (cell 1; cell k at +{again[0].address - slot.address}(k-1))"


def _value_text(sunspec_map: SunSpecMap, slot: Slot) -> str:
    p = slot.point
    if p.name == "ID":
        return str(p.model_id)
    if p.name == "L":
        return "the model's length"
    if p.type == "sunssf":
        return f"10^{sunspec_map.exponents[p.name]}"
    if p.type == "pad":
        return "pad"
    if p.key in UNIMPLEMENTED:
        return f"not implemented: {UNIMPLEMENTED[p.key]}"
    return WHAT[p.key]


def tables() -> str:
    states = table(("Firmware state", "802 State"),
                   ((state.value, name) for state, name in BANK_STATE.items()))
    alarms = table(("Fault", "WARNING sets", "ALARM or FAULT sets"), table_rows())
    failures = table(("FAULT-level fault", "ConFail / StrConFail"),
                     [*CONNECTION_FAILURE.items(), ("any other", "STRING_FAULT"),
                      ("none", "NO_FAILURE")])
    return ("## State table\n\nStateVnd carries the firmware's own state code.\n\n" + states
            + "\n## Alarm table\n\nEvt1 (802, 804) and StrEvt1 (803), by the fault's active "
            "levels (`Actuation.level_bitmaps`); several faults may share a bit, and the vendor "
            "bitfields EvtVnd1 / EvtVnd2 name each fault by its code (docs/protocol.md, "
            "Faults).\n\n" + alarms
            + "\n## Connection failure table\n\n" + failures)


def render(sunspec_map: SunSpecMap, pack: str) -> str:
    """The whole reference; `pack` names the pack the addresses are given for."""
    parts = ["# Modbus: the pack as a SunSpec battery\n\n"
             "Generated by `bms-emu modbus-map` from the SunSpec model definitions and the "
             "map's tables in `bms/links/modbus/`; do not edit by hand (run "
             f"`bms-emu modbus-map > docs/modbus.md`). Addresses are for {pack}.\n",
             INTRO, ADDRESSING, exceptions(), writes(sunspec_map), models(sunspec_map),
             tables()]
    return "\n".join(parts)
