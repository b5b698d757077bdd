"""`bms-emu spec`: print the protocol reference (docs/protocol.md) as Markdown.

`protocol.spec` renders everything the protocol package defines; the codes that belong to
the firmware - states, faults, configuration parameters - and the simulated pack's fault
injections are added here, because `protocol` may not import `bms` or `hil`. Both halves
come from the definitions, so the document is regenerated, never edited.
"""

from __future__ import annotations

from bms.core.signals import State
from bms.data.config import default_config
from bms.data.faults import FAULT_CODES, Level
from bms.data.parameters import catalogue
from bms.data.presets import DEFAULT_PRESET, resolve_chemistry
from hil.injections import KINDS, Param
from protocol.messages import ValueKind
from protocol.spec import member_comments, render, table

SERIES = 16  # the pack `bms-emu config --defaults` describes; ids do not depend on it


def add_parser(sub) -> None:
    p = sub.add_parser(
        "spec",
        description="Print the binary protocol reference (frame layout, CRC, every message "
        "byte by byte, error codes, states, faults, configuration parameters, example frames) "
        "as Markdown, generated from the definitions: `bms-emu spec > docs/protocol.md`.")
    p.set_defaults(handler=handle)


def states() -> str:
    return ("The `state` of Status, ActuationFrame and fault log entries.\n\n"
            + table(("Code", "State"), ((s.code, s.value) for s in State))
            + "\n" + START)


# How a pack starts: the firmware's rule (bms.core.firmware), as a host sees it.
START = """\
At start the state is INIT, contactors open; the first step with a measurement moves it to
STANDBY. The contactors close (PRECHARGE, then RUN) only when RUN is requested: by a host's
CommandRequest RUN, or at start when the device is run with `serve --autostart` (a pack
that closes on power-up). Without it the device waits in STANDBY. A device that gets no
measurement for `measurement_timeout_s` (1 s unless configured) from start raises
MEASUREMENT_TIMEOUT and is in FAULT, contactors open; as nothing was decided without a
measurement, that one clears itself with the first measurement (logged, with the reason),
and a RUN sent meanwhile is taken and acted on then. A MEASUREMENT_TIMEOUT after
measurements had come latches until CLEAR_FAULTS, which is refused (NOT_NOW) while the rig
is still silent.
"""


def levels() -> str:
    notes = member_comments(Level)
    return table(("Code", "Name", "Meaning"),
                 ((level.code, level.name, notes.get(level.name, "")) for level in Level))


def faults() -> str:
    return ("A fault's code is also its bit in `fault_bitmap` (bit n: 1 << n).\n\n"
            + table(("Code", "Bit mask", "Fault"),
                    ((code, f"0x{1 << code:08X}", name) for name, code in FAULT_CODES.items()))
            + "\nLevels (`level` of a fault log entry):\n\n" + levels())


def parameters() -> str:
    chem = resolve_chemistry(DEFAULT_PRESET)
    params = catalogue(default_config(chem, SERIES, chem.capacity_ah))
    return (
        "What GetParameterList lists and GetConfig / SetConfig read and write: `param_id`, "
        "the ValueKind its value travels as, the dotted name as in the configuration TOML "
        f"file, and its unit. Listed for the default pack ({DEFAULT_PRESET}, {SERIES}S1P); "
        "the ids follow from the configuration's structure, not from the pack.\n\n"
        + table(("Id", "Name", "Kind", "Unit", "Choices"),
                ((f"0x{p.id:04X}", f"`{p.name}`",
                  f"{p.kind.upper()} ({ValueKind[p.kind.upper()].value})", p.unit,
                  ", ".join(p.choices)) for p in params)))


def injections() -> str:
    return (
        "What Inject's `spec` holds (SIM mode only; the same text as `--inject` on the "
        "command line): `AT:KIND[:key=value,...]`. AT is when, counted from the moment the "
        "device takes the request: seconds, or numbers with s, m, h or d (`0`, `90`, `5m`, "
        "`1h30m`). KIND is a row below; its keys follow as `key=value` separated by commas, "
        "each at most once, in any order; a key with a default may be left out. Cells and "
        "sensors are numbered from 1, as on a pack label (cell 1 .. n_series, sensor 1 .. "
        "n_temp_sensors of DeviceInfo). The Ack means the fault is scheduled; a `spec` that "
        "breaks any of this is refused whole (BAD_VALUE, the detail naming every bad part). "
        "Example: `0:sensor-offset:cell=3,offset_v=0.5`.\n\n"
        + table(("Kind", "Keys"), ((f"`{kind}`", "; ".join(
            key_text(key, p) for key, p in keys.items()) or "none")
            for kind, keys in KINDS.items())))


def key_text(key: str, p: Param) -> str:
    """One key of an injection kind: what it takes and its default."""
    if p.kind in ("cell", "sensor"):
        return f"`{key}`: {p.kind} number from 1, required"
    if p.kind == "choice":
        taken = " or ".join(f"`{c}`" for c in p.choices)
    else:
        taken = f"{p.low:g} .. {p.high:g} {p.unit}".rstrip()
    default = ("required" if p.default is None else
               f"default {p.default}" if isinstance(p.default, str) else
               f"default {p.default:g} {p.unit}".rstrip())
    return f"`{key}`: {taken}, {default}"


def handle(args) -> int:
    print(render([("States", states()), ("Faults", faults()),
                  ("Configuration parameters", parameters()), ("Injections", injections())]),
          end="")
    return 0
